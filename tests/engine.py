"""Real llama-server processes for tests (built by `make engine`; the suite never fakes the engine)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from inference_pool.local_engines import EngineSpec, ManagedEngine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_engine(
    *,
    slots: int = 4,
    context: int = 4096,
    loras: list[str] | None = None,
    log_dir: Path | None = None,
    name: str = "test-engine",
) -> ManagedEngine:
    port = free_port()
    spec = EngineSpec(
        name=name,
        port=port,
        model_path=settings.LLAMA_MODEL_PATH,
        binary=settings.LLAMA_SERVER_BIN,
        slots=slots,
        context=context,
        loras=loras or [],
        log_path=(log_dir / f"{name}-{port}.log") if log_dir else None,
    )
    return ManagedEngine(spec)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedEngine]:
    """One shared llama-server for the session (8 slots so concurrency tests do not queue)."""
    engine = make_engine(slots=8, context=8 * 2048, log_dir=tmp_path_factory.mktemp("engine-logs"), name="shared")
    engine.start(timeout=120)
    yield engine
    engine.stop()
