"""Server-side SVG bar charts: no scripts, no fonts, no external anything.

The dashboard runs on machines without internet, and a regulator's browser may
block scripts; a chart is plain SVG text inside the page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

WIDTH = 560
HEIGHT = 160
PAD_LEFT = 44
PAD_BOTTOM = 22
PAD_TOP = 22


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 100_000, 1_000_000):
        if value <= step:
            return float(step)
    return float(value)


def bar_chart(title: str, points: Sequence[tuple[dt.datetime, float]], *, unit: str = "",
              color: str = "#2563eb", chart_id: str = "") -> str:
    """A bar per point; the y axis starts at zero and ends at a round number."""
    assert points, "a chart needs at least one point"
    top = _nice_max(max(value for _, value in points))
    plot_w = WIDTH - PAD_LEFT - 8
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    bar_w = plot_w / len(points)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<text x="{PAD_LEFT}" y="14" font-family="sans-serif" font-size="12" fill="#111">{escape(title)}</text>']
    for fraction in (0.0, 0.5, 1.0):
        y = PAD_TOP + plot_h * (1 - fraction)
        label = f"{top * fraction:g}"
        parts.append(f'<line x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH - 8}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{PAD_LEFT - 4}" y="{y + 4:.1f}" font-family="sans-serif" font-size="10" '
                     f'text-anchor="end" fill="#555">{escape(label)}</text>')
    for index, (at, value) in enumerate(points):
        h = plot_h * (value / top)
        x = PAD_LEFT + index * bar_w
        parts.append(f'<rect x="{x + 0.5:.1f}" y="{PAD_TOP + plot_h - h:.1f}" width="{max(bar_w - 1, 0.5):.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{at:%H:%M} UTC: {value:g}{escape(unit)}</title></rect>')
    first, last = points[0][0], points[-1][0]
    parts.append(f'<text x="{PAD_LEFT}" y="{HEIGHT - 6}" font-family="sans-serif" font-size="10" '
                 f'fill="#555">{first:%H:%M}</text>')
    parts.append(f'<text x="{WIDTH - 8}" y="{HEIGHT - 6}" font-family="sans-serif" font-size="10" '
                 f'text-anchor="end" fill="#555">{last:%H:%M} UTC</text>')
    parts.append("</svg>")
    return "".join(parts)
