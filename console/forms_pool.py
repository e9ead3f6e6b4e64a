from __future__ import annotations

from typing import Any

from django import forms

from inference_pool.models import Backend

BACKEND_FORM_FIELDS = [
    "name",
    "kind",
    "base_url",
    "base_model",
    "served_name",
    "quantization",
    "context_length",
    "max_concurrent",
    "weight",
    "api_key",
]


class BackendForm(forms.ModelForm):
    """Validation only: the console saves through ``console.services.backend_create/backend_update``."""

    api_key = forms.CharField(
        max_length=500, required=False, widget=forms.PasswordInput(render_value=False), help_text="blank: keep"
    )

    class Meta:
        model = Backend
        fields = BACKEND_FORM_FIELDS

    def clean_weight(self) -> float:
        value = self.cleaned_data["weight"]
        if value is None or value <= 0 or value > 1000:
            raise forms.ValidationError("must be above 0 and at most 1000")
        return float(value)

    def clean_max_concurrent(self) -> int:
        value = self.cleaned_data["max_concurrent"]
        if not value or value > 10_000:
            raise forms.ValidationError("must be between 1 and 10,000")
        return int(value)

    def clean_context_length(self) -> int:
        value = self.cleaned_data["context_length"]
        if not value or value < 128 or value > 10_000_000:
            raise forms.ValidationError("must be between 128 and 10,000,000 tokens")
        return int(value)

    def validate_unique(self) -> None:
        return None  # the service answers a duplicate name with a clear 409

    def changes(self) -> dict[str, Any]:
        data = {k: self.cleaned_data[k] for k in BACKEND_FORM_FIELDS}
        if not data["api_key"]:
            data.pop("api_key")  # an empty password field keeps the stored key
        return data


class BaseModelForm(forms.Form):
    """A base model the pool serves; saved through ``inference_pool.services.base_model_create``."""

    name = forms.CharField(max_length=200, help_text="the name clients send as 'model'")
    family = forms.CharField(max_length=100, required=False)
    context_length = forms.IntegerField(min_value=128, max_value=10_000_000, initial=4096)
    params_b = forms.FloatField(min_value=0, required=False, initial=0, label="Parameters (billions)")
    layers = forms.IntegerField(min_value=0, required=False, initial=0, help_text="for the capacity planner")
    kv_heads = forms.IntegerField(min_value=0, required=False, initial=0, label="KV heads")
    head_dim = forms.IntegerField(min_value=0, required=False, initial=0, label="Head size")

    def values(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        return {k: (v if v is not None else (0 if k != "family" else "")) for k, v in data.items()}
