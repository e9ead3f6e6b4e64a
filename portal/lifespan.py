"""The ASGI lifespan protocol: at shutdown, answers whose stream has ended are persisted and settled before the
process exits (``chat.pipeline.finishes_wait``); what still runs after the grace period is settled from the
journal by the quota sweep."""

from __future__ import annotations

import logging
from typing import Any

from chat.pipeline import finishes_pending, finishes_wait

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if not await finishes_wait(grace_s=SHUTDOWN_GRACE_S):
                logger.warning("%d answers were still being settled at shutdown", finishes_pending())
            await send({"type": "lifespan.shutdown.complete"})
            return
