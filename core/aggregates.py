"""Database aggregates PostgreSQL offers and Django does not."""

from __future__ import annotations

from typing import Any

from django.db.models import Aggregate, FloatField


class Percentile(Aggregate):
    """PostgreSQL ``percentile_cont(p) WITHIN GROUP (ORDER BY expr)`` (continuous, interpolated)."""

    function = "percentile_cont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, *, percentile: float, **extra: Any) -> None:
        if not 0 <= percentile <= 1:
            raise ValueError("percentile is between 0 and 1")
        super().__init__(expression, percentile=float(percentile), **extra)
