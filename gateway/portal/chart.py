"""A bar chart of exchanges over time, as inline SVG drawn on the server: it needs no JavaScript."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from html import escape
from typing import Any

from markupsafe import Markup

WIDTH, HEIGHT = 720, 240
LEFT, BOTTOM, TOP, RIGHT = 44, 36, 12, 8


def series(rows: Iterable[Mapping[str, Any]]) -> list[tuple[datetime, int, int]]:
    """(bucket, allowed, denied) per time bucket, oldest first, summed over counterparties and services."""
    sums: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        bucket = row["bucket"]
        sums[bucket][0] += int(row.get("allowed") or 0)
        sums[bucket][1] += int(row.get("denied") or 0)
    return [(bucket, a, d) for bucket, (a, d) in sorted(sums.items())]


def bar_chart(points: list[tuple[datetime, int, int]], *, title: str, allowed: str, denied: str,
              hourly: bool = False) -> Markup:
    """Stacked bars (allowed below, denied on top) with a y axis and a few x labels."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max((a + d for _, a, d in points), default=0) or 1
    step = plot_w / max(len(points), 1)
    bar = max(min(step * 0.7, 40), 1)
    fmt = "%d-%m %H:00" if hourly else "%d-%m"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="chart" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" class="axis"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" class="axis"/>',
    ]
    for tick in sorted({0, peak // 2, peak}):
        y = TOP + plot_h - plot_h * tick / peak
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{tick}</text>')
    label_every = max(1, len(points) // 8)
    for i, (bucket, a, d) in enumerate(points):
        x = LEFT + i * step + (step - bar) / 2
        h_a, h_d = plot_h * a / peak, plot_h * d / peak
        y_a = TOP + plot_h - h_a
        label = escape(bucket.strftime(fmt))
        parts.append(
            f'<rect x="{x:.1f}" y="{y_a:.1f}" width="{bar:.1f}" height="{h_a:.1f}" class="allowed">'
            f"<title>{label}: {a} {escape(allowed)}</title></rect>"
        )
        if d:
            parts.append(
                f'<rect x="{x:.1f}" y="{y_a - h_d:.1f}" width="{bar:.1f}" height="{h_d:.1f}" class="denied">'
                f"<title>{label}: {d} {escape(denied)}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" class="tick" '
                f'text-anchor="middle">{label}</text>'
            )
    legend_y = HEIGHT - 6
    parts.append(
        f'<rect x="{LEFT}" y="{legend_y - 9}" width="10" height="10" class="allowed"/>'
        f'<text x="{LEFT + 14}" y="{legend_y}" class="tick">{escape(allowed)}</text>'
        f'<rect x="{LEFT + 110}" y="{legend_y - 9}" width="10" height="10" class="denied"/>'
        f'<text x="{LEFT + 124}" y="{legend_y}" class="tick">{escape(denied)}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text above is escaped
