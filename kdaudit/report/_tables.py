"""Tables for the report: stored values laid out as rows of formatted cells (formatting only)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from kdaudit.report._format import (
    as_estimate,
    fmt_interval,
    fmt_number,
    fmt_value,
    is_estimate,
    metric_kind,
)

__all__ = ["Cell", "Table", "est_cell", "generic_blocks", "is_scalar"]


@dataclass(frozen=True)
class Cell:
    """One table cell: its text (escaped by the template), a CSS class and an optional hover title."""

    text: str
    cls: str = ""
    title: str = ""
    sub: str = ""  # a second, smaller line: the interval under its estimate


def est_cell(e: Any, kind: str = "decimal", *, missing: str = "n/a") -> Cell:
    """An estimate as a cell: the value, with its interval on a second line and its method on hover."""
    if e is None:
        return Cell(missing, "num")
    est = as_estimate(e)
    return Cell(fmt_number(est["value"], kind), "num", est["method"], fmt_interval(est, kind))


@dataclass
class Table:
    """A caption, column headers and rows of cells; ``numeric[i]`` right-aligns column ``i``."""

    caption: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    numeric: list[bool] = field(default_factory=list)
    note: str = ""

    def __post_init__(self) -> None:
        if not self.numeric:
            self.numeric = [False] * len(self.columns)


def is_scalar(x: Any) -> bool:
    return x is None or isinstance(x, (str, int, float, bool))


def _cell(key: str, value: Any) -> Cell:
    if is_estimate(value):
        return est_cell(value, metric_kind(key))
    if isinstance(value, (list, tuple)) and all(is_scalar(v) for v in value):
        text = ", ".join(fmt_value(v) for v in value)
        return Cell(text if len(text) <= 160 else text[:157] + "…", "", text if len(text) > 160 else "")
    if is_scalar(value):
        return Cell(fmt_value(value), "num" if isinstance(value, (int, float)) and not isinstance(value, bool) else "")
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return Cell(text if len(text) <= 160 else text[:157] + "…", "mono", text if len(text) > 160 else "")


def _humanise(key: str) -> str:
    return str(key).replace("_", " ").strip().capitalize()


def generic_blocks(key: str, value: Any, *, label: str | None = None) -> list[Table | dict[str, str]]:
    """Lay out a detail entry whose shape the report does not know: nothing stored is left out.

    A list of records becomes a table; a mapping of scalars or estimates becomes a two-column table; a mapping of
    such mappings becomes a table with one row per inner key; anything else is shown as JSON in a ``<pre>``.
    """
    caption = label or _humanise(key)
    if isinstance(value, list) and value and all(isinstance(r, Mapping) for r in value):
        cols: list[str] = []
        for r in value:
            for k in r:
                if k not in cols:
                    cols.append(str(k))
        rows = [[_cell(c, r.get(c)) for c in cols] for r in value]
        numeric = [all(c.cls == "num" or c.text in ("—", "n/a") for c in col) for col in zip(*rows)] if rows else []
        return [Table(caption, [_humanise(c) for c in cols], rows, list(numeric))]
    if isinstance(value, Mapping) and value:
        if all(is_scalar(v) or is_estimate(v) or (isinstance(v, list) and all(is_scalar(x) for x in v))
               for v in value.values()):
            rows = [[Cell(str(k)), _cell(str(k), v)] for k, v in value.items()]
            return [Table(caption, ["Item", "Value"], rows, [False, True])]
        inner = list(value.values())
        if all(isinstance(v, Mapping) and all(is_scalar(x) or is_estimate(x) for x in v.values()) for v in inner):
            cols = []
            for v in inner:
                for k in v:
                    if k not in cols:
                        cols.append(str(k))
            rows = [[Cell(str(k))] + [_cell(c, v.get(c)) for c in cols] for k, v in value.items()]
            return [Table(caption, [""] + [_humanise(c) for c in cols], rows, [False] + [True] * len(cols))]
        out: list[Table | dict[str, str]] = []
        for k, v in value.items():
            out.extend(generic_blocks(str(k), v, label=f"{caption}: {k}"))
        return out
    if isinstance(value, list) and all(is_scalar(v) for v in value):
        return [Table(caption, ["Values"], [[Cell(", ".join(fmt_value(v) for v in value))]])]
    if is_scalar(value) or is_estimate(value):
        return [Table(caption, ["Item", "Value"], [[Cell(caption), _cell(key, value)]], [False, True])]
    return [{"caption": caption, "pre": json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)}]
