"""The chat in a real browser: headless Debian Chromium driven by Playwright against a live ASGI server.

The whole real path: uvicorn serves ``portal.asgi`` unwrapped (HTTP, WebSockets, static files) in a thread of the test
process on the test database; the document is uploaded through the knowledge page and indexed by a real Celery
worker process (Redis broker, a private queue and key prefix); the answer streams from the real llama-server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connections

from tests.engine import free_port
from tests.fixtures import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.engine, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REDIS_URL = "redis://127.0.0.1:6379/6"
HANDBOOK = (
    "# Zephyr travel handbook\n\n"
    "## Meals\n\n"
    "On business trips the daily meal allowance is 42 euros per day. Keep every receipt.\n\n"
    "## Trains\n\n"
    "Employees book trains for trips shorter than 600 kilometres; flights need a director's approval.\n"
)


class AsgiServer:
    """uvicorn serving ``portal.asgi`` as it is (HTTP, WebSockets and its own static files: nothing wrapped), in a
    thread of this process (so on the pytest database)."""

    def __init__(self) -> None:
        import uvicorn

        from portal.asgi import application as app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning", ws="websockets-sansio"
            )
        )
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> AsgiServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the live server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        connections.close_all()


@pytest.fixture
def celery_worker(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """A real Celery worker process consuming a private ingest queue on Redis; this process produces to it."""
    import redis

    from tests.celery_broker import celery_broker

    prefix = f"browser-{uuid.uuid4().hex[:8]}:"
    queue = f"ingest-browser-{uuid.uuid4().hex[:6]}"
    settings.INGEST_QUEUE = queue
    switch = celery_broker(REDIS_URL, {"visibility_timeout": 60, "global_keyprefix": prefix})
    switch.__enter__()
    parts = urlsplit(os.environ["DATABASE_URL"])
    env = {k: v for k, v in os.environ.items() if k not in ("PORTAL_EPHEMERAL_DB", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(
        DATABASE_URL=urlunsplit(parts._replace(path="/" + settings.DATABASES["default"]["NAME"])),
        DJANGO_SETTINGS_MODULE="knowledge.tests.worker_settings",  # portal settings + the Redis key prefix
        CELERY_BROKER_URL=REDIS_URL,
        KB_TEST_KEYPREFIX=prefix,
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    log = tmp_path / "worker.log"
    celery = str(Path(sys.executable).with_name("celery"))
    proc = subprocess.Popen(
        [
            celery,
            "-A",
            "portal",
            "worker",
            "-Q",
            queue,
            "-c",
            "1",
            "-P",
            "solo",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"{queue}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield log
    finally:
        proc.kill()
        proc.wait(timeout=10)
        switch.__exit__(None, None, None)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


def test_ask_a_question_about_an_uploaded_document(world, engine_backend, celery_worker, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from chat.models import Message
    from knowledge.services import knowledge_base_create

    kb = knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Travel")
    handbook = tmp_path / "zephyr-handbook.md"
    handbook.write_text(HANDBOOK)
    problems: list[str] = []

    with AsgiServer() as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda m: (
                    m.type == "error"
                    and not m.text.startswith("Failed to load resource")  # reported with its URL just below
                    and problems.append(f"console: {m.text}")
                ),
            )
            # every failed request (the browser's own favicon probe aside) is a problem
            page.on(
                "response",
                lambda r: (
                    r.status >= 400
                    and not r.url.endswith("/favicon.ico")
                    and problems.append(f"{r.status} {r.request.method} {r.url}")
                ),
            )

            # log in
            page.goto(f"{server.url}/accounts/login/")
            page.fill("input[name=username]", world.member.username)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{server.url}/")

            # upload the document and wait until the worker has indexed it (the list refreshes itself)
            page.goto(f"{server.url}/knowledge/{kb.pk}/")
            page.set_input_files("#upload-files", str(handbook))
            row = page.locator("#documents tr", has_text="zephyr-handbook.md")
            try:
                expect(row.locator(".badge.ok")).to_have_text("indexed", timeout=240_000)
            except AssertionError:
                raise AssertionError("not indexed; worker log:\n" + celery_worker.read_text()[-3000:]) from None

            # start a chat grounded in that knowledge base
            page.goto(f"{server.url}/chat/")
            page.get_by_label("Travel").check()
            page.get_by_test_id("start-chat").click()
            page.wait_for_url(f"{server.url}/chat/*/")
            expect(page.locator("#chat")).to_have_attribute("data-socket", "open")

            page.get_by_test_id("composer-input").fill("What is the daily meal allowance on business trips?")
            page.get_by_test_id("send").click()

            # tokens appear while the answer is still streaming ...
            streaming = page.locator(".msg-assistant.streaming [data-testid=answer]")
            page.wait_for_function(
                "() => { const el = document.querySelector('.msg-assistant.streaming [data-testid=answer]');"
                " return el && el.textContent.replace('…', '').trim().length > 0; }"
            )
            partial = streaming.text_content() or ""
            # ... and the finished answer is swapped in with its footnote citing the uploaded document
            answer = page.locator(".msg-assistant[data-status=complete]")
            expect(answer).to_have_count(1, timeout=120_000)
            citation = answer.get_by_test_id("citation").first
            expect(citation).to_contain_text("zephyr-handbook.md")
            assert f"/knowledge/{kb.pk}/" in (citation.get_attribute("href") or "")
            final_text = answer.get_by_test_id("answer").text_content() or ""
            assert final_text.strip()
            start = " ".join(partial.replace("…", "").split())[:10]
            assert start and start in " ".join(final_text.split())
            expect(page.get_by_test_id("thumbs-up")).to_be_visible()
        finally:
            browser.close()

    saved = Message.objects.for_tenant(world.tenant).get(role="assistant")
    assert saved.status == "complete" and saved.citations[0]["document_name"] == "zephyr-handbook.md"
    assert not problems, problems


@pytest.fixture
def engine_backend(llama_server: Any, transactional_db: Any) -> Any:
    from chat.tests.conftest import register_engine

    return register_engine(llama_server, name="browser-engine")
