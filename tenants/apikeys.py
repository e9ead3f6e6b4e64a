"""API key format and hashing. A key is ``ep_<prefix>_<secret>``; only the prefix and a SHA-256 of the whole key
are stored. The secrets are 256-bit random, so a fast hash is the right tool (no password stretching needed)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "ep_"


def generate_key() -> tuple[str, str, str]:
    """Return (full key shown once, prefix, hash)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    full = f"{KEY_PREFIX}{prefix}_{secret}"
    return full, prefix, hash_key(full)


def hash_key(full_key: str) -> str:
    return hashlib.sha256(full_key.encode()).hexdigest()


def parse_prefix(full_key: str) -> str | None:
    if not full_key.startswith(KEY_PREFIX):
        return None
    rest = full_key[len(KEY_PREFIX) :]
    prefix, sep, secret = rest.partition("_")
    if not sep or len(prefix) != 12 or not secret:
        return None
    return prefix


def matches(full_key: str, hashed: str) -> bool:
    return hmac.compare_digest(hash_key(full_key), hashed)
