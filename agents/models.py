"""Agents: definitions, runs and their steps, the run's event log, and the HTTP tool's allowlist, secrets and webhooks.

A run advances one step per Celery task; every step is a checkpoint (``AgentRun.checkpoint``) committed together
with the step rows and the events it produced, so a run whose worker died resumes from its last checkpoint. A tool
call is recorded (intent, idempotency key) before it executes and marked ``running`` while it does: a completed
result is never executed again, an interrupted idempotent call is repeated with the same idempotency key, an
interrupted non-idempotent one waits for a person to decide (see ``agents.runner``).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.fields import EncryptedTextField
from tenants.models import ApiKey, Role, TenantOwned


def _request_id() -> str:
    return uuid.uuid4().hex


class AgentDefinition(TenantOwned):
    """What an agent is: its instructions, tools, model (adapter), limits and which tools need a person's approval."""

    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True, default="")
    instructions = models.TextField(help_text="what the agent is for and how it should work")
    tools = models.JSONField(default=list, blank=True, help_text="names of the tools the agent may call")
    approval_tools = models.JSONField(default=list, blank=True, help_text="tools that wait for a person's approval")
    approver_role = models.CharField(
        max_length=16,
        choices=[(Role.MEMBER, "Member"), (Role.ADMIN, "Admin")],
        default=Role.ADMIN,
        help_text="the lowest role that may approve or reject a tool call",
    )
    knowledge_base_ids = models.JSONField(
        default=list, blank=True, help_text="knowledge bases the search and read tools use (empty: every readable one)"
    )
    adapter = models.CharField(max_length=100, blank=True, default="", help_text="LoRA adapter (blank: base model)")
    max_steps = models.PositiveIntegerField(default=8, help_text="model turns at most (hard)")
    token_budget = models.PositiveIntegerField(default=20_000, help_text="tokens per run at most (hard)")
    max_output_tokens = models.PositiveIntegerField(default=256, help_text="tokens per model turn at most")
    min_tool_calls = models.PositiveIntegerField(default=0, help_text="tool calls required before a final answer")
    max_tool_calls = models.PositiveIntegerField(
        null=True, blank=True, help_text="tool calls allowed at most (blank: limited by the step limit only)"
    )
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_agent_definition_name")]

    def __str__(self) -> str:
        return self.name


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class AgentRun(TenantOwned):
    definition = models.ForeignKey(AgentDefinition, on_delete=models.PROTECT, related_name="runs")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    # the task and the answer hold raw personal data: encrypted at rest like chat messages (PII_VAULT_KEY)
    input = EncryptedTextField(help_text="the task as the person wrote it (shown to the department only)")
    input_masked = models.TextField(blank=True, default="", help_text="the task with PII replaced by placeholders")
    result = EncryptedTextField(blank=True, default="")
    error_code = models.CharField(max_length=40, blank=True, default="")
    error = models.TextField(blank=True, default="")
    # --- execution state -------------------------------------------------------------------------------------
    checkpoint = models.PositiveIntegerField(default=0, help_text="committed transitions; tasks carry the one they run")
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    event_seq = models.PositiveIntegerField(default=0, help_text="the last event's sequence number")
    steps_used = models.PositiveIntegerField(default=0, help_text="model turns taken")
    tool_calls = models.PositiveIntegerField(default=0)
    # --- usage -----------------------------------------------------------------------------------------------
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    tokens_unaccounted = models.PositiveIntegerField(
        default=0, help_text="tokens held by model calls whose worker died (counted against the budget)"
    )
    inflight_tokens = models.PositiveIntegerField(default=0, help_text="the upper bound of the model call in flight")
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    model = models.CharField(max_length=200, blank=True, default="")
    adapter = models.CharField(max_length=200, blank=True, default="")
    backend = models.CharField(max_length=200, blank=True, default="")
    request_id = models.CharField(max_length=64, default=_request_id)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta(TenantOwned.Meta):
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="agentrun_tenant_time"),
            models.Index(fields=["status", "lease_expires_at"], name="agentrun_status_lease"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def tokens_used(self) -> int:
        return self.tokens_in + self.tokens_out + self.tokens_unaccounted


class StepKind(models.TextChoices):
    THOUGHT = "thought", "Thought"
    TOOL_CALL = "tool_call", "Tool call"
    TOOL_RESULT = "tool_result", "Tool result"
    APPROVAL = "approval", "Approval"
    FINAL = "final", "Final answer"
    ERROR = "error", "Error"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # a tool call recorded, not started; an approval not decided
    RUNNING = "running", "Running"  # a tool call executing (in doubt if its worker died)
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class AgentStep(TenantOwned):
    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="steps")
    ordinal = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=StepKind.choices)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.DONE)
    tool = models.CharField(max_length=50, blank=True, default="")
    idempotency_key = models.CharField(max_length=64, blank=True, default="")
    # thought: {text, raw}; tool_call: {tool, arguments, idempotent, needs_approval}; tool_result: {call, ok, text,
    # truncated, guard}; approval: {call, reason, decision, note}; final: {answer}; error: {code, message}
    payload = models.JSONField(default=dict, blank=True)
    flagged = models.BooleanField(default=False, help_text="a guardrail flagged this tool result")
    executions = models.PositiveIntegerField(default=0, help_text="how many times this tool call was started")
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(default=0)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwned.Meta):
        ordering = ["run_id", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["run", "ordinal"], name="uniq_agent_step_ordinal")]

    def __str__(self) -> str:
        return f"run {self.run_id} step {self.ordinal} {self.kind}"


class AgentEvent(TenantOwned):
    """The run's append-only event log: numbered 1, 2, 3 … per run without gaps (assigned under the run's row
    lock, so they also commit in order). Server-sent events resume from it with ``Last-Event-ID``."""

    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=32)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        ordering = ["run_id", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="uniq_agent_event_seq")]

    def __str__(self) -> str:
        return f"run {self.run_id} event {self.seq} {self.type}"


class AgentSecret(TenantOwned):
    """A credential the HTTP tool sends in a header. Encrypted at rest (``agents.crypto``); never shown again,
    never given to the model, never in steps, events or logs."""

    name = models.SlugField(max_length=60)
    encrypted_value = models.BinaryField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_agent_secret_name")]

    def __str__(self) -> str:
        return self.name


class HttpMethod(models.TextChoices):
    GET = "GET", "GET"
    HEAD = "HEAD", "HEAD"
    POST = "POST", "POST"
    PUT = "PUT", "PUT"
    PATCH = "PATCH", "PATCH"
    DELETE = "DELETE", "DELETE"


SAFE_METHODS = (HttpMethod.GET, HttpMethod.HEAD)


class HttpToolRule(TenantOwned):
    """One allowlist entry of the HTTP tool: a method and a URL prefix, the headers to send (values taken from
    stored secrets), a response size cap and a timeout. Anything that matches no rule is refused."""

    name = models.SlugField(max_length=60)
    method = models.CharField(max_length=8, choices=HttpMethod.choices, default=HttpMethod.GET)
    url_prefix = models.URLField(max_length=500)
    header_secrets = models.JSONField(
        default=dict, blank=True, help_text='header name → secret name, e.g. {"Authorization": "crm-token"}'
    )
    max_response_bytes = models.PositiveIntegerField(default=65_536)
    timeout_s = models.FloatField(default=10.0)
    idempotent = models.BooleanField(default=False, help_text="safe to repeat after a crash (GET and HEAD always are)")
    description = models.CharField(max_length=300, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_http_tool_rule_name")]

    def __str__(self) -> str:
        return f"{self.method} {self.url_prefix}"

    @property
    def is_idempotent(self) -> bool:
        return self.idempotent or self.method in SAFE_METHODS


class WebhookEndpoint(TenantOwned):
    """A URL that receives the department's run events as signed JSON POSTs (HMAC-SHA256, see ``agents.webhooks``)."""

    url = models.URLField(max_length=500)
    encrypted_secret = models.BinaryField()
    definition = models.ForeignKey(
        AgentDefinition, null=True, blank=True, on_delete=models.CASCADE, related_name="+", help_text="blank: all"
    )
    event_types = models.JSONField(default=list, blank=True, help_text="blank: every event type")
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_delivery_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=80, blank=True, default="")
    failures = models.PositiveIntegerField(default=0)

    class Meta(TenantOwned.Meta):
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(TenantOwned):
    """One event owed to one endpoint. A row per delivery lets the sweep (``agents.webhook_sweep``) send again what
    a lost broker message left pending, and makes a duplicate message harmless (a delivered row is not resent)."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="+")
    event = models.ForeignKey(AgentEvent, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status = models.CharField(max_length=80, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        constraints = [models.UniqueConstraint(fields=["endpoint", "event"], name="uniq_webhook_delivery")]
        indexes = [
            models.Index(fields=["updated_at"], name="webhook_delivery_pending", condition=models.Q(state="pending"))
        ]

    def __str__(self) -> str:
        return f"event {self.event_id} → endpoint {self.endpoint_id}: {self.state}"
