"""The API door ends a stream as soon as its last token is guarded; persistence and the quota settlement follow.
Usage is never lost: it is promised in the settlement journal before ``[DONE]``, and a process killed between
``[DONE]`` and its settlement leaves the promise, which the quota sweep keeps, exactly once.

The portal runs here as a separate uvicorn process (so that it can be killed) on the suite's test database and the
session's real llama-server. The settlement is held back the way a slow database would hold it: this test locks the
usage table (reads go on; the settlement's insert waits), then kills the server after ``[DONE]``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection

from chat import services as chat_services
from chat.tasks import quota_sweep
from inference_pool.models import Backend
from tenants.models import QuotaCounter, QuotaReservation, UsageRecord
from tenants.settlements import journal, settlement_replay
from tests.api_harness import ApiKeys, make_api_keys, pool_backend, v1_stream_body  # noqa: F401
from tests.engine import free_port

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def portal_process(pool_backend: Backend) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:  # noqa: F811
    port = free_port()
    db = settings.DATABASES["default"]
    env = {k: v for k, v in os.environ.items() if k not in ("PORTAL_EPHEMERAL_DB", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(
        DATABASE_URL=urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + db["NAME"])),
        PORTAL_VAR_DIR=str(settings.VAR_DIR),  # the file journal (no Redis configured): this test reads it too
        REDIS_URL=settings.REDIS_URL,
        PYTHONPATH=str(ROOT),
    )
    log = Path(settings.VAR_DIR) / f"uvicorn-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--port", str(port), "--no-access-log"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "the portal process did not start"
        try:
            httpx.get(f"{url}/v1/models", timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.3)
    try:
        yield url, proc, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _stream(url: str, key: str) -> tuple[str, dict[str, Any]]:
    """A streamed answer; returns its text and the usage of its last chunk, once ``[DONE]`` arrived."""
    body = v1_stream_body(url, key, max_tokens=6)
    assert body.endswith("data: [DONE]\n\n"), "the stream ended without [DONE]"
    text, usage = "", None
    for line in body.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line.removeprefix("data: "))
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                text += choice["delta"].get("content") or ""
    assert usage is not None
    return text, usage


def _lock_the_usage_table() -> psycopg.Connection[Any]:
    params = connection.get_connection_params()
    lock = psycopg.connect(**{k: v for k, v in params.items() if k in ("host", "port", "user", "password", "dbname")})
    lock.execute(f"LOCK TABLE {UsageRecord._meta.db_table} IN EXCLUSIVE MODE")  # reads go on; inserts wait
    return lock


def test_a_process_killed_between_done_and_settlement_loses_no_usage(world, portal_process, monkeypatch):
    url, proc, _ = portal_process
    keys: ApiKeys = make_api_keys(world)
    lock = _lock_the_usage_table()
    try:
        _, usage = _stream(url, keys["member"])  # [DONE] arrives although the settlement cannot be written
        assert usage["completion_tokens"] > 0
        [promise] = [e for e in journal().entries() if e.tenant_id == world.tenant.pk]
        assert (promise.tokens_in, promise.tokens_out) == (usage["prompt_tokens"], usage["completion_tokens"])
        os.killpg(proc.pid, signal.SIGKILL)  # the process dies before its settlement
        proc.wait(timeout=10)
    finally:
        lock.rollback()
        lock.close()
    assert not UsageRecord.objects.for_tenant(world.tenant).exists()
    assert QuotaReservation.objects.for_tenant(world.tenant).count() == 1  # still held, not yet charged

    # the quota sweep keeps the promise (a minute later in production; at once here)
    monkeypatch.setattr(chat_services, "SETTLEMENT_REPLAY_AFTER_S", 0.0)
    quota_sweep()
    [record] = UsageRecord.objects.for_tenant(world.tenant).filter(source="api")
    assert (record.tokens_in, record.tokens_out) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert record.api_key_id == keys.keys["member"].pk and record.outcome == "complete"
    assert not QuotaReservation.objects.for_tenant(world.tenant).exists()
    day = QuotaCounter.objects.for_tenant(world.tenant).get(period="day")
    assert (day.used, day.reserved) == (usage["total_tokens"], 0)
    assert not [e for e in journal().entries() if e.tenant_id == world.tenant.pk]

    # exactly once: a promise replayed again (two sweeps racing) changes nothing
    journal().put(promise)
    assert settlement_replay(older_than_s=0) == 0
    assert not [e for e in journal().entries() if e.tenant_id == world.tenant.pk]
    assert UsageRecord.objects.for_tenant(world.tenant).count() == 1
    day.refresh_from_db()
    assert day.used == usage["total_tokens"]


def test_a_settlement_that_commits_removes_its_promise(world, portal_process):
    url, _, _ = portal_process
    keys: ApiKeys = make_api_keys(world)
    _, usage = _stream(url, keys["member"])
    deadline = time.monotonic() + 30
    while not UsageRecord.objects.for_tenant(world.tenant).exists():
        assert time.monotonic() < deadline, "the answer was not settled after its stream ended"
        time.sleep(0.05)
    [record] = UsageRecord.objects.for_tenant(world.tenant)
    assert record.tokens_out == usage["completion_tokens"]
    deadline = time.monotonic() + 10
    while [e for e in journal().entries() if e.tenant_id == world.tenant.pk]:
        assert time.monotonic() < deadline, "the kept promise stayed in the journal"
        time.sleep(0.05)


def test_a_graceful_shutdown_settles_what_it_streamed(world, portal_process):
    url, proc, log = portal_process
    keys: ApiKeys = make_api_keys(world)
    lock = _lock_the_usage_table()
    try:
        _, usage = _stream(url, keys["member"])
        proc.send_signal(signal.SIGTERM)  # a deploy stops the process while the settlement waits for the database
        time.sleep(1.0)
    finally:
        lock.rollback()
        lock.close()
    proc.wait(timeout=30)
    [record] = UsageRecord.objects.for_tenant(world.tenant)
    assert record.tokens_out == usage["completion_tokens"], log.read_text(errors="replace")[-2000:]
    assert not [e for e in journal().entries() if e.tenant_id == world.tenant.pk]
