"""Conversations and their messages. Both are tenant-owned; a conversation belongs to one user of one department.

``Message.text`` is what the owner sees (PII unmasked); ``Message.masked_text`` is what the model saw or produced
(PII replaced by placeholders such as ``<PERSON_1>`` whose mapping lives in the conversation's encrypted vault). The
prompt history is built from ``masked_text`` only, so raw PII never reaches an engine.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.fields import EncryptedTextField
from tenants.models import TenantOwned


class Conversation(TenantOwned):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, default="New chat")
    knowledge_bases = models.ManyToManyField("knowledge.KnowledgeBase", blank=True, related_name="+")
    adapter = models.CharField(max_length=100, blank=True, default="", help_text="adapter name; blank: base model")
    # one generation at a time: set while an answer streams (a lease, so that a crashed process does not lock it)
    generating_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["tenant", "user", "-updated_at"], name="conv_tenant_user_recent")]

    def __str__(self) -> str:
        return self.title

    @property
    def scope_key(self) -> str:
        """The PII vault of this conversation (guardrails.mask/unmask)."""
        return f"conversation:{self.pk}"


class Message(TenantOwned):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        STOPPED = "stopped", "Stopped"
        ERROR = "error", "Error"

    class Feedback(models.TextChoices):
        NONE = "", "None"
        UP = "up", "Thumbs up"
        DOWN = "down", "Thumbs down"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    # encrypted at rest: the owner's view holds the PII the user typed (never sent to an engine)
    text = EncryptedTextField(blank=True, default="")
    masked_text = EncryptedTextField(blank=True, default="")
    # [{"n", "document_id", "document_name", "knowledge_base_id", "page", "heading", "snippet", "chunk_id"}]
    citations = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    error_code = models.CharField(max_length=64, blank=True, default="")
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    ttft_ms = models.FloatField(null=True, blank=True)
    tpot_ms = models.FloatField(null=True, blank=True)
    model = models.CharField(max_length=200, blank=True, default="")
    adapter = models.CharField(max_length=100, blank=True, default="")
    backend = models.CharField(max_length=200, blank=True, default="")
    feedback = models.CharField(max_length=8, choices=Feedback.choices, blank=True, default=Feedback.NONE)
    feedback_comment = models.TextField(blank=True, default="")
    # {"input": {"decision", "score", "reasons"}, "chunks": {...}, "output": {"decision", "groundedness", ...},
    #  "pii": {"ENTITY": count}} — decisions, scores and counts only, never text
    guardrails = models.JSONField(default=dict, blank=True)
    # stage → milliseconds (authorize, quota, input_guard, mask, retrieve, prompt, ttft, generate, ...)
    timings = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["conversation", "created_at"], name="msg_conv_time")]

    def __str__(self) -> str:
        return f"{self.role}:{self.pk}"

    @property
    def needs_attention(self) -> bool:
        """Show a badge: a guard warned, or the answer is poorly grounded in its sources."""
        return bool(self.guard_warnings)

    @property
    def guard_warnings(self) -> list[str]:
        warnings: list[str] = []
        g = self.guardrails or {}
        if (g.get("input") or {}).get("decision") == "warn":
            warnings.append("The question looked like a prompt-injection attempt.")
        if any(v == "warn" or v == "block" for v in (g.get("chunks") or {}).get("decisions", [])):
            warnings.append("A retrieved passage contained instructions and was treated with suspicion.")
        out = g.get("output") or {}
        if out.get("decision") in ("warn", "block"):
            warnings.append("The answer was flagged by the output check.")
        groundedness = out.get("groundedness")
        if (
            groundedness is not None
            and self.citations
            and groundedness < getattr(settings, "CHAT_LOW_GROUNDEDNESS", 0.5)
        ):
            warnings.append("The answer is poorly supported by the cited documents.")
        return warnings
