"""PENDING: wired to the pool's capacity planner and launch-spec generator once they land."""

from __future__ import annotations

from typing import Any

from django import forms


class PlannerForm(forms.Form):
    params_b = forms.FloatField(min_value=0.01, max_value=10_000, label="Parameters (billions)")


def plan(data: dict[str, Any]) -> Any:
    raise NotImplementedError


def launch_specs_for(backend: Any) -> Any:
    return None
