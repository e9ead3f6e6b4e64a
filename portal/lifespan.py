"""The ASGI lifespan protocol.

- Startup: the guards' models load in a thread right after the server is up (``guardrails.services.
  guard_models_warm``), so that the first question does not wait for them; then everything loaded so far (Django,
  spaCy, the classifier: millions of long-lived objects) is moved out of the garbage collector's reach
  (``gc.freeze``). Without it every full collection walks them all, a pause of up to a few hundred milliseconds
  in which no token reaches any socket.
- Shutdown: answers whose stream has ended are persisted and settled before the process exits
  (``chat.pipeline.finishes_wait``); what still runs after the grace period is settled from the journal by the
  quota sweep.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from django.conf import settings

from chat.pipeline import finishes_pending, finishes_wait

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
_warming: set[asyncio.Task[None]] = set()


def models_warm_and_freeze() -> float:
    """Load and run the guards' models once, then freeze what the process holds; returns the seconds it took."""
    from guardrails.services import guard_models_warm

    started = time.perf_counter()
    guard_models_warm()
    gc.collect()  # garbage made while loading is freed first: frozen objects are never collected
    gc.freeze()
    return time.perf_counter() - started


async def _warm() -> None:
    try:
        seconds = await asyncio.to_thread(models_warm_and_freeze)
    except Exception:  # the guards load on first use instead (and fail closed there if they cannot)
        logger.exception("could not load the guard models at startup")
        return
    logger.info("guard models ready", extra={"seconds": round(seconds, 2), "frozen_objects": gc.get_freeze_count()})


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if settings.GUARD_MODELS_WARM_AT_START:
                task = asyncio.get_running_loop().create_task(_warm(), name="guard-models-warm")
                _warming.add(task)
                task.add_done_callback(_warming.discard)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if not await finishes_wait(grace_s=SHUTDOWN_GRACE_S):
                logger.warning("%d answers were still being settled at shutdown", finishes_pending())
            await send({"type": "lifespan.shutdown.complete"})
            return
