"""Turning stored numbers into words a reader can check: formatting only, no metric is computed here."""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Sequence

__all__ = [
    "as_estimate",
    "fmt_against",
    "fmt_bytes",
    "fmt_count",
    "fmt_estimate",
    "fmt_interval",
    "fmt_number",
    "fmt_value",
    "is_estimate",
    "metric_kind",
    "short_hash",
    "side_digits",
    "status_of",
    "thresholds_in",
]

# Words (``_``-separated tokens) of a metric key that say how to show it. A token naming a difference, a divergence, a
# calibration error or a test statistic wins; otherwise a token naming a proportion of rows shows it as a percentage.
_DECIMAL_TOKENS = frozenset({
    "ece", "mce", "calibration", "brier", "nll", "kl", "js", "divergence", "loss", "kappa", "statistic", "entropy",
    "ratio", "effect", "distance", "similarity", "correlation", "cosine", "difference", "change", "amplification",
    "drop", "temperature", "gap", "lift", "jaccard", "consistency", "variation", "log",
})
_PERCENT_TOKENS = frozenset({
    "agreement", "accuracy", "rate", "fraction", "share", "coverage", "retained", "overlap", "recall", "precision",
    "tpr", "fpr", "chance", "given", "parity",
})
# Ratios of a student's cost to the teacher's read best as "12% of the teacher".
_PERCENT_KEYS = frozenset({"parameter_ratio", "size_ratio", "retained_accuracy"})

_STATUS_ALIASES = {
    "pass": "pass", "passed": "pass", "ok": "pass", "green": "pass", "true": "pass",
    "warn": "warn", "warning": "warn", "amber": "warn", "inconclusive": "warn",
    "fail": "fail", "failed": "fail", "red": "fail", "false": "fail", "error": "fail",
}


def status_of(value: Any) -> str:
    """Normalise a verdict word (pass / warn / fail); anything unknown is shown as ``n/a``."""
    if isinstance(value, bool):
        return "pass" if value else "fail"
    if isinstance(value, Mapping):
        for key in ("status", "verdict", "outcome", "result"):
            if key in value:
                return status_of(value[key])
        return "n/a"
    if value is None:
        return "n/a"
    return _STATUS_ALIASES.get(str(value).strip().lower(), "n/a")


def is_estimate(d: Any) -> bool:
    """A stored ``Estimate.to_dict()``: a mapping with a point value and interval bounds."""
    return isinstance(d, Mapping) and "value" in d and ("low" in d or "high" in d or "method" in d)


def _num(x: Any) -> float:
    if x is None or isinstance(x, bool):
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def as_estimate(d: Any) -> dict[str, Any]:
    """A stored estimate (or a bare number) as a dict of floats, NaN where undefined."""
    if is_estimate(d):
        return {"value": _num(d.get("value")), "low": _num(d.get("low")), "high": _num(d.get("high")),
                "method": str(d.get("method") or ""), "level": _num(d.get("level", 0.95))}
    return {"value": _num(d), "low": math.nan, "high": math.nan, "method": "", "level": math.nan}


def metric_kind(key: str, definition: Mapping[str, Any] | None = None) -> str:
    """How to show a metric: ``"percent"`` for proportions of rows, ``"p"`` for p-values, else ``"decimal"``.

    A definition may say so itself with a ``"unit"`` entry ("%", "percent", "proportion"); otherwise the key's words
    decide, because the report must not guess from the value.
    """
    unit = str((definition or {}).get("unit", "")).lower()
    if unit in ("%", "percent", "proportion", "fraction", "rate"):
        return "percent"
    if unit:
        return "decimal"
    k = key.lower().rsplit(".", 1)[-1]
    if k.endswith("p_value") or k in ("p", "pvalue"):
        return "p"
    if k in _PERCENT_KEYS:
        return "percent"
    tokens = set(k.split("_"))
    if tokens & _DECIMAL_TOKENS:
        return "decimal"
    if tokens & _PERCENT_TOKENS:
        return "percent"
    return "decimal"


def fmt_number(x: Any, kind: str = "decimal", *, digits: int = 3) -> str:
    """One number in the report's style; undefined values read ``n/a``."""
    v = _num(x)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if kind == "percent":
        return f"{v * 100:.1f}%".replace("-", "−")
    if kind == "int":
        return f"{int(round(v)):,}"
    if kind == "p":
        return "< 0.0001" if 0 <= v < 1e-4 else f"{v:.3g}"
    a = abs(v)
    if a >= 1e6:
        text = f"{v:.{digits - 1}e}"
    elif a >= 100:
        text = f"{v:,.1f}"
    elif a != 0 and a < 10 ** -digits:
        # Small but not zero: enough decimals for two significant digits, never scientific notation.
        text = f"{v:.{min(-math.floor(math.log10(a)) + 1, 10)}f}"
    else:
        text = f"{v:.{digits}f}"
    return text.replace("-", "−") if text.startswith("-") else text


def side_digits(value: float, thresholds: Sequence[float], show: Callable[[float, int], str],
                read: Callable[[str], float], start: int, *, most: int = 12) -> str:
    """``show(value, digits)`` with the fewest digits (from ``start``) that keep ``value`` visibly on its own side of
    every threshold: a value below a threshold never reads as equal to it or above it once rounded.

    ``read`` turns the shown text back into a number on the thresholds' scale. This is the one rule for every place
    where a number meets a threshold (the report, the gate's table, its Markdown summary and its messages), so
    0.9697 beside "min 0.97" reads 96.97%, not 97.0%.
    """
    text = show(value, start)
    if not math.isfinite(value):
        return text
    limits = [float(t) for t in thresholds if t is not None and math.isfinite(float(t))]
    for digits in range(start, start + most):
        text = show(value, digits)
        try:
            shown = read(text)
        except ValueError:
            return text
        if all((shown > t) - (shown < t) == (value > t) - (value < t) for t in limits):
            return text
    return text


def thresholds_in(text: Any) -> list[float]:
    """The numbers of a rule's threshold text (``"min 0.97"``, ``"min 0.9, max 1.1"``)."""
    return [float(x) for x in re.findall(r"(?:min|max|>=|<=)\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)", str(text or ""))]


def _fixed(v: float, kind: str, decimals: int) -> str:
    if kind == "percent":
        return f"{v * 100:.{decimals}f}%"
    return f"{v:.{decimals}f}"


def _read(text: str, kind: str) -> float:
    t = text.replace("−", "-").replace(",", "").rstrip("%")
    return float(t) / 100 if kind == "percent" else float(t)


def fmt_against(x: Any, thresholds: Sequence[float], kind: str = "decimal") -> str:
    """:func:`fmt_number`, with more digits where rounding would put the value on the wrong side of a threshold."""
    v = _num(x)
    text = fmt_number(v, kind)
    if math.isnan(v) or math.isinf(v) or not thresholds or kind not in ("percent", "decimal"):
        return text
    try:
        shown = _read(text, kind)
    except ValueError:
        return text
    if all((shown > t) - (shown < t) == (v > t) - (v < t) for t in thresholds):
        return text
    start = 1 if kind == "percent" else 3
    out = side_digits(v, thresholds, lambda y, d: _fixed(y, kind, d), lambda s: _read(s, kind), start)
    return out.replace("-", "−") if out.startswith("-") else out


def fmt_interval(e: Mapping[str, Any], kind: str = "decimal", *, against: Sequence[float] = ()) -> str:
    """``"95% CI 90.8–91.6%"`` or an empty string when the estimate has no interval.

    ``against``: thresholds the bounds are judged by; each bound then gets the digits :func:`fmt_against` gives it.
    """
    est = as_estimate(e)
    if math.isnan(est["low"]) or math.isnan(est["high"]):
        return ""
    level = est["level"]
    lvl = f"{level * 100:.0f}% CI" if not math.isnan(level) else "CI"
    lo, hi = fmt_against(est["low"], against, kind), fmt_against(est["high"], against, kind)
    if est["low"] < 0 or est["high"] < 0:
        return f"{lvl} {lo} to {hi}"  # "−0.03–0.19" reads as a range of two negatives
    if kind == "percent":
        lo = lo.rstrip("%")
    return f"{lvl} {lo}–{hi}"


def fmt_estimate(e: Any, kind: str = "decimal") -> str:
    """``"91.2% (95% CI 90.8–91.6%)"``."""
    est = as_estimate(e)
    text = fmt_number(est["value"], kind)
    ci = fmt_interval(est, kind)
    return f"{text} ({ci})" if ci else text


def fmt_count(x: Any) -> str:
    return fmt_number(x, "int")


def fmt_bytes(x: Any) -> str:
    v = _num(x)
    if math.isnan(v):
        return "n/a"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(v) < 1000 or unit == "TB":
            return f"{v:,.0f} {unit}" if unit == "B" else f"{v:,.1f} {unit}"
        v /= 1000.0
    return f"{v:.1f} TB"  # pragma: no cover - loop always returns


def fmt_value(x: Any) -> str:
    """Any stored scalar (a config value, a count, a flag) as text."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if x is None:
        return "—"
    if isinstance(x, int):
        return f"{x:,}" if abs(x) >= 10_000 else str(x)
    if isinstance(x, float):
        return f"{x:.6g}"
    if is_estimate(x):
        return fmt_estimate(x)
    return str(x)


def short_hash(h: Any, n: int = 12) -> str:
    s = "" if h is None else str(h)
    return s[:n] if len(s) > n else s
