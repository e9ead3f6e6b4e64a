"""Model fields shared by the apps."""

from __future__ import annotations

from typing import Any

from django.db import models

from core.crypto import InvalidToken, Keyring

_TEXT_KEYRING = Keyring("stored-text", ("PII_VAULT_KEY",))
_PREFIX = "enc:v1:"


class EncryptedTextField(models.TextField):
    """Text encrypted at rest (Fernet, key from PII_VAULT_KEY). Not searchable or indexable by content: a lookup
    value would be encrypted with a fresh nonce and match nothing, so query these columns only for emptiness.

    Rows written before the field was encrypted are read as they are (no prefix) and encrypted on their next save.
    """

    description = "Text encrypted at rest"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None or not value.startswith(_PREFIX):
            return value
        try:
            return _TEXT_KEYRING.decrypt(value[len(_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise ValueError(
                "stored text could not be decrypted with PII_VAULT_KEY; "
                "was the key changed without keeping the old one in the list?"
            ) from None

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return _PREFIX + _TEXT_KEYRING.encrypt(str(value).encode()).decode()
