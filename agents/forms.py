"""Forms of the agents pages. They only parse input; the rules live in ``agents.services``."""

from __future__ import annotations

from typing import Any

from django import forms

from agents.models import HttpMethod
from agents.services import EVENT_TYPES
from agents.tools import TOOL_CHOICES
from tenants.models import Role


class AgentDefinitionForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(max_length=300, required=False)
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), max_length=20_000)
    tools = forms.MultipleChoiceField(choices=TOOL_CHOICES, required=False, widget=forms.CheckboxSelectMultiple)
    approval_tools = forms.MultipleChoiceField(
        choices=TOOL_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Tools that need a person's approval",
    )
    approver_role = forms.ChoiceField(
        choices=[(Role.ADMIN, "Admins and owners"), (Role.MEMBER, "Any member")], initial=Role.ADMIN
    )
    knowledge_base_ids = forms.TypedMultipleChoiceField(
        coerce=int, required=False, widget=forms.CheckboxSelectMultiple, label="Knowledge bases (none: all readable)"
    )
    adapter = forms.ChoiceField(required=False, label="Adapter (model)")
    max_steps = forms.IntegerField(min_value=1, max_value=50, initial=8, label="Step limit")
    token_budget = forms.IntegerField(min_value=200, max_value=5_000_000, initial=20_000, label="Token budget")
    max_output_tokens = forms.IntegerField(min_value=32, max_value=4_096, initial=256, label="Tokens per turn")
    min_tool_calls = forms.IntegerField(min_value=0, max_value=50, initial=0, label="Tool calls required")
    max_tool_calls = forms.IntegerField(min_value=0, max_value=50, required=False, label="Tool calls at most")

    def __init__(self, *args: Any, knowledge_bases: Any = (), adapters: Any = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["knowledge_base_ids"].choices = [(kb.pk, kb.name) for kb in knowledge_bases]  # type: ignore[attr-defined]
        self.fields["adapter"].choices = [("", "Base model"), *[(a.name, a.name) for a in adapters]]  # type: ignore[attr-defined]


class RunStartForm(forms.Form):
    input = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "Describe the task"}), max_length=20_000, label="Task"
    )


class DecisionForm(forms.Form):
    note = forms.CharField(max_length=500, required=False)


class HttpRuleForm(forms.Form):
    name = forms.SlugField(max_length=60)
    method = forms.ChoiceField(choices=HttpMethod.choices, initial=HttpMethod.GET)
    url_prefix = forms.CharField(max_length=500, label="URL prefix")
    header_secrets = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Authorization: crm-token"}),
        label="Headers from secrets (one 'Header: secret-name' a line)",
    )
    max_response_bytes = forms.IntegerField(min_value=256, max_value=5_000_000, initial=65_536)
    timeout_s = forms.FloatField(min_value=0.5, max_value=120, initial=10.0, label="Timeout (s)")
    idempotent = forms.BooleanField(required=False, label="Safe to repeat (GET and HEAD always are)")
    description = forms.CharField(max_length=300, required=False)

    def clean_header_secrets(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in (self.cleaned_data.get("header_secrets") or "").splitlines():
            if not line.strip():
                continue
            header, sep, secret = line.partition(":")
            if not sep or not header.strip() or not secret.strip():
                raise forms.ValidationError("Write one 'Header: secret-name' per line.")
            out[header.strip()] = secret.strip()
        return out


class SecretForm(forms.Form):
    name = forms.SlugField(max_length=60)
    value = forms.CharField(max_length=4_000, widget=forms.PasswordInput(render_value=False))


class WebhookForm(forms.Form):
    url = forms.URLField(max_length=500, label="URL")
    definition_id = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Agent")
    event_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in EVENT_TYPES], required=False, widget=forms.CheckboxSelectMultiple, label="Events"
    )

    def __init__(self, *args: Any, definitions: Any = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["definition_id"].choices = [("", "All agents"), *[(d.pk, d.name) for d in definitions]]  # type: ignore[attr-defined]
