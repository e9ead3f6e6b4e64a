"""Sessions that the sign-in policy no longer allows end at their next request: local (password) sessions once
password sign-in is switched off (break-glass admins excepted), and platform staff's local sessions without a
checked TOTP code once any SSO provider is configured. Cheap: the policy is cached for a few seconds, and the
break-glass lookup runs only while password sign-in is off."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from identity import selectors

SESSION_METHOD = "identity_method"
SESSION_MFA = "identity_mfa"


class SignInPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and request.session.get(SESSION_METHOD) != "sso":
            reason = self._refusal(request)
            if reason:
                logout(request)
                if request.path.startswith(("/api/", "/v1/")):
                    return JsonResponse({"code": "not_authenticated", "message": reason, "details": {}}, status=401)
                messages.info(request, reason)
                return redirect("login")
        return self.get_response(request)

    def _refusal(self, request: HttpRequest) -> str:
        policy = selectors.policy_snapshot()
        if not policy.password_sign_in_enabled and not selectors.is_break_glass(user=request.user):
            return "Password sign-in is turned off. Sign in with your company's single sign-on."
        if policy.sso_configured and request.user.is_staff and not request.session.get(SESSION_MFA):
            return "Platform staff sign in with a password and an authenticator code. Sign in again."
        return ""
