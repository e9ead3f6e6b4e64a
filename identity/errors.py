"""Typed errors of enterprise sign-in. Each carries a ``code`` for logs and tests and a message a person
understands; none ever holds a token, a code, a secret or an assertion."""

from __future__ import annotations

from core.errors import ApplicationError


class SignInRefused(ApplicationError):
    """A provider's answer was not accepted (bad token, bad assertion, replay, unknown provider...)."""

    code = "sign_in_refused"
    status = 401
    default_message = "Sign-in was refused. Start again from the sign-in page."


class AccountDeactivated(SignInRefused):
    code = "account_deactivated"
    status = 403
    default_message = "This account has been deactivated by your company's directory. Ask your IT team."


class PasswordSignInDisabled(SignInRefused):
    code = "password_sign_in_disabled"
    status = 403
    default_message = "Password sign-in is turned off. Use your company's single sign-on button instead."


class MfaInvalid(SignInRefused):
    code = "mfa_invalid"
    status = 401
    default_message = "That code is not valid. Enter the current 6-digit code from your authenticator app."


class ProviderUnavailable(ApplicationError):
    code = "provider_unavailable"
    status = 502
    default_message = "Your company's sign-in service could not be reached. Try again shortly."


class ScimError(ApplicationError):
    """Answered as a SCIM error document (RFC 7644 §3.12); ``scim_type`` e.g. uniqueness, invalidValue."""

    code = "scim_error"
    status = 400

    def __init__(self, message: str, *, status: int = 400, scim_type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.scim_type = scim_type
