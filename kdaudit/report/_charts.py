"""Charts drawn from stored numbers as inline SVG.

Each function takes numbers already in the results, draws them, and returns a :class:`Chart` whose SVG carries a
``<title>`` and ``<desc>`` (the text alternative). The reliability diagram and the confusion grid are drawn with
matplotlib ``Figure`` objects (never pyplot's global state); the interval panels, cost bars, outcome bar and
reference strip are plain enough to be written as SVG directly (:mod:`kdaudit.report._svg`), which is 20 to 100
times faster than building matplotlib's artist tree for them and keeps a demo report's render well under a second.
Output is deterministic: a fixed ``svg.hashsalt``, no date in the metadata, coordinates rounded, and ids prefixed
per chart so several charts can live in one HTML page without clashing.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import matplotlib
from markupsafe import Markup, escape
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from kdaudit.report import _svg

__all__ = [
    "TEACHER_COLOR",
    "STUDENT_COLOR",
    "Chart",
    "ChartIds",
    "confusion_chart",
    "cost_chart",
    "group_interval_chart",
    "outcome_chart",
    "reference_chart",
    "reliability_chart",
]

TEACHER_COLOR = "#1f4e79"  # dark blue; with the orange below it stays distinct for colour-blind readers
STUDENT_COLOR = "#c55a11"
GRID_COLOR = "#d9d9d9"
INK = "#222222"

# Small fonts, no text-to-path conversion (text stays selectable and the files stay small), no date, fixed hash salt.
_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "kdaudit-report",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "axes.edgecolor": "#888888",
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "xtick.color": "#555555",
    "ytick.color": "#555555",
    "legend.fontsize": 8,
    "legend.frameon": False,
    "path.simplify": True,
}
_MAX_LABEL = 28
_CHAR_IN = 0.066  # average width of an 8 pt DejaVu Sans character, in inches: for margins without a second draw


@dataclass(frozen=True)
class Chart:
    """An inline SVG chart and its text alternative."""

    svg: Markup
    title: str
    description: str

    def __html__(self) -> str:
        return str(self.svg)


class ChartIds:
    """Hands out a distinct id prefix per chart within one render (a fresh object per render: nothing global)."""

    def __init__(self, prefix: str = "kdc") -> None:
        self.n = 0
        self.prefix = prefix

    def next(self) -> str:
        self.n += 1
        return f"{self.prefix}{self.n}"


def _label(text: Any) -> str:
    """A user string made safe for matplotlib text: ``$`` would start mathtext; long names are shortened."""
    s = str(text).replace("\n", " ")
    if len(s) > _MAX_LABEL:
        s = s[: _MAX_LABEL - 1] + "…"
    return s.replace("\\", "\\\\").replace("$", r"\$")


def _finite(x: Any) -> bool:
    try:
        return x is not None and not isinstance(x, bool) and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _f(x: Any) -> float:
    return float(x) if _finite(x) else math.nan


_ID_RE = re.compile(r'\sid="([^"]+)"')
_REF_RE = re.compile(r'(xlink:href="#|href="#|url\(#)([^")]+)')


def _finish(fig: Figure, ids: ChartIds, title: str, description: str) -> Chart:
    buf = io.StringIO()
    # No bbox_inches="tight": it draws the figure twice. Margins are set from label lengths instead.
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE: invalid inside HTML
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    # Keep only ids that something refers to, renamed with this chart's prefix; the rest are noise and would repeat
    # across charts (every figure has a "figure_1").
    prefix = ids.next()
    used = {m.group(2) for m in _REF_RE.finditer(svg)}
    svg = _ID_RE.sub(lambda m: f' id="{prefix}-{m.group(1)}"' if m.group(1) in used else "", svg)
    svg = _REF_RE.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    # Without width/height the viewBox lets CSS scale the chart to its column and to the printed page.
    head_end = svg.index(">")
    head = re.sub(r'\s(width|height)="[^"]*"', "", svg[:head_end])
    # Scale down to fit a narrow column or a page, never up: a small chart stays at its drawn size (pt -> CSS px).
    view_w = float(re.search(r'viewBox="[\d.]+ [\d.]+ ([\d.]+)', head).group(1))
    head += f' style="max-width:min(100%,{view_w * 4 / 3:.0f}px)"'
    title_id, desc_id = f"{prefix}-title", f"{prefix}-desc"
    head += f' role="img" aria-labelledby="{title_id} {desc_id}" class="chart" preserveAspectRatio="xMidYMid meet"'
    svg = (head + ">" + f'<title id="{title_id}">{escape(title)}</title><desc id="{desc_id}">{escape(description)}'
           "</desc>" + svg[head_end + 1:])
    # Indentation is about a fifth of matplotlib's SVG and carries nothing.
    svg = re.sub(r">\s+<", "><", svg).strip()
    return Chart(Markup(svg), title, description)


def _figure(width: float, height: float, *, left: float = 0.5, right: float = 0.15, top: float = 0.3,
            bottom: float = 0.45) -> Figure:
    """A figure whose axes area leaves the given margins, in inches."""
    fig = Figure(figsize=(width, height))
    FigureCanvasSVG(fig)
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height)
    return fig


def _label_width(labels: Sequence[str]) -> float:
    return _CHAR_IN * max((len(x) for x in labels), default=4) + 0.15


def reliability_chart(curves: Sequence[dict[str, Any]], *, ids: ChartIds, title: str) -> Chart:
    """Reliability diagram of teacher and student on one set of axes, with the share of rows per bin beneath.

    ``curves``: ``[{"name", "role", "confidence": [...], "accuracy": [...], "count": [...], "lo": [...]|None,
    "hi": [...]|None}]`` with one entry per non-empty bin (``lo``/``hi``: the bin's bounds). Overlaid, the two
    models' departures from the diagonal compare at a glance.
    """
    with matplotlib.rc_context(_RC):
        fig = _figure(6.0, 4.6, left=0.65, right=0.2, top=0.25, bottom=0.5)
        gs = fig.add_gridspec(2, 1, height_ratios=[3.0, 1], hspace=0.08)
        ax = fig.add_subplot(gs[0])
        hx = fig.add_subplot(gs[1], sharex=ax)
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="#999999", label="perfect calibration")
        n = max(len(curves), 1)
        desc_parts = []
        top = 0.01
        for i, c in enumerate(curves):
            color = TEACHER_COLOR if c.get("role") == "teacher" else STUDENT_COLOR
            pts = [(_f(x), _f(y), _f(k)) for x, y, k in zip(c["confidence"], c["accuracy"], c["count"])]
            conf = [p[0] for p in pts]
            acc = [p[1] for p in pts]
            cnt = [p[2] if _finite(p[2]) else 0.0 for p in pts]
            total = sum(cnt) or 1.0
            # The vertical gap between confidence and accuracy is what ECE averages; shading makes it visible.
            ax.vlines(conf, conf, acc, colors=color, lw=2.4, alpha=0.25)
            ax.plot(conf, acc, "-o", color=color, lw=1.5, ms=3.8,
                    label=f"{str(c.get('role', '')).capitalize()}: {_label(c['name'])}")
            share = [k / total for k in cnt]
            top = max([top] + share)
            lo_b, hi_b = c.get("lo"), c.get("hi")
            if lo_b is not None and hi_b is not None and len(lo_b) == len(cnt) == len(hi_b):
                # Side-by-side bars within each bin, one per model.
                widths = [(_f(hi_b[j]) - _f(lo_b[j])) * 0.85 / n for j in range(len(cnt))]
                lefts = [_f(lo_b[j]) + (_f(hi_b[j]) - _f(lo_b[j])) * 0.075 + i * widths[j] for j in range(len(cnt))]
                hx.bar(lefts, share, width=widths, align="edge", color=color, alpha=0.7)
            else:
                hx.bar([x + (i - (n - 1) / 2) * 0.012 for x in conf], share, width=0.012, color=color, alpha=0.7)
            pairs = ", ".join(f"{x:.2f}→{y:.2f}" for x, y in zip(conf, acc) if _finite(x) and _finite(y))
            desc_parts.append(f"{c.get('role', 'model')} {c['name']}: confidence→accuracy per bin {pairs}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_ylabel("Observed accuracy")
        ax.grid(True, color=GRID_COLOR, lw=0.5)
        ax.tick_params(labelbottom=False)
        ax.legend(loc="upper left")
        hx.set_xlabel("Confidence (probability of the predicted class)")
        hx.set_ylabel("Rows")
        hx.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
        hx.set_ylim(0, top * 1.15)
        hx.set_yticks([0, round(top / 2, 2)])
        hx.grid(True, axis="y", color=GRID_COLOR, lw=0.5)
        desc = ("Reliability diagram: mean confidence (x) against observed accuracy (y) per confidence bin; points on "
                "the diagonal are perfectly calibrated, points below it are over-confident. " + "; ".join(desc_parts)
                + ".")
        return _finish(fig, ids, title, desc)


_SERIES = (("teacher", TEACHER_COLOR, "teacher"), ("student", STUDENT_COLOR, "student"),
           ("both", "#4d4d4d", "teacher & student"))


def _plain(text: Any, limit: int = _MAX_LABEL) -> str:
    """A user string for a hand-written SVG label: one line, shortened (escaping happens when it is written)."""
    s = str(text).replace("\n", " ")
    return s[: limit - 1] + "…" if len(s) > limit else s


def _domain(values: Sequence[float], n: int = 4, *, include: Sequence[float] = ()) -> list[float]:
    vals = [v for v in list(values) + list(include) if _finite(v)]
    if not vals:
        return [0.0, 0.5, 1.0]
    return _svg.nice_ticks(min(vals), max(vals), n)


def group_interval_chart(panels: Sequence[dict[str, Any]], *, ids: ChartIds, title: str,
                         row_kind: str = "group") -> Chart:
    """Per-group (or per-class) values with their intervals, one panel per metric, groups on a shared y axis.

    ``panels``: ``[{"metric": label, "percent": bool, "rows": [{"label", "small": bool, "teacher": estimate|None,
    "student": estimate|None, "both": estimate|None}]}]``; every panel lists the same rows in the same order.
    Teacher and student are drawn side by side; ``both`` is a number about the pair (e.g. their agreement). Small
    groups are drawn hollow and labelled. Written as SVG directly (see :mod:`kdaudit.report._svg`).
    """
    rows0 = panels[0]["rows"] if panels else []
    n_rows = max(len(rows0), 1)
    n_panels = max(len(panels), 1)
    labels = [_plain(r["label"], 44) + (f" ({r.get('tag') or 'small'})" if r.get("small") else "") for r in rows0]
    size, row_h, gap, top = 11.0, 22.0, 24.0, 44.0
    left = max([_svg.text_width(x, size) for x in labels] + [20.0]) + 14
    panel_w = 240.0 if n_panels > 1 else 460.0
    # 1040 px fills the report's column at a 1280 px window; long labels take from the panels, down to 160 px
    # each, and past that the whole chart scales down (the viewBox keeps it in its column).
    panel_w = max(min(panel_w, (1040 - left - 12 - gap * (n_panels - 1)) / n_panels), 160.0)
    width = left + n_panels * panel_w + gap * (n_panels - 1) + 12
    plot_h = row_h * n_rows
    cv = _svg.Canvas(width, top + plot_h + 26)
    for i in range(1, n_rows, 2):  # banded rows guide the eye from a label across every panel
        cv.rect(left, top + i * row_h, width - left - 12, row_h, "#f4f4f4")
    for i, label in enumerate(labels):
        cv.text(left - 8, top + (i + 0.5) * row_h, label, size=size, anchor="end")
    desc, legend = [], {}
    for p, panel in enumerate(panels):
        x0 = left + p * (panel_w + gap)
        scale = 100.0 if panel.get("percent") else 1.0
        pts = [_f(e.get(k)) * scale for r in panel["rows"] for s in _SERIES for e in [r.get(s[0])] if e
               for k in ("value", "low", "high")]
        ticks = _domain(pts)
        sx = _svg.linear(ticks[0], ticks[-1], x0 + 8, x0 + panel_w - 8)
        cv.x_axis(x0, x0 + panel_w, top + plot_h, top, ticks, sx)
        name = _plain(str(panel["metric"]) + (" (%)" if panel.get("percent") else ""),
                      int(panel_w / (size * 0.6)))
        cv.text(x0, top - 9, name, size=size, weight="bold")
        present = [s for s in _SERIES if any(r.get(s[0]) for r in panel["rows"])]
        offsets = {1: [0.0], 2: [-4.0, 4.0], 3: [-6.0, 0.0, 6.0]}.get(len(present), [0.0] * len(present))
        for (key, color, sname), dy in zip(present, offsets):
            for i, r in enumerate(panel["rows"]):
                e = r.get(key)
                if not e or not _finite(e.get("value")):
                    continue
                y = top + (i + 0.5) * row_h + dy
                small = bool(r.get("small"))
                if _finite(e.get("low")) and _finite(e.get("high")):
                    cv.line(sx(_f(e["low"]) * scale), y, sx(_f(e["high"]) * scale), y, color, 1.6,
                            opacity=0.45 if small else 0.95)
                cv.circle(sx(_f(e["value"]) * scale), y, 3.4, color, hollow=small)
                legend.setdefault(sname, color)
        parts_panel = []
        for r in panel["rows"]:
            parts = []
            for key, _, sname in _SERIES:
                e = r.get(key)
                if e and _finite(e.get("value")):
                    v = _f(e["value"]) * scale
                    ci = (f" [{_f(e['low']) * scale:.3g}, {_f(e['high']) * scale:.3g}]"
                          if _finite(e.get("low")) and _finite(e.get("high")) else "")
                    parts.append(f"{sname} {v:.3g}{ci}")
            tag = f" ({r.get('tag') or 'small'})" if r.get("small") else ""
            parts_panel.append(f"{r['label']}{tag}: " + (", ".join(parts) or "n/a"))
        desc.append(f"{panel['metric']}: " + "; ".join(parts_panel))
    cv.legend([("dot", c, n) for n, c in legend.items()], right=width - 12, y=10)
    text = (f"Values per {row_kind} with interval bars (teacher blue, student orange); hollow markers are "
            f"{row_kind}s too small, or with too few positive or negative rows, for a reliable rate. "
            + " | ".join(desc) + ".")
    return Chart(cv.svg(ids.next(), title, text), title, text)


def reference_chart(references: Sequence[Any], observed: Any, *, ids: ChartIds, title: str, observed_label: str,
                    xlabel: str) -> Chart:
    """Where one statistic falls among reference values (e.g. the teacher's lineage statistic among references)."""
    refs = [_f(x) for x in references if _finite(x)]
    ticks = _domain(refs, 5, include=[_f(observed)] if _finite(observed) else [])
    width, x0, x1, mid = 620.0, 16.0, 604.0, 58.0
    cv = _svg.Canvas(width, 128)
    sx = _svg.linear(ticks[0], ticks[-1], x0 + 8, x1 - 8)
    cv.x_axis(x0, x1, 92, 26, ticks, sx)
    # A fixed vertical spread (no random jitter, so the SVG is deterministic) keeps equal values visible.
    for i, x in enumerate(refs):
        cv.circle(sx(x), mid + ((i * 7) % 11 - 5) * 5.0, 4, "#8c8c8c")
    items = [("dot", "#8c8c8c", f"reference models ({len(refs)})")]
    if _finite(observed):
        cv.line(sx(_f(observed)), 26, sx(_f(observed)), 92, STUDENT_COLOR, 2)
        cv.diamond(sx(_f(observed)), mid, 7, STUDENT_COLOR)
        items.append(("diamond", STUDENT_COLOR, _plain(observed_label, 48)))
    cv.legend(items, right=x1, y=10)
    cv.text((x0 + x1) / 2, 120, _plain(xlabel, 90), size=10.5, anchor="middle")
    desc = (f"{observed_label}: {_f(observed):.3g}; reference values: " + ", ".join(f"{x:.3g}" for x in refs) + ".")
    return Chart(cv.svg(ids.next(), title, desc), title, desc)


def confusion_chart(matrix: Sequence[Sequence[Any]], classes: Sequence[Any], *, ids: ChartIds, title: str,
                    row_name: str, col_name: str) -> Chart:
    """Counts of rows by one model's label (rows) and the other's (columns), as a shaded grid."""
    k = len(matrix)
    values = [[_f(v) for v in row] for row in matrix]
    vmax = max([v for row in values for v in row if _finite(v)] + [1.0])
    names = [_label(c) for c in classes]
    with matplotlib.rc_context(_RC):
        left = _label_width(names) + 0.3
        size = min(1.6 + 0.32 * k, 5.0)
        fig = _figure(size + left + 0.2, size + 0.9, left=left, right=0.2, top=0.2, bottom=0.9)
        ax = fig.add_subplot()
        ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax, aspect="auto", interpolation="nearest")
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    v = values[i][j]
                    if _finite(v):
                        ax.text(j, i, f"{v:,.0f}", ha="center", va="center", fontsize=7 if k > 6 else 8,
                                color="white" if v > 0.55 * vmax else INK)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
        ax.set_yticklabels(names)
        ax.set_xlabel(col_name)
        ax.set_ylabel(row_name)
        for spine in ax.spines.values():
            spine.set_visible(False)
        cells = "; ".join(f"{row_name} {classes[i]} / {col_name} {classes[j]}: {values[i][j]:,.0f}"
                          for i in range(k) for j in range(k) if _finite(values[i][j]) and values[i][j] > 0)
        desc = f"Grid of row counts, {row_name} in rows and {col_name} in columns; the diagonal is agreement. {cells}."
        return _finish(fig, ids, title, desc)


def outcome_chart(parts: Sequence[tuple[str, float, str]], *, ids: ChartIds, title: str) -> Chart:
    """One horizontal bar split into shares of rows, e.g. both right / only the student wrong / both wrong."""
    total = sum(v for _, v, _ in parts if _finite(v)) or 1.0
    width, x0, x1 = 620.0, 14.0, 596.0  # room for the "0%" and "100%" tick labels at the ends
    sx = _svg.linear(0.0, 1.0, x0, x1)
    # The legend wraps onto as many lines as it needs under the axis.
    lines: list[list[tuple[str, str]]] = [[]]
    used = 0.0
    for label, _, color in parts:
        w = _svg.text_width(_plain(label, 60), 10.5) + 30
        if lines[-1] and used + w > x1 - x0:
            lines.append([])
            used = 0.0
        lines[-1].append((_plain(label, 60), color))
        used += w
    cv = _svg.Canvas(width, 70 + 17 * len(lines))
    left = 0.0
    for label, v, color in parts:
        share = (_f(v) / total) if _finite(v) else 0.0
        cv.rect(sx(left), 6, sx(left + share) - sx(left), 30, color)
        if share >= 0.07:
            cv.text(sx(left + share / 2), 21, f"{share:.1%}", size=10.5, anchor="middle",
                    color=INK if _svg.is_light(color) else "#ffffff")
        left += share
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    cv.x_axis(x0, x1, 40, 40, ticks, sx, grid=False, fmt=lambda t: f"{t:.0%}")
    for j, items in enumerate(lines):
        x = x0
        for label, color in items:
            cv.rect(x, 66 + 17 * j - 5, 12, 10, color)
            cv.text(x + 16, 66 + 17 * j, label, size=10.5)
            x += _svg.text_width(label, 10.5) + 30
    desc = "Share of rows: " + "; ".join(f"{label} {(_f(v) / total):.1%}" for label, v, _ in parts
                                          if _finite(v)) + "."
    return Chart(cv.svg(ids.next(), title, desc), title, desc)


def cost_chart(items: Sequence[dict[str, Any]], *, ids: ChartIds, title: str, student: str) -> Chart:
    """The student's cost as a percentage of the teacher's, one bar per quantity (100% = the teacher).

    ``items``: ``[{"label", "ratio"}]`` where ratio = student / teacher.
    """
    rows = [i for i in items if _finite(i.get("ratio"))]
    n = max(len(rows), 1)
    labels = [_plain(r["label"]) for r in rows]
    vals = [_f(r["ratio"]) * 100 for r in rows]
    size, row_h, top, width = 11.0, 26.0, 26.0, 620.0
    left = max([_svg.text_width(x, size) for x in labels] + [20.0]) + 14
    x1 = width - 26  # room for the last tick label, centred on the axis end
    plot_h = n * row_h
    cv = _svg.Canvas(width, top + plot_h + 44)
    ticks = _svg.nice_ticks(0.0, max(vals + [100.0]) * 1.2, 4)
    sx = _svg.linear(0.0, ticks[-1], left, x1)
    cv.x_axis(left, x1, top + plot_h, top, ticks, sx, suffix="%")
    for i, (label, v) in enumerate(zip(labels, vals)):
        y = top + (i + 0.5) * row_h
        cv.text(left - 8, y, label, size=size, anchor="end")
        cv.rect(left, y - 8, sx(max(v, 0.0)) - left, 16, STUDENT_COLOR)
        cv.text(sx(max(v, 0.0)) + 4, y, f"{v:.1f}%", size=10.5)
    cv.line(sx(100), top - 4, sx(100), top + plot_h, TEACHER_COLOR, 1.4, dash="5 3")
    cv.text(sx(100) + 4, top - 12, "teacher = 100%", size=10.5, color=TEACHER_COLOR)
    cv.text((left + x1) / 2, top + plot_h + 32, f"{_plain(student, 60)} as % of the teacher", size=10.5,
            anchor="middle")
    desc = (f"Cost of {student} relative to the teacher (100%): "
            + "; ".join(f"{r['label']} {v:.1f}%" for r, v in zip(rows, vals)) + ".")
    return Chart(cv.svg(ids.next(), title, desc), title, desc)
