"""Every empty file has the same hash: each is refused on its own row, never renaming an earlier one."""

from __future__ import annotations

from knowledge.models import Document
from knowledge.tests.conftest import upload


def test_each_empty_file_gets_its_own_refused_row(world, kb):
    first = upload(kb, "zero.pdf", b"")
    second = upload(kb, "empty2.txt", b"")
    assert first.pk != second.pk
    rows = {d.filename: d for d in Document.objects.for_tenant(world.tenant).filter(knowledge_base=kb)}
    assert set(rows) == {"zero.pdf", "empty2.txt"}
    assert all(d.status == "failed" and d.error == "The file is empty." for d in rows.values())


def test_the_same_non_empty_bytes_are_still_one_document(world, kb):
    first = upload(kb, "a.txt", b"the same words")
    second = upload(kb, "b.txt", b"the same words")
    assert first.pk == second.pk
    assert Document.objects.for_tenant(world.tenant).filter(knowledge_base=kb).count() == 1
