"""The lease heartbeat of a step, and the worker process's event loop for the pool's async client."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents.models import AgentRun, RunStatus
from inference_pool.services import pool_close

logger = logging.getLogger(__name__)


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def lease_seconds() -> float:
    return float(_setting("AGENT_LEASE_SECONDS", 60))


# --- the lease heartbeat ----------------------------------------------------------------------------------


class Heartbeat:
    """Keeps the run's lease alive while a step works and notices cancellation (checks about once a second)."""

    def __init__(self, run_id: int, worker: str) -> None:
        self.run_id = run_id
        self.worker = worker
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._callbacks: list[Any] = []
        self._thread = threading.Thread(target=self._loop, name=f"agent-heartbeat-{run_id}", daemon=True)

    @property
    def aborted(self) -> bool:
        return self.cancelled.is_set() or self.lost.is_set()

    def on_abort(self, callback: Any) -> None:
        self._callbacks.append(callback)
        if self.aborted:
            callback()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        interval = min(1.0, lease_seconds() / 3)
        try:
            while not self._stop.wait(interval):
                expires = timezone.now() + timedelta(seconds=lease_seconds())
                held = AgentRun.unscoped.filter(pk=self.run_id, lease_owner=self.worker).update(
                    lease_expires_at=expires
                )
                status = AgentRun.unscoped.filter(pk=self.run_id).values_list("status", flat=True).first()
                if not held:
                    self.lost.set()
                if status == RunStatus.CANCELLED:
                    self.cancelled.set()
                if self.aborted:
                    for callback in self._callbacks:
                        try:
                            callback()
                        except Exception:
                            logger.debug("abort callback failed", exc_info=True)
                    self._callbacks.clear()
        except Exception:
            logger.warning("agent heartbeat failed", extra={"run_id": self.run_id}, exc_info=True)
        finally:
            connection.close()


# --- an event loop for the pool's async client, one per worker process ------------------------------------

_loop_lock = threading.Lock()
_loop: tuple[int, asyncio.AbstractEventLoop] | None = None


def event_loop_reset() -> None:
    """Close the pool's router on this process's loop and stop the loop (tests; a new one starts on demand)."""
    global _loop
    with _loop_lock:
        current, _loop = _loop, None
    if current is None or current[0] != os.getpid() or current[1].is_closed():
        return
    loop = current[1]

    try:
        asyncio.run_coroutine_threadsafe(pool_close(), loop).result(timeout=10)
    except Exception:
        logger.debug("closing the agents' pool router failed", exc_info=True)
    loop.call_soon_threadsafe(loop.stop)


def event_loop() -> asyncio.AbstractEventLoop:
    """A long-lived loop in a daemon thread (the pool keeps one router and connection set per loop)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop[0] != os.getpid() or _loop[1].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="agents-event-loop", daemon=True).start()
            _loop = (os.getpid(), loop)
        return _loop[1]
