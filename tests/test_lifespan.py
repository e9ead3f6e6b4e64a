"""The web process's ASGI lifespan: the guards' models load right after startup (without delaying it), then what
the process holds is frozen out of the garbage collector's walks; shutdown waits for answers being settled."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from portal import lifespan as lifespan_module
from portal.lifespan import lifespan


class Server:
    """The ASGI server's side of the lifespan protocol."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[str] = []

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message["type"])


@pytest.fixture
def unfrozen():  # type: ignore[no-untyped-def]
    gc.unfreeze()
    yield
    gc.unfreeze()


async def _startup(server: Server) -> asyncio.Task[None]:
    app = asyncio.create_task(lifespan({"type": "lifespan"}, server.receive, server.send))
    await server.inbox.put({"type": "lifespan.startup"})
    for _ in range(100):
        if server.sent:
            break
        await asyncio.sleep(0.01)
    return app


async def _shutdown(server: Server, app: asyncio.Task[None]) -> None:
    await server.inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(app, 30)
    assert server.sent[-1] == "lifespan.shutdown.complete"


async def test_startup_is_immediate_and_the_guard_models_load_and_freeze_after_it(settings, unfrozen, monkeypatch):
    settings.GUARD_MODELS_WARM_AT_START = True
    loaded = asyncio.Event()
    loop = asyncio.get_running_loop()
    real = lifespan_module.models_warm_and_freeze

    def warm() -> float:
        seconds = real()
        loop.call_soon_threadsafe(loaded.set)
        return seconds

    monkeypatch.setattr(lifespan_module, "models_warm_and_freeze", warm)
    server = Server()
    app = await _startup(server)
    assert server.sent == ["lifespan.startup.complete"]  # the server accepts requests while the models load
    await asyncio.wait_for(loaded.wait(), 120)
    assert gc.get_freeze_count() > 100_000  # Django, spaCy and the classifier: out of every collection's walk

    from guardrails.injection import _classifier
    from guardrails.pii import _analyzer

    assert _analyzer is not None and _classifier is not None
    await _shutdown(server, app)


async def test_warming_can_be_turned_off(settings, unfrozen, monkeypatch):
    settings.GUARD_MODELS_WARM_AT_START = False
    monkeypatch.setattr(lifespan_module, "models_warm_and_freeze", lambda: pytest.fail("warmed"))
    server = Server()
    app = await _startup(server)
    assert server.sent == ["lifespan.startup.complete"]
    await asyncio.sleep(0.1)
    assert gc.get_freeze_count() == 0
    await _shutdown(server, app)


async def test_a_failed_warm_up_leaves_the_server_running(settings, unfrozen, monkeypatch, caplog):
    settings.GUARD_MODELS_WARM_AT_START = True

    def broken() -> float:
        raise OSError("spaCy model not found")

    monkeypatch.setattr(lifespan_module, "models_warm_and_freeze", broken)
    server = Server()
    app = await _startup(server)
    for _ in range(200):
        if "could not load the guard models at startup" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "could not load the guard models at startup" in caplog.text
    assert not app.done()  # still serving: the guards load (or fail closed) on first use
    await _shutdown(server, app)
