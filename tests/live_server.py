"""A live ASGI server (uvicorn + portal.asgi.application) for tests that drive the portal over real HTTP.

It runs in a background thread of the test process, so it uses the pytest test database: use it with
``transactional_db`` (rows must be committed to be seen by the server's connections). Each test gets a fresh
server, hence a fresh event loop and a fresh pool router reading the test's settings and backends.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections

from tests.engine import free_port


def finishes_settled(timeout: float = 20.0) -> None:
    """Wait until the answers this process streamed through ``/v1`` are persisted and settled (their ``[DONE]``
    comes first; see ``ChatInput.finish_after_done``)."""
    from chat.pipeline import finishes_pending

    deadline = time.monotonic() + timeout
    while finishes_pending():
        if time.monotonic() > deadline:
            raise AssertionError(f"{finishes_pending()} answers were not settled within {timeout} s")
        time.sleep(0.01)


class LiveServer:
    def __init__(self) -> None:
        import uvicorn

        from portal.asgi import application

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                application,
                host="127.0.0.1",
                port=self.port,
                lifespan="off",
                log_level="warning",
                access_log=False,
                ws="none",
                timeout_graceful_shutdown=5,
            )
        )
        self.thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        finishes_settled()  # the API door settles after [DONE]: let those finish on this server's loop
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def live_portal(transactional_db: Any) -> Iterator[LiveServer]:
    server = LiveServer().start()
    try:
        yield server
    finally:
        server.stop()
        # the server's worker threads opened their own connections; close them so the flush is not blocked
        connections.close_all()
