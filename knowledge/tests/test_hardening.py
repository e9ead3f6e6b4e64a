"""Hostile uploads: linear-time sniffing, parsing in a limited child process, poison documents set aside."""

from __future__ import annotations

import os
import time

import pytest

from knowledge import sandbox
from knowledge.models import Document
from knowledge.parsing import DocumentRejected, markdown_heading
from knowledge.sandbox import ParseLimits, parse_document_isolated
from knowledge.services import document_reindex
from knowledge.tasks import ingest_document
from knowledge.tests.conftest import upload

QUICK = ParseLimits(cpu_seconds=2, memory_mb=256, wall_seconds=10)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        # ``(<!--.*?-->\s*)*`` backtracked exponentially: 148 bytes took about a second, each 7 more doubled it
        pytest.param(b"<!---->" * 40 + b"x", "text", id="html-prologue-comments"),
        pytest.param(b"<!---->" * 40 + b"<html><body><p>Hi</p></body></html>", "html", id="html-after-comments"),
        # ``(.+?)\s*#*\s*$`` was cubic on a long heading line
        pytest.param(b"# a" + b" " * 3000 + b"x\n\nbody text\n", "markdown", id="markdown-heading-spaces"),
        pytest.param(b"## a" + b" #" * 3000 + b"x\n\nbody text\n", "markdown", id="markdown-heading-hashes"),
    ],
)
def test_pathological_sniffing_is_linear(data: bytes, kind: str) -> None:
    started = time.monotonic()
    parsed = parse_document_isolated(data=data, filename="upload", limits=QUICK)
    assert parsed.detected_type == kind
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# Title", (1, "Title")),
        ("### Travel budget ###", (3, "Travel budget")),
        ("  ## Spaced  ", (2, "Spaced")),
        ("#NoSpace", None),
        ("####### seven", None),
        ("#", None),
        ("# #", (1, "#")),
        ("# C#", (1, "C#")),
    ],
)
def test_markdown_heading(line: str, expected: tuple[int, str] | None) -> None:
    assert markdown_heading(line) == expected


def _spin(*, data: bytes, filename: str) -> None:
    while True:
        pass


def _hog(*, data: bytes, filename: str) -> None:
    blocks = []
    while True:
        blocks.append(bytearray(64 * 1024 * 1024))


def _crash(*, data: bytes, filename: str) -> None:
    os.abort()


@pytest.mark.parametrize(
    ("parser", "message"),
    [
        pytest.param(_spin, "seconds of processing", id="cpu"),
        pytest.param(_hog, "more than 256 MB of memory", id="memory"),
        pytest.param(_crash, "more than 256 MB of memory", id="native-abort"),
    ],
)
def test_a_runaway_parser_fails_alone_with_a_reason(monkeypatch, parser, message) -> None:
    monkeypatch.setattr(sandbox, "parse_document", parser)  # the forked child inherits the patch
    started = time.monotonic()
    with pytest.raises(DocumentRejected) as caught:
        parse_document_isolated(data=b"hello", filename="a.txt", limits=QUICK)
    assert message in caught.value.message
    assert time.monotonic() - started < 11
    monkeypatch.undo()
    assert parse_document_isolated(data=b"still here", filename="b.txt").sections[0].text == "still here"


def test_wall_clock_deadline_kills_a_sleeping_child(monkeypatch) -> None:
    monkeypatch.setattr(sandbox, "parse_document", lambda **kw: time.sleep(60))  # sleeping burns no CPU
    started = time.monotonic()
    with pytest.raises(DocumentRejected, match="more than 1 seconds"):
        parse_document_isolated(data=b"x", filename="a.txt", limits=ParseLimits(wall_seconds=1))
    assert time.monotonic() - started < 3


@pytest.mark.django_db
def test_a_poison_document_is_set_aside_after_the_attempt_limit(world, kb, settings) -> None:
    settings.KNOWLEDGE_MAX_ATTEMPTS = 3
    doc = upload(kb, "crash.txt", b"this file killed three workers")
    # three deliveries started and never ended (each worker died mid-document)
    Document.unscoped.filter(pk=doc.pk).update(status=Document.Status.PARSING, attempts=3)
    assert ingest_document.run(doc.pk) == "failed"
    doc.refresh_from_db()
    assert doc.status == Document.Status.FAILED
    assert "started 3 times and never finished" in doc.error
    assert doc.chunk_count == 0
    # a person may try again (e.g. after a parser fix): the count starts over and the file is indexed
    document_reindex(document=doc, actor=world.admin)
    assert ingest_document.run(doc.pk) == "indexed"
    doc.refresh_from_db()
    assert (doc.status, doc.attempts) == (Document.Status.INDEXED, 1)


@pytest.mark.django_db
def test_below_the_limit_a_redelivered_document_is_indexed(world, kb, settings) -> None:
    settings.KNOWLEDGE_MAX_ATTEMPTS = 3
    doc = upload(kb, "ok.txt", b"a worker died once while reading this")
    Document.unscoped.filter(pk=doc.pk).update(status=Document.Status.PARSING, attempts=2)
    assert ingest_document.run(doc.pk) == "indexed"
