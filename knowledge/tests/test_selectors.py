"""The knowledge selectors other apps read documents through (the agents' read_document tool)."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import NotFound
from knowledge.models import Access
from knowledge.selectors import document_chunk_text_list, document_get_readable
from knowledge.services import knowledge_base_create
from knowledge.tests.conftest import ingest, upload

TEXT = b"Company cars are electric.\n\nBicycles are reimbursed monthly."


@pytest.mark.django_db
def test_a_readable_document_and_its_text_in_order(world: Any) -> None:
    open_kb = knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Open")
    admins_only = knowledge_base_create(
        tenant=world.tenant, actor=world.admin, name="Board", read_access=Access.ROLES, read_roles=["admin"]
    )
    doc = ingest(upload(open_kb, "cars.txt", TEXT))
    secret = upload(admins_only, "board.txt", b"Minutes.")

    found = document_get_readable(tenant=world.tenant, role="viewer", document_id=doc.pk)
    assert found.pk == doc.pk
    assert " ".join(document_chunk_text_list(document=found)).count("Bicycles") == 1

    cases = [
        ("viewer", secret.pk, None),  # a knowledge base the role may not read
        ("admin", doc.pk, [admins_only.pk]),  # outside the knowledge bases asked for
        ("admin", doc.pk + 10_000, None),  # missing
    ]
    for role, document_id, kb_ids in cases:
        with pytest.raises(NotFound):
            document_get_readable(tenant=world.tenant, role=role, document_id=document_id, knowledge_base_ids=kb_ids)
    with pytest.raises(NotFound):  # another department's document answers like a missing one
        document_get_readable(tenant=world.other_tenant, role="admin", document_id=doc.pk)
    assert document_chunk_text_list(document=secret) == []  # not indexed yet
