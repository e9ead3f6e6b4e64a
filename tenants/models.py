from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.scoping import TenantScopedManager


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


def role_at_least(role: str, minimum: str) -> bool:
    return ROLE_RANK[Role(role)] >= ROLE_RANK[Role(minimum)]


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    system_prompt = models.TextField(
        blank=True,
        default="You are a helpful assistant for employees. Answer from the provided context and cite sources as [n].",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class TenantOwned(models.Model):
    """Base for every row that belongs to a department: a tenant FK and the fail-closed default manager."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")

    objects = TenantScopedManager()
    unscoped = models.Manager()

    class Meta:
        abstract = True
        base_manager_name = "unscoped"


class Membership(TenantOwned):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="uniq_membership_tenant_user")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.tenant_id}:{self.role}"


class BudgetEnforcement(models.TextChoices):
    """What happens once a department's monthly budget is spent."""

    BLOCK = "block", "Refuse requests"
    ALERT = "alert", "Alert only"


class Quota(models.Model):
    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="quota")
    tokens_per_day = models.PositiveBigIntegerField(default=2_000_000)
    tokens_per_month = models.PositiveBigIntegerField(default=40_000_000)
    requests_per_minute = models.PositiveIntegerField(default=120)
    max_upload_mb = models.PositiveIntegerField(default=25)
    max_documents = models.PositiveIntegerField(default=5_000)
    # cost per calendar month (UTC) in the prices' currency; 0: no budget (nothing is enforced or alerted)
    monthly_budget = models.DecimalField(max_digits=12, decimal_places=2, default=1000)
    # the department's admins are alerted when this share of the budget is spent (0: only when all of it is)
    budget_alert_percent = models.PositiveSmallIntegerField(default=80)
    budget_enforcement = models.CharField(
        max_length=8, choices=BudgetEnforcement.choices, default=BudgetEnforcement.BLOCK
    )

    def __str__(self) -> str:
        return f"quota:{self.tenant_id}"


class ApiKey(TenantOwned):
    class Scope(models.TextChoices):
        CHAT = "chat", "Chat and completions"
        KNOWLEDGE_READ = "knowledge:read", "Read knowledge bases"
        KNOWLEDGE_WRITE = "knowledge:write", "Upload documents"
        AGENTS = "agents", "Run agents"
        ADMIN = "admin", "Administer the department"

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    hashed_secret = models.CharField(max_length=128)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, *, now: object = None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now  # type: ignore[operator]


class AuditEvent(models.Model):
    """Append-only (a database trigger refuses UPDATE and DELETE). ``details`` never holds secrets or PII."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_label = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=80, db_index=True)
    target_type = models.CharField(max_length=80, blank=True, default="")
    target_id = models.CharField(max_length=80, blank=True, default="")
    ip = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="audit_tenant_time")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action}"


class ModelPrice(models.Model):
    """Price per 1,000 tokens for a served model (base model name or adapter name); used to cost usage."""

    model = models.CharField(max_length=200, unique=True)
    input_per_1k = models.DecimalField(max_digits=10, decimal_places=6, default=0)
    output_per_1k = models.DecimalField(max_digits=10, decimal_places=6, default=0)

    def __str__(self) -> str:
        return self.model


class UsageRecord(TenantOwned):
    """One settled request: real token counts and cost. Never holds prompt or answer text."""

    class Source(models.TextChoices):
        CHAT = "chat", "Browser chat"
        API = "api", "OpenAI-compatible API"
        AGENT = "agent", "Agent run"
        EMBEDDING = "embedding", "Embeddings"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.CHAT)
    model = models.CharField(max_length=200, blank=True, default="")
    adapter = models.CharField(max_length=200, blank=True, default="")
    backend = models.CharField(max_length=200, blank=True, default="")
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    request_id = models.CharField(max_length=64, blank=True, default="")
    outcome = models.CharField(max_length=32, blank=True, default="ok")

    class Meta(TenantOwned.Meta):
        indexes = [models.Index(fields=["tenant", "created_at"], name="usage_tenant_time")]

    def __str__(self) -> str:
        return f"usage:{self.tenant_id}:{self.tokens_in}+{self.tokens_out}"


class QuotaCounter(TenantOwned):
    """Token and request counters of one tenant for one window (minute, day or month); see ``tenants.quota``.

    ``used`` holds settled tokens, ``reserved`` the maximum still held by requests in flight; a reservation only
    succeeds while ``used + reserved + n <= limit`` (a conditional UPDATE, atomic under concurrency).
    """

    class Period(models.TextChoices):
        MINUTE = "minute", "Minute"
        DAY = "day", "Day"
        MONTH = "month", "Month"

    period = models.CharField(max_length=8, choices=Period.choices)
    window_start = models.DateTimeField()
    used = models.PositiveBigIntegerField(default=0)
    reserved = models.PositiveBigIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    # settled cost (day and month windows); a database default: the counters are upserted in raw SQL
    cost = models.DecimalField(max_digits=16, decimal_places=6, default=0, db_default=0)

    class Meta(TenantOwned.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "period", "window_start"], name="uniq_quota_counter_window")
        ]

    def __str__(self) -> str:
        return f"quota-counter:{self.tenant_id}:{self.period}:{self.window_start:%Y-%m-%d %H:%M}"


class QuotaReservation(TenantOwned):
    """Tokens held by one request in flight, until it is settled or released (stale ones are swept)."""

    tokens = models.PositiveBigIntegerField()
    day_start = models.DateTimeField()
    month_start = models.DateTimeField()
    request_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"quota-reservation:{self.tenant_id}:{self.tokens}"


class BudgetAlert(TenantOwned):
    """A department's monthly budget reached a level (the alert share, or all of it). One row per department,
    month, level and budget amount (a raised budget alerts again at its own levels): the settlement that crosses
    the level inserts it, so the admins are notified once however many requests cross it together."""

    class Level(models.TextChoices):
        THRESHOLD = "threshold", "Alert share reached"
        EXHAUSTED = "exhausted", "Budget spent"

    month_start = models.DateTimeField()
    level = models.CharField(max_length=16, choices=Level.choices)
    budget = models.DecimalField(max_digits=12, decimal_places=2)
    spent = models.DecimalField(max_digits=16, decimal_places=6)
    percent = models.PositiveSmallIntegerField()  # the level as a share of the budget (the alert share or 100)
    enforcement = models.CharField(max_length=8, choices=BudgetEnforcement.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "month_start", "level", "budget"], name="uniq_budget_alert_level")
        ]

    def __str__(self) -> str:
        return f"budget-alert:{self.tenant_id}:{self.month_start:%Y-%m}:{self.level}"
