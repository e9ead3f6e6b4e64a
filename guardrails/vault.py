"""Encryption of PII vaults at rest and the placeholder mapping.

The Fernet key is derived (HKDF-SHA256) from settings.PII_VAULT_KEY; in development, when that is empty, from
SECRET_KEY (production refuses to start without PII_VAULT_KEY). PII_VAULT_KEY may list several comma-separated
secrets: the first encrypts, all decrypt (key rotation). Plaintext mappings never leave this module except as the
``Mapping`` object the services use; nothing here logs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from core.crypto import InvalidToken, Keyring

PLACEHOLDER_RE = re.compile(r"<([A-Z][A-Z0-9_]{0,39})_(\d{1,6})>")

_KEYRING = Keyring("pii-vault", ("PII_VAULT_KEY",))


class VaultKeyError(RuntimeError):
    """The vault could not be decrypted with the configured key(s)."""


def normalize_value(entity_type: str, value: str) -> str:
    """The identity of a value for "same value, same placeholder": case and spacing do not make a new entity."""
    v = " ".join(value.split())
    if entity_type in {"CREDIT_CARD", "PHONE_NUMBER", "US_SSN", "IBAN_CODE"}:
        digits = re.sub(r"[^0-9A-Za-z+]", "", v)
        return digits.upper()
    return v.casefold()


@dataclass
class Mapping:
    """placeholder → value, and per entity type the last number used."""

    values: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    _index: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for placeholder, value in self.values.items():
            self._index[(self.types[placeholder], normalize_value(self.types[placeholder], value))] = placeholder

    def placeholder_for(self, entity_type: str, value: str) -> tuple[str, bool]:
        """The placeholder of a value (created when new); the flag says whether it was created."""
        key = (entity_type, normalize_value(entity_type, value))
        existing = self._index.get(key)
        if existing is not None:
            return existing, False
        n = self.counters.get(entity_type, 0) + 1
        self.counters[entity_type] = n
        placeholder = f"<{entity_type}_{n}>"
        self.values[placeholder] = value
        self.types[placeholder] = entity_type
        self._index[key] = placeholder
        return placeholder, True

    def known_values(self) -> list[tuple[str, str, str]]:
        """(value, entity type, placeholder), longest value first."""
        items = [(v, self.types[p], p) for p, v in self.values.items()]
        return sorted(items, key=lambda item: -len(item[0]))

    def restore(self, text: str) -> str:
        """Replace known placeholders; unknown or mangled ones are left exactly as they are."""
        return PLACEHOLDER_RE.sub(lambda m: self.values.get(m.group(0), m.group(0)), text)

    def to_json(self) -> bytes:
        return json.dumps(
            {"v": 1, "values": self.values, "types": self.types, "counters": self.counters}, ensure_ascii=False
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Mapping:
        data = json.loads(raw)
        return cls(values=dict(data["values"]), types=dict(data["types"]), counters=dict(data["counters"]))


def encrypt(mapping: Mapping) -> bytes:
    return _KEYRING.encrypt(mapping.to_json())


def decrypt(token: bytes | memoryview) -> Mapping:
    if isinstance(token, memoryview):
        token = token.tobytes()
    if not token:
        return Mapping()
    try:
        return Mapping.from_json(_KEYRING.decrypt(token))
    except InvalidToken:
        raise VaultKeyError("The PII vault cannot be decrypted with the configured PII_VAULT_KEY.") from None
