"""Encryption at rest: one keyring per purpose, Fernet keys derived (HKDF-SHA256) from secrets in settings.

A setting may list several comma-separated secrets: the first encrypts, all decrypt (key rotation). When none of the
named settings is set (development only — production refuses to start without PII_VAULT_KEY), SECRET_KEY is used.
Each purpose has its own salt, so a key never serves two purposes.
"""

from __future__ import annotations

import base64
import threading

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

__all__ = ["InvalidToken", "Keyring"]


class Keyring:
    def __init__(self, purpose: str, key_settings: tuple[str, ...]) -> None:
        self.salt = f"enterprise-portal/{purpose}/v1".encode()
        self.key_settings = key_settings
        self._lock = threading.Lock()
        self._cached: tuple[tuple[str, ...], MultiFernet] | None = None

    def _secrets(self) -> tuple[str, ...]:
        for name in self.key_settings:
            raw = str(getattr(settings, name) or "")
            found = tuple(s.strip() for s in raw.split(",") if s.strip())
            if found:
                return found
        return (str(settings.SECRET_KEY),)

    def _derive(self, secret: str) -> Fernet:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=self.salt, info=b"fernet")
        return Fernet(base64.urlsafe_b64encode(hkdf.derive(secret.encode())))

    def fernet(self) -> MultiFernet:
        secrets = self._secrets()
        with self._lock:
            if self._cached is None or self._cached[0] != secrets:
                self._cached = (secrets, MultiFernet([self._derive(s) for s in secrets]))
            return self._cached[1]

    def encrypt(self, data: bytes) -> bytes:
        return self.fernet().encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        """Raises ``InvalidToken`` when no configured key opens it."""
        return self.fernet().decrypt(token)
