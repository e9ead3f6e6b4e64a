"""A real Celery worker process on Redis: killed mid-document, the document is redelivered and indexed with no
duplicate chunks; live progress reaches the page while the worker indexes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from knowledge.chunking import chunk_sections
from knowledge.models import Chunk, Document
from knowledge.parsing import parse_document
from knowledge.services import document_upload, knowledge_base_create
from knowledge.tests.test_ingestion import _assert_bm25_stats_consistent
from tests.celery_broker import celery_broker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REDIS_URL = "redis://127.0.0.1:6379/13"
ROOT = Path(__file__).resolve().parents[2]


def _test_database_url() -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + settings.DATABASES["default"]["NAME"]))


@pytest.fixture
def broker(settings):
    """Point this process's Celery producer at Redis with a private key prefix and queue; clean up the keys."""
    prefix = f"kbtest-{uuid.uuid4().hex[:8]}:"
    queue = f"ingest-test-{uuid.uuid4().hex[:6]}"
    settings.INGEST_QUEUE = queue
    with celery_broker(REDIS_URL, {"visibility_timeout": 15, "global_keyprefix": prefix}):
        yield {"prefix": prefix, "queue": queue}
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


class Worker:
    def __init__(self, broker: dict[str, str], log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("PORTAL_EPHEMERAL_DB", "PROMETHEUS_MULTIPROC_DIR")}
        env.update(
            DATABASE_URL=_test_database_url(),
            DJANGO_SETTINGS_MODULE="knowledge.tests.worker_settings",
            CELERY_BROKER_URL=REDIS_URL,
            KB_TEST_KEYPREFIX=broker["prefix"],
            PYTHONPATH=str(ROOT),
            OMP_NUM_THREADS="1",
        )
        self.log = log
        celery = str(Path(sys.executable).with_name("celery"))
        self.proc = subprocess.Popen(
            [
                celery,
                "-A",
                "portal",
                "worker",
                "-Q",
                broker["queue"],
                "-c",
                "1",
                "-P",
                "prefork",
                "-l",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"kbtest-{uuid.uuid4().hex[:6]}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def kill_child(self) -> int:
        [child] = self.children()
        os.kill(child, signal.SIGKILL)
        return child

    def kill_all(self) -> None:
        for child in self.children():
            os.kill(child, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill_all()


def _wait(predicate, *, timeout: float, what: str, worker: Worker):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    tail = worker.log.read_text(errors="replace")[-3000:] if worker.log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}; worker log tail:\n{tail}")


def _document(doc_id: int) -> Document:
    return Document.unscoped.get(pk=doc_id)


def _long_text(tag: str) -> bytes:
    return "\n\n".join(
        f"Section {i} ({tag}). The travel policy says employees book trains for trips under {i * 10} km, "
        f"hotels up to {100 + i} euros, and keep every receipt for the expense report."
        for i in range(160)
    ).encode()


def _expected_chunks(data: bytes, name: str, size: int, overlap: int) -> int:
    return len(chunk_sections(parse_document(data=data, filename=name).sections, chunk_size=size, overlap=overlap))


def _assert_complete_without_duplicates(doc: Document, expected: int) -> None:
    ordinals = list(Chunk.unscoped.filter(document_id=doc.pk).values_list("ordinal", flat=True))
    assert sorted(ordinals) == list(range(expected))
    assert doc.chunk_count == expected and doc.progress == 100 and doc.error == ""
    assert doc.attempts >= 2  # it really ran again


def test_killed_worker_redelivers_and_completes_without_duplicates(world, broker, tmp_path, login_client):
    kb = knowledge_base_create(tenant=world.tenant, actor=None, name="Travel", chunk_size=64, chunk_overlap=8)
    first_data, second_data = _long_text("one"), _long_text("two")
    expected_first = _expected_chunks(first_data, "one.txt", 64, 8)
    expected_second = _expected_chunks(second_data, "two.txt", 64, 8)
    assert expected_first > 40
    worker = Worker(broker, tmp_path / "worker.log")
    try:
        [result] = document_upload(
            knowledge_base=kb, actor=world.member, files=[SimpleUploadedFile("one.txt", first_data)]
        )
        doc_id = result.document.pk
        page = login_client(world.viewer)

        # 1. live progress reaches the page while the worker embeds
        def mid_document_page():
            html = page.get(f"/knowledge/{kb.pk}/documents", HTTP_HX_REQUEST="true").content.decode()
            match = re.search(r'<progress value="(\d+)" max="100" aria-label="one.txt', html)
            return (html, int(match.group(1))) if match and 20 < int(match.group(1)) < 90 else None

        html, shown = _wait(mid_document_page, timeout=240, what="progress mid-document on the page", worker=worker)
        assert 20 < shown < 90 and 'hx-trigger="every 1s"' in html and "embedding" in html
        _wait(
            lambda: (d := _document(doc_id)).status == "embedding" and d.progress <= 85,
            timeout=60,
            what="the first document still embedding",
            worker=worker,
        )

        # 2. kill the pool process that runs the task: the message is rejected, redelivered, and completed
        worker.kill_child()
        doc = _wait(
            lambda: (d := _document(doc_id)).status == "indexed" and d,
            timeout=240,
            what="indexing after the pool process was killed",
            worker=worker,
        )
        _assert_complete_without_duplicates(doc, expected_first)
        assert "WorkerLostError" in worker.log.read_text(errors="replace")

        # 3. kill the whole worker mid-document; a new worker gets the message back (visibility timeout)
        [result] = document_upload(
            knowledge_base=kb, actor=world.member, files=[SimpleUploadedFile("two.txt", second_data)]
        )
        second_id = result.document.pk
        _wait(
            lambda: (d := _document(second_id)).status == "embedding" and 25 <= d.progress <= 85,
            timeout=240,
            what="second document mid-embedding",
            worker=worker,
        )
        worker.kill_all()
        stalled = _document(second_id)
        assert stalled.status == "embedding"
        worker = Worker(broker, tmp_path / "worker2.log")
        doc = _wait(
            lambda: (d := _document(second_id)).status == "indexed" and d,
            timeout=300,
            what="indexing by a fresh worker",
            worker=worker,
        )
        _assert_complete_without_duplicates(doc, expected_second)
        _assert_bm25_stats_consistent(kb)
        final = page.get(f"/knowledge/{kb.pk}/documents", HTTP_HX_REQUEST="true").content.decode()
        assert "every 1s" not in final and final.count("badge ok") == 2
    finally:
        worker.stop()
