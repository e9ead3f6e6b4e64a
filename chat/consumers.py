"""The browser's chat socket: ``/ws/chat/<conversation id>/``.

Client frames: ``{"type": "send", "text", "knowledge_bases"?: [ids], "adapter"?: name, "max_tokens"?: n}``,
``{"type": "stop"}``, ``{"type": "regenerate"}``.
Server frames: ``start`` (message ids), ``citations``, ``token`` (display text), ``done`` (status, final text, usage,
TTFT, TPOT, warnings), ``error`` (``code`` and a ``message`` a person understands).

Thin: the caller is resolved by ``tenants.auth.caller_from_scope`` (as at every door), the work is
``chat.pipeline.ChatRun``. A missing conversation and another user's or department's answer the same
``not_found``; the socket then closes with 4404 (4401 signed out, 4403 suspended department or role too low).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from chat.models import Conversation
from chat.pipeline import ChatInput, ChatRun, Citations, Done, Failed, Started, Token
from chat.selectors import conversation_get
from chat.services import conversation_set_options
from core.errors import ApplicationError, InvalidInput, NotFound
from core.localcache import generations_per_request
from identity import realtime
from tenants.auth import Caller, caller_from_scope

logger = logging.getLogger(__name__)

# This module is loaded by the processes that serve sockets. They relay tokens from the engines while pipeline
# threads do CPU work (Presidio, the ORM); CPython hands the GIL to a waiting thread only once per switch interval
# (5 ms by default), which can add that much to every hop of a token. A shorter interval keeps the relay prompt.
sys.setswitchinterval(float(getattr(settings, "CHAT_GIL_SWITCH_INTERVAL_S", 0.001)))

CLOSE_CODES = {401: 4401, 403: 4403, 404: 4404}
STOP_GRACE_S = 15.0


def error_frame(error: ApplicationError, *, message_id: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message}
    if error.retry_after:
        frame["retry_after"] = error.retry_after
    if message_id is not None:
        frame["message_id"] = message_id
    return frame


class Outbox:
    """Frames to the client, in order, written by one sender task. Tokens that arrive while a write is pending (an
    engine's burst, a busy process) are merged into one frame: one socket write instead of many, so the last
    token of a burst is not delayed by a write per earlier token. At a normal pace every token is its own frame."""

    def __init__(self, send: Any) -> None:
        self.frames: deque[dict[str, Any]] = deque()
        self.ready = asyncio.Event()
        self._send = send

    def put(self, frame: dict[str, Any]) -> None:
        last = self.frames[-1] if self.frames else None
        if frame["type"] == "token" and last is not None and last["type"] == "token":
            self.frames[-1] = {"type": "token", "text": last["text"] + frame["text"]}
        else:
            self.frames.append(frame)
        self.ready.set()

    async def drain(self) -> None:
        while self.frames:
            await self._send(self.frames.popleft())

    async def run(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            await self.drain()


class ChatConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    conversation: Conversation | None = None
    task: asyncio.Task[None] | None = None
    run: ChatRun | None = None
    outbox: Outbox | None = None
    sender: asyncio.Task[None] | None = None
    open = False
    user_group: str | None = None

    async def connect(self) -> None:
        await self.accept()
        self.open = True
        try:
            self.conversation = await database_sync_to_async(self._load)()
        except ApplicationError as exc:
            await self.send_json(error_frame(exc))
            await self.close(code=CLOSE_CODES.get(exc.status, 4400))
            self.open = False
            return
        self.outbox = Outbox(self._write)
        self.sender = asyncio.create_task(self.outbox.run())
        # deprovisioning closes every socket of the account (identity.realtime)
        if self.channel_layer is not None:
            self.user_group = realtime.user_group(self.scope["user"].pk)
            await self.channel_layer.group_add(self.user_group, self.channel_name)

    async def identity_revoked(self, event: dict[str, Any]) -> None:
        """The account was deactivated or signed out everywhere: stop any answer and close (4401)."""
        await self._stop()
        if self.open:
            await self.send_json(
                {"type": "error", "code": "account_deactivated", "message": "Your access has ended. Sign in again."}
            )
            self.open = False
            await self.close(code=realtime.CLOSE_CODE)

    def _load(self) -> Conversation:
        caller = caller_from_scope(self.scope)
        conversation_id = self.scope["url_route"]["kwargs"].get("conversation_id")
        conversation = conversation_get(tenant=caller.tenant, user=self.scope["user"], conversation_id=conversation_id)
        conversation.tenant = caller.tenant
        return conversation

    def _caller_for_turn(self, content: dict[str, Any]) -> Caller:
        """Fresh access for each turn (roles, suspension and the conversation may have changed)."""
        assert self.conversation is not None
        caller = caller_from_scope(self.scope)
        if caller.tenant.pk != self.conversation.tenant_id:
            raise NotFound("Conversation not found.")
        conversation = conversation_get(
            tenant=caller.tenant, user=self.scope["user"], conversation_id=self.conversation.pk
        )
        kb_ids = content.get("knowledge_bases")
        adapter = content.get("adapter")
        if kb_ids is not None and not isinstance(kb_ids, list):
            raise InvalidInput("knowledge_bases is a list of ids.")
        if adapter is not None and not isinstance(adapter, str):
            raise InvalidInput("adapter is an adapter's name.")
        if kb_ids is not None or adapter is not None:
            conversation_set_options(
                conversation=conversation, role=caller.role, knowledge_base_ids=kb_ids, adapter=adapter
            )
        self.conversation = conversation
        return caller

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not self.open or self.conversation is None:
            return
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind in ("send", "regenerate"):
                await self._start(content, regenerate=kind == "regenerate")
            elif kind == "stop":
                await self._stop()
            else:
                raise InvalidInput("Unknown frame: send, stop or regenerate.")
        except ApplicationError as exc:
            await self._send(error_frame(exc))

    async def _start(self, content: dict[str, Any], *, regenerate: bool) -> None:
        if self.task is not None and not self.task.done():
            raise ApplicationError(
                "An answer is still being written. Wait for it to finish or press Stop.", code="busy_conversation"
            )
        text = content.get("text", "")
        if not isinstance(text, str):
            raise InvalidInput("text is a string.")
        max_tokens = content.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
            raise InvalidInput("max_tokens is a whole number.")
        with generations_per_request():  # the turn's in-process cache lookups: one round trip (the task copies it)
            caller = await database_sync_to_async(self._caller_for_turn)(content)
            inp = ChatInput(
                tenant=caller.tenant,
                role=caller.role,
                user=caller.user,
                conversation=self.conversation,
                text=text,
                regenerate=regenerate,
                max_tokens=max_tokens,
            )
            self.run = ChatRun(inp)
            self.task = asyncio.create_task(self._generate(self.run))

    async def _generate(self, run: ChatRun) -> None:
        events = run.stream()
        try:
            async for event in events:
                if isinstance(event, Token):
                    await self._send({"type": "token", "text": event.text})
                elif isinstance(event, Started):
                    await self._send(
                        {
                            "type": "start",
                            "message_id": event.message_id,
                            "user_message_id": event.user_message_id,
                            "model": event.model,
                            "adapter": event.adapter,
                        }
                    )
                elif isinstance(event, Citations):
                    await self._send({"type": "citations", "citations": event.citations})
                elif isinstance(event, Done):
                    await self._send(
                        {
                            "type": "done",
                            "status": "complete",
                            "message_id": event.message_id,
                            "text": event.text,
                            "usage": event.usage.as_dict(),
                            "ttft_ms": event.ttft_ms,
                            "tpot_ms": event.tpot_ms,
                            "finish_reason": event.finish_reason,
                            "warnings": event.warnings,
                        }
                    )
                elif isinstance(event, Failed):
                    await self._send(
                        {
                            "type": "error",
                            "code": event.code,
                            "message": event.message + " The partial answer was kept.",
                            "message_id": event.message_id,
                        }
                    )
        except asyncio.CancelledError:
            await events.aclose()  # stop arrived while a frame was being sent: end the run here
            await self._send(
                {
                    "type": "done",
                    "status": "stopped",
                    "message_id": run.message_id,
                    "text": run.text,
                    "usage": run.usage.as_dict(),
                    "ttft_ms": run.ttft_ms,
                    "tpot_ms": run.tpot_ms,
                    "finish_reason": "stopped",
                    "warnings": [],
                }
            )
        except ApplicationError as exc:
            await self._send(error_frame(exc, message_id=run.message_id))
        except Exception:
            logger.exception("chat generation failed")
            await self._send(
                {
                    "type": "error",
                    "code": "internal_error",
                    "message": "Something went wrong while answering. The question was kept; try Regenerate.",
                    "message_id": run.message_id,
                }
            )
        finally:
            await events.aclose()

    async def _stop(self) -> None:
        task = self.task
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait([task], timeout=STOP_GRACE_S)

    async def _send(self, frame: dict[str, Any]) -> None:
        if self.open and self.outbox is not None:
            self.outbox.put(frame)

    async def _write(self, frame: dict[str, Any]) -> None:
        if not self.open:
            return
        try:
            await self.send_json(frame)
        except Exception:  # the client went away mid-frame
            self.open = False

    async def disconnect(self, code: int) -> None:
        self.open = False
        if self.user_group is not None and self.channel_layer is not None:
            await self.channel_layer.group_discard(self.user_group, self.channel_name)
        # a closed tab stops the answer; the pipeline keeps the partial text as "stopped"
        await self._stop()
        if self.sender is not None:
            self.sender.cancel()
