"""The distillation scorecard every report opens with: quality kept, size, speed, each with its interval.

This is the line people quote for a distilled model ("97% of the teacher's score, 40% smaller, 60% faster"). It is
read, never computed: quality from a comparison's section headline, size from the cost section, speed from the
run's measurements. Which headline number is "the quality kept" depends on the task, so the candidates are a list
(:data:`QUALITY_METRICS`) that results may replace with their own ``results["scorecard"]["quality"]`` list of
``"section.key"`` names (a language-model audit names its retained task accuracy or perplexity ratio there).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from kdaudit.report._claims import claim
from kdaudit.report._common import row_of
from kdaudit.report._format import as_estimate, fmt_against, fmt_interval, fmt_number

__all__ = ["QUALITY_METRICS", "scorecard"]

#: ``section.key`` of a share of the teacher's quality kept, most specific first; the first one present is shown.
QUALITY_METRICS: tuple[str, ...] = ("agreement.retained_accuracy", "lm_task.retained_accuracy",
                                    "lm_tokens.retained_next_token_accuracy")


def _first(comparison: Mapping[str, Any], names: Sequence[str]) -> tuple[str, str, Any] | None:
    for name in names:
        section, _, key = str(name).partition(".")
        row = row_of(comparison.get(section), section, key)
        if row is not None and not math.isnan(row.estimate.value):
            return section, key, row.estimate.to_dict()
    return None


#: The cost section's size numbers the scorecard shows (the first one recorded), and what each is a share of.
_SIZE_METRICS = (("parameter_ratio", "parameters"), ("size_ratio", "size"))


def _times(x: float) -> str:
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×"


def scorecard(comparison: Mapping[str, Any], *, label_of: Any, measured: Mapping[str, Any] | None = None,
              quality: Sequence[str] | None = None,
              thresholds: Mapping[str, Sequence[float]] | None = None) -> list[dict[str, Any]]:
    """The scorecard of one student: a list of items ``{"key", "label", "value", "interval", "detail",
    "volatile"}``, each text, in the order quality, size, speed (items with nothing recorded are left out).

    Parameters
    ----------
    comparison : mapping
        One entry of ``results["comparisons"]``.
    label_of : callable
        ``(section, key) -> label`` of a metric (the report's definitions).
    measured : mapping, optional
        The run's measurement of this student (``run_info["cost"][name]``): ``throughput_ratio`` (an estimate of
        the student's throughput over the teacher's, with its interval over repeated batches).
    quality : sequence of str, optional
        ``section.key`` candidates for the quality kept; default :data:`QUALITY_METRICS`.
    thresholds : mapping, optional
        ``section.key -> thresholds`` of the policy rules that judged this student: a card's value and interval get
        the digits that put them visibly on the side of each threshold the rule judged (96.97%, not 97.0%, beside a
        failed "min 0.97").
    """
    limits = thresholds or {}
    items: list[dict[str, Any]] = []
    q = _first(comparison, list(quality or QUALITY_METRICS))
    if q is not None:
        section, key, e = q
        est = as_estimate(e)
        c = claim(est, up="above the teacher", down="below the teacher", kind="percent", no_change=1.0)
        verdict = (f"{c.words}" if c.supported else "no difference from the teacher the data can detect")
        against = list(limits.get(f"{section}.{key}", ()))
        items.append({"key": f"{section}.{key}", "label": "Quality kept",
                      "value": fmt_against(est["value"], against, "percent"),
                      "interval": fmt_interval(est, "percent", against=against),
                      "detail": f"{label_of(section, key)} (100% = the teacher's); {verdict}", "volatile": False})
    for key, what in _SIZE_METRICS:
        row = row_of(comparison.get("cost"), "cost", key)
        v = row.estimate.value if row is not None else math.nan
        if not math.isnan(v) and v > 0:
            items.append({"key": f"cost.{key}", "label": "Size" if key == "parameter_ratio" else "Size in memory",
                          "value": fmt_number(v, "percent"), "interval": "exact (counted, no interval needed)",
                          "detail": f"of the teacher's {what} ({_times(1 / v)} smaller)" if v < 1
                          else f"of the teacher's {what}", "volatile": False})
            break  # one size number: parameters when counted, else bytes
    ratio = (measured or {}).get("throughput_ratio")
    if isinstance(ratio, Mapping) and ratio.get("value") is not None:
        est = as_estimate(ratio)
        c = claim(est, up="faster", down="slower", no_change=1.0, fmt=lambda d: f"{d:.2f}×")
        lo, hi = est["low"], est["high"]
        interval = (f"{est['level'] * 100:.0f}% CI {_times(lo)}–{_times(hi)}" if not math.isnan(lo)
                    else "no interval (no repeated timings recorded)")
        word = f"{c.words} than the teacher" if c.supported else c.words
        items.append({"key": "cost.throughput_ratio", "label": "Speed", "value": _times(est["value"]),
                      "interval": interval,
                      "detail": f"the teacher's throughput, measured in this run; {word}", "volatile": True})
    return items
