"""Template tags of the console pages."""

from __future__ import annotations

from typing import Any

from django import template

from console.selectors import budget_banners

register = template.Library()


@register.inclusion_tag("console/_budget_banner.html")
def budget_banner(scope: Any) -> dict[str, Any]:
    """The departments in reach whose spending this month passed the alert share (a department admin: their own)."""
    banners = budget_banners(tenants=scope.tenants())
    return {"banners": banners[:5], "more": max(0, len(banners) - 5)}
