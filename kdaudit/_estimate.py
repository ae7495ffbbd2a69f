"""``Estimate``: every number that reaches a report carries its interval and the method that made it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Estimate"]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval.

    Parameters
    ----------
    value : float
        The point estimate on all rows (NaN when undefined, e.g. a group with no positives).
    low, high : float
        Interval bounds (NaN when no interval was computed).
    method : str
        How the interval was made, e.g. ``"block-poisson bootstrap, 1000 replicates, percentile 95%"``.
    level : float
        Nominal coverage of the interval.
    """

    value: float
    low: float = math.nan
    high: float = math.nan
    method: str = "point estimate only"
    level: float = 0.95

    def __post_init__(self) -> None:
        # Store plain Python floats so JSON output and equality are exact and numpy-free.
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def contains(self, x: float) -> bool:
        return self.has_interval and self.low <= x <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": _json_float(self.value),
            "low": _json_float(self.low),
            "high": _json_float(self.high),
            "method": self.method,
            "level": self.level,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Estimate:
        def f(x: Any) -> float:
            return math.nan if x is None else float(x)

        return cls(f(d["value"]), f(d.get("low")), f(d.get("high")), d.get("method", ""), d.get("level", 0.95))

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        if not self.has_interval:
            return format(self.value, spec)
        return f"{format(self.value, spec)} [{format(self.low, spec)}, {format(self.high, spec)}]"


def _json_float(x: float) -> float | None:
    """NaN/inf are not JSON; undefined values are written as null."""
    return None if (math.isnan(x) or math.isinf(x)) else float(x)
