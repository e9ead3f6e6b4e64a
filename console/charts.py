"""Server-rendered SVG bar charts (no JavaScript, no external library). Labels are escaped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PALETTE = ("#2457d6", "#93b4ff", "#1b7f3b", "#a86400", "#b3261e")


@dataclass(frozen=True)
class Bar:
    label: str
    values: Sequence[float | int | Decimal]  # stacked segments, bottom first


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 1_000:
        return f"{value / 1_000:.1f}k"
    if value == int(value):
        return str(int(value))
    return f"{value:.2f}"


def bar_chart_svg(
    *,
    bars: Sequence[Bar],
    series: Sequence[str],
    title: str,
    width: int = 720,
    height: int = 220,
    label_every: int = 1,
) -> SafeString:
    """A stacked vertical bar chart with a legend, an accessible title and one <title> tooltip per bar."""
    pad_left, pad_right, pad_top, pad_bottom = 48, 8, 24, 42
    plot_w = width - pad_left - pad_right
    plot_h = height - pad_top - pad_bottom
    totals = [sum(float(v) for v in b.values) for b in bars]
    top = max(totals, default=0.0) or 1.0
    n = max(len(bars), 1)
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.72)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<line x1="{pad_left}" y1="{pad_top + plot_h}" x2="{width - pad_right}" y2="{pad_top + plot_h}" '
        'stroke="#dde1e8"/>',
    ]
    for frac in (0.5, 1.0):
        y = pad_top + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{pad_left}" y1="{y:.1f}" x2="{width - pad_right}" y2="{y:.1f}" stroke="#eef0f4"/>'
            f'<text x="{pad_left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#5b6476">'
            f"{_fmt(top * frac)}</text>"
        )
    for i, bar in enumerate(bars):
        x = pad_left + i * slot + (slot - bar_w) / 2
        y_base = float(pad_top + plot_h)
        tip = f"{bar.label}: " + ", ".join(
            f"{name} {_fmt(float(v))}" for name, v in zip(series, bar.values, strict=False)
        )
        parts.append(f'<g class="bar"><title>{escape(tip)}</title>')
        for j, value in enumerate(bar.values):
            h = plot_h * float(value) / top
            if h <= 0:
                continue
            y_base -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y_base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[j % len(PALETTE)]}"/>'
            )
        parts.append("</g>")
        if i % max(1, label_every) == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{pad_top + plot_h + 14}" text-anchor="middle" font-size="10" '
                f'fill="#5b6476">{escape(bar.label[:14])}</text>'
            )
    lx = pad_left
    for j, name in enumerate(series):
        parts.append(
            f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
            f'<text x="{lx + 14}" y="{height - 5}" font-size="11" fill="#1d2330">{escape(name)}</text>'
        )
        lx += 14 + 8 * len(name) + 16
    if not bars:
        parts.append(
            f'<text x="{width / 2}" y="{pad_top + plot_h / 2}" text-anchor="middle" font-size="12" '
            'fill="#5b6476">No usage in this period</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated label is escaped above
