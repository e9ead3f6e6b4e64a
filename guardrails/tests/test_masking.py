"""Reversible masking: placeholders, the encrypted per-scope vault, policies, audit and metrics."""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connection

from core.errors import GuardrailBlocked, GuardrailUnavailable, InvalidInput
from guardrails import vault
from guardrails.models import PiiVault
from guardrails.services import guardrail_policy_update, mask, pii_counts, pii_vault_delete, unmask
from guardrails.tests.conftest import sample
from tenants.models import AuditEvent

pytestmark = pytest.mark.usefixtures("analyzer")

PROMPT = (
    "Please draft a reply to John Smith (john.smith@example.com, +1 212-555-0199) about his refund. "
    "His card 4111 1111 1111 1111 was charged twice."
)


def test_round_trip_through_a_model_like_rewrite(world):
    masked = mask(tenant=world.tenant, scope_key="conversation:1", text=PROMPT)
    assert "John Smith" not in masked.text
    assert "john.smith@example.com" not in masked.text
    assert "4111" not in masked.text
    assert masked.counts == {"PERSON": 1, "EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1, "CREDIT_CARD": 1}
    assert "<PERSON_1>" in masked.text and "<EMAIL_ADDRESS_1>" in masked.text
    # what a model does with it: reorders, repeats, and invents or mangles a few placeholders
    answer = (
        "Dear <PERSON_1>,\n\nwe refunded the double charge on card <CREDIT_CARD_1>. A confirmation goes to "
        "<EMAIL_ADDRESS_1>; call us if <PERSON_1> has questions. Ask <PERSON_7> and < PERSON_1> or <PERSON 1>."
    )
    shown = unmask(tenant=world.tenant, scope_key="conversation:1", text=answer)
    assert shown == (
        "Dear John Smith,\n\nwe refunded the double charge on card 4111 1111 1111 1111. A confirmation goes to "
        "john.smith@example.com; call us if John Smith has questions. Ask <PERSON_7> and < PERSON_1> or <PERSON 1>."
    )


def test_the_same_value_twice_gets_one_placeholder(world):
    first = mask(
        tenant=world.tenant,
        scope_key="conversation:2",
        text="Mail jane.doe@example.com and then JANE.DOE@example.com again, from Jane Doe.",
    )
    assert first.text.count("<EMAIL_ADDRESS_1>") == 2
    assert "<EMAIL_ADDRESS_2>" not in first.text
    assert first.counts["EMAIL_ADDRESS"] == 2
    # a later turn of the same conversation reuses the mapping, even where NER would not fire on its own
    second = mask(tenant=world.tenant, scope_key="conversation:2", text="Did Jane Doe answer jane.doe@example.com?")
    assert second.text == "Did <PERSON_1> answer <EMAIL_ADDRESS_1>?"


def test_the_vault_is_encrypted_at_rest_and_needs_the_key(world, settings):
    mask(tenant=world.tenant, scope_key="conversation:3", text="Call Maria Garcia at maria.garcia@example.org")
    row = PiiVault.objects.for_tenant(world.tenant).get(scope_key="conversation:3")
    raw = bytes(row.ciphertext)
    assert b"maria" not in raw.lower() and b"garcia" not in raw.lower()
    with connection.cursor() as cursor:
        cursor.execute("SELECT ciphertext::text FROM guardrails_piivault WHERE id = %s", [row.pk])
        assert "garcia" not in cursor.fetchone()[0].lower()
    assert vault.decrypt(raw).values == {
        "<PERSON_1>": "Maria Garcia",
        "<EMAIL_ADDRESS_1>": "maria.garcia@example.org",
    }
    settings.PII_VAULT_KEY = "a-completely-different-vault-key-0123456789"
    with pytest.raises(GuardrailUnavailable) as err:
        unmask(tenant=world.tenant, scope_key="conversation:3", text="<PERSON_1>")
    assert err.value.code == "guardrail_unavailable"
    # key rotation: the new key first, the old one still decrypts
    settings.PII_VAULT_KEY = "a-completely-different-vault-key-0123456789," + settings.SECRET_KEY
    assert unmask(tenant=world.tenant, scope_key="conversation:3", text="<PERSON_1>") == "Maria Garcia"


def test_vaults_are_per_tenant_and_per_scope(world):
    mask(tenant=world.tenant, scope_key="conversation:4", text="Write to Peter Parker.")
    assert unmask(tenant=world.other_tenant, scope_key="conversation:4", text="Hi <PERSON_1>") == "Hi <PERSON_1>"
    assert unmask(tenant=world.tenant, scope_key="conversation:5", text="Hi <PERSON_1>") == "Hi <PERSON_1>"
    assert unmask(tenant=world.tenant, scope_key="conversation:4", text="Hi <PERSON_1>") == "Hi Peter Parker"
    assert pii_vault_delete(tenant=world.tenant, scope_key="conversation:4") == 1
    assert unmask(tenant=world.tenant, scope_key="conversation:4", text="Hi <PERSON_1>") == "Hi <PERSON_1>"


@pytest.mark.django_db(transaction=True)
def test_concurrent_conversations_never_share_a_mapping(analyzer):
    from tests.factories import TenantFactory

    tenant = TenantFactory()
    names = {
        "conversation:101": ["Alice Johnson", "Robert Brown", "Emily Davis"],
        "conversation:102": ["Michael Wilson", "Sarah Miller", "David Moore"],
    }
    results: dict[str, list[str]] = {k: [] for k in names}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(names))

    def converse(scope: str) -> None:
        try:
            barrier.wait(timeout=10)
            for name in names[scope]:
                results[scope].append(mask(tenant=tenant, scope_key=scope, text=f"Please invite {name}.").text)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=converse, args=(scope,)) for scope in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    for scope, expected in names.items():
        assert results[scope] == [f"Please invite <PERSON_{i}>." for i in (1, 2, 3)]
        mapping = vault.decrypt(bytes(PiiVault.objects.for_tenant(tenant).get(scope_key=scope).ciphertext))
        assert sorted(mapping.values.values()) == sorted(expected)
        shown = unmask(tenant=tenant, scope_key=scope, text="<PERSON_1>, <PERSON_2>, <PERSON_3>")
        assert shown == ", ".join(expected)


@pytest.mark.django_db(transaction=True)
def test_concurrent_turns_of_one_conversation_get_distinct_placeholders(analyzer):
    from tests.factories import TenantFactory

    tenant = TenantFactory()
    people = ["Alice Johnson", "Robert Brown", "Emily Davis", "Michael Wilson"]
    out: dict[str, str] = {}
    barrier = threading.Barrier(len(people))

    def turn(name: str) -> None:
        try:
            barrier.wait(timeout=10)
            out[name] = mask(tenant=tenant, scope_key="conversation:200", text=f"Invite {name}.").text
        finally:
            connection.close()

    threads = [threading.Thread(target=turn, args=(n,)) for n in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    placeholders = {re.search(r"<PERSON_\d+>", text).group(0) for text in out.values()}  # type: ignore[union-attr]
    assert placeholders == {"<PERSON_1>", "<PERSON_2>", "<PERSON_3>", "<PERSON_4>"}
    for name, text in out.items():
        assert unmask(tenant=tenant, scope_key="conversation:200", text=text) == f"Invite {name}."


def test_mask_is_audited_and_counted_without_values(world):
    before = sample("portal_pii_entities_total", {"entity_type": "EMAIL_ADDRESS", "action": "mask"})
    mask(tenant=world.tenant, scope_key="conversation:6", text="Reach Tom Baker via tom.baker@example.net or tb@x.io")
    after = sample("portal_pii_entities_total", {"entity_type": "EMAIL_ADDRESS", "action": "mask"})
    assert after - before == 2
    event = AuditEvent.objects.filter(tenant=world.tenant, action="guardrail.pii_mask").latest("id")
    assert event.details == {
        "stage": "input",
        "entities": {"EMAIL_ADDRESS": 2, "PERSON": 1},
        "total": 3,
        "scope": "conversation:6",
    }
    assert "tom" not in str(event.details).lower()


def test_a_blocked_entity_type_refuses_the_text(world):
    guardrail_policy_update(tenant=world.tenant, entity_actions={"CREDIT_CARD": "block"})
    with pytest.raises(GuardrailBlocked) as err:
        mask(tenant=world.tenant, scope_key="conversation:7", text="My card is 4111-1111-1111-1111, thanks.")
    assert "credit card number" in err.value.message
    assert err.value.details == {"entities": ["CREDIT_CARD"]}
    event = AuditEvent.objects.filter(tenant=world.tenant, action="guardrail.pii_block").latest("id")
    assert event.details["entities"] == {"CREDIT_CARD": 1}
    assert "4111" not in str(event.details)
    assert not PiiVault.objects.for_tenant(world.tenant).filter(scope_key="conversation:7").exists()
    # the other department keeps the default (mask)
    other = mask(tenant=world.other_tenant, scope_key="conversation:7", text="My card is 4111-1111-1111-1111.")
    assert other.text == "My card is <CREDIT_CARD_1>."


def test_allowed_types_pass_and_custom_recognizers_mask(world):
    guardrail_policy_update(
        tenant=world.tenant,
        entity_actions={"PERSON": "allow"},
        custom_recognizers=[{"entity_type": "EMPLOYEE_ID", "pattern": r"\bEMP-\d{6}\b", "score": 0.9}],
        deny_lists={"PROJECT": ["Bluebird", "Nightjar"]},
    )
    result = mask(
        tenant=world.tenant,
        scope_key="conversation:8",
        text="Anna Schmidt (EMP-004211) leads Project Bluebird; EMP-004211 reports to Nightjar.",
    )
    assert result.text == (
        "Anna Schmidt (<EMPLOYEE_ID_1>) leads Project <PROJECT_1>; <EMPLOYEE_ID_1> reports to <PROJECT_2>."
    )
    assert result.counts == {"EMPLOYEE_ID": 2, "PROJECT": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"entity_actions": {"PERSON": "shred"}}, "allow, mask or block", id="unknown-action"),
        pytest.param({"entity_actions": {"person": "mask"}}, "not an entity type", id="lowercase-type"),
        pytest.param(
            {"custom_recognizers": [{"entity_type": "EMPLOYEE_ID", "pattern": "EMP-(\\d"}]},
            "not a valid regular expression",
            id="bad-regex",
        ),
        pytest.param(
            {"custom_recognizers": [{"entity_type": "REPEAT", "pattern": "(\\w)\\1"}]},
            "cannot run in guaranteed linear time (back-references",
            id="back-reference",
        ),
        pytest.param(
            {"custom_recognizers": [{"entity_type": "LOOKBEHIND", "pattern": "(?<=EMP-)\\d+"}]},
            "cannot run in guaranteed linear time",
            id="look-behind",
        ),
        pytest.param(
            {"custom_recognizers": [{"entity_type": "HUGE", "pattern": "(?:\\w{1000}){1000}"}]},
            "cannot be used",
            id="too-large",
        ),
        pytest.param(
            {"custom_recognizers": [{"entity_type": "EMPTY", "pattern": "x*"}]}, "matches empty text", id="empty"
        ),
        pytest.param(
            {"custom_recognizers": [{"entity_type": "PERSON", "pattern": "x"}]}, "built in", id="builtin-type"
        ),
        pytest.param({"injection_strictness": "paranoid"}, "low, medium or high", id="strictness"),
    ],
)
def test_policy_validation_explains_the_problem(world, kwargs, message):
    with pytest.raises(InvalidInput) as err:
        guardrail_policy_update(tenant=world.tenant, **kwargs)
    assert message in err.value.message
    assert not AuditEvent.objects.filter(tenant=world.tenant, action="guardrail.policy_update").exists()


def test_scope_keys_and_sizes_are_checked(world, settings):
    with pytest.raises(InvalidInput):
        mask(tenant=world.tenant, scope_key="", text="hi")
    with pytest.raises(InvalidInput):
        unmask(tenant=world.tenant, scope_key="conversation 1; drop", text="hi")
    settings.GUARDRAIL_MAX_CHARS = 10
    with pytest.raises(InvalidInput) as err:
        mask(tenant=world.tenant, scope_key="conversation:9", text="x" * 11)
    assert "too long" in err.value.message


def test_pii_counts_for_ingestion_store_nothing(world):
    counts = pii_counts(tenant=world.tenant, texts=["Contact Jane Roe at jane@example.com.", "No personal data."])
    assert counts == [{"PERSON": 1, "EMAIL_ADDRESS": 1}, {}]
    assert not PiiVault.objects.for_tenant(world.tenant).exists()
    assert not AuditEvent.objects.filter(tenant=world.tenant, action__startswith="guardrail.pii").exists()
