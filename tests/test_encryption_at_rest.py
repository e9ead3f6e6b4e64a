"""Chat message text is encrypted at rest; agents' secrets share the same keyring mechanism."""

from __future__ import annotations

import pytest
from django.db import connection

from chat.models import Conversation, Message
from core.crypto import InvalidToken, Keyring


@pytest.mark.django_db
def test_message_text_is_encrypted_in_the_database_and_plain_in_python(world):
    conversation = Conversation.objects.create(tenant=world.tenant, user=world.member, title="t")
    secret = "my card is 4111 1111 1111 1111, call Alice Example"
    message = Message.objects.create(
        tenant=world.tenant,
        conversation=conversation,
        role="user",
        text=secret,
        masked_text="my card is <CREDIT_CARD_1>",
    )
    with connection.cursor() as cur:
        cur.execute("SELECT text, masked_text FROM chat_message WHERE id = %s", [message.pk])
        raw_text, raw_masked = cur.fetchone()
    assert raw_text.startswith("enc:v1:") and "4111" not in raw_text and "Alice" not in raw_text
    assert raw_masked.startswith("enc:v1:") and "CREDIT_CARD" not in raw_masked
    reloaded = Message.objects.for_tenant(world.tenant).get(pk=message.pk)
    assert reloaded.text == secret
    assert reloaded.masked_text == "my card is <CREDIT_CARD_1>"


@pytest.mark.django_db
def test_rows_written_before_encryption_are_still_readable(world):
    conversation = Conversation.objects.create(tenant=world.tenant, user=world.member, title="t")
    message = Message.objects.create(tenant=world.tenant, conversation=conversation, role="user", text="x")
    with connection.cursor() as cur:
        cur.execute("UPDATE chat_message SET text = 'legacy plaintext' WHERE id = %s", [message.pk])
    assert Message.objects.for_tenant(world.tenant).get(pk=message.pk).text == "legacy plaintext"


def test_key_rotation_old_key_still_decrypts(settings):
    ring = Keyring("test-purpose", ("PII_VAULT_KEY",))
    settings.PII_VAULT_KEY = "old-key-" + "a" * 40
    token = ring.encrypt(b"value")
    settings.PII_VAULT_KEY = "new-key-" + "b" * 40 + ",old-key-" + "a" * 40
    assert ring.decrypt(token) == b"value"
    settings.PII_VAULT_KEY = "new-key-" + "b" * 40
    with pytest.raises(InvalidToken):
        ring.decrypt(token)


def test_purposes_do_not_share_keys(settings):
    settings.PII_VAULT_KEY = "k" * 48
    token = Keyring("purpose-a", ("PII_VAULT_KEY",)).encrypt(b"v")
    with pytest.raises(InvalidToken):
        Keyring("purpose-b", ("PII_VAULT_KEY",)).decrypt(token)
