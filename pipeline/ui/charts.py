"""SVG charts drawn on the server, so that every page reads without JavaScript: a horizontal bar chart (a metric per
slice, with its threshold), line charts (training curves per epoch) and small histograms (a feature's values)."""
from __future__ import annotations

import math
from xml.sax.saxutils import escape

SERIES_COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


def _number(value: float) -> str:
    if value == 0 or 0.001 <= abs(value) < 10000:
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.1f}"
    return f"{value:.3g}"


def bar_chart(values: dict[str, float], *, title: str, threshold: float | None = None,
              width: int = 640) -> str:
    """One bar per label (a slice), longest scale first at 0; a dashed line at the threshold when there is one."""
    if not values:
        return ""
    label_w, bar_h, gap, top = 210, 18, 6, 28
    high = max([*values.values(), threshold or 0.0, 0.0]) or 1.0
    low = min([*values.values(), 0.0])
    span = (high - low) or 1.0
    plot_w = width - label_w - 70
    height = top + len(values) * (bar_h + gap) + 20

    def x(value: float) -> float:
        return label_w + (value - low) / span * plot_w
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart bar" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f"<title>{escape(title)}</title>",
           f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>']
    for i, (label, value) in enumerate(values.items()):
        y = top + i * (bar_h + gap)
        start, end = sorted((x(0.0), x(value)))
        shown = label if len(label) <= 32 else label[:31] + "…"
        out += [f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{escape(shown)}</text>',
                f'<rect x="{start:.1f}" y="{y}" width="{max(1.0, end - start):.1f}" height="{bar_h}" '
                f'fill="#60a5fa"><title>{escape(label)}: {value:.4f}</title></rect>',
                f'<text x="{end + 4:.1f}" y="{y + 13}">{_number(value)}</text>']
    if threshold is not None:
        tx = x(threshold)
        out += [f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{height - 14}" stroke="#dc2626" '
                'stroke-dasharray="5 3" stroke-width="1.5"/>',
                f'<text x="{tx:.1f}" y="{height - 2}" text-anchor="middle" fill="#dc2626">threshold '
                f"{_number(threshold)}</text>"]
    out.append("</svg>")
    return "\n".join(out)


def line_chart(series: dict[str, list[tuple[int, float]]], *, title: str, width: int = 420,
               height: int = 240) -> str:
    """One line per series (train, validation, ...) of (epoch, value) points, with axes and a legend."""
    points = [p for line in series.values() for p in line]
    if not points:
        return ""
    left, right, top, bottom = 56, 12, 26, 38
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if math.isclose(y0, y1):
        y0, y1 = y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(step: float) -> float:
        return left + ((step - x0) / (x1 - x0) * plot_w if x1 != x0 else plot_w / 2)

    def py(value: float) -> float:
        return top + (1 - (value - y0) / (y1 - y0)) * plot_h
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart line" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" font-family="Helvetica, Arial, sans-serif" font-size="11">',
           f"<title>{escape(title)}</title>",
           f'<text x="4" y="15" font-weight="bold" font-size="13">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#f8fafc" stroke="#cbd5e1"/>']
    for value in (y0, (y0 + y1) / 2, y1):
        out.append(f'<text x="{left - 4}" y="{py(value) + 4:.1f}" text-anchor="end">{_number(value)}</text>')
    out += [f'<text x="{left}" y="{top + plot_h + 14}" text-anchor="start">epoch {x0}</text>',
            f'<text x="{left + plot_w}" y="{top + plot_h + 14}" text-anchor="end">{x1}</text>']
    for i, (name, line) in enumerate(series.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        path = " ".join(f"{'M' if n == 0 else 'L'} {px(s):.1f} {py(v):.1f}" for n, (s, v) in enumerate(line))
        out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out += [f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(name)} epoch {s}: {v:.5g}</title></circle>" for s, v in line]
        lx = left + i * 110
        out += [f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{colour}"/>',
                f'<text x="{lx + 14}" y="{height - 5}">{escape(name)}</text>']
    out.append("</svg>")
    return "\n".join(out)


def histogram(buckets: list[tuple[float, float, float]], *, title: str, width: int = 160, height: int = 36) -> str:
    """A small bar per bucket (low, high, count), for a table cell."""
    if not buckets:
        return ""
    most = max(c for _, _, c in buckets) or 1.0
    bar_w = width / len(buckets)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart histogram" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>']
    for i, (low, high, count) in enumerate(buckets):
        h = max(1.0, count / most * (height - 2))
        out.append(f'<rect x="{i * bar_w + 0.5:.1f}" y="{height - h:.1f}" width="{max(1.0, bar_w - 1):.1f}" '
                   f'height="{h:.1f}" fill="#818cf8"><title>{_number(low)} to {_number(high)}: {count:.0f}'
                   "</title></rect>")
    out.append("</svg>")
    return "".join(out)
