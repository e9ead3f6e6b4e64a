"""OpenID Connect relying party: discovery, the authorization request (code flow with PKCE S256, state, nonce), the
code exchange (authlib's OAuth 2 client) and ID-token validation (joserfc): signature against the provider's JWKS,
algorithm (never ``none``, never a MAC keyed by something public), issuer, audience and authorized party, expiry,
issued-at, nonce. Refusals raise ``SignInRefused`` with a ``code`` naming the check; tokens never reach a log.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client
from django.core.cache import cache
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet

from identity.errors import ProviderUnavailable, SignInRefused

# asymmetric algorithms only: "none" is unsigned and HS* would be keyed by the client secret, which we never accept
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_S = 60
HTTP_TIMEOUT_S = 10.0
METADATA_TTL_S = 300


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str = ""
    end_session_endpoint: str = ""
    algorithms: tuple[str, ...] = ("RS256",)


@dataclass
class PendingAuthorization:
    """What the browser's session keeps between the redirect to the provider and the callback."""

    provider: str
    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    next_url: str = "/"
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingAuthorization:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: building one (loading the CA bundle) costs ~35 ms, more than the calls."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _cache_key(kind: str, url: str) -> str:
    return f"identity:oidc:{kind}:{hashlib.sha256(url.encode()).hexdigest()[:32]}"


def _get_json(url: str) -> dict[str, Any]:
    try:
        response = httpx.get(url, timeout=HTTP_TIMEOUT_S, follow_redirects=False, verify=_tls())
        response.raise_for_status()
        data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ProviderUnavailable(details={"reason": type(exc).__name__}) from None
    if not isinstance(data, dict):
        raise ProviderUnavailable(details={"reason": "not a JSON object"})
    return data


def metadata_get(*, issuer: str, refresh: bool = False) -> ProviderMetadata:
    """OpenID Provider metadata from discovery; the document's ``issuer`` must be exactly the configured one."""
    key = _cache_key("discovery", issuer)
    cached = None if refresh else cache.get(key)
    if cached is not None:
        return ProviderMetadata(**cached)
    doc = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
    if doc.get("issuer") != issuer:
        raise SignInRefused(
            "The sign-in provider's discovery document names a different issuer than the one configured.",
            code="oidc_discovery_issuer_mismatch",
        )
    try:
        algorithms = tuple(
            a for a in doc.get("id_token_signing_alg_values_supported", ["RS256"]) if a in ALLOWED_ALGORITHMS
        )
        meta = ProviderMetadata(
            issuer=doc["issuer"],
            authorization_endpoint=doc["authorization_endpoint"],
            token_endpoint=doc["token_endpoint"],
            jwks_uri=doc["jwks_uri"],
            userinfo_endpoint=doc.get("userinfo_endpoint", ""),
            end_session_endpoint=doc.get("end_session_endpoint", ""),
            algorithms=algorithms or ("RS256",),
        )
    except KeyError as exc:
        raise ProviderUnavailable(
            f"The sign-in provider's discovery document lacks {exc.args[0]}.", details={"reason": "incomplete"}
        ) from None
    cache.set(key, meta.__dict__, METADATA_TTL_S)
    return meta


def jwks_get(*, jwks_uri: str, refresh: bool = False) -> dict[str, Any]:
    key = _cache_key("jwks", jwks_uri)
    cached = None if refresh else cache.get(key)
    if cached is not None:
        return dict(cached)
    jwks = _get_json(jwks_uri)
    cache.set(key, jwks, METADATA_TTL_S)
    return jwks


def authorization_start(
    *, provider_slug: str, client_id: str, scopes: str, metadata: ProviderMetadata, redirect_uri: str, next_url: str
) -> tuple[str, PendingAuthorization]:
    """The URL to send the browser to, and what to keep in its session until the callback."""
    pending = PendingAuthorization(
        provider=provider_slug,
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        code_verifier=generate_token(64),
        redirect_uri=redirect_uri,
        next_url=next_url,
    )
    client = OAuth2Client(
        client_id=client_id, redirect_uri=redirect_uri, scope=scopes, code_challenge_method="S256", verify=_tls()
    )
    try:
        url, _state = client.create_authorization_url(
            metadata.authorization_endpoint,
            state=pending.state,
            code_verifier=pending.code_verifier,
            nonce=pending.nonce,
        )
    finally:
        client.close()
    return url, pending


def code_exchange(
    *, client_id: str, client_secret: str, metadata: ProviderMetadata, pending: PendingAuthorization, code: str
) -> dict[str, Any]:
    """Trade the authorization code (and the PKCE verifier) for tokens at the token endpoint."""
    client = OAuth2Client(
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=pending.redirect_uri,
        token_endpoint_auth_method="client_secret_basic",
        timeout=HTTP_TIMEOUT_S,
        verify=_tls(),
    )
    try:
        token = client.fetch_token(
            metadata.token_endpoint,
            grant_type="authorization_code",
            code=code,
            code_verifier=pending.code_verifier,
            redirect_uri=pending.redirect_uri,
        )
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(details={"reason": type(exc).__name__}) from None
    except Exception as exc:  # authlib's OAuthError: the provider refused the code (expired, reused, wrong verifier)
        error = getattr(exc, "error", "") or type(exc).__name__
        raise SignInRefused(
            "The sign-in provider refused to complete the sign-in. Start again from the sign-in page.",
            code="oidc_code_refused",
            details={"provider_error": str(error)[:64]},
        ) from None
    finally:
        client.close()
    if not isinstance(token, dict) or not token.get("id_token"):
        raise SignInRefused("The sign-in provider sent no ID token.", code="oidc_no_id_token")
    return dict(token)


def _refuse(code: str, message: str) -> SignInRefused:
    return SignInRefused(message, code=code)


def id_token_validate(
    *,
    id_token: str,
    issuer: str,
    client_id: str,
    nonce: str,
    jwks: dict[str, Any],
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS,
    now: float | None = None,
) -> dict[str, Any]:
    """The ID token's claims, once every check of OpenID Connect Core §3.1.3.7 that applies has passed."""
    now = time.time() if now is None else now
    allowed = [a for a in algorithms if a in ALLOWED_ALGORITHMS]
    header = _header(id_token)
    alg = str(header.get("alg", ""))
    if alg.lower() == "none" or not alg:
        raise _refuse("oidc_unsigned_token", "The ID token is not signed; unsigned tokens are never accepted.")
    if alg not in allowed:
        raise _refuse("oidc_bad_algorithm", f"The ID token is signed with {alg[:16]}, which is not accepted.")
    try:
        key_set = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        token = jwt.decode(id_token, key_set, algorithms=allowed)
    except BadSignatureError:
        raise _refuse("oidc_bad_signature", "The ID token's signature does not match the provider's keys.") from None
    except (JoseError, ValueError, TypeError, KeyError):
        raise _refuse("oidc_malformed_token", "The ID token could not be read or verified.") from None
    claims = dict(token.claims)
    if claims.get("iss") != issuer:
        raise _refuse("oidc_wrong_issuer", "The ID token was issued by a different provider than the one configured.")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
    if client_id not in audiences:
        raise _refuse("oidc_wrong_audience", "The ID token was issued for a different application.")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise _refuse("oidc_wrong_audience", "The ID token was issued for a different application.")
    if "azp" in claims and claims["azp"] != client_id:
        raise _refuse("oidc_wrong_audience", "The ID token was issued for a different application.")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or exp + LEEWAY_S < now:
        raise _refuse("oidc_expired_token", "The ID token has expired. Start again from the sign-in page.")
    if not isinstance(iat, int | float) or iat - LEEWAY_S > now:
        raise _refuse("oidc_malformed_token", "The ID token's issue time is in the future.")
    token_nonce = claims.get("nonce")
    if not isinstance(token_nonce, str) or not hmac.compare_digest(token_nonce, nonce):
        raise _refuse("oidc_nonce_mismatch", "The ID token does not belong to this sign-in attempt.")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise _refuse("oidc_malformed_token", "The ID token names no subject.")
    return claims


def _header(id_token: str) -> dict[str, Any]:
    import base64
    import json

    try:
        raw = id_token.split(".")[0]
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except Exception:
        raise _refuse("oidc_malformed_token", "The ID token could not be read or verified.") from None
    if not isinstance(data, dict):
        raise _refuse("oidc_malformed_token", "The ID token could not be read or verified.")
    return data


def userinfo_get(*, metadata: ProviderMetadata, access_token: str, subject: str) -> dict[str, Any]:
    """Claims from the userinfo endpoint (groups often come only there); ``sub`` must match the ID token's."""
    if not metadata.userinfo_endpoint or not access_token:
        return {}
    try:
        response = httpx.get(
            metadata.userinfo_endpoint,
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=HTTP_TIMEOUT_S,
            verify=_tls(),
        )
        response.raise_for_status()
        data = response.json()
    except (httpx.HTTPError, ValueError):
        raise ProviderUnavailable(details={"reason": "userinfo"}) from None
    if not isinstance(data, dict) or data.get("sub") != subject:
        raise _refuse("oidc_userinfo_mismatch", "The provider's user information does not match the ID token.")
    return data


def end_session_url(
    *, metadata: ProviderMetadata, id_token_hint: str, client_id: str, post_logout_redirect_uri: str
) -> str:
    """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), or "" when the provider has none."""
    if not metadata.end_session_endpoint:
        return ""
    from urllib.parse import urlencode

    params = {"client_id": client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
    if id_token_hint:
        params["id_token_hint"] = id_token_hint
    sep = "&" if "?" in metadata.end_session_endpoint else "?"
    return metadata.end_session_endpoint + sep + urlencode(params)


def jwks_refresh_on_unknown_key(*, id_token: str, jwks: dict[str, Any], jwks_uri: str) -> dict[str, Any]:
    """Providers rotate keys: when the token's ``kid`` is not in the cached set, fetch the set once more."""
    kid = _header(id_token).get("kid")
    known = {k.get("kid") for k in jwks.get("keys", []) if isinstance(k, dict)}
    if kid and kid not in known:
        return jwks_get(jwks_uri=jwks_uri, refresh=True)
    return jwks
