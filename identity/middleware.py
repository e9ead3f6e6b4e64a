"""Sessions that the sign-in policy no longer allows end at their next request: local (password) sessions once
password sign-in is switched off (break-glass admins excepted), and platform staff's local sessions without a
checked TOTP code once any SSO provider is configured. Cheap: the policy is cached for a few seconds, and the
break-glass lookup runs only while password sign-in is off."""

from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from identity import selectors

SESSION_METHOD = "identity_method"
SESSION_MFA = "identity_mfa"


class SignInPolicyMiddleware:
    """Sync and async. Under ASGI a request without a session cookie has no session to end: it passes with no thread
    hop; a browser session is checked in a worker thread."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _check(self, request: HttpRequest) -> HttpResponse | None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and request.session.get(SESSION_METHOD) != "sso":
            reason = self._refusal(request)
            if reason:
                logout(request)
                if request.path.startswith(("/api/", "/v1/")):
                    return JsonResponse({"code": "not_authenticated", "message": reason, "details": {}}, status=401)
                messages.info(request, reason)
                return redirect("login")
        return None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.is_async:
            return self.__acall__(request)  # type: ignore[return-value]
        return self._check(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if settings.SESSION_COOKIE_NAME in request.COOKIES:
            refused = await sync_to_async(self._check)(request)
            if refused is not None:
                return refused
        return await self.get_response(request)  # type: ignore[misc]

    def _refusal(self, request: HttpRequest) -> str:
        policy = selectors.policy_snapshot()
        if not policy.password_sign_in_enabled and not selectors.is_break_glass(user=request.user):
            return "Password sign-in is turned off. Sign in with your company's single sign-on."
        if policy.sso_configured and request.user.is_staff and not request.session.get(SESSION_MFA):
            return "Platform staff sign in with a password and an authenticator code. Sign in again."
        return ""
