"""The one rule that turns an estimated change and its interval into words.

A sentence may say that something went up or down ("higher", "wider", "faster", "more trustworthy") only when the
interval excludes no change. Otherwise it says that the data cannot tell, and how large a change the interval still
rules out, so a reader learns what the audit did establish. Every sentence generator of the report (the summary,
the cost and speed sentences, the scorecard) goes through :func:`claim`; nothing here computes a metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from kdaudit.report._format import as_estimate, fmt_number

__all__ = ["Claim", "claim"]


@dataclass(frozen=True)
class Claim:
    """What an estimated change lets a sentence say.

    ``direction`` is ``"up"`` (the whole interval is above the no-change value), ``"down"`` (the whole interval is
    below it), ``"unclear"`` (the interval contains or touches it), or ``"unknown"`` (no value, or no interval to
    judge it by). ``words`` is the sentence's verdict: the ``up``/``down`` word when the data support it, else the
    "cannot tell" wording with the bounds the interval rules out.
    """

    direction: str
    words: str
    rules_out: str = ""

    @property
    def supported(self) -> bool:
        """Whether the data support a direction ("better"/"worse" may be said)."""
        return self.direction in ("up", "down")


def claim(estimate: Any, *, up: str, down: str, kind: str = "decimal", no_change: float = 0.0,
          fmt: Callable[[float], str] | None = None) -> Claim:
    """Judge an estimated change against its interval.

    Parameters
    ----------
    estimate : mapping or float
        A stored estimate (``value``, ``low``, ``high``) of a change; a bare number has no interval.
    up, down : str
        What to say when the whole interval is above (``up``) or below (``down``) ``no_change``, e.g. ``"higher"``
        and ``"lower"``.
    kind : str
        How the report shows numbers of this kind (``"decimal"``, ``"percent"``), for the bounds.
    no_change : float
        The value meaning "no change": 0 for a difference, 1 for a ratio.
    fmt : callable, optional
        Formats a size of change (a bound's distance from ``no_change``); default :func:`fmt_number` with
        ``kind``.

    Returns
    -------
    Claim
        For an interval touching or containing ``no_change``: ``words`` is ``"the data cannot tell whether it is
        {up} or {down}"`` and ``rules_out`` names the largest change in each direction the interval excludes.

    Examples
    --------
    >>> claim({"value": -0.00065, "low": -0.005, "high": 0.003}, up="higher", down="lower").words
    'the data cannot tell whether it is higher or lower (they rule out an increase larger than 0.003 and a decrease larger than 0.005)'
    >>> claim({"value": 0.02, "low": 0.01, "high": 0.03}, up="higher", down="lower").words
    'higher'
    """
    est = as_estimate(estimate)
    v, lo, hi = est["value"], est["low"], est["high"]
    show = fmt or (lambda x: fmt_number(x, kind))
    if math.isnan(v):
        return Claim("unknown", "not computed")
    if math.isnan(lo) or math.isnan(hi):
        return Claim("unknown", f"the data cannot tell whether it is {up} or {down} (no interval was computed)")
    if lo > no_change:
        return Claim("up", up)
    if hi < no_change:
        return Claim("down", down)
    # Sizes of change, measured from no change (for a ratio, 1.02 is "an increase larger than 0.02").
    parts = [f"an increase larger than {show(hi - no_change)}" if hi > no_change else "any increase",
             f"a decrease larger than {show(no_change - lo)}" if lo < no_change else "any decrease"]
    bound = " and ".join(parts)
    return Claim("unclear", f"the data cannot tell whether it is {up} or {down} (they rule out {bound})", bound)
