"""Sign-in pages: the local form (with TOTP as a second step), single sign-on over OpenID Connect and SAML, and
sign-out (with OpenID Connect RP-initiated logout offered). Thin: the checks live in ``identity.oidc``,
``identity.saml`` and ``identity.services``; refusals are logged with a reason code and never a token."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, login, logout
from django.contrib.auth.models import User
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from core.errors import ApplicationError
from core.pages import render_error
from identity import flows, oidc, saml, selectors, services
from identity.errors import MfaInvalid, PasswordSignInDisabled, SignInRefused
from identity.models import IdentityProvider

logger = logging.getLogger(__name__)

SESSION_METHOD = "identity_method"  # "password" or "sso"
SESSION_MFA = "identity_mfa"  # True once a TOTP code was checked in this session
SESSION_PROVIDER = "identity_provider"
SESSION_ID_TOKEN = "identity_id_token"  # kept for RP-initiated logout's id_token_hint
SESSION_PENDING = "identity_pending"  # a local sign-in waiting for its TOTP step
SESSION_OIDC = "identity_oidc"  # authorization requests in flight, by state
PASSWORD_BACKEND = "django.contrib.auth.backends.ModelBackend"
PENDING_TTL_S = 300
OIDC_TTL_S = 600
MFA_MAX_ATTEMPTS = 5
SAML_REQUEST_TTL_S = 600
SAML_BINDING_COOKIE = "portal_saml"


def _client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _safe_next(request: HttpRequest, value: str | None) -> str:
    target = value or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return str(settings.LOGIN_REDIRECT_URL and reverse(settings.LOGIN_REDIRECT_URL))


def _refused(request: HttpRequest, error: ApplicationError, *, provider: str = "", kind: str = "") -> HttpResponse:
    """Log a refusal with its reason code only (never a token, code, assertion or secret) and show the page."""
    flows.refusal_log(error, provider=provider, kind=kind, ip=_client_ip(request))
    return render_error(request, error)


def _complete(
    request: HttpRequest, user: User, *, method: str, mfa: bool, provider: str = "", id_token: str = ""
) -> None:
    login(request, user, backend=PASSWORD_BACKEND)
    request.session[SESSION_METHOD] = method
    request.session[SESSION_MFA] = mfa
    if provider:
        request.session[SESSION_PROVIDER] = provider
    if id_token:
        request.session[SESSION_ID_TOKEN] = id_token


# ------------------------------------------------------------------------------------------------ local sign-in
@never_cache
def login_view(request: HttpRequest) -> HttpResponse:
    services.provider_sync_from_environment()
    if request.user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request, request.GET.get("next")))
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    context: dict[str, Any] = {
        "providers": selectors.provider_list(enabled_only=True),
        "password_enabled": selectors.policy_snapshot().password_sign_in_enabled,
        "next": next_url,
        "error": "",
        "username": "",
    }
    if request.method == "POST":
        username = request.POST.get("username", "")
        context["username"] = username
        user = authenticate(request, username=username, password=request.POST.get("password", ""))
        if user is None:
            context["error"] = "Your username and password didn't match. Please try again."
            return render(request, "identity/login.html", context, status=200)
        if not selectors.password_sign_in_allowed(user=user):
            services.sign_in_record(user=user, kind="password", ip=_client_ip(request), refused="password_off")
            context["error"] = PasswordSignInDisabled.default_message
            return render(request, "identity/login.html", context, status=403)
        if selectors.mfa_required(user=user):
            request.session.cycle_key()
            request.session[SESSION_PENDING] = {
                "user_id": user.pk,
                "next": next_url,
                "at": time.time(),
                "attempts": 0,
            }
            if selectors.totp_confirmed(user=user):
                return redirect("identity:mfa")
            return redirect("identity:mfa_setup")
        _complete(request, user, method="password", mfa=False)
        services.sign_in_record(user=user, kind="password", ip=_client_ip(request))
        return redirect(_safe_next(request, next_url))
    return render(request, "identity/login.html", context)


def _pending_user(request: HttpRequest) -> tuple[User | None, dict[str, Any] | None]:
    pending = request.session.get(SESSION_PENDING)
    if not isinstance(pending, dict) or time.time() - float(pending.get("at", 0)) > PENDING_TTL_S:
        request.session.pop(SESSION_PENDING, None)
        return None, None
    user = selectors.user_get_active(user_id=int(pending.get("user_id") or 0))
    return user, pending


@never_cache
def mfa_view(request: HttpRequest) -> HttpResponse:
    """The second step of a local sign-in: the current code from the person's authenticator app."""
    user, pending = _pending_user(request)
    if user is None or pending is None:
        messages.info(request, "Sign in again: the sign-in attempt expired.")
        return redirect("login")
    context = {"error": ""}
    if request.method == "POST":
        try:
            services.totp_verify(user=user, code=request.POST.get("code", ""), ip=_client_ip(request))
        except MfaInvalid as exc:
            pending["attempts"] = int(pending.get("attempts", 0)) + 1
            if pending["attempts"] >= MFA_MAX_ATTEMPTS:
                request.session.pop(SESSION_PENDING, None)
                messages.error(request, "Too many wrong codes. Sign in again.")
                return redirect("login")
            request.session[SESSION_PENDING] = pending
            context["error"] = exc.message
            return render(request, "identity/mfa.html", context, status=401)
        request.session.pop(SESSION_PENDING, None)
        _complete(request, user, method="password", mfa=True)
        services.sign_in_record(user=user, kind="password+totp", ip=_client_ip(request))
        return redirect(_safe_next(request, pending.get("next")))
    return render(request, "identity/mfa.html", context)


@never_cache
def mfa_setup_view(request: HttpRequest) -> HttpResponse:
    """Set up an authenticator: forced for platform staff mid-sign-in, or by choice once signed in."""
    user, pending = _pending_user(request)
    if user is None:
        if not request.user.is_authenticated:
            return redirect("login")
        if request.session.get(SESSION_METHOD) == "sso":
            messages.info(request, "Your company's sign-in handles two-factor authentication for this account.")
            return redirect("home")
        user = request.user  # type: ignore[assignment]
    assert user is not None
    context: dict[str, Any] = {"error": ""}
    if request.method == "POST":
        try:
            services.totp_confirm(user=user, code=request.POST.get("code", ""))
        except (MfaInvalid, ApplicationError) as exc:
            context["error"] = exc.message
        else:
            if pending is not None:
                request.session.pop(SESSION_PENDING, None)
                _complete(request, user, method="password", mfa=True)
                return redirect(_safe_next(request, pending.get("next")))
            request.session[SESSION_MFA] = True
            messages.success(request, "Your authenticator is set up; sign-in will ask for its code.")
            return redirect("home")
    try:
        device, uri = services.totp_begin(user=user)
    except ApplicationError as exc:
        return render_error(request, exc)
    context.update({"secret": device.secret, "uri": uri, "forced": pending is not None})
    return render(request, "identity/mfa_setup.html", context, status=400 if context["error"] else 200)


# ------------------------------------------------------------------------------------------------ sign-out
@never_cache
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return render(request, "identity/logout_confirm.html")
    method = request.session.get(SESSION_METHOD)
    provider_slug = request.session.get(SESSION_PROVIDER, "")
    id_token = request.session.get(SESSION_ID_TOKEN, "")
    user = request.user if request.user.is_authenticated else None
    logout(request)  # the portal session ends here, whatever the provider says
    if user is not None:
        services.sign_out_record(user=user, method=str(method or ""), ip=_client_ip(request))
    end_session = ""
    provider_name = ""
    if method == "sso" and provider_slug:
        provider = IdentityProvider.objects.filter(slug=provider_slug, kind=IdentityProvider.Kind.OIDC).first()
        if provider is not None:
            provider_name = provider.name
            try:
                meta = oidc.metadata_get(issuer=provider.issuer)
                end_session = oidc.end_session_url(
                    metadata=meta,
                    id_token_hint=id_token,
                    client_id=provider.client_id,
                    post_logout_redirect_uri=request.build_absolute_uri(reverse("login")),
                )
            except ApplicationError:
                end_session = ""
    if not end_session:
        return redirect("login")
    return render(request, "identity/signed_out.html", {"end_session_url": end_session, "provider_name": provider_name})


# ------------------------------------------------------------------------------------------------ OpenID Connect
def _oidc_redirect_uri(request: HttpRequest, provider: IdentityProvider) -> str:
    return request.build_absolute_uri(reverse("identity:oidc_callback", args=[provider.slug]))


@never_cache
def oidc_login(request: HttpRequest, slug: str) -> HttpResponseBase:
    services.provider_sync_from_environment()
    try:
        provider = selectors.provider_get(slug=slug, kind=IdentityProvider.Kind.OIDC)
        meta = oidc.metadata_get(issuer=provider.issuer)
        url, pending = oidc.authorization_start(
            provider_slug=provider.slug,
            client_id=provider.client_id,
            scopes=provider.scopes or "openid",
            metadata=meta,
            redirect_uri=_oidc_redirect_uri(request, provider),
            next_url=_safe_next(request, request.GET.get("next")),
        )
    except ApplicationError as exc:
        return _refused(request, exc, provider=slug, kind="oidc")
    in_flight = {
        k: v
        for k, v in (request.session.get(SESSION_OIDC) or {}).items()
        if time.time() - float(v.get("started_at", 0)) < OIDC_TTL_S
    }
    in_flight[pending.state] = pending.as_dict()
    request.session[SESSION_OIDC] = dict(list(in_flight.items())[-5:])  # a few tabs at once, no more
    return redirect(url)


def _claim_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v for v in value.replace(",", " ").split() if v)
    if isinstance(value, list):
        return tuple(str(v) for v in value if isinstance(v, str | int))
    return ()


@never_cache
def oidc_callback(request: HttpRequest, slug: str) -> HttpResponseBase:
    in_flight = request.session.get(SESSION_OIDC) or {}
    state = request.GET.get("state", "")
    raw = in_flight.pop(state, None) if state else None
    request.session[SESSION_OIDC] = in_flight  # a state is good for one callback
    try:
        if raw is None:
            raise SignInRefused(
                "This sign-in response does not match a sign-in started in this browser, or it was already used. "
                "Start again from the sign-in page.",
                code="oidc_state_mismatch",
            )
        pending = oidc.PendingAuthorization.from_dict(raw)
        if pending.provider != slug or time.time() - pending.started_at > OIDC_TTL_S:
            raise SignInRefused("The sign-in attempt expired. Start again.", code="oidc_state_expired")
        if request.GET.get("error"):
            raise SignInRefused(
                "Your company's sign-in service did not sign you in"
                + (" (access denied)." if request.GET.get("error") == "access_denied" else "."),
                code="oidc_provider_error",
            )
        provider = selectors.provider_get(slug=slug, kind=IdentityProvider.Kind.OIDC)
        meta = oidc.metadata_get(issuer=provider.issuer)
        if request.GET.get("iss") and request.GET["iss"] != meta.issuer:  # RFC 9207 mix-up defence
            raise SignInRefused(
                "The sign-in response came from a different provider than the one configured.",
                code="oidc_wrong_issuer",
            )
        code = request.GET.get("code", "")
        if not code:
            raise SignInRefused("The sign-in response carries no authorization code.", code="oidc_no_code")
        token = oidc.code_exchange(
            client_id=provider.client_id,
            client_secret=provider.client_secret,
            metadata=meta,
            pending=pending,
            code=code,
        )
        id_token = str(token["id_token"])
        claims = flows.oidc_id_token_accept(provider=provider, metadata=meta, id_token=id_token, nonce=pending.nonce)
        userinfo = oidc.userinfo_get(
            metadata=meta, access_token=str(token.get("access_token", "")), subject=claims["sub"]
        )
        merged = {**userinfo, **claims}
        groups_claim = provider.groups_claim or "groups"
        groups = _claim_list(claims.get(groups_claim, userinfo.get(groups_claim)))
        person = services.DirectoryPerson(
            subject=str(claims["sub"]),
            username=str(merged.get("preferred_username") or ""),
            email=str(merged.get("email") or "") if merged.get("email_verified", True) else "",
            first_name=str(merged.get("given_name") or merged.get("name") or ""),
            last_name=str(merged.get("family_name") or ""),
            groups=groups,
        )
        user = services.identity_sign_in(provider=provider, person=person, ip=_client_ip(request))
    except ApplicationError as exc:
        return _refused(request, exc, provider=slug, kind="oidc")
    _complete(request, user, method="sso", mfa=False, provider=provider.slug, id_token=id_token)
    return redirect(_safe_next(request, pending.next_url))


# ------------------------------------------------------------------------------------------------ SAML 2.0
def _saml_endpoints(request: HttpRequest, provider: IdentityProvider) -> saml.SamlEndpoints:
    return saml.SamlEndpoints(
        entity_id=request.build_absolute_uri(reverse("identity:saml_metadata", args=[provider.slug])),
        acs_url=request.build_absolute_uri(reverse("identity:saml_acs", args=[provider.slug])),
    )


def _saml_kwargs(provider: IdentityProvider) -> dict[str, str]:
    return {
        "idp_entity_id": provider.idp_entity_id,
        "idp_sso_url": provider.idp_sso_url,
        "idp_certificate": provider.idp_certificate,
    }


def _binding(request_id: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), f"saml:{request_id}".encode(), hashlib.sha256).hexdigest()


@never_cache
def saml_metadata(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        provider = selectors.provider_get(slug=slug, kind=IdentityProvider.Kind.SAML)
        xml = saml.sp_metadata_xml(sp=_saml_endpoints(request, provider), **_saml_kwargs(provider))
    except ApplicationError as exc:
        return render_error(request, exc)
    return HttpResponse(xml, content_type="application/samlmetadata+xml")


@never_cache
def saml_login(request: HttpRequest, slug: str) -> HttpResponseBase:
    try:
        provider = selectors.provider_get(slug=slug, kind=IdentityProvider.Kind.SAML)
        url, request_id = saml.authn_request_start(
            sp=_saml_endpoints(request, provider), relay_state="", **_saml_kwargs(provider)
        )
    except ApplicationError as exc:
        return _refused(request, exc, provider=slug, kind="saml")
    # The IdP posts the answer cross-site, where a SameSite=Lax session cookie is not sent: the request in flight
    # is kept server-side (used once) and bound to this browser by a cookie of its own.
    cache.set(
        f"identity:saml:req:{request_id}",
        {"provider": provider.slug, "next": _safe_next(request, request.GET.get("next"))},
        SAML_REQUEST_TTL_S,
    )
    response = redirect(url)
    response.set_cookie(
        SAML_BINDING_COOKIE,
        _binding(request_id),
        max_age=SAML_REQUEST_TTL_S,
        httponly=True,
        secure=request.is_secure(),
        samesite="None" if request.is_secure() else "Lax",
        path=reverse("identity:saml_acs", args=[provider.slug]),
    )
    return response


def _first(attributes: dict[str, list[str]], *names: str) -> str:
    lowered = {k.lower(): v for k, v in attributes.items()}
    for name in names:
        values = lowered.get(name.lower())
        if values:
            return values[0]
    return ""


@csrf_exempt  # the IdP's form post; the signed response bound to a request we started is the protection
@never_cache
def saml_acs(request: HttpRequest, slug: str) -> HttpResponseBase:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        provider = selectors.provider_get(slug=slug, kind=IdentityProvider.Kind.SAML)
        saml_response = request.POST.get("SAMLResponse", "")
        if not saml_response:
            raise SignInRefused("The SAML post carries no response.", code="saml_invalid")
        request_id = saml.in_response_to(saml_response)
        key = f"identity:saml:req:{request_id}" if request_id else ""
        in_flight = cache.get(key) if key else None
        if key:
            cache.delete(key)
        outstanding: dict[str, str] = {}
        if in_flight and in_flight.get("provider") == provider.slug:
            cookie = request.COOKIES.get(SAML_BINDING_COOKIE, "")
            bound = bool(cookie) and hmac.compare_digest(cookie, _binding(request_id))
            if bound or (not cookie and not request.is_secure()):
                outstanding = {request_id: in_flight.get("next", "/")}
        assertion = saml.response_parse(
            sp=_saml_endpoints(request, provider),
            saml_response=saml_response,
            outstanding=outstanding,
            **_saml_kwargs(provider),
        )
        expires = assertion.not_on_or_after.replace(tzinfo=UTC) if assertion.not_on_or_after else None
        services.replay_guard_consume(
            kind="saml_assertion",
            value=f"{assertion.issuer}|{assertion.assertion_id}",
            expires_at=(expires or datetime.now(tz=UTC)) + timedelta(hours=1),
        )
        attrs = assertion.attributes
        groups_attr = provider.groups_claim or "groups"
        lowered = {k.lower(): v for k, v in attrs.items()}
        person = services.DirectoryPerson(
            subject=assertion.name_id,
            username=_first(attrs, "uid", "username", "preferred_username") or assertion.name_id,
            email=_first(
                attrs,
                "mail",
                "email",
                "emailAddress",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            ),
            first_name=_first(attrs, "givenName", "first_name", "displayName"),
            last_name=_first(attrs, "sn", "surname", "last_name"),
            groups=tuple(lowered.get(groups_attr.lower(), [])),
        )
        user = services.identity_sign_in(provider=provider, person=person, ip=_client_ip(request))
    except ApplicationError as exc:
        return _refused(request, exc, provider=slug, kind="saml")
    _complete(request, user, method="sso", mfa=False, provider=provider.slug)
    response = redirect(_safe_next(request, (in_flight or {}).get("next")))
    response.delete_cookie(SAML_BINDING_COOKIE, path=reverse("identity:saml_acs", args=[provider.slug]))
    return response
