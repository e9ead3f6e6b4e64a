from __future__ import annotations

from typing import Any

from django import forms

from adapters.models import Adapter, AdapterFormat
from inference_pool.selectors import base_model_list


class AdapterForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="the name clients ask for, e.g. legal-summaries")
    base_model: forms.ModelChoiceField[Any] = forms.ModelChoiceField(queryset=base_model_list(), empty_label=None)
    format = forms.ChoiceField(choices=AdapterFormat.choices)
    source = forms.CharField(max_length=1000, help_text="path on the engine hosts or URI (hf://, s3://)")
    rank = forms.IntegerField(min_value=1, max_value=1024, initial=8)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    owner_tenant = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Owner")

    def __init__(self, *args: object, tenants: list[tuple[int, str]] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        owner = self.fields["owner_tenant"]
        assert isinstance(owner, forms.TypedChoiceField)
        owner.choices = [("", "Shared (assign to departments)"), *(tenants or [])]


class AdapterEditForm(forms.Form):
    base_model: forms.ModelChoiceField[Any] = forms.ModelChoiceField(queryset=base_model_list(), empty_label=None)
    format = forms.ChoiceField(choices=AdapterFormat.choices)
    source = forms.CharField(max_length=1000)
    rank = forms.IntegerField(min_value=1, max_value=1024)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    @classmethod
    def for_adapter(cls, adapter: Adapter) -> AdapterEditForm:
        return cls(
            initial={
                "base_model": adapter.base_model_id,
                "format": adapter.format,
                "source": adapter.source,
                "rank": adapter.rank,
                "description": adapter.description,
            }
        )
