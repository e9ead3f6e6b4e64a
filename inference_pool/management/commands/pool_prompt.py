"""Send one prompt through the inference pool and print the streamed answer with its TTFT and TPOT."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from inference_pool.router import get_router
from inference_pool.services import pool_stream
from inference_pool.types import ChatRequest, DoneEvent, ErrorEvent, Telemetry, TokenEvent


class Command(BaseCommand):
    help = "Send one prompt through the pool (router, retries, breaker) and stream the answer."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("prompt", help="the user message")
        parser.add_argument("--model", default=settings.LLAMA_MODEL_NAME, help="base model name")
        parser.add_argument("--adapter", default=None, help="LoRA adapter name (default: the base model)")
        parser.add_argument("--system", default="", help="an optional system message")
        parser.add_argument("--max-tokens", type=int, default=128)
        parser.add_argument("--temperature", type=float, default=0.7)
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["max_tokens"] < 1:
            raise CommandError("--max-tokens must be at least 1")
        messages = [{"role": "system", "content": opts["system"]}] if opts["system"] else []
        messages.append({"role": "user", "content": opts["prompt"]})
        request = ChatRequest(
            messages=messages,
            model=opts["model"],
            adapter=opts["adapter"],
            max_tokens=opts["max_tokens"],
            temperature=opts["temperature"],
            seed=opts["seed"],
            request_id=uuid.uuid4().hex,
        )
        try:
            telemetry, error = asyncio.run(self._run(request))
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write("")
        self.stdout.write(_summary(telemetry))
        if error is not None:
            raise CommandError(error.message)

    async def _run(self, request: ChatRequest) -> tuple[Telemetry, ErrorEvent | None]:
        try:
            async for event in pool_stream(request=request):
                if isinstance(event, TokenEvent):
                    self.stdout.write(event.text, ending="")
                    sys.stdout.flush()
                elif isinstance(event, DoneEvent):
                    return event.telemetry, None
                elif isinstance(event, ErrorEvent):
                    return event.telemetry, event
        finally:
            await get_router().aclose()
        raise CommandError("the pool ended the stream without a result")


def _summary(t: Telemetry) -> str:
    ttft = f"{t.ttft_s * 1000:.1f} ms" if t.ttft_s is not None else "n/a"
    tpot = f"{t.tpot_s * 1000:.1f} ms" if t.tpot_s is not None else "n/a"
    counted = "" if t.usage_from_engine else " (counted by the portal)"
    return (
        f"TTFT {ttft} · TPOT {tpot} · tokens in {t.tokens_in} / out {t.tokens_out}{counted} · "
        f"backend {t.backend} · adapter {t.adapter or '-'} · {t.outcome} · attempts {t.attempts}"
    )
