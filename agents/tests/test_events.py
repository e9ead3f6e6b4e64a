"""The run's event stream: server-sent events resumable with Last-Event-ID, the run page's socket, signed webhooks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import close_old_connections, transaction
from django.test import AsyncClient, Client
from django.utils import timezone

from agents.crypto import decrypt
from agents.events import event_append
from agents.models import AgentEvent, AgentRun, RunStatus, WebhookEndpoint
from agents.services import agent_definition_create, agent_run_cancel, agent_run_start, webhook_endpoint_create
from agents.webhooks import SIGNATURE_HEADER, DeliveryFailed, verify, webhook_deliver, webhook_fanout
from tenants.middleware import SESSION_KEY
from tenants.models import Role

pytestmark = pytest.mark.django_db(transaction=True)


def _definition(world: Any) -> Any:
    return agent_definition_create(
        tenant=world.tenant, actor=world.admin, name="Streamer", instructions="Do things.", tools=["calculator"]
    )


def emit(run: AgentRun, n: int, *, type_: str = "step") -> list[int]:
    """What a worker's checkpoint does: events appended under the run's row lock."""
    seqs = []
    for i in range(n):
        with transaction.atomic():
            locked = AgentRun.unscoped.select_for_update().select_related("definition").get(pk=run.pk)
            seqs.append(event_append(locked, type_, {"n": i}).seq)
    return seqs


def finish(run: AgentRun) -> None:
    with transaction.atomic():
        locked = AgentRun.unscoped.select_for_update().select_related("definition").get(pk=run.pk)
        locked.status = RunStatus.SUCCEEDED
        locked.lease_owner = ""
        locked.lease_expires_at = None
        locked.finished_at = timezone.now()
        locked.save()
        event_append(locked, "status", {"status": "succeeded"})


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.strip()
        if "id" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events


@pytest.fixture
def keyed_run(world: Any, api_keys: Any) -> AgentRun:
    return agent_run_start(
        definition=_definition(world),
        role=Role.MEMBER,
        text="stream please",
        user=world.admin,
        api_key=api_keys.keys["member"],
    )


async def _read(response: Any) -> str:
    chunks = []
    async for chunk in response.streaming_content:
        chunks.append(chunk.decode() if isinstance(chunk, bytes) else chunk)
    return "".join(chunks)


async def test_sse_replays_from_last_event_id_without_gaps_or_repeats(
    world: Any, api_keys: Any, keyed_run: Any
) -> None:
    await database_sync_to_async(emit)(keyed_run, 5)
    await database_sync_to_async(agent_run_cancel)(run=keyed_run, role=Role.ADMIN, user=world.admin)
    last = (await AgentRun.unscoped.aget(pk=keyed_run.pk)).event_seq
    assert last == 7  # queued, five steps, cancelled
    client = AsyncClient()
    auth = {"Authorization": f"Bearer {api_keys['member']}"}

    everything = parse_sse(await _read(await client.get(f"/api/v1/agent-runs/{keyed_run.pk}/events", headers=auth)))
    assert [e["id"] for e in everything] == list(range(1, 8))
    assert everything[0]["event"] == "status" and everything[0]["data"]["data"]["status"] == "queued"
    assert everything[-1]["data"]["data"]["status"] == "cancelled"

    response = await client.get(f"/api/v1/agent-runs/{keyed_run.pk}/events", headers={**auth, "Last-Event-ID": "3"})
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    assert [e["id"] for e in parse_sse(await _read(response))] == [4, 5, 6, 7]

    by_query = await client.get(f"/api/v1/agent-runs/{keyed_run.pk}/events?last_event_id=6", headers=auth)
    assert [e["id"] for e in parse_sse(await _read(by_query))] == [7]
    done = await client.get(f"/api/v1/agent-runs/{keyed_run.pk}/events", headers={**auth, "Last-Event-ID": "7"})
    assert parse_sse(await _read(done)) == []

    bad = await client.get(f"/api/v1/agent-runs/{keyed_run.pk}/events", headers={**auth, "Last-Event-ID": "abc"})
    assert bad.status_code == 400 and json.loads(bad.content)["code"] == "invalid"


async def test_sse_streams_live_and_a_reconnect_resumes_exactly(world: Any, api_keys: Any, keyed_run: Any) -> None:
    # a worker holds the run and writes events while clients watch
    await AgentRun.unscoped.filter(pk=keyed_run.pk).aupdate(
        status=RunStatus.RUNNING, lease_owner="w", lease_expires_at=timezone.now() + timedelta(seconds=60)
    )
    stop = threading.Event()

    def worker() -> None:
        try:
            for _ in range(12):
                if stop.is_set():
                    return
                emit(keyed_run, 1)
                time.sleep(0.15)
            finish(keyed_run)
        finally:
            close_old_connections()

    thread = threading.Thread(target=worker)
    thread.start()
    client = AsyncClient()
    auth = {"Authorization": f"Bearer {api_keys['member']}"}
    seen: list[int] = []
    try:
        # first connection: read a few events, then drop it
        first = await client.get(f"/api/v1/agent-runs/{keyed_run.pk}/events", headers=auth)
        buffer = ""
        iterator = first.streaming_content.__aiter__()
        while len(parse_sse(buffer)) < 4:
            chunk = await asyncio.wait_for(iterator.__anext__(), timeout=20)
            buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        seen += [e["id"] for e in parse_sse(buffer)]
        await iterator.aclose()
        # reconnect with the last id seen: the rest, live, until the run ends
        second = await client.get(
            f"/api/v1/agent-runs/{keyed_run.pk}/events", headers={**auth, "Last-Event-ID": str(seen[-1])}
        )
        rest = parse_sse(await asyncio.wait_for(_read(second), timeout=60))
        seen += [e["id"] for e in rest]
    finally:
        stop.set()
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
    last = (await AgentRun.unscoped.aget(pk=keyed_run.pk)).event_seq
    assert last == 14  # queued + 12 steps + succeeded
    assert seen == list(range(1, last + 1))  # no gap, no repeat
    assert rest[-1]["data"]["data"]["status"] == "succeeded"


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
@pytest.mark.parametrize(
    ("caller", "status"),
    [("anonymous", 401), ("revoked", 401), ("other_tenant", 404), ("viewer", 404), ("member", 200), ("admin", 200)],
)
def test_sse_permission_matrix(world: Any, api_keys: Any, keyed_run: Any, caller: str, status: int) -> None:
    agent_run_cancel(run=keyed_run, role=Role.ADMIN, user=world.admin)
    key = api_keys[caller]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    response = Client().get(f"/api/v1/agent-runs/{keyed_run.pk}/events", **headers)
    assert response.status_code == status
    if status == 200:
        body = b"".join(response).decode()
        assert [e["id"] for e in parse_sse(body)] == [1, 2]
    else:
        assert set(json.loads(response.content)) == {"code", "message", "details"}


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
def test_sse_with_a_browser_session(world: Any) -> None:
    run = agent_run_start(definition=_definition(world), role=Role.MEMBER, text="mine", user=world.member)
    agent_run_cancel(run=run, role=Role.MEMBER, user=world.member)
    for user, status in ((world.member, 200), (world.viewer, 404), (world.outsider, 404), (world.admin, 200)):
        client = Client()
        client.force_login(user)
        response = client.get(f"/api/v1/agent-runs/{run.pk}/events")
        assert response.status_code == status, user
        if status == 200:
            assert len(parse_sse(b"".join(response).decode())) == 2


# --- the run page's socket --------------------------------------------------------------------------------


def _cookie(user: Any, tenant: Any) -> str:
    client = Client()
    client.force_login(user)
    session = client.session
    session[SESSION_KEY] = tenant.pk
    session.save()
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def _open(user: Any, tenant: Any, run_id: Any, after: int = 0) -> tuple[WebsocketCommunicator, bool]:
    from portal.asgi import application

    headers = [(b"origin", b"http://testserver")]
    if user is not None:
        cookie = await database_sync_to_async(_cookie)(user, tenant)
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    comm = WebsocketCommunicator(application, f"/ws/agents/runs/{run_id}/?after={after}", headers=headers)
    connected, _ = await comm.connect(timeout=10)
    return comm, connected


@pytest.mark.parametrize(
    ("who", "close_code"),
    [("anonymous", 4401), ("outsider", 4404), ("viewer", 4404), ("member", None), ("admin", None)],
)
async def test_socket_permission_matrix(world: Any, who: str, close_code: int | None) -> None:
    run = await database_sync_to_async(agent_run_start)(
        definition=await database_sync_to_async(_definition)(world), role=Role.MEMBER, text="watch", user=world.member
    )
    user = None if who == "anonymous" else getattr(world, who)
    tenant = world.other_tenant if who == "outsider" else world.tenant
    comm, _ = await _open(user, tenant, run.pk)
    frame = await comm.receive_json_from(timeout=10)
    if close_code is None:
        assert frame == {"type": "event", "event": frame["event"]} and frame["event"]["seq"] == 1
    else:
        assert frame["type"] == "error"
        assert (await comm.receive_output(timeout=5)) == {"type": "websocket.close", "code": close_code}
    await comm.disconnect()


async def test_the_socket_streams_new_events_and_cancels(world: Any) -> None:
    run = await database_sync_to_async(agent_run_start)(
        definition=await database_sync_to_async(_definition)(world), role=Role.MEMBER, text="watch", user=world.member
    )
    comm, connected = await _open(world.member, world.tenant, run.pk, after=1)
    assert connected
    await database_sync_to_async(emit)(run, 2)
    frames = [await comm.receive_json_from(timeout=10) for _ in range(2)]
    assert [f["event"]["seq"] for f in frames] == [2, 3]
    await comm.send_json_to({"type": "cancel"})
    frame = await comm.receive_json_from(timeout=10)
    assert frame["event"]["type"] == "status" and frame["event"]["data"]["status"] == "cancelled"
    await comm.send_json_to({"type": "approve"})
    error = await comm.receive_json_from(timeout=10)
    assert error["type"] == "error" and error["code"] in ("forbidden", "conflict")
    await comm.disconnect()
    assert (await AgentRun.unscoped.aget(pk=run.pk)).status == RunStatus.CANCELLED


# --- webhooks ---------------------------------------------------------------------------------------------


def test_events_are_delivered_signed_to_matching_webhooks(world: Any, http_server: Any, dispatched: Any) -> None:
    definition = _definition(world)
    http_server.json("/hook", {"ok": True})
    endpoint, secret = webhook_endpoint_create(tenant=world.tenant, url=f"{http_server.base}/hook", actor=world.admin)
    only_status, _ = webhook_endpoint_create(
        tenant=world.tenant, url=f"{http_server.base}/status-only", event_types=["status"], actor=world.admin
    )
    webhook_endpoint_create(tenant=world.other_tenant, url=f"{http_server.base}/other", actor=world.outsider)
    assert decrypt(WebhookEndpoint.unscoped.get(pk=endpoint.pk).encrypted_secret) == secret

    run = agent_run_start(definition=definition, role=Role.MEMBER, text="hook me", user=world.member)
    emit(run, 1)
    events = list(AgentEvent.objects.for_tenant(world.tenant).filter(run=run).order_by("seq"))
    # the commit hooks queued one delivery per matching endpoint (the other department's never)
    assert sorted(dispatched.webhooks) == sorted(
        [(endpoint.pk, events[0].pk), (only_status.pk, events[0].pk), (endpoint.pk, events[1].pk)]
    )
    assert webhook_fanout(event=events[1]) == 1

    assert webhook_deliver(endpoint_id=endpoint.pk, event_id=events[0].pk) == 1
    [request] = http_server.calls("/hook")
    assert request.headers["x-portal-event"] == "status"
    assert request.headers["x-portal-delivery"] == f"{run.pk}:1"
    assert verify(secret=secret, body=request.body, header=request.headers[SIGNATURE_HEADER.lower()])
    assert not verify(secret="whsec_wrong", body=request.body, header=request.headers[SIGNATURE_HEADER.lower()])
    assert not verify(secret=secret, body=request.body + b" ", header=request.headers[SIGNATURE_HEADER.lower()])
    payload = json.loads(request.body)
    assert payload["run_id"] == run.pk and payload["seq"] == 1 and payload["data"]["status"] == "queued"
    assert "hook me" not in request.body.decode()  # the task text stays in the portal

    http_server.routes["/status-only"] = (500, "{}")
    with pytest.raises(DeliveryFailed):
        webhook_deliver(endpoint_id=only_status.pk, event_id=events[0].pk)
    failed = WebhookEndpoint.unscoped.get(pk=only_status.pk)
    assert failed.failures == 1 and failed.last_status == "HTTP 500"
