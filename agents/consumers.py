"""The run page's socket: ``/ws/agents/runs/<run id>/?after=<seq>``.

Server frames: ``{"type": "event", "event": {seq, type, data, at}}`` for every event after ``after``, in order and
without gaps (the event log is read from the database; the Channels group only wakes the socket early, so
events written by a worker in another process arrive even with the in-memory channel layer), and
``{"type": "error", "code", "message"}``.
Client frames: ``{"type": "cancel"}``, ``{"type": "approve", "note"?}``, ``{"type": "reject", "note"?}``.
Access is checked like the pages: signed out 4401, not visible (or another department's) 4404.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from agents.events import event_frame, run_group
from agents.models import AgentRun
from agents.selectors import agent_event_list, agent_run_get
from core.errors import ApplicationError, InvalidInput, NotAuthenticated
from identity import realtime
from tenants.middleware import SESSION_KEY
from tenants.models import Membership, Role
from tenants.selectors import membership_get, membership_list_for_user, membership_require

logger = logging.getLogger(__name__)

CLOSE_CODES = {401: 4401, 403: 4403, 404: 4404}
POLL_S = 1.0


def resolve_membership(*, user: Any, session: Any) -> Membership:
    if user is None or not user.is_authenticated:
        raise NotAuthenticated("Sign in to watch runs.")
    chosen = session.get(SESSION_KEY) if session is not None else None
    membership = membership_get(user=user, tenant=chosen) if chosen else None
    if membership is None:
        membership = membership_list_for_user(user=user).first()
    return membership_require(user=user, tenant=membership.tenant if membership else None, min_role=Role.VIEWER)


class AgentRunConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    run: AgentRun | None = None
    membership: Membership | None = None
    last_seq = 0
    poller: asyncio.Task[None] | None = None
    user_group: str | None = None

    async def connect(self) -> None:
        await self.accept()
        try:
            self.membership, self.run = await database_sync_to_async(self._load)()
            query = parse_qs(self.scope.get("query_string", b"").decode())
            self.last_seq = max(0, int((query.get("after") or ["0"])[0]))
        except ValueError:
            await self._refuse(InvalidInput("'after' must be an event number."))
            return
        except ApplicationError as exc:
            await self._refuse(exc)
            return
        await self.channel_layer.group_add(run_group(self.run.pk), self.channel_name)
        # deprovisioning closes every socket of the account (identity.realtime)
        self.user_group = realtime.user_group(self.scope["user"].pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self._catch_up()
        self.poller = asyncio.ensure_future(self._poll())

    async def _refuse(self, error: ApplicationError) -> None:
        await self.send_json({"type": "error", "code": error.code, "message": error.message})
        await self.close(code=CLOSE_CODES.get(error.status, 4400))

    def _load(self) -> tuple[Membership, AgentRun]:
        membership = resolve_membership(user=self.scope.get("user"), session=self.scope.get("session"))
        raw = str(self.scope["url_route"]["kwargs"].get("run_id", ""))
        if not raw.isdigit() or len(raw) > 18:
            from core.errors import NotFound

            raise NotFound("Run not found.")
        run = agent_run_get(tenant=membership.tenant, role=membership.role, user=membership.user, run_id=int(raw))
        return membership, run

    async def identity_revoked(self, event: dict[str, Any]) -> None:
        """The account was deactivated: stop streaming and close (4401)."""
        if self.poller is not None:
            self.poller.cancel()
        await self.send_json(
            {"type": "error", "code": "account_deactivated", "message": "Your access has ended. Sign in again."}
        )
        await self.close(code=realtime.CLOSE_CODE)

    async def disconnect(self, code: int) -> None:
        if self.poller is not None:
            self.poller.cancel()
        if self.run is not None:
            await self.channel_layer.group_discard(run_group(self.run.pk), self.channel_name)
        if self.user_group is not None:
            await self.channel_layer.group_discard(self.user_group, self.channel_name)

    async def _catch_up(self) -> None:
        assert self.run is not None
        events = await database_sync_to_async(agent_event_list)(run=self.run, after=self.last_seq)
        for event in events:
            if event.seq == self.last_seq + 1:
                await self.send_json({"type": "event", "event": event_frame(event)})
                self.last_seq = event.seq

    async def _poll(self) -> None:
        try:
            while True:
                await asyncio.sleep(POLL_S)
                await self._catch_up()
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.warning("agent run socket poll failed", exc_info=True)

    async def agent_event(self, message: dict[str, Any]) -> None:
        frame = message.get("event") or {}
        if frame.get("seq") == self.last_seq + 1:
            await self.send_json({"type": "event", "event": frame})
            self.last_seq = int(frame["seq"])
        elif int(frame.get("seq") or 0) > self.last_seq:
            await self._catch_up()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.run is None or self.membership is None:
            return
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "cancel":
                await database_sync_to_async(self._cancel)()
            elif kind in ("approve", "reject"):
                await database_sync_to_async(self._decide)(kind == "approve", str(content.get("note") or ""))
            else:
                raise InvalidInput("Send cancel, approve or reject.")
        except ApplicationError as exc:
            await self.send_json({"type": "error", "code": exc.code, "message": exc.message})
            return
        await self._catch_up()

    def _fresh(self) -> tuple[Membership, AgentRun]:
        # the role may have changed since the socket opened
        return self._load()

    def _cancel(self) -> None:
        from agents.services import agent_run_cancel

        membership, run = self._fresh()
        agent_run_cancel(run=run, role=membership.role, user=membership.user)

    def _decide(self, approve: bool, note: str) -> None:
        from agents.services import agent_run_decide

        membership, run = self._fresh()
        agent_run_decide(run=run, approve=approve, role=membership.role, user=membership.user, note=note)
