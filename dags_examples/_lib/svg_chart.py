"""A hand-written SVG chart: accuracy per category (bars) and across past runs (lines).

No plotting library: plain SVG text, readable in any browser and in GitHub's
markdown preview. Values are fractions in 0..1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

EXACT_COLOUR = "#4e79a7"
CONTAINS_COLOUR = "#f28e2b"
_W, _H = 720, 300  # one panel
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 40, 64


def _text(x: float, y: float, text: str, *, size: int = 12, anchor: str = "middle", extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>'
        f"{escape(text)}</text>"
    )


def _axes(top: float, title: str) -> list[str]:
    """Frame, title and the 0..100 % grid of a panel whose top edge is at ``top``."""
    x0, x1 = _LEFT, _W - _RIGHT
    y0, y1 = top + _TOP, top + _H - _BOTTOM
    out = [_text(x0, top + 22, title, size=15, anchor="start", extra=' font-weight="bold"')]
    for pct in range(0, 101, 25):
        y = y1 - (y1 - y0) * pct / 100
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(_text(x0 - 6, y + 4, f"{pct}%", size=11, anchor="end"))
    out.append(f'<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#444"/>')
    return out


def _legend(top: float) -> list[str]:
    out = []
    for i, (label, colour) in enumerate((("exact match", EXACT_COLOUR), ("contains", CONTAINS_COLOUR))):
        x = _W - _RIGHT - 230 + i * 120
        out.append(f'<rect x="{x}" y="{top + 12}" width="12" height="12" fill="{colour}"/>')
        out.append(_text(x + 16, top + 22, label, size=11, anchor="start"))
    return out


def _bars(top: float, categories: Sequence[tuple[str, float, float]]) -> list[str]:
    out = _axes(top, "Accuracy per category (this run)") + _legend(top)
    x0, x1 = _LEFT, _W - _RIGHT
    y1, height = top + _H - _BOTTOM, _H - _TOP - _BOTTOM
    slot = (x1 - x0) / max(len(categories), 1)
    bar = min(28.0, slot / 3)
    for i, (name, exact, contains) in enumerate(categories):
        centre = x0 + slot * (i + 0.5)
        for offset, value, colour in ((-bar, exact, EXACT_COLOUR), (0.0, contains, CONTAINS_COLOUR)):
            h = height * max(0.0, min(1.0, value))
            x = centre + offset
            out.append(
                f'<rect x="{x:.1f}" y="{y1 - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(name)}: {value:.0%}</title></rect>'
            )
            out.append(_text(x + bar / 2, y1 - h - 4, f"{value:.0%}", size=10))
        out.append(_text(centre, y1 + 18, name, size=12))
    return out


def _lines(top: float, history: Sequence[tuple[str, float, float]]) -> list[str]:
    runs = f"{len(history)} run" + ("s" if len(history) != 1 else "")
    out = _axes(top, f"Overall accuracy across runs (last {runs})") + _legend(top)
    x0, x1 = _LEFT, _W - _RIGHT
    y1, height = top + _H - _BOTTOM, _H - _TOP - _BOTTOM
    step = (x1 - x0) / max(len(history), 1)
    xs = [x0 + step * (i + 0.5) for i in range(len(history))]
    for column, colour in ((1, EXACT_COLOUR), (2, CONTAINS_COLOUR)):
        values = [max(0.0, min(1.0, float(run[column]))) for run in history]
        points = [(x, y1 - height * v) for x, v in zip(xs, values, strict=True)]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for (x, y), run in zip(points, history, strict=True):
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}">'
                f"<title>{escape(run[0])}: {float(run[column]):.0%}</title></circle>"
            )
    # Labels about 80 px apart at most; the newest run always gets one.
    every = max(1, math.ceil(80 / step))
    shown = list(range(0, len(history), every))
    if shown and shown[-1] != len(history) - 1:
        shown[-1 if len(history) - 1 - shown[-1] < every else len(shown) :] = [len(history) - 1]
    for i in shown:
        out.append(_text(xs[i], y1 + 18, history[i][0][:16], size=10))
    return out


def accuracy_chart(
    categories: Sequence[tuple[str, float, float]], history: Sequence[tuple[str, float, float]]
) -> str:
    """Return an SVG document with two panels.

    :param categories: ``(category, exact accuracy, contains accuracy)`` of this run.
    :param history: ``(run label, exact, contains)`` of past runs and this one, oldest first.
    """
    body = _bars(0, categories) + _lines(_H, history)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{2 * _H}" '
        f'viewBox="0 0 {_W} {2 * _H}" font-family="Helvetica, Arial, sans-serif">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n"
    )
