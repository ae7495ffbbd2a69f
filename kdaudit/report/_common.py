"""Shared pieces of the report's view: section names and words, small helpers, metric definitions, block builders.

Formatting only: nothing here computes a metric.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping, Sequence

from kdaudit._rows import Row, result_rows, section_definitions
from kdaudit.report._format import (
    fmt_interval,
    fmt_number,
    fmt_value,
    is_estimate,
    metric_kind,
    status_of,
)
from kdaudit.report._tables import Cell, Table, est_cell, generic_blocks, is_scalar
from kdaudit.report._tables import _humanise as _human  # one key -> label rule for every table

SECTION_ORDER = ("agreement", "calibration", "bias", "fingerprint", "lineage")
SECTION_TITLES = {
    "agreement": "Agreement with the teacher",
    "calibration": "Calibration",
    "bias": "Bias transfer",
    "fingerprint": "Error fingerprints",
    "lineage": "Lineage",
    "cost": "Cost",
    "lm_tokens": "Next-token distributions",
    "lm_generation": "Generations",
    "lm_task": "Task with right answers (multiple choice)",
    "lm_bias": "Bias transfer between prompt groups",
}
SECTION_INTROS = {
    "agreement": ("How often the student gives the same answer as the teacher, and how much of the teacher's "
                  "accuracy it keeps. A student can be accurate and still disagree with its teacher on many rows."),
    "calibration": ("Whether a model's confidence can be taken at face value: among predictions made with 80% "
                    "confidence, about 80% should be right. Distillation can make a student over- or under-confident "
                    "even when its accuracy is close to the teacher's. Calibration errors are on a 0–1 scale; lower "
                    "is better."),
    "bias": ("Whether gaps between groups of people (for example by sex or race) that the teacher shows are carried "
             "over to the student, narrowed, or widened (amplified). Gaps are on a 0–1 scale; a positive "
             "amplification means the student's gap is wider than the teacher's. Small groups have wide intervals "
             "and are marked."),
    "fingerprint": ("Whether the student makes the same mistakes as the teacher. Errors shared beyond what the two "
                    "accuracies alone would produce show that the student copied the teacher's behaviour, including "
                    "its blind spots."),
    "lineage": ("A statistical test of whether this model was derived (for example distilled) from the teacher, "
                "against the null hypothesis stated below. The p-value is calibrated with reference models trained "
                "independently by the teacher's recipe."),
}
_STATUS_TEXT = {"pass": "Pass", "warn": "Warning", "fail": "Fail", "skipped": "Not judged", "info": "Note",
                "n/a": "No rule"}
_ROLE_ORDER = {"teacher": 0, "student": 1, "control": 2, "reference": 3, "negative control": 4,
               "positive control": 5}


# ------------------------------------------------------------------------------------------------------ helpers
def _get(d: Any, *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` present in mapping ``d`` with a non-None value."""
    if not isinstance(d, Mapping):
        return default
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return default


def _status(x: Any) -> str:
    if isinstance(x, str) and x.strip().lower() in ("skipped", "skip", "not judged"):
        return "skipped"
    # The policy's "info" findings (e.g. groups too small to judge) are notes: shown, never a verdict.
    if isinstance(x, str) and x.strip().lower() in ("info", "note"):
        return "info"
    return status_of(x)


def _worst(statuses: Iterable[str]) -> str:
    # A note outranks "no rule" (something was said) but not a judged rule, as in the policy's verdict.
    order = {"fail": 4, "warn": 3, "skipped": 2, "pass": 1, "info": 0.5, "n/a": 0}
    out = "n/a"
    for s in statuses:
        if order.get(s, 0) > order.get(out, 0):
            out = s
    return out


def _anchor(*parts: Any) -> str:
    """An HTML id from a digest of (user) names: stable, unique enough, and safe whatever the names contain."""
    return "s-" + hashlib.sha256("/".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:10]


def _text(v: Any) -> str:
    return fmt_value(v) if is_scalar(v) else json.dumps(v, sort_keys=True, ensure_ascii=False)


def _kv_table(caption: str, d: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> Table:
    rows = []
    for k, v in d.items():
        if isinstance(v, Mapping) and not v or isinstance(v, list) and not v:
            continue
        if is_estimate(v):
            rows.append([Cell((labels or {}).get(k, _human(k)), "", k), est_cell(v, metric_kind(k))])
        elif is_scalar(v) and isinstance(v, float):
            rows.append([Cell((labels or {}).get(k, _human(k)), "", k),
                         Cell(fmt_number(v, metric_kind(k) if metric_kind(k) == "p" else "decimal", digits=4))])
        else:
            rows.append([Cell((labels or {}).get(k, _human(k)), "", k), Cell(_text(v))])
    return Table(caption, ["Item", "Value"], rows, [False, False])


def _direction(d: Mapping[str, Any], higher: str, lower: str, neither: str) -> str:
    """Which way is better, from a definition's ``higher_is_better`` (True, False or None)."""
    hib = d.get("higher_is_better")
    return higher if hib is True else lower if hib is False else neither


def _walk_methods(obj: Any, out: dict[str, None]) -> None:
    if isinstance(obj, Mapping):
        if is_estimate(obj) and obj.get("method"):
            out[str(obj["method"])] = None
        for v in obj.values():
            _walk_methods(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _walk_methods(v, out)


class _Definitions:
    """Metric definitions, ``section.key -> {"label", "formula", "higher_is_better", "description"}``.

    Read from ``results["definitions"]`` (flat ``section.key`` or nested ``{section: {key: ...}}``) only: the report
    reads results, never the package that made them (results without stored definitions get labels from their keys).
    """

    def __init__(self, results: Mapping[str, Any]) -> None:
        self.by_key: dict[str, Mapping[str, Any]] = {}
        stored = results.get("definitions")
        self.source = "results" if isinstance(stored, Mapping) and stored else "none"
        if self.source == "results":
            self._add(stored)

    def _add(self, d: Mapping[str, Any], prefix: str = "") -> None:
        for k, v in d.items():
            if not isinstance(v, Mapping):
                continue
            if "label" in v or "formula" in v:
                self.by_key[f"{prefix}{k}"] = v
            elif not prefix:
                self._add(v, prefix=f"{k}.")

    def get(self, section: str, key: str) -> Mapping[str, Any]:
        return self.by_key.get(f"{section}.{key}") or self.by_key.get(key) or {}

    def label(self, section: str, key: str) -> str:
        d = self.get(section, key)
        return str(d.get("label") or _human(key))

    def kind(self, section: str, key: str) -> str:
        return metric_kind(key, self.get(section, key))


# ---------------------------------------------------------------------------------------------------- blocks
def _fig(title: str, chart: Any, table: Table, wide: bool = True) -> dict[str, Any]:
    # A chart sits beside its table only when the table is narrow enough to share the width.
    return {"kind": "figure", "title": title, "chart": chart, "table": table, "wide": wide or chart is None}


def _tbl(table: Table) -> dict[str, Any]:
    return {"kind": "table", "table": table}


def _notes(items: Sequence[Any], title: str = "Notes") -> dict[str, Any]:
    return {"kind": "notes", "title": title, "lines": [str(x) for x in items]}


def _details(title: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "details", "title": title, "blocks": blocks}


def _generic(name: str, key: str, value: Any, defs: _Definitions) -> list[dict[str, Any]]:
    if value is None or (isinstance(value, (list, Mapping)) and not value):
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [_notes(value, _human(key))]
    out = []
    for b in generic_blocks(key, value, label=defs.label(name, key) if defs.get(name, key) else None):
        out.append(_tbl(b) if isinstance(b, Table) else {"kind": "pre", "title": b["caption"], "text": b["pre"]})
    return out


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v and not is_estimate(v):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---------------------------------------------------------------------------------------------------- headline
def whole_rows(section: str, result: Any, results: Mapping[str, Any]) -> list[Row]:
    """The whole-data tidy rows of one section's stored result (the rows the policy and ``to_frame`` read)."""
    return [r for r in result_rows(section, result, section_definitions(results.get("definitions"), section))
            if not r.group]


def row_of(result: Any, section: str, metric: str) -> Row | None:
    """The whole-data tidy row ``metric`` of one section's stored result, None where it has none (or the section
    is unavailable): how a figure that shows one named number (the scorecard's quality kept) reads it."""
    return next((r for r in result_rows(section, result) if not r.group and r.metric == metric), None)


def row_cell(row: Row | None, kind: str = "decimal", *, missing: str = "n/a") -> Cell:
    """A tidy row's estimate as a cell: the value, its interval on a second line, its method on hover."""
    return est_cell(None if row is None else row.estimate.to_dict(), kind, missing=missing)


def comparisons_of(rows: Sequence[Row]) -> dict[str, dict[str, Row]]:
    """``quantity -> part -> row`` of the rows that are parts of a teacher-to-student comparison (in row order)."""
    out: dict[str, dict[str, Row]] = {}
    for models in (True, False):  # ordered by the models' rows (a change row joins its quantity's place)
        for r in rows:
            if r.part and (r.part in ("teacher", "student")) == models:
                out.setdefault(r.quantity or r.metric, {}).setdefault(r.part, r)
    return {q: p for q, p in out.items() if "teacher" in p and "student" in p}


def _meaning(d: Mapping[str, Any], hib: bool | None, *, both: bool = False) -> str:
    desc = str(d.get("description") or "")
    if both:  # the row is about both models: a description of the teacher's number reads for both
        for cut in (" (teacher).", " (teacher)", " Change from teacher to student, paired interval."):
            desc = desc.replace(cut, "")
        for cut in ("The teacher's ", "Teacher's ", "the teacher's "):
            if desc.startswith(cut):
                desc = desc[len(cut):len(cut) + 1].upper() + desc[len(cut) + 1:]
    words = "Higher is better." if hib is True else "Lower is better." if hib is False else ""
    return " ".join(x for x in (desc.strip(), words) if x)


def _headline_tables(section: str, rows: Sequence[Row], defs: _Definitions) -> tuple[Table | None, Table | None]:
    """A section's whole-data tidy rows as two tables: the parts of each teacher-to-student comparison side by side
    (teacher, student, change, its p-value), and every other number on its own row, each with its interval and
    which direction is better. The same code lays out every section, built in or registered from outside."""
    paired = comparisons_of(rows)
    used = {id(r) for p in paired.values() for r in p.values()}
    has_p = any("p_value" in p for p in paired.values())
    pair_table = None
    if paired:
        out = []
        for base, p in paired.items():
            t = p["teacher"]
            label = defs.label(section, base) if defs.get(section, base) else _base_label(section, t.metric, defs)
            kind = defs.kind(section, t.metric)
            row = [Cell(label, "", base), row_cell(t, kind), row_cell(p["student"], kind)]
            ch = p.get("change")
            row.append(row_cell(ch, defs.kind(section, ch.metric)) if ch else Cell("—", "num"))
            if has_p:
                row.append(Cell(fmt_number(p["p_value"].estimate.value, "p"), "num") if "p_value" in p
                           else Cell("—", "num"))
            # A reader who is not an ML engineer needs to know what "MCE" or "NLL" is before reading its numbers.
            d = defs.get(section, t.metric) or defs.get(section, base)
            row.append(Cell(_meaning(d, t.higher_is_better, both=True) or "—", "muted"))
            out.append(row)
        cols = (["Metric", "Teacher", "Student", "Change (student − teacher)"] + (["p-value"] if has_p else [])
                + ["Meaning"])
        pair_table = Table("Teacher and student side by side", cols, out,
                           [False] + [True] * (len(cols) - 2) + [False])
    single = [r for r in rows if id(r) not in used]
    single_table = None
    if single:
        out = []
        for r in single:
            kind = defs.kind(section, r.metric)
            est = r.estimate.to_dict()
            out.append([Cell(defs.label(section, r.metric), "", r.metric),
                        Cell(fmt_number(est["value"], kind), "num strong"),
                        Cell(fmt_interval(est, kind) or "no interval", "num", est["method"] or ""),
                        Cell(_meaning(defs.get(section, r.metric), r.higher_is_better), "muted")])
        single_table = Table("Headline numbers" if not paired else "Other headline numbers",
                             ["Metric", "Estimate", "Interval", "Meaning"], out, [False, True, True, False])
    return pair_table, single_table


def _group_rows_table(section: str, rows: Sequence[Row], defs: _Definitions) -> Table | None:
    """The per-group tidy rows of a section (``by_group``) as one table: group, metric, estimate and interval,
    direction; a group the section marked too small to judge says so."""
    if not rows:
        return None
    out = []
    for r in rows:
        kind = defs.kind(section, r.metric)
        est = r.estimate.to_dict()
        out.append([Cell(r.group + ("" if r.reliable else " (small)"), "" if r.reliable else "small-group"),
                    Cell(defs.label(section, r.metric), "", r.metric),
                    Cell(fmt_number(est["value"], kind), "num strong"),
                    Cell(fmt_interval(est, kind) or "no interval", "num", est["method"] or ""),
                    Cell(_meaning({}, r.higher_is_better) or "—", "muted")])
    return Table("By group", ["Group", "Metric", "Estimate", "Interval", "Direction"], out,
                 [False, False, True, True, False])


def _base_label(section: str, key: str, defs: _Definitions) -> str:
    label = defs.label(section, key)
    for cut in ("Teacher ", "Student ", "teacher ", "student "):
        if label.startswith(cut):
            label = label[len(cut):]
    for cut in (" (teacher)", " (student)"):
        label = label.replace(cut, "")
    return label[:1].upper() + label[1:]

