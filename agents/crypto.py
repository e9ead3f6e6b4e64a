"""Encryption at rest of the agents' stored secrets (HTTP tool credentials, webhook signing secrets).

Fernet with a key derived (HKDF-SHA256) from ``AGENT_SECRETS_KEY``, else ``PII_VAULT_KEY`` (required in production),
else ``SECRET_KEY`` (development). Several comma-separated secrets: the first encrypts, all decrypt (rotation).
Plaintext never leaves this module except to the caller that needs it at the moment of use.
"""

from __future__ import annotations

import base64
import threading

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from portal.errors import ApplicationError

_lock = threading.Lock()
_cached: tuple[tuple[str, ...], MultiFernet] | None = None


class SecretUnreadable(ApplicationError):
    code = "secret_unreadable"
    status = 500
    default_message = "A stored secret could not be decrypted (was the key rotated?). Store the secret again."


def _secrets() -> tuple[str, ...]:
    for name in ("AGENT_SECRETS_KEY", "PII_VAULT_KEY"):
        raw = str(getattr(settings, name, "") or "")
        found = tuple(s.strip() for s in raw.split(",") if s.strip())
        if found:
            return found
    return (str(settings.SECRET_KEY),)


def _derive(secret: str) -> Fernet:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"enterprise-portal/agent-secrets/v1", info=b"fernet")
    return Fernet(base64.urlsafe_b64encode(hkdf.derive(secret.encode())))


def _fernet() -> MultiFernet:
    global _cached
    secrets = _secrets()
    with _lock:
        if _cached is None or _cached[0] != secrets:
            _cached = (secrets, MultiFernet([_derive(s) for s in secrets]))
        return _cached[1]


def encrypt(value: str) -> bytes:
    return _fernet().encrypt(value.encode())


def decrypt(token: bytes | memoryview) -> str:
    try:
        return _fernet().decrypt(bytes(token)).decode()
    except InvalidToken:
        raise SecretUnreadable() from None
