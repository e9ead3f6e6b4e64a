"""Encryption at rest of the agents' stored secrets (HTTP tool credentials, webhook signing secrets).

Fernet with a key derived (HKDF-SHA256) from ``AGENT_SECRETS_KEY``, else ``PII_VAULT_KEY`` (required in production),
else ``SECRET_KEY`` (development). Several comma-separated secrets: the first encrypts, all decrypt (rotation).
Plaintext never leaves this module except to the caller that needs it at the moment of use.
"""

from __future__ import annotations

from core.crypto import InvalidToken, Keyring
from core.errors import ApplicationError

_KEYRING = Keyring("agent-secrets", ("AGENT_SECRETS_KEY", "PII_VAULT_KEY"))


class SecretUnreadable(ApplicationError):
    code = "secret_unreadable"
    status = 500
    default_message = "A stored secret could not be decrypted (was the key rotated?). Store the secret again."


def encrypt(value: str) -> bytes:
    return _KEYRING.encrypt(value.encode())


def decrypt(token: bytes | memoryview) -> str:
    try:
        return _KEYRING.decrypt(bytes(token)).decode()
    except InvalidToken:
        raise SecretUnreadable() from None
