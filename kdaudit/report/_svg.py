"""Simple charts written directly as SVG: interval (dot-and-whisker) panels, bars, strips.

matplotlib builds a full artist tree (axes, tick objects, text layout) for every chart; for a dot, a line and a few
labels that costs 50-150 ms per chart, and a demo report has a dozen of them. These charts are simple enough to
write as SVG elements directly, in a few milliseconds each. Every user string goes through ``markupsafe.escape``;
coordinates are rounded to 0.1 px so the output is byte-identical across processes.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from markupsafe import Markup, escape

__all__ = ["Canvas", "nice_ticks", "text_width", "tick_label"]

FONT = "DejaVu Sans, Arial, Helvetica, sans-serif"
TICK_COLOR = "#555555"
AXIS_COLOR = "#888888"
GRID_COLOR = "#d9d9d9"
INK = "#222222"


def _n(x: float) -> str:
    """A coordinate: one decimal, no trailing zeros, never ``-0``."""
    s = f"{x:.1f}"
    if s.endswith(".0"):
        s = s[:-2]
    return "0" if s == "-0" else s


def text_width(s: str, size: float) -> float:
    """Approximate rendered width of ``s`` at font size ``size`` px (DejaVu Sans averages ~0.6 em per character)."""
    return len(s) * size * 0.6


def is_light(color: str) -> bool:
    """Whether a ``#rrggbb`` colour is light enough that dark text on it reads better than white."""
    try:
        r, g, b = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    except (ValueError, IndexError):
        return False
    return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * 0.999)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    k = int(round((stop - start) / step))
    return [round(start + i * step, 12) for i in range(k + 1)]


def tick_label(v: float, ticks: Sequence[float], suffix: str = "") -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9))) if step > 0 else 0
    if step * 10 ** decimals % 1 > 1e-6:  # 2.5-style steps need one more decimal
        decimals += 1
    s = f"{v:,.{decimals}f}"
    return ("0" if s.strip("-0.,") == "" else s) + suffix


class Canvas:
    """Collects SVG elements in a ``width`` x ``height`` px view box."""

    def __init__(self, width: float, height: float) -> None:
        self.width, self.height = width, height
        self.parts: list[str] = []

    def line(self, x1: float, y1: float, x2: float, y2: float, color: str, width: float = 1.0, *,
             dash: str | None = None, opacity: float | None = None) -> None:
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        extra += f' stroke-opacity="{opacity:g}"' if opacity is not None else ""
        self.parts.append(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{color}" '
                          f'stroke-width="{width:g}"{extra}/>')

    def rect(self, x: float, y: float, w: float, h: float, fill: str, *, opacity: float | None = None) -> None:
        extra = f' fill-opacity="{opacity:g}"' if opacity is not None else ""
        self.parts.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0.0))}" height="{_n(max(h, 0.0))}" '
                          f'fill="{fill}"{extra}/>')

    def circle(self, x: float, y: float, r: float, color: str, *, hollow: bool = False) -> None:
        fill = "#ffffff" if hollow else color
        self.parts.append(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{r:g}" fill="{fill}" stroke="{color}" '
                          'stroke-width="1.5"/>')

    def diamond(self, x: float, y: float, r: float, color: str) -> None:
        pts = f"{_n(x)},{_n(y - r)} {_n(x + r)},{_n(y)} {_n(x)},{_n(y + r)} {_n(x - r)},{_n(y)}"
        self.parts.append(f'<polygon points="{pts}" fill="{color}"/>')

    def text(self, x: float, y: float, s: Any, *, size: float = 11, anchor: str = "start", color: str = INK,
             weight: str | None = None, baseline: str | None = "middle") -> None:
        extra = f' text-anchor="{anchor}"' if anchor != "start" else ""
        extra += f' font-weight="{weight}"' if weight else ""
        extra += f' dominant-baseline="{baseline}"' if baseline else ""
        self.parts.append(f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size:g}" fill="{color}"{extra}>'
                          f"{escape(str(s))}</text>")

    def x_axis(self, x0: float, x1: float, y: float, top: float, ticks: Sequence[float], scale: Any, *,
               suffix: str = "", grid: bool = True, fmt: Any = None) -> None:
        """Tick labels under ``y``, with vertical grid lines from ``top`` down to the axis line."""
        if grid:
            for t in ticks:
                self.line(scale(t), top, scale(t), y, GRID_COLOR, 0.7)
        self.line(x0, y, x1, y, AXIS_COLOR, 0.8)
        for t in ticks:
            self.line(scale(t), y, scale(t), y + 4, AXIS_COLOR, 0.8)
            label = fmt(t) if fmt else tick_label(t, ticks, suffix)
            self.text(scale(t), y + 13, label, size=10.5, anchor="middle", color=TICK_COLOR)

    def legend(self, items: Iterable[tuple[str, str, str]], *, right: float, y: float, size: float = 10.5) -> None:
        """Right-aligned row of (marker kind, colour, label); kind is "dot", "bar", "line" or "diamond"."""
        items = list(items)
        x = right - sum(text_width(label, size) + 26 for _, _, label in items)
        for kind, color, label in items:
            if kind == "bar":
                self.rect(x, y - 5, 12, 10, color)
            elif kind == "line":
                self.line(x, y, x + 12, y, color, 2, dash="4 2")
            elif kind == "diamond":
                self.diamond(x + 6, y, 5, color)
            else:
                self.circle(x + 6, y, 4, color)
            self.text(x + 16, y, label, size=size)
            x += text_width(label, size) + 26

    def svg(self, prefix: str, title: str, description: str) -> Markup:
        w, h = _n(self.width), _n(self.height)
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" '
                f'style="max-width:min(100%,{w}px)" role="img" aria-labelledby="{prefix}-title {prefix}-desc" '
                f'class="chart" preserveAspectRatio="xMidYMid meet" font-family="{FONT}">'
                f'<title id="{prefix}-title">{escape(title)}</title><desc id="{prefix}-desc">{escape(description)}'
                "</desc>")
        return Markup(head + "".join(self.parts) + "</svg>")


def linear(d0: float, d1: float, r0: float, r1: float) -> Any:
    """A linear map from the domain ``[d0, d1]`` to the range ``[r0, r1]``."""
    k = (r1 - r0) / (d1 - d0) if d1 != d0 else 0.0
    return lambda v: r0 + (v - d0) * k
