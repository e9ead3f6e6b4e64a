"""The checks of a single sign-on answer, in one place for the pages and the tests: an ID token accepted once
(``oidc_id_token_accept``) and the one log line of a refusal (``refusal_log``: reason code, provider, never a token,
a code, an assertion or a secret)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from core.errors import ApplicationError
from identity import oidc, services
from identity.errors import SignInRefused
from identity.models import IdentityProvider

logger = logging.getLogger("identity.sign_in")


def refusal_log(error: ApplicationError, *, provider: str = "", kind: str = "", ip: str | None = None) -> None:
    if getattr(error, "logged", False):
        return
    logger.warning(
        "sign-in refused: %s",
        error.code,
        extra={"provider": provider, "sso_kind": kind, "reason": error.code, "client_ip": ip},
    )
    error.logged = True  # type: ignore[attr-defined]


def oidc_id_token_accept(
    *, provider: IdentityProvider, metadata: oidc.ProviderMetadata, id_token: str, nonce: str
) -> dict[str, Any]:
    """Validate the ID token against the provider's published keys and the sign-in's nonce, and spend the nonce:
    the same token (or any token with that nonce) is refused from then on."""
    try:
        jwks = oidc.jwks_get(jwks_uri=metadata.jwks_uri)
        jwks = oidc.jwks_refresh_on_unknown_key(id_token=id_token, jwks=jwks, jwks_uri=metadata.jwks_uri)
        claims = oidc.id_token_validate(
            id_token=id_token,
            issuer=provider.issuer,
            client_id=provider.client_id,
            nonce=nonce,
            jwks=jwks,
            algorithms=metadata.algorithms,
        )
        services.replay_guard_consume(
            kind="oidc_nonce",
            value=f"{provider.issuer}|{nonce}",
            expires_at=datetime.fromtimestamp(float(claims["exp"]), tz=UTC) + timedelta(hours=1),
        )
    except SignInRefused as exc:
        refusal_log(exc, provider=provider.slug, kind="oidc")
        raise
    return claims
