"""Input parsing for console actions. Invalid input becomes one ``InvalidInput`` a person can read."""

from __future__ import annotations

from typing import Any

from django import forms

from core.errors import InvalidInput
from tenants.models import ApiKey, Quota, Role


def cleaned(form: forms.BaseForm) -> dict[str, Any]:
    if form.is_valid():
        return form.cleaned_data
    messages: list[str] = []
    for field, errors in form.errors.items():
        label = form.fields[field].label if field in form.fields else ""
        prefix = f"{label or field.replace('_', ' ').capitalize()}: " if field != "__all__" else ""
        messages.extend(f"{prefix}{e}" for e in errors)
    raise InvalidInput(" ".join(messages) or "The form is not valid.")


class TenantCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(max_length=63, required=False, help_text="blank: derived from the name")


class QuotaForm(forms.ModelForm):
    class Meta:
        model = Quota
        fields = [
            "tokens_per_day",
            "tokens_per_month",
            "requests_per_minute",
            "max_upload_mb",
            "max_documents",
            "monthly_budget",
            "budget_alert_percent",
            "budget_enforcement",
        ]
        labels = {
            "monthly_budget": "Monthly budget (0: none)",
            "budget_alert_percent": "Alert admins at (% of the budget)",
            "budget_enforcement": "When the budget is spent",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the budget's alert share and enforcement may be left out of a post: they then keep their values
        for name in ("budget_alert_percent", "budget_enforcement"):
            self.fields[name].required = False

    def clean_monthly_budget(self) -> Any:
        value = self.cleaned_data["monthly_budget"]
        if value is not None and value < 0:
            raise forms.ValidationError("must be zero or more")
        return value

    def clean_budget_alert_percent(self) -> Any:
        value = self.cleaned_data.get("budget_alert_percent")
        if value is not None and value > 100:
            raise forms.ValidationError("must be between 0 and 100")
        return value


class MemberAddForm(forms.Form):
    identifier = forms.CharField(max_length=254, label="Username or email")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class MemberCreateForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.CharField(max_length=254, required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
    scopes = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, required=False)
    expires_in_days = forms.IntegerField(min_value=1, max_value=3650, required=False, label="Expires in (days)")


class PriceForm(forms.Form):
    model = forms.CharField(max_length=200, label="Model or adapter")
    input_per_1k = forms.CharField(max_length=32, label="Input per 1,000 tokens")
    output_per_1k = forms.CharField(max_length=32, label="Output per 1,000 tokens")
