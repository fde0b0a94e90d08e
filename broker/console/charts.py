"""Charts as SVG drawn on the server: a line of points with labelled axes, a marker on every
point and the values in the picture's description, so that it reads without colour (and
without sight: each chart's page lists the same values in a table)."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 44


def _nice_top(value: float) -> float:
    """A round number at or above ``value`` for the top of the y axis."""
    if value <= 0:
        return 1.0
    step = 10 ** len(str(int(value))) / 10 if value >= 1 else 0.1
    while step * 10 < value:
        step *= 10
    top = step
    while top < value:
        top += step
    return top


def line_chart(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_top: float | None = None,
    x_span: tuple[float, float] | None = None,
) -> str:
    """An SVG document: ``points`` (x, y) joined by a line, each marked with a square; the x
    axis runs over ``x_span`` when given (a window with gaps), else over the points."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    xs = [x for x, _ in points] or [0.0]
    x_low, x_high = x_span if x_span is not None else (min(xs), max(xs))
    top = y_top if y_top is not None else _nice_top(max((y for _, y in points), default=0.0))

    def at(x: float, y: float) -> tuple[float, float]:
        span = (x_high - x_low) or 1.0
        return (
            LEFT + (x - x_low) / span * plot_w,
            TOP + plot_h - min(max(y, 0.0), top) / top * plot_h,
        )

    described = "; ".join(f"{x:g} {x_label}: {y:.3g}" for x, y in points) or "no data yet"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-labelledby="t d" '
        'font-family="sans-serif" font-size="12">',
        f'<title id="t">{escape(title)}</title>',
        f'<desc id="d">{escape(y_label)} by {escape(x_label)}: {escape(described)}</desc>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        f'<text x="{LEFT}" y="16" font-weight="bold">{escape(title)}</text>',
    ]
    for i in range(5):  # dashed grid lines with their values
        value = top * i / 4
        _, y = at(x_low, value)
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#8c959f" stroke-dasharray="3 3" stroke-width="0.5"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    out.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#1b1f24"/>'
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
        'stroke="#1b1f24"/>'
    )
    for x in sorted({x_low, x_high}):
        px, _ = at(x, 0)
        out.append(f'<text x="{px:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{x:g}</text>')
    out.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{escape(y_label)}</text>'
    )
    if points:
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in (at(x, y) for x, y in points))
        out.append(f'<polyline points="{line}" fill="none" stroke="#0b5cad" stroke-width="2"/>')
        for x, y in points:
            px, py = at(x, y)
            out.append(
                f'<rect x="{px - 3:.1f}" y="{py - 3:.1f}" width="6" height="6" fill="#1b1f24"/>'
            )
    else:
        out.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" '
            'text-anchor="middle">no data yet</text>'
        )
    out.append("</svg>")
    return "".join(out)


BAR_ROW, BAR_LABEL = 28, 200  # a bar's row height; the width of the names left of the bars


def bar_chart(bars: Sequence[tuple[str, int, str]], *, title: str, value_label: str) -> str:
    """An SVG document: one horizontal bar per (name, value, value as shown), its name on its
    left and its value as shown ("12.50 EUR") at its end, so that each bar reads without
    colour. Values are integers (minor units: money is never a float here); a bar's length is
    its share of the largest, a value at or below zero draws no bar but keeps its text."""
    height = TOP + BAR_ROW * max(len(bars), 1) + BOTTOM
    plot_w = WIDTH - LEFT - RIGHT - BAR_LABEL - 110  # room for the value after the longest bar
    x0 = LEFT + BAR_LABEL
    top = max((v for _, v, _ in bars), default=0)
    described = "; ".join(f"{name}: {shown}" for name, _, shown in bars) or "nothing"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-labelledby="t d" '
        'font-family="sans-serif" font-size="12">',
        f'<title id="t">{escape(title)}</title>',
        f'<desc id="d">{escape(value_label)}: {escape(described)}</desc>',
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>',
        f'<text x="{LEFT}" y="16" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{x0}" x2="{x0}" y1="{TOP}" y2="{height - BOTTOM}" stroke="#1b1f24"/>',
    ]
    for i, (name, value, shown) in enumerate(bars):
        y = TOP + i * BAR_ROW
        # Integer arithmetic: the bar's length in whole pixels, from minor units.
        length = value * plot_w // top if top > 0 and value > 0 else 0
        out.append(
            f'<text x="{x0 - 6}" y="{y + BAR_ROW // 2 + 4}" text-anchor="end">'
            f"{escape(_clip(name))}</text>"
        )
        if length:
            out.append(
                f'<rect x="{x0}" y="{y + 4}" width="{length}" height="{BAR_ROW - 8}" '
                'fill="#0b5cad" stroke="#1b1f24"/>'
            )
        out.append(f'<text x="{x0 + length + 6}" y="{y + BAR_ROW // 2 + 4}">{escape(shown)}</text>')
    if not bars:
        out.append(f'<text x="{x0 + 6}" y="{TOP + BAR_ROW // 2 + 4}">nothing charged</text>')
    out.append(
        f'<text x="{x0 + plot_w // 2}" y="{height - 12}" text-anchor="middle">'
        f"{escape(value_label)}</text>"
    )
    out.append("</svg>")
    return "".join(out)


def _clip(name: str, width: int = 30) -> str:
    """A name short enough for the label column (the table below the chart has it whole)."""
    return name if len(name) <= width else name[: width - 1] + "\u2026"
