"""REST endpoints of the agents app under /api/v1/, plus the run's server-sent event stream.

- ``agents``: definitions (every role reads; admins create, change and archive).
- ``agent-runs``: start (members), list and read (what the caller may see, see ``agents.selectors``), ``steps``,
  ``cancel`` (the starter or an admin), ``approve`` / ``reject`` (the agent's approver role).
- ``agent-runs/<id>/events``: ``text/event-stream`` of the run's event log; every event carries ``id: <seq>``, so
  a client that reconnects with ``Last-Event-ID`` (or ``?last_event_id=``) gets exactly the events after it. The
  stream ends once the run has ended and every event was sent.
- ``agent-webhooks``: signed webhook endpoints (admins); the signing secret is in the create response only.
API keys need the ``agents`` scope.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import include, path, re_path
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from agents.events import event_frame, usage_public
from agents.models import AgentDefinition, AgentRun, AgentStep, RunStatus, WebhookEndpoint
from agents.selectors import (
    agent_definition_get,
    agent_definition_list,
    agent_event_list,
    agent_run_get,
    agent_run_list,
    agent_run_state,
    agent_step_list,
    agent_step_pending_approval,
    webhook_endpoint_list,
)
from agents.services import (
    EVENT_TYPES,
    agent_definition_archive,
    agent_definition_create,
    agent_definition_update,
    agent_run_cancel,
    agent_run_decide,
    agent_run_start,
    webhook_endpoint_create,
    webhook_endpoint_delete,
)
from agents.tools import TOOLS
from core.api.views import ID_PATTERN, MAX_ID, JsonViewSet, id_parameter
from core.errors import ApplicationError, InvalidInput
from tenants.auth import ApiKeyAuthentication, Caller, PortalSessionAuthentication, caller_from_request
from tenants.models import ApiKey, Role

TERMINAL = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}


def agents_caller(request: Request | HttpRequest, *, min_role: str = Role.VIEWER) -> Caller:
    caller = caller_from_request(request)
    caller.require(min_role=min_role, scope=ApiKey.Scope.AGENTS)
    return caller


def _ip(request: Any) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


# --- serializers ----------------------------------------------------------------------------------------

_TOOL_CHOICES = [(name, name) for name in TOOLS]


class AgentDefinitionSerializer(serializers.ModelSerializer[AgentDefinition]):
    tools = serializers.ListField(child=serializers.ChoiceField(choices=_TOOL_CHOICES))
    approval_tools = serializers.ListField(child=serializers.ChoiceField(choices=_TOOL_CHOICES))
    knowledge_base_ids = serializers.ListField(child=serializers.IntegerField())

    class Meta:
        model = AgentDefinition
        fields = [
            "id",
            "name",
            "description",
            "instructions",
            "tools",
            "approval_tools",
            "approver_role",
            "knowledge_base_ids",
            "adapter",
            "max_steps",
            "token_budget",
            "max_output_tokens",
            "min_tool_calls",
            "max_tool_calls",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class AgentDefinitionWriteSerializer(serializers.Serializer[AgentDefinition]):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=300, required=False, allow_blank=True)
    instructions = serializers.CharField(max_length=20_000)
    tools = serializers.ListField(child=serializers.ChoiceField(choices=_TOOL_CHOICES), required=False, max_length=10)
    approval_tools = serializers.ListField(
        child=serializers.ChoiceField(choices=_TOOL_CHOICES), required=False, max_length=10
    )
    approver_role = serializers.ChoiceField(choices=[(Role.MEMBER, "member"), (Role.ADMIN, "admin")], required=False)
    knowledge_base_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, max_length=100
    )
    adapter = serializers.CharField(max_length=100, required=False, allow_blank=True)
    max_steps = serializers.IntegerField(min_value=1, max_value=50, required=False)
    token_budget = serializers.IntegerField(min_value=200, max_value=5_000_000, required=False)
    max_output_tokens = serializers.IntegerField(min_value=32, max_value=4_096, required=False)
    min_tool_calls = serializers.IntegerField(min_value=0, max_value=50, required=False)
    max_tool_calls = serializers.IntegerField(min_value=0, max_value=50, required=False, allow_null=True)
    is_active = serializers.BooleanField(required=False, help_text="false archives the agent")


class PendingApprovalSerializer(serializers.Serializer[AgentStep]):
    step = serializers.IntegerField(source="ordinal")
    tool = serializers.CharField()
    reason = serializers.CharField(source="payload.reason", help_text="approval_required or in_doubt")
    arguments = serializers.DictField(source="payload.arguments")


class AgentRunSerializer(serializers.ModelSerializer[AgentRun]):
    agent_id = serializers.IntegerField(source="definition_id", read_only=True)
    agent_name = serializers.CharField(source="definition.name", read_only=True)
    started_by = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()
    pending_approval = serializers.SerializerMethodField()

    class Meta:
        model = AgentRun
        fields = [
            "id",
            "agent_id",
            "agent_name",
            "status",
            "input",
            "result",
            "error_code",
            "error",
            "usage",
            "pending_approval",
            "model",
            "adapter",
            "started_by",
            "created_at",
            "started_at",
            "finished_at",
            "event_seq",
        ]
        read_only_fields = fields

    def get_started_by(self, run: AgentRun) -> str:
        if run.api_key_id and run.api_key is not None:
            return f"api-key:{run.api_key.prefix}"
        return run.user.get_username() if run.user_id and run.user is not None else ""

    def get_usage(self, run: AgentRun) -> dict[str, Any]:
        return usage_public(run)

    @extend_schema_field(PendingApprovalSerializer(allow_null=True))
    def get_pending_approval(self, run: AgentRun) -> dict[str, Any] | None:
        if run.status != RunStatus.WAITING_APPROVAL:
            return None
        step = agent_step_pending_approval(run=run)
        return dict(PendingApprovalSerializer(step).data) if step is not None else None


class AgentRunCreateSerializer(serializers.Serializer[AgentRun]):
    agent_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    input = serializers.CharField(max_length=20_000, help_text="the task")


class AgentRunListQuerySerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    agent_id = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False)


class AgentStepSerializer(serializers.ModelSerializer[AgentStep]):
    decided_by = serializers.CharField(source="decided_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = AgentStep
        fields = [
            "ordinal",
            "kind",
            "status",
            "tool",
            "payload",
            "flagged",
            "executions",
            "tokens_in",
            "tokens_out",
            "duration_ms",
            "decided_by",
            "decided_at",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class DecisionSerializer(serializers.Serializer[Any]):
    note = serializers.CharField(max_length=500, required=False, allow_blank=True)


class WebhookSerializer(serializers.ModelSerializer[WebhookEndpoint]):
    agent_id = serializers.IntegerField(source="definition_id", read_only=True, allow_null=True)

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "agent_id", "event_types", "is_active", "created_at", "last_delivery_at", "last_status"]
        read_only_fields = fields


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, help_text="the HMAC signing secret; shown only in this response")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookCreateSerializer(serializers.Serializer[WebhookEndpoint]):
    url = serializers.URLField(max_length=500)
    agent_id = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False, allow_null=True)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=[(t, t) for t in EVENT_TYPES]), required=False, max_length=10
    )


# --- views ----------------------------------------------------------------------------------------------

_AGENT_ID = id_parameter("id", "the agent's id")
_RUN_ID = id_parameter("id", "the run's id")


@extend_schema_view(
    list=extend_schema(summary="Agents of your department", responses=AgentDefinitionSerializer(many=True)),
    create=extend_schema(
        summary="Define an agent (admins)",
        request=AgentDefinitionWriteSerializer,
        responses={201: AgentDefinitionSerializer},
    ),
    retrieve=extend_schema(summary="An agent", parameters=[_AGENT_ID], responses=AgentDefinitionSerializer),
    partial_update=extend_schema(
        summary="Change an agent (admins)",
        parameters=[_AGENT_ID],
        request=AgentDefinitionWriteSerializer(partial=True),
        responses=AgentDefinitionSerializer,
    ),
    destroy=extend_schema(summary="Archive an agent (admins)", parameters=[_AGENT_ID], responses={204: None}),
)
class AgentDefinitionViewSet(JsonViewSet):
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    serializer_class = AgentDefinitionSerializer

    def list(self, request: Request) -> Response:
        caller = agents_caller(request)
        page = self.paginate_queryset(agent_definition_list(tenant=caller.tenant))
        return self.get_paginated_response(AgentDefinitionSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        caller = agents_caller(request, min_role=Role.ADMIN)
        body = AgentDefinitionWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        data.pop("is_active", None)
        definition = agent_definition_create(tenant=caller.tenant, actor=caller.user, **data)
        return Response(AgentDefinitionSerializer(definition).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        caller = agents_caller(request)
        return Response(
            AgentDefinitionSerializer(agent_definition_get(tenant=caller.tenant, definition_id=int(pk))).data
        )

    def partial_update(self, request: Request, pk: str) -> Response:
        caller = agents_caller(request, min_role=Role.ADMIN)
        definition = agent_definition_get(tenant=caller.tenant, definition_id=int(pk))
        body = AgentDefinitionWriteSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        definition = agent_definition_update(definition=definition, actor=caller.user, **body.validated_data)
        return Response(AgentDefinitionSerializer(definition).data)

    def destroy(self, request: Request, pk: str) -> Response:
        caller = agents_caller(request, min_role=Role.ADMIN)
        definition = agent_definition_get(tenant=caller.tenant, definition_id=int(pk))
        agent_definition_archive(definition=definition, actor=caller.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(
        summary="Runs you may see (yours; every run for admins)",
        parameters=[AgentRunListQuerySerializer],
        responses=AgentRunSerializer(many=True),
    ),
    create=extend_schema(
        summary="Start a run (members); it is queued and runs in the background",
        request=AgentRunCreateSerializer,
        responses={201: AgentRunSerializer},
    ),
    retrieve=extend_schema(summary="A run: status, result, usage", parameters=[_RUN_ID], responses=AgentRunSerializer),
)
class AgentRunViewSet(JsonViewSet):
    http_method_names = ["get", "post", "head", "options"]
    serializer_class = AgentRunSerializer

    def _run(self, request: Request, pk: str, *, min_role: str = Role.VIEWER) -> tuple[Caller, AgentRun]:
        caller = agents_caller(request, min_role=Role.VIEWER)
        run = agent_run_get(
            tenant=caller.tenant, role=caller.role, user=caller.user, api_key=caller.key, run_id=int(pk)
        )
        caller.require(min_role=min_role)
        return caller, run

    def list(self, request: Request) -> Response:
        caller = agents_caller(request)
        query = AgentRunListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        runs = agent_run_list(
            tenant=caller.tenant,
            role=caller.role,
            user=caller.user,
            api_key=caller.key,
            status=query.validated_data.get("status"),
            definition_id=query.validated_data.get("agent_id"),
        )
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(AgentRunSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        caller = agents_caller(request, min_role=Role.MEMBER)
        body = AgentRunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        definition = agent_definition_get(
            tenant=caller.tenant, definition_id=body.validated_data["agent_id"], include_archived=False
        )
        run = agent_run_start(
            definition=definition,
            role=caller.role,
            text=body.validated_data["input"],
            user=caller.user,
            api_key=caller.key,
            ip=_ip(request),
        )
        return Response(AgentRunSerializer(run).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        _, run = self._run(request, pk)
        return Response(AgentRunSerializer(run).data)

    @extend_schema(summary="The run's steps, in order", parameters=[_RUN_ID], responses=AgentStepSerializer(many=True))
    @action(detail=True, methods=["get"])
    def steps(self, request: Request, pk: str) -> Response:
        _, run = self._run(request, pk)
        return Response(AgentStepSerializer(agent_step_list(run=run), many=True).data)

    @extend_schema(
        summary="Cancel a run (its starter or an admin); a run that already ended answers 409",
        parameters=[_RUN_ID],
        request=None,
        responses={200: AgentRunSerializer, 409: OpenApiResponse(description="the run already ended")},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        caller, run = self._run(request, pk, min_role=Role.MEMBER)
        run = agent_run_cancel(run=run, role=caller.role, user=caller.user, api_key=caller.key, ip=_ip(request))
        return Response(AgentRunSerializer(run).data)

    def _decide(self, request: Request, pk: str, *, approve: bool) -> Response:
        caller, run = self._run(request, pk, min_role=Role.MEMBER)
        body = DecisionSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        run = agent_run_decide(
            run=run,
            approve=approve,
            role=caller.role,
            user=caller.user,
            api_key=caller.key,
            note=body.validated_data.get("note", ""),
            ip=_ip(request),
        )
        return Response(AgentRunSerializer(run).data)

    @extend_schema(
        summary="Approve the tool call the run waits on (the agent's approver role)",
        parameters=[_RUN_ID],
        request=DecisionSerializer,
        responses={200: AgentRunSerializer, 409: OpenApiResponse(description="not waiting for an approval")},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        return self._decide(request, pk, approve=True)

    @extend_schema(
        summary="Reject the tool call the run waits on: it does not run and the run stops",
        parameters=[_RUN_ID],
        request=DecisionSerializer,
        responses={200: AgentRunSerializer, 409: OpenApiResponse(description="not waiting for an approval")},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        return self._decide(request, pk, approve=False)


_HOOK_ID = id_parameter("id", "the webhook's id")


@extend_schema_view(
    list=extend_schema(summary="Webhook endpoints (admins)", responses=WebhookSerializer(many=True)),
    create=extend_schema(
        summary="Register a webhook (admins); events are POSTed signed with HMAC-SHA256 (X-Portal-Signature)",
        request=WebhookCreateSerializer,
        responses={201: WebhookCreatedSerializer},
    ),
    destroy=extend_schema(summary="Remove a webhook (admins)", parameters=[_HOOK_ID], responses={204: None}),
)
class WebhookViewSet(JsonViewSet):
    http_method_names = ["get", "post", "delete", "head", "options"]
    serializer_class = WebhookSerializer

    def list(self, request: Request) -> Response:
        caller = agents_caller(request, min_role=Role.ADMIN)
        page = self.paginate_queryset(webhook_endpoint_list(tenant=caller.tenant))
        return self.get_paginated_response(WebhookSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        caller = agents_caller(request, min_role=Role.ADMIN)
        body = WebhookCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint, secret = webhook_endpoint_create(
            tenant=caller.tenant,
            url=body.validated_data["url"],
            definition_id=body.validated_data.get("agent_id"),
            event_types=body.validated_data.get("event_types"),
            actor=caller.user,
        )
        endpoint.secret = secret  # type: ignore[attr-defined]
        return Response(WebhookCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, pk: str) -> Response:
        caller = agents_caller(request, min_role=Role.ADMIN)
        webhook_endpoint_delete(tenant=caller.tenant, endpoint_id=int(pk), actor=caller.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- server-sent events ---------------------------------------------------------------------------------

SSE_POLL_S = 0.5
SSE_KEEPALIVE_S = 15.0
SSE_MAX_S = 600.0  # then the client reconnects with Last-Event-ID


def _last_event_id(request: HttpRequest) -> int:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or "0"
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidInput("Last-Event-ID must be the number of an event (or absent).") from None
    if value < 0 or value > 2_000_000_000:
        raise InvalidInput("Last-Event-ID is out of range.")
    return value


def _authorize_stream(request: HttpRequest, run_id: int) -> tuple[int, int]:
    close_old_connections()
    try:
        drf_request = Request(request, authenticators=[ApiKeyAuthentication(), PortalSessionAuthentication()])
        caller = agents_caller(drf_request)
        run = agent_run_get(tenant=caller.tenant, role=caller.role, user=caller.user, api_key=caller.key, run_id=run_id)
        return run.tenant_id, _last_event_id(request)
    finally:
        close_old_connections()


def _poll(tenant_id: int, run_id: int, after: int) -> tuple[list[dict[str, Any]], tuple[str, int, bool] | None]:
    close_old_connections()
    try:
        state = agent_run_state(run_id=run_id, tenant_id=tenant_id)
        if state is None:
            return [], None
        run = AgentRun(pk=run_id, tenant_id=tenant_id)
        return [event_frame(e) for e in agent_event_list(run=run, after=after, limit=200)], state
    finally:
        close_old_connections()


def sse_format(frame: dict[str, Any]) -> str:
    return f"id: {frame['seq']}\nevent: {frame['type']}\ndata: {json.dumps(frame, separators=(',', ':'))}\n\n"


async def event_stream(tenant_id: int, run_id: int, after: int, *, max_s: float = SSE_MAX_S) -> AsyncIterator[str]:
    """The run's events after ``after``, live, until the run has ended and everything was sent (or ``max_s``)."""
    poll = sync_to_async(_poll, thread_sensitive=False)
    yield "retry: 2000\n\n"
    started = last_sent = time.monotonic()
    while True:
        frames, state = await poll(tenant_id, run_id, after)
        for frame in frames:
            yield sse_format(frame)
            after = frame["seq"]
            last_sent = time.monotonic()
        if state is None:
            return
        run_status, last_seq, held = state
        if run_status in TERMINAL and not held and after >= last_seq and len(frames) < 200:
            return
        if time.monotonic() - started > max_s:
            return
        if len(frames) < 200:
            if time.monotonic() - last_sent > SSE_KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(SSE_POLL_S)


async def run_events(request: HttpRequest, run_id: str) -> HttpResponseBase:
    if request.method not in ("GET", "HEAD"):
        return JsonResponse({"code": "method_not_allowed", "message": "Use GET.", "details": {}}, status=405)
    try:
        tenant_id, after = await sync_to_async(_authorize_stream, thread_sensitive=False)(request, int(run_id))
    except ApplicationError as exc:
        error = JsonResponse(exc.as_dict(), status=exc.status)
        if exc.status == 401:
            error["WWW-Authenticate"] = 'Bearer realm="api"'
        return error
    stream = StreamingHttpResponse(event_stream(tenant_id, int(run_id), after), content_type="text/event-stream")
    stream["Cache-Control"] = "no-cache"
    stream["X-Accel-Buffering"] = "no"
    return stream


router = SimpleRouter()
router.register("agents", AgentDefinitionViewSet, basename="agent")
router.register("agent-runs", AgentRunViewSet, basename="agent-run")
router.register("agent-webhooks", WebhookViewSet, basename="agent-webhook")

urlpatterns = [
    re_path(rf"^agent-runs/(?P<run_id>{ID_PATTERN})/events/?$", run_events, name="agent-run-events"),
    path("", include(router.urls)),
]
