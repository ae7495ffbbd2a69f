"""From the results dict to what the templates show: text, tables and charts. Formatting only.

Nothing here computes a metric. Every number shown is read from ``results`` (the content of results.json) or from
``run_info`` (what was measured when the report was generated). Parts of a section the report has no layout for are
still shown, as generic tables, so a new metric never silently disappears from a report.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from typing import Any, Iterable, Mapping, Sequence

from kdaudit.report import _charts as charts
from kdaudit.report._format import (
    as_estimate,
    fmt_bytes,
    fmt_count,
    fmt_interval,
    fmt_number,
    fmt_value,
    is_estimate,
    metric_kind,
    short_hash,
    status_of,
)
from kdaudit.report._tables import Cell, Table, est_cell, generic_blocks, is_scalar

__all__ = ["build_context"]

SECTION_ORDER = ("agreement", "calibration", "bias", "fingerprint", "lineage")
SECTION_TITLES = {
    "agreement": "Agreement with the teacher",
    "calibration": "Calibration",
    "bias": "Bias transfer",
    "fingerprint": "Error fingerprints",
    "lineage": "Lineage",
    "cost": "Cost",
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
_STATUS_TEXT = {"pass": "Pass", "warn": "Warning", "fail": "Fail", "skipped": "Not judged", "n/a": "No rule"}
_ROLE_ORDER = {"teacher": 0, "student": 1, "reference": 2}


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
    return status_of(x)


def _worst(statuses: Iterable[str]) -> str:
    order = {"fail": 4, "warn": 3, "skipped": 2, "pass": 1, "n/a": 0}
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


def _human(key: Any) -> str:
    return str(key).replace("_", " ").strip().capitalize()


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

    Read from ``results["definitions"]`` (flat ``section.key`` or nested ``{section: {key: ...}}``); results without
    stored definitions fall back to those of the installed kdaudit, and the methodology says so.
    """

    def __init__(self, results: Mapping[str, Any]) -> None:
        self.by_key: dict[str, Mapping[str, Any]] = {}
        stored = results.get("definitions")
        self.source = "results" if isinstance(stored, Mapping) and stored else "none"
        if self.source == "results":
            self._add(stored)
        else:
            self._add(_package_definitions())
            if self.by_key:
                self.source = "package"

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


def _package_definitions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        from kdaudit.metrics import DEFINITIONS_BY_SECTION

        out.update({s: dict(d) for s, d in DEFINITIONS_BY_SECTION.items()})
    except Exception:  # a results file can be rendered even where the metrics cannot be imported
        pass
    try:
        from kdaudit.lineage import DEFINITIONS as lineage_defs

        out["lineage"] = dict(lineage_defs)
    except Exception:
        pass
    return out


# ----------------------------------------------------------------------------------------------------- findings
def _findings(results: Mapping[str, Any], defs: _Definitions) -> list[dict[str, Any]]:
    out = []
    for f in results.get("findings") or []:
        if not isinstance(f, Mapping):
            continue
        metric = str(f.get("metric") or "")
        section, _, key = metric.partition(".")
        kind = defs.kind(section, key) if key else "decimal"
        est = {"value": f.get("value"), "low": f.get("low"), "high": f.get("high"), "level": 0.95}
        status = _status(f.get("status"))
        out.append({
            "status": status,
            "status_text": _STATUS_TEXT.get(status, status),
            "student": str(f.get("student") or ""),
            "section": section,
            "metric": metric,
            "metric_label": defs.label(section, key) if key else metric,
            "group": "" if f.get("group") is None else str(f.get("group")),
            "threshold": str(f.get("threshold") or ""),
            "severity": "warning only" if f.get("level") == "warning" else "",
            "value_text": fmt_number(f.get("value"), kind) if f.get("value") is not None else "n/a",
            "ci_text": fmt_interval(est, kind) if f.get("value") is not None else "",
            "message": str(f.get("message") or ""),
        })
    # Worst first: a reader sees what blocks the release before what passed. (Stable sort keeps policy order.)
    order = {"fail": 0, "warn": 1, "skipped": 2, "pass": 3, "n/a": 4}
    out.sort(key=lambda r: order.get(r["status"], 5))
    return out


def _verdict(status: str, findings: list[dict[str, Any]], policy_name: str, who: str) -> dict[str, str]:
    n = {s: sum(f["status"] == s for f in findings) for s in ("pass", "warn", "fail", "skipped")}
    counts = (f"{n['pass']} rule checks passed, {n['warn']} warned, {n['fail']} failed"
              + (f", {n['skipped']} could not be judged" if n["skipped"] else ""))
    if status == "pass":
        text = f"{who} meets every rule of the review policy, judged on the 95% intervals."
    elif status == "warn":
        text = (f"No rule fails for {who.lower() if who == 'The audit' else who}, but some rules only warn or cannot "
                "be confirmed with these data. Read the warnings before relying on the student.")
    elif status == "fail":
        text = f"At least one rule of the review policy fails for {who.lower() if who == 'The audit' else who}."
    else:
        text = "No verdict was recorded in these results (no policy was applied)."
    return {"status": status, "label": {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}.get(status, "NOT JUDGED"),
            "text": text, "counts": counts if findings else "", "policy": policy_name}


# ------------------------------------------------------------------------------------------------ models & data
def _models(results: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str]:
    models = [m for m in results.get("models") or [] if isinstance(m, Mapping)]
    teacher = results.get("teacher")
    if teacher is None:
        teacher = next((m.get("name") for m in models if m.get("role") == "teacher"),
                       models[0].get("name") if models else "teacher")
    teacher = str(teacher)
    known = {"name", "role", "kind", "access", "top_k", "n_classes", "classes", "sha256", "n_parameters",
             "size_bytes"}
    rows = []
    for m in models:
        access = str(m.get("access") or "n/a")
        if m.get("top_k"):
            access += f" (k = {m['top_k']})"
        role = str(m.get("role") or ("teacher" if str(m.get("name")) == teacher else "student"))
        rows.append({
            "name": str(m.get("name")),
            "role": role,
            "kind": str(m.get("kind") or "n/a"),
            "access": access,
            "n_classes": fmt_value(m.get("n_classes")),
            "parameters": fmt_count(m.get("n_parameters")) if m.get("n_parameters") is not None else "n/a",
            "size": fmt_bytes(m.get("size_bytes")) if m.get("size_bytes") is not None else "n/a",
            "sha256": str(m.get("sha256") or ""),
            "sha_short": short_hash(m.get("sha256")) or "n/a",
            "classes": ", ".join(str(c) for c in m.get("classes") or []),
            "extra": [(str(k), _text(v)) for k, v in m.items() if k not in known and v not in (None, [], {})],
        })
    rows.sort(key=lambda r: _ROLE_ORDER.get(r["role"], 3))  # stable: keeps the audit's order within a role
    return rows, teacher


def _small_threshold(results: Mapping[str, Any]) -> float | None:
    """The small-group threshold the audit used, as the bias section recorded it."""
    for c in results.get("comparisons") or []:
        bias = c.get("bias") if isinstance(c, Mapping) else None
        v = _get(_get(bias, "settings"), "min_group_size") or _get(bias, "min_group_size")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _data(results: Mapping[str, Any]) -> dict[str, Any]:
    d = results.get("data") if isinstance(results.get("data"), Mapping) else {}
    classes = [str(c) for c in d.get("classes") or []]
    counts = d.get("class_counts") or []
    class_rows = []
    for i, c in enumerate(classes or [str(i) for i in range(len(counts))]):
        class_rows.append({"index": i, "name": c, "count": fmt_count(counts[i]) if i < len(counts) else "n/a"})
    threshold = _small_threshold(results)
    features = []
    for feat, groups in (d.get("groups") or {}).items():
        rows = []
        if isinstance(groups, Mapping):
            for g, n in groups.items():
                small = threshold is not None and isinstance(n, (int, float)) and n < threshold
                rows.append({"name": str(g), "count": fmt_count(n), "small": small})
        features.append({"name": str(feat), "groups": rows})
    known = {"name", "source", "n_rows", "sha256", "classes", "class_counts", "groups"}
    return {
        "name": str(d.get("name") or "n/a"),
        "source": str(d.get("source") or ""),
        "n_rows": fmt_count(d.get("n_rows")) if d.get("n_rows") is not None else "n/a",
        "sha256": str(d.get("sha256") or ""),
        "sha_short": short_hash(d.get("sha256")) or "n/a",
        "classes": class_rows,
        "features": features,
        "small_threshold": fmt_count(threshold) if threshold is not None else "",
        "extra": [(str(k), _text(v)) for k, v in d.items() if k not in known],
    }


# ---------------------------------------------------------------------------------------------------- headline
def _role_of(key: str) -> tuple[str, str] | None:
    for role in ("teacher", "student"):
        if key.startswith(role + "_"):
            return key[len(role) + 1:], role
        if key.endswith("_" + role):
            return key[: -len(role) - 1], role
    return None


def _headline_tables(section: str, headline: Mapping[str, Any], defs: _Definitions) -> tuple[Table | None,
                                                                                               Table | None]:
    """Headline numbers as two tables: teacher / student / change side by side where the keys pair up
    (``teacher_ece``, ``student_ece``, ``ece_change``), and every other number on its own row."""
    bases: dict[str, dict[str, str]] = {}
    for key in headline:
        r = _role_of(key)
        if r:
            bases.setdefault(r[0], {})[r[1]] = key
    for key in headline:
        if _role_of(key):
            continue
        for suffix in ("_change", "_difference"):
            if key.endswith(suffix) and key[: -len(suffix)] in bases:
                bases[key[: -len(suffix)]].setdefault("change", key)
        if key.endswith("_amplification") and key[: -len("_amplification")] + "_difference" in bases:
            bases[key[: -len("_amplification")] + "_difference"].setdefault("change", key)
    for b, parts in bases.items():
        change = parts.get("change")
        if change and change + "_p_value" in headline:
            parts["p"] = change + "_p_value"
    paired = {b: p for b, p in bases.items() if "teacher" in p and "student" in p}
    used = {k for p in paired.values() for k in p.values()}
    has_p = any("p" in p for p in paired.values())
    pair_table = None
    if paired:
        rows = []
        for base, p in paired.items():
            label = defs.label(section, base) if defs.get(section, base) else _base_label(section, p["teacher"], defs)
            kind = defs.kind(section, p["teacher"])
            row = [Cell(label, "", base)]
            for role in ("teacher", "student"):
                e = headline[p[role]]
                row.append(est_cell(e, kind))
            ch = p.get("change")
            row.append(est_cell(headline[ch], defs.kind(section, ch)) if ch else Cell("—", "num"))
            if has_p:
                row.append(Cell(fmt_number(as_estimate(headline[p["p"]])["value"], "p"), "num")
                           if "p" in p else Cell("—", "num"))
            rows.append(row)
        cols = ["Metric", "Teacher", "Student", "Change (student − teacher)"] + (["p-value"] if has_p else [])
        pair_table = Table("Teacher and student side by side", cols, rows, [False] + [True] * (len(cols) - 1))
    single = [(k, e) for k, e in headline.items() if k not in used]
    single_table = None
    if single:
        rows = []
        for key, e in single:
            kind = defs.kind(section, key)
            d = defs.get(section, key)
            hib = {True: "Higher is better.", False: "Lower is better."}.get(d.get("higher_is_better"), "")
            est = as_estimate(e)
            rows.append([Cell(defs.label(section, key), "", key), Cell(fmt_number(est["value"], kind), "num strong"),
                         Cell(fmt_interval(est, kind) or "no interval", "num", est["method"]),
                         Cell(" ".join(x for x in (str(d.get("description") or ""), hib) if x), "muted")])
        single_table = Table("Headline numbers" if not paired else "Other headline numbers",
                             ["Metric", "Estimate", "Interval", "Meaning"], rows, [False, True, True, False])
    return pair_table, single_table


def _base_label(section: str, key: str, defs: _Definitions) -> str:
    label = defs.label(section, key)
    for cut in ("Teacher ", "Student ", "teacher ", "student "):
        if label.startswith(cut):
            label = label[len(cut):]
    for cut in (" (teacher)", " (student)"):
        label = label.replace(cut, "")
    return label[:1].upper() + label[1:]


# ---------------------------------------------------------------------------------------------------- sections
def _new_section(name: str, student: str, findings: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [f for f in findings if f["student"] == student and f["section"] == name]
    status = _worst(f["status"] for f in mine)
    return {"name": name, "title": SECTION_TITLES.get(name, _human(name)), "intro": SECTION_INTROS.get(name, ""),
            "anchor": _anchor(student, name), "status": status, "status_text": _STATUS_TEXT.get(status, status),
            "findings": mine, "available": True, "reason": "", "blocks": [], "lineage": None}


def _fig(title: str, chart: Any, table: Table, wide: bool = True) -> dict[str, Any]:
    # A chart sits beside its table only when the table is narrow enough to share the width.
    return {"kind": "figure", "title": title, "chart": chart, "table": table,
            "wide": wide or chart is None or len(table.columns) > 3}


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


class _Ctx:
    """What every section renderer needs."""

    def __init__(self, *, student: str, teacher: str, classes: Sequence[str], defs: _Definitions,
                 ids: charts.ChartIds, with_charts: bool) -> None:
        self.student, self.teacher, self.classes = student, teacher, list(classes)
        self.defs, self.ids, self.with_charts = defs, ids, with_charts

    def class_name(self, i: int) -> str:
        return self.classes[i] if i < len(self.classes) else str(i)


def _agreement(sec: Mapping[str, Any], c: _Ctx) -> tuple[set[str], list[dict[str, Any]]]:
    used: set[str] = {"per_class", "mcnemar", "unavailable", "options", "n_rows"}
    blocks: list[dict[str, Any]] = []
    per_class = sec.get("per_class") if isinstance(sec.get("per_class"), Mapping) else {}
    by_true = per_class.get("by_true_class")
    if isinstance(by_true, Mapping) and isinstance(by_true.get("weight"), list):
        n = len(by_true["weight"])
        ta, sa, ag = (by_true.get(k) or [None] * n for k in ("teacher_accuracy", "student_accuracy", "agreement"))
        rows, chart_rows = [], []
        for i in range(n):
            rows.append([Cell(c.class_name(i)), Cell(fmt_count(by_true["weight"][i]), "num"),
                         est_cell(ta[i] or None, "percent"),
                         est_cell(sa[i] or None, "percent"),
                         est_cell(ag[i] or None, "percent")])
            chart_rows.append({"label": c.class_name(i), "teacher": ta[i], "student": sa[i], "both": ag[i]})
        table = Table("Per true class: rows, accuracy of each model, and their agreement",
                      ["True class", "Rows", "Teacher accuracy", "Student accuracy", "Agreement"], rows,
                      [False, True, True, True, True])
        title = f"Accuracy and agreement per true class: teacher {c.teacher}, student {c.student}"
        chart = None
        if c.with_charts:
            panels = [{"metric": "Accuracy", "percent": True,
                       "rows": [{"label": r["label"], "teacher": r["teacher"], "student": r["student"]}
                                for r in chart_rows]},
                      {"metric": "Agreement", "percent": True,
                       "rows": [{"label": r["label"], "both": r["both"]} for r in chart_rows]}]
            chart = charts.group_interval_chart(panels, ids=c.ids, title=title, row_kind="class")
        blocks.append(_fig(title, chart, table, wide=n > 4))
    by_pred = per_class.get("by_teacher_label")
    if isinstance(by_pred, Mapping) and isinstance(by_pred.get("weight"), list):
        n = len(by_pred["weight"])
        ag = by_pred.get("agreement") or [None] * n
        sw = by_pred.get("student_label_weight") or [None] * n
        rows = [[Cell(c.class_name(i)), Cell(fmt_count(by_pred["weight"][i]), "num"),
                 Cell(fmt_count(sw[i]) if sw[i] is not None else "n/a", "num"),
                 est_cell(ag[i] or None, "percent")] for i in range(n)]
        blocks.append(_tbl(Table("Per predicted class: how often each model predicts it, and agreement on the rows "
                                 "the teacher assigns to it", ["Class", "Teacher predicts", "Student predicts",
                                                               "Agreement"], rows, [False, True, True, True])))
    for k in per_class:
        if k not in ("by_true_class", "by_teacher_label"):
            blocks.extend(_generic("agreement", k, per_class[k], c.defs))
    mc = sec.get("mcnemar")
    if isinstance(mc, Mapping):
        labels = {"b_teacher_only_correct": "Rows only the teacher gets right",
                  "c_student_only_correct": "Rows only the student gets right",
                  "n_discordant": "Rows where exactly one is right", "p_value": "p-value",
                  "null_hypothesis": "Null hypothesis", "test": "Test"}
        blocks.append(_tbl(_kv_table("Do teacher and student differ in accuracy? (McNemar test)", mc, labels)))
    unavailable = sec.get("unavailable")
    if isinstance(unavailable, Mapping) and unavailable:
        blocks.append(_notes([f"{c.defs.label('agreement', k)}: {v}" for k, v in unavailable.items()],
                             "Not computed for these models"))
    extra = {k: sec[k] for k in ("options", "n_rows") if sec.get(k) is not None}
    if extra:
        blocks.append(_details("Settings", [_tbl(_kv_table("Settings of this section", _flat(extra)))]))
    return used, blocks


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v and not is_estimate(v):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _curve(obj: Any) -> dict[str, list[Any]] | None:
    """A stored reliability curve (lists per bin) reduced to its non-empty bins."""
    if not isinstance(obj, Mapping):
        return None
    try:
        conf, acc, cnt = list(obj["confidence"]), list(obj["accuracy"]), list(obj["count"])
    except (KeyError, TypeError):
        return None
    lo = obj.get("lower") if isinstance(obj.get("lower"), list) else None
    hi = obj.get("upper") if isinstance(obj.get("upper"), list) else None
    keep = [i for i, n in enumerate(cnt) if isinstance(n, (int, float)) and n > 0 and conf[i] is not None
            and acc[i] is not None]
    return {"confidence": [conf[i] for i in keep], "accuracy": [acc[i] for i in keep],
            "count": [cnt[i] for i in keep], "lo": [lo[i] for i in keep] if lo else None,
            "hi": [hi[i] for i in keep] if hi else None}


def _calibration(sec: Mapping[str, Any], c: _Ctx) -> tuple[set[str], list[dict[str, Any]]]:
    used: set[str] = {"reliability", "over_under", "options", "n_rows"}
    blocks: list[dict[str, Any]] = []
    rel = sec.get("reliability")
    if isinstance(rel, Mapping):
        curves = {r: _curve(rel.get(r)) for r in ("teacher", "student") if rel.get(r) is not None}
        curves = {r: cv for r, cv in curves.items() if cv is not None}
        if curves:
            names = {"teacher": c.teacher, "student": c.student}
            title = f"Reliability diagrams: teacher {c.teacher} and student {c.student}"
            chart = None
            if c.with_charts:
                chart = charts.reliability_chart([{"name": names[r], "role": r, **cv} for r, cv in curves.items()],
                                                 ids=c.ids, title=title)
            rows = []
            for r, cv in curves.items():
                for i in range(len(cv["count"])):
                    b = (f"{fmt_number(cv['lo'][i], digits=2)}–{fmt_number(cv['hi'][i], digits=2)}"
                         if cv["lo"] and cv["hi"] else str(i + 1))
                    rows.append([Cell(r), Cell(b, "num"), Cell(fmt_count(cv["count"][i]), "num"),
                                 Cell(fmt_number(cv["confidence"][i]), "num"),
                                 Cell(fmt_number(cv["accuracy"][i]), "num")])
            table = Table("Reliability diagram data (non-empty confidence bins)",
                          ["Model", "Confidence bin", "Rows", "Mean confidence", "Observed accuracy"], rows,
                          [False, True, True, True, True])
            blocks.append(_fig(title, chart, table))
    ou = sec.get("over_under")
    if isinstance(ou, Mapping) and ou:
        pair, single = _headline_tables("calibration", ou, c.defs)
        for t in (pair, single):
            if t is not None:
                t.caption = "Over- and under-confidence" + (": " + t.caption.lower() if t is pair else "")
                blocks.append(_tbl(t))
    extra = {k: sec[k] for k in ("options", "n_rows") if sec.get(k) is not None}
    if extra:
        blocks.append(_details("Settings", [_tbl(_kv_table("Settings of this section", _flat(extra)))]))
    return used, blocks


def _bias(sec: Mapping[str, Any], c: _Ctx) -> tuple[set[str], list[dict[str, Any]]]:
    used: set[str] = {"features", "headline_features", "notes", "settings"}
    blocks: list[dict[str, Any]] = []
    defs = c.defs
    hf = sec.get("headline_features")
    if isinstance(hf, Mapping) and any(v is not None for v in hf.values()):
        rows = [[Cell(defs.label("bias", k), "", k), Cell(str(v))] for k, v in hf.items() if v is not None]
        blocks.append(_tbl(Table("The headline numbers are the worst over the sensitive features; this is the "
                                 "feature each comes from", ["Headline number", "Sensitive feature"], rows)))
    for note in [sec.get("notes")] if isinstance(sec.get("notes"), list) and sec.get("notes") else []:
        blocks.append(_notes(note))
    features = sec.get("features") if isinstance(sec.get("features"), Mapping) else {}
    all_groups = [(str(feat), g) for feat, fd in features.items() if isinstance(fd, Mapping)
                  for g in fd.get("groups") or [] if isinstance(g, Mapping)]
    if all_groups:
        blocks.append(_group_overview(all_groups, c))
    for feat, fd in features.items():
        if not isinstance(fd, Mapping):
            continue
        feat = str(feat)
        blocks.append({"kind": "heading", "title": f"By {feat}",
                       "text": (f"{fd.get('n_groups', 'n/a')} groups, {fd.get('n_reliable_groups', 'n/a')} large "
                                "enough to be compared." if fd.get("n_groups") is not None else "")})
        disp = fd.get("disparities")
        if isinstance(disp, Mapping) and disp:
            cols_p = any(isinstance(v, Mapping) and v.get("p_value") is not None for v in disp.values())
            rows = []
            for k, v in disp.items():
                if not isinstance(v, Mapping):
                    continue
                kind = defs.kind("bias", k)
                ch = v.get("amplification") if v.get("amplification") is not None else v.get("change")
                row = [Cell(defs.label("bias", k), "", k),
                       est_cell(v.get("teacher"), kind),
                       est_cell(v.get("student"), kind),
                       est_cell(ch, kind)]
                if cols_p:
                    row.append(Cell(fmt_number(v.get("p_value"), "p") if v.get("p_value") is not None else "—",
                                    "num"))
                rows.append(row)
            cols = ["Gap between groups", "Teacher", "Student", "Amplification (student − teacher)"]
            blocks.append(_tbl(Table(f"Gaps between {feat} groups: teacher, student and how much the student widens "
                                     "them", cols + (["p-value (amplification > 0)"] if cols_p else []), rows,
                                     [False, True, True, True] + ([True] if cols_p else []))))
        groups = [g for g in fd.get("groups") or [] if isinstance(g, Mapping)]
        if groups:
            blocks.append(_details(f"Every {feat} group with intervals ({len(groups)} groups)",
                                   [_tbl(_group_table(feat, groups, c))]))
        excluded = fd.get("excluded")
        notes = list(fd.get("notes") or [])
        if isinstance(excluded, Mapping) and excluded.get("all"):
            notes.append("Left out of every gap (too few rows): " + ", ".join(str(g) for g in excluded["all"]) + ".")
        if notes:
            blocks.append(_notes(notes, f"Notes on {feat}"))
        rest = {k: v for k, v in fd.items() if k not in ("disparities", "groups", "excluded", "notes", "n_groups",
                                                         "n_reliable_groups", "columns")}
        for k, v in rest.items():
            blocks.extend(_generic("bias", k, v, defs))
    settings = sec.get("settings")
    if isinstance(settings, Mapping) and settings:
        blocks.append(_details("Settings", [_tbl(_kv_table("Settings of this section", _flat(settings)))]))
    return used, blocks


_GROUP_PANELS = ("group_selection_rate", "group_tpr", "group_accuracy")


def _is_small(g: Mapping[str, Any]) -> bool:
    return not g.get("reliable", True) or bool(g.get("small"))


def _group_table(feat: str, groups: list[Mapping[str, Any]], c: _Ctx) -> Table:
    """Every group of one feature: each group metric for teacher and student with intervals, and the change."""
    defs = c.defs
    metric_keys: list[str] = []
    for g in groups:
        for role in ("teacher", "student"):
            for k in (g.get(role) or {}):
                if k not in metric_keys:
                    metric_keys.append(k)
    rows = []
    for g in groups:
        small = _is_small(g)
        label_cell = Cell(str(g.get("group")) + (" (small)" if small else ""), "small-group" if small else "",
                          "; ".join(str(f) for f in g.get("flags") or []))
        keys = metric_keys + (["group_agreement"] if g.get("group_agreement") is not None else [])
        for j, k in enumerate(keys):
            kind = defs.kind("bias", k)
            if k == "group_agreement":
                t, s, ch = None, g.get("group_agreement"), None
            else:
                t, s, ch = ((g.get(r) or {}).get(k) for r in ("teacher", "student", "change"))
            rows.append([label_cell if j == 0 else Cell(""),
                         Cell(fmt_count(g.get("n")) if j == 0 and g.get("n") is not None else "", "num"),
                         Cell(defs.label("bias", k), "", k),
                         est_cell(t, kind, missing="—"),
                         est_cell(s, kind, missing="—"),
                         est_cell(ch, "decimal", missing="—")])
    return Table(f"Every {feat} group: each metric for teacher and student (agreement: of the student with the "
                 "teacher)", ["Group", "Rows", "Metric", "Teacher", "Student", "Change"], rows,
                 [False, True, False, True, True, True])


def _group_overview(groups: list[tuple[str, Mapping[str, Any]]], c: _Ctx) -> dict[str, Any]:
    """One chart of the main group rates for every group of every feature, and its numbers."""
    defs = c.defs
    present = {k for _, g in groups for r in ("teacher", "student") for k in (g.get(r) or {})}
    keys = [k for k in _GROUP_PANELS if k in present] or sorted(present)[:3]
    labels = [f"{feat}: {g.get('group')}" for feat, g in groups]
    title = f"Group rates, teacher {c.teacher} vs student {c.student}"
    chart = None
    if c.with_charts and keys:
        panels = [{"metric": _short_metric(defs.label("bias", k)), "percent": defs.kind("bias", k) == "percent",
                   "rows": [{"label": lab, "small": _is_small(g), "teacher": (g.get("teacher") or {}).get(k),
                             "student": (g.get("student") or {}).get(k)} for lab, (_, g) in zip(labels, groups)]}
                  for k in keys]
        chart = charts.group_interval_chart(panels, ids=c.ids, title=title)
    rows = []
    for lab, (_, g) in zip(labels, groups):
        small = _is_small(g)
        row = [Cell(lab + (" (small)" if small else ""), "small-group" if small else ""),
               Cell(fmt_count(g.get("n")) if g.get("n") is not None else "n/a", "num")]
        for k in keys:
            kind = defs.kind("bias", k)
            t, s = ((g.get(r) or {}).get(k) for r in ("teacher", "student"))
            row.append(Cell(f"{fmt_number(as_estimate(t)['value'], kind) if t else 'n/a'} → "
                            f"{fmt_number(as_estimate(s)['value'], kind) if s else 'n/a'}", "num"))
        rows.append(row)
    table = Table("Chart values, teacher → student (intervals in the tables by feature below)",
                  ["Group", "Rows"] + [_short_metric(defs.label("bias", k)) for k in keys], rows,
                  [False, True] + [True] * len(keys))
    return _fig(title, chart, table)


def _short_metric(label: str) -> str:
    return label[6:].capitalize() if label.lower().startswith("group ") else label


_OUTCOMES = (("inherited", "Both wrong", "#555555"),
             ("new", "Only the student wrong", charts.STUDENT_COLOR),
             ("fixed", "Only the teacher wrong", charts.TEACHER_COLOR))


def _fingerprint(sec: Mapping[str, Any], c: _Ctx) -> tuple[set[str], list[dict[str, Any]]]:
    used: set[str] = {"counts", "n_rows", "null_model"}
    blocks: list[dict[str, Any]] = []
    counts = sec.get("counts")
    if isinstance(counts, Mapping) and all(isinstance(counts.get(k), (int, float)) for k, _, _ in _OUTCOMES) \
            and isinstance(counts.get("rows"), (int, float)):
        # The rows where both are right are the rows left over: a count, for the chart's full bar.
        both_right = counts["rows"] - sum(counts[k] for k, _, _ in _OUTCOMES)
        parts = [("Both right", both_right, "#9bbbd9")] + [(lab, counts[k], col) for k, lab, col in _OUTCOMES]
        title = f"Rows by who is right: teacher {c.teacher} and student {c.student}"
        chart = charts.outcome_chart(parts, ids=c.ids, title=title) if c.with_charts else None
        labels = {"rows": "Rows", "teacher_errors": "Teacher errors", "student_errors": "Student errors",
                  "inherited": "Both wrong (inherited errors)", "new": "Only the student wrong (new errors)",
                  "fixed": "Only the teacher wrong (fixed errors)",
                  "same_wrong_label": "Both wrong with the same wrong class"}
        rows = [[Cell(labels.get(k, _human(k))), Cell(fmt_count(v), "num")] for k, v in counts.items()]
        blocks.append(_fig(title, chart, Table("Error counts", ["Rows", "Count"], rows, [False, True]), wide=False))
    elif counts is not None:
        blocks.extend(_generic("fingerprint", "counts", counts, c.defs))
    if sec.get("null_model"):
        blocks.append(_notes([sec["null_model"]], "Chance model for shared wrong labels"))
    return used, blocks


def _lineage(sec: Mapping[str, Any], c: _Ctx) -> tuple[set[str], list[dict[str, Any]], dict[str, Any]]:
    used = {"verdict", "p_value", "p_value_method", "p_value_exact", "p_value_parametric", "alpha", "effect",
            "statistic", "reference_statistics", "signatures", "raw_similarity", "queries_used", "query_budget",
            "n_probes", "n_candidates", "n_references", "suspect_access", "pool_access", "teacher", "suspect",
            "null_hypothesis", "assumptions", "methodology", "probe_selection"}
    blocks: list[dict[str, Any]] = []
    p = sec.get("p_value")
    verdict = str(sec.get("verdict") or "")
    alpha = sec.get("alpha")
    box = {
        "verdict": verdict,
        "verdict_class": {"derived": "fail", "not derived": "pass", "inconclusive": "warn"}.get(verdict, "na"),
        "p_value": fmt_number(p, "p") if p is not None else "n/a",
        "p_method": str(sec.get("p_value_method") or ""),
        "alpha": fmt_value(alpha) if alpha is not None else "",
        "null": str(sec.get("null_hypothesis") or ""),
        "plain": _lineage_words(verdict, p, alpha, str(sec.get("suspect") or c.student),
                                str(sec.get("teacher") or c.teacher)),
        "facts": [],
    }
    for k, lab in (("p_value_exact", "Exact rank p-value"), ("p_value_parametric", "Parametric p-value"),
                   ("n_references", "Reference models"), ("n_probes", "Probe rows sent"),
                   ("queries_used", "Queries used"), ("query_budget", "Query budget"),
                   ("suspect_access", "Suspect access"), ("pool_access", "Access used for all models")):
        if sec.get(k) is not None:
            box["facts"].append((lab, fmt_number(sec[k], "p") if k.startswith("p_value") else _text(sec[k])))
    refs = sec.get("reference_statistics")
    if isinstance(refs, list) and refs and sec.get("statistic") is not None:
        title = "The teacher's lineage statistic among the reference models'"
        chart = None
        if c.with_charts:
            chart = charts.reference_chart(refs, sec["statistic"], ids=c.ids, title=title,
                                           observed_label=f"teacher {c.teacher}",
                                           xlabel="Combined lineage statistic (closeness to the suspect)")
        rows = [[Cell(f"teacher {c.teacher}", "strong"), Cell(fmt_number(sec["statistic"]), "num")]]
        rows += [[Cell(f"reference {i + 1}"), Cell(fmt_number(v), "num")] for i, v in enumerate(refs)]
        blocks.append(_fig(title, chart, Table("Lineage statistic of each pool model", ["Model", "Statistic"], rows,
                                               [False, True]), wide=False))
    sig = sec.get("signatures")
    if isinstance(sig, Mapping) and sig:
        rows = []
        for name, d in sig.items():
            d = d if isinstance(d, Mapping) else {}
            n_ref = len(d.get("references") or [])
            rows.append([Cell(str(name), "strong"), Cell(str(d.get("description") or "")),
                         Cell(fmt_number(d.get("teacher")), "num"), Cell(fmt_number(d.get("z_teacher")), "num"),
                         Cell(fmt_number(d.get("rank_p_value"), "p") if d.get("rank_p_value") is not None else "n/a",
                              "num"), Cell(fmt_count(n_ref), "num")])
        blocks.append(_tbl(Table("Signatures combined into the statistic (each shown for explanation; the verdict "
                                 "uses the combination)", ["Signature", "What it measures", "Teacher statistic",
                                                          "Teacher z-score", "Own rank p-value", "References"],
                                 rows, [False, False, True, True, True, True])))
    raw = sec.get("raw_similarity")
    if isinstance(raw, Mapping) and raw:
        blocks.append(_tbl(_kv_table("Raw similarity of suspect and teacher on the probes (not evidence of "
                                     "lineage by itself)", raw, {k: c.defs.label("lineage", k) for k in raw})))
    if sec.get("assumptions"):
        blocks.append(_notes(sec["assumptions"], "Assumptions behind the p-value"))
    if sec.get("methodology"):
        blocks.append(_notes([sec["methodology"]], "How the test works"))
    if isinstance(sec.get("probe_selection"), Mapping) and sec["probe_selection"]:
        blocks.append(_details("Probe selection", [_tbl(_kv_table("How probes were chosen",
                                                                  _flat(sec["probe_selection"])))]))
    return used, blocks, box


def _lineage_words(verdict: str, p: Any, alpha: Any, suspect: str, teacher: str) -> str:
    pt = fmt_number(p, "p") if p is not None else "n/a"
    at = fmt_value(alpha) if alpha is not None else "the chosen level"
    if verdict == "derived":
        return (f"The test rejects independence: if {suspect} had not been derived from {teacher}, a similarity this "
                f"strong would occur with probability p = {pt}, at or below the significance level {at}.")
    if verdict == "not derived":
        return (f"No evidence that {suspect} was derived from {teacher} (p = {pt}, significance level {at}). This "
                "is a failure to find evidence, not a proof of independence.")
    if verdict == "inconclusive":
        return "No calibrated test was possible (too few or no reference models); only raw similarity is reported."
    return ""


def _section(name: str, sec: Any, c: _Ctx, findings: list[dict[str, Any]]) -> dict[str, Any]:
    out = _new_section(name, c.student, findings)
    if not isinstance(sec, Mapping):
        out["available"] = False
        out["reason"] = "This section was not run."
        return out
    out["available"] = bool(sec.get("available", True))
    out["reason"] = str(sec.get("reason") or "")
    if not out["available"]:
        return out
    blocks: list[dict[str, Any]] = []
    headline = sec.get("headline") if isinstance(sec.get("headline"), Mapping) else {}
    if name == "lineage":
        used, extra, box = _lineage(sec, c)
        out["lineage"] = box
        headline = {k: v for k, v in headline.items() if k != "p_value"}  # shown in the verdict box
    elif name in _RENDERERS:
        used, extra = _RENDERERS[name](sec, c)
    else:
        used, extra = set(), []
    pair, single = _headline_tables(name, headline, c.defs)
    blocks.extend(_tbl(t) for t in (pair, single) if t is not None)
    blocks.extend(extra)
    for key, value in sec.items():
        if key in used or key in ("available", "reason", "headline"):
            continue
        blocks.extend(_generic(name, key, value, c.defs))
    out["blocks"] = blocks
    return out


_RENDERERS = {"agreement": _agreement, "calibration": _calibration, "bias": _bias, "fingerprint": _fingerprint}


# --------------------------------------------------------------------------------------------------- summary
_SUMMARY_KEYS = (("agreement", "top1_agreement"), ("agreement", "retained_accuracy"),
                 ("calibration", "ece_change"), ("bias", "dp_amplification"), ("bias", "eo_amplification"),
                 ("fingerprint", "inherited_error_rate"))


def _sentence(section: str, key: str, e: Any, student: str, teacher: str, defs: _Definitions) -> str:
    kind = defs.kind(section, key)
    est = as_estimate(e)
    v = fmt_number(est["value"], kind)
    ci = fmt_interval(est, kind)
    ci = f" ({ci})" if ci else ""
    phrases = {
        ("agreement", "top1_agreement"): f"{student} predicts the same class as the teacher on {v} of rows{ci}.",
        ("agreement", "retained_accuracy"): f"{student} keeps {v} of the teacher's accuracy{ci}.",
        ("agreement", "student_accuracy"): f"{student} is right on {v} of rows{ci}.",
        ("calibration", "ece_change"): (f"{student}'s calibration error is {v} {'higher' if est['value'] > 0 else 'lower'}"
                                        f" than the teacher's{ci}; on a 0–1 scale, lower is better."
                                        if est["value"] == est["value"] and est["value"] != 0 else
                                        f"{student}'s calibration error differs from the teacher's by {v}{ci}."),
        ("bias", "dp_amplification"): (f"The gap in positive-prediction rates between groups (demographic parity) "
                                       f"changes by {v} from teacher to student{ci}; above zero means wider."),
        ("bias", "eo_amplification"): (f"The gap in error rates between groups (equalized odds) changes by {v} from "
                                       f"teacher to student{ci}; above zero means wider."),
        ("fingerprint", "inherited_error_rate"): f"On {v} of rows both models are wrong (errors inherited){ci}.",
        ("cost", "parameter_ratio"): f"{student} has {v} of the teacher's parameters.",
        ("cost", "size_ratio"): f"{student} needs {v} of the teacher's size.",
    }
    return phrases.get((section, key), f"{defs.label(section, key)} for {student}: {v}{ci}.")


def _summary(comparisons: list[dict[str, Any]], raw: list[Mapping[str, Any]], findings: list[dict[str, Any]],
             results: Mapping[str, Any], teacher: str, defs: _Definitions, policy_name: str) -> list[dict[str, Any]]:
    out = []
    by_student = results.get("verdict_by_student") if isinstance(results.get("verdict_by_student"), Mapping) else {}
    for comp, rc in zip(comparisons, raw):
        student = comp["student"]
        keys: list[tuple[str, str]] = []
        for sec, key in list(_SUMMARY_KEYS) + [tuple(f["metric"].split(".", 1)) for f in findings  # type: ignore[misc]
                                               if f["student"] == student and "." in f["metric"]]:
            if (sec, key) not in keys:
                keys.append((sec, key))
        sentences = []
        for sec, key in keys:
            section = rc.get(sec)
            if isinstance(section, Mapping) and section.get("available", True) \
                    and isinstance(section.get("headline"), Mapping) and key in section["headline"]:
                sentences.append(_sentence(sec, key, section["headline"][key], student, teacher, defs))
        cost = rc.get("cost")
        if isinstance(cost, Mapping) and isinstance(cost.get("headline"), Mapping):
            for key in ("parameter_ratio", "size_ratio"):
                e = cost["headline"].get(key)
                if e is not None and as_estimate(e)["value"] == as_estimate(e)["value"]:
                    sentences.append(_sentence("cost", key, e, student, teacher, defs))
        lineage = rc.get("lineage")
        if isinstance(lineage, Mapping) and lineage.get("available", True) and lineage.get("verdict"):
            sentences.append(_lineage_words(str(lineage["verdict"]), lineage.get("p_value"), lineage.get("alpha"),
                                            student, teacher))
        mine = [f for f in findings if f["student"] == student]
        status = _status(by_student[student]) if student in by_student else _worst(f["status"] for f in mine)
        if not mine and student not in by_student:
            status = "n/a"
        sections = [{"title": s["title"], "anchor": s["anchor"], "status": s["status"],
                     "status_text": s["status_text"], "available": s["available"]} for s in comp["sections"]]
        cost_findings = [f for f in mine if f["section"] == "cost"]
        if isinstance(cost, Mapping):
            st = _worst(f["status"] for f in cost_findings)
            sections.append({"title": "Cost", "anchor": "cost", "status": st,
                             "status_text": _STATUS_TEXT.get(st, st), "available": bool(cost.get("available", True))})
        out.append({"student": student, "sentences": sentences, "sections": sections,
                    "verdict": _verdict(status, mine, policy_name, student)})
    return out


# ------------------------------------------------------------------------------------------------------- cost
_LATENCY_BATCH = ("latency_ms_median", "latency_ms_per_batch", "latency_ms")


def _cost(results: Mapping[str, Any], run_info: Mapping[str, Any], models: list[dict[str, Any]], teacher: str,
          raw: list[Mapping[str, Any]], findings: list[dict[str, Any]], defs: _Definitions, ids: charts.ChartIds,
          with_charts: bool) -> dict[str, Any]:
    stored = _get(results.get("cost"), "models", default={})
    stored = stored if isinstance(stored, Mapping) else {}
    measured = run_info.get("cost") if isinstance(run_info.get("cost"), Mapping) else {}
    raw_models = {str(m.get("name")): m for m in results.get("models") or [] if isinstance(m, Mapping)}
    rows = []
    conditions: dict[str, str] = {}
    for m in models:
        if m["role"] == "reference":
            continue
        name = m["name"]
        s = stored.get(name) if isinstance(stored.get(name), Mapping) else {}
        r = measured.get(name) if isinstance(measured.get(name), Mapping) else {}
        params = _get(s, "n_parameters", default=_get(raw_models.get(name), "n_parameters"))
        size = _get(s, "size_bytes", default=_get(raw_models.get(name), "size_bytes"))
        per_row = _get(r, "latency_ms_per_row")
        per_batch = _get(r, *_LATENCY_BATCH)
        p90 = _get(r, "latency_ms_p90")
        thr = _get(r, "throughput_rows_per_s")
        for k in ("batch_size", "n_batches", "device"):
            if r.get(k) is not None:
                conditions.setdefault(k.replace("_", " "), _text(r[k]))
        rows.append({
            "name": name, "role": m["role"],
            "parameters": fmt_count(params) if params is not None else "n/a",
            "size": fmt_bytes(size) if size is not None else "n/a",
            "latency_row": f"{fmt_number(per_row, digits=4)} ms" if per_row is not None else "n/a",
            "latency_batch": (f"{fmt_number(per_batch)} ms" + (f" (p90 {fmt_number(p90)} ms)" if p90 is not None
                                                                 else "")) if per_batch is not None else "n/a",
            "throughput": f"{fmt_count(thr)} rows/s" if thr is not None else "n/a",
            "measured": bool(r) and any(x is not None for x in (per_row, per_batch, thr)),
        })
    gains = []
    timing = {str(n): measured[n] for n in measured if isinstance(measured[n], Mapping)}
    for rc in raw:
        cost = rc.get("cost")
        student = str(rc.get("student"))
        if not isinstance(cost, Mapping):
            continue
        items = []
        for key, e in (cost.get("headline") or {}).items():
            v = as_estimate(e)["value"]
            if v == v:
                items.append({"label": defs.label("cost", key), "ratio": v, "key": key})
        # Latency and throughput ratios are not in results.json (they vary between runs); drawn from run_info.
        t_r, s_r = timing.get(teacher, {}), timing.get(student, {})
        for key, label in (("latency_ms_per_row", "Latency per row (measured)"),
                           ("throughput_rows_per_s", "Throughput (measured)")):
            tv, sv = t_r.get(key), s_r.get(key)
            if isinstance(tv, (int, float)) and isinstance(sv, (int, float)) and tv > 0 and sv > 0:
                items.append({"label": label, "ratio": sv / tv, "key": key})
        chart = None
        title = f"Cost of {student} relative to the teacher {teacher}"
        if with_charts and items:
            chart = charts.cost_chart(items, ids=ids, title=title, student=student)
        table = Table(f"{student} as a share of the teacher (100% = the teacher)", ["Quantity", "Student / teacher"],
                      [[Cell(i["label"], "", i["key"]), Cell(f"{i['ratio'] * 100:.1f}%", "num")] for i in items],
                      [False, True])
        words = []
        for i in items:
            pct = i["ratio"] * 100
            if i["key"] == "throughput_rows_per_s":
                words.append(f"{i['ratio']:.1f}× the teacher's throughput")
            elif i["ratio"] < 1:
                words.append(f"{pct:.1f}% of the teacher's {_noun(i['key'])}")
            else:
                words.append(f"{pct:.0f}% of the teacher's {_noun(i['key'])}")
        mine = [f for f in findings if f["student"] == student and f["section"] == "cost"]
        gains.append({"student": student, "figure": _fig(title, chart, table, wide=False) if items else None,
                      "sentence": f"{student} needs " + ", ".join(words) + "." if words else "",
                      "available": bool(cost.get("available", True)), "reason": str(cost.get("reason") or ""),
                      "findings": mine})
    return {"rows": rows, "gains": gains, "any_measured": any(r["measured"] for r in rows),
            "conditions": sorted(conditions.items())}


def _noun(key: str) -> str:
    return {"parameter_ratio": "parameters", "size_ratio": "size", "latency_ms_per_row": "latency per row"}.get(
        key, key.replace("_", " "))


# --------------------------------------------------------------------------------------------- methodology
_JUDGING = [
    ("min t", "the whole interval is at or above t",
     "the point estimate is at least t but the interval dips below t", "the point estimate is below t"),
    ("max t", "the whole interval is at or below t",
     "the point estimate is at most t but the interval reaches above t", "the point estimate is above t"),
]


def _methodology(results: Mapping[str, Any], raw: list[Mapping[str, Any]], defs: _Definitions) -> dict[str, Any]:
    used: list[tuple[str, str]] = []
    for rc in raw:
        for sec in list(SECTION_ORDER) + ["cost"] + [k for k in rc if k not in SECTION_ORDER and k != "cost"]:
            section = rc.get(sec)
            if isinstance(section, Mapping):
                for key in section.get("headline") or {}:
                    if (sec, key) not in used:
                        used.append((sec, key))

    def row(sec: str, key: str) -> dict[str, Any]:
        d = defs.get(sec, key)
        return {"section": SECTION_TITLES.get(sec, sec), "key": f"{sec}.{key}", "label": defs.label(sec, key),
                "formula": str(d.get("formula") or "not recorded"),
                "direction": {True: "higher is better", False: "lower is better"}.get(d.get("higher_is_better"),
                                                                                     "neither"),
                "description": str(d.get("description") or "")}

    rows = [row(s, k) for s, k in used]
    shown = {f"{s}.{k}" for s, k in used}
    others = []
    for full in sorted(defs.by_key):
        sec, _, key = full.partition(".")
        if key and full not in shown:
            others.append(row(sec, key))
    methods: dict[str, None] = {}
    _walk_methods(results.get("comparisons"), methods)
    settings = results.get("settings") if isinstance(results.get("settings"), Mapping) else {}
    boot = settings.get("bootstrap") if isinstance(settings.get("bootstrap"), Mapping) else {}
    policy = results.get("policy") if isinstance(results.get("policy"), Mapping) else {}
    rules = []
    for r in policy.get("rules") or []:
        if not isinstance(r, Mapping):
            continue
        thr = []
        if r.get("min") is not None:
            thr.append(f"at least {fmt_value(r['min'])}")
        if r.get("max") is not None:
            thr.append(f"at most {fmt_value(r['max'])}")
        metric = str(r.get("metric") or "")
        sec, _, key = metric.partition(".")
        rules.append({"metric": metric, "label": defs.label(sec, key) if key else metric,
                      "threshold": " and ".join(thr),
                      "level": "warns only" if r.get("level") == "warning" else "fails the gate",
                      "per_group": "each group" if r.get("per_group") else "overall",
                      "students": ", ".join(str(s) for s in r.get("students") or []) or "every student",
                      "description": str(r.get("description") or r.get("name") or "")})
    return {"used": rows, "others": others, "methods": list(methods), "rules": rules,
            "bootstrap": [(_human(k), _text(v)) for k, v in boot.items() if k != "method"],
            "policy_name": str(policy.get("name") or ""), "policy_description": str(policy.get("description") or ""),
            "judging": _JUDGING, "definitions_source": defs.source}


# ------------------------------------------------------------------------------------------ reproducibility
def _config_text(config: Any) -> tuple[str, str]:
    try:
        import yaml

        return "YAML", yaml.safe_dump(config, sort_keys=True, allow_unicode=True, default_flow_style=False)
    except Exception:  # a value YAML cannot represent: JSON always can (results are JSON)
        return "JSON", json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False)


def _repro(results: Mapping[str, Any], run_info: Mapping[str, Any], models: list[dict[str, Any]],
           data: dict[str, Any]) -> dict[str, Any]:
    prov = results.get("provenance") if isinstance(results.get("provenance"), Mapping) else {}
    settings = results.get("settings") if isinstance(results.get("settings"), Mapping) else {}
    config = results.get("config")
    blocks = []
    if config is not None:
        blocks.append(("Configuration file", *_config_text(config)))
    if settings:
        blocks.append(("Audit settings", *_config_text(settings)))
    results_sha = run_info.get("results_sha256")
    sha_source = "as computed by the program that wrote results.json"
    if not results_sha:
        from kdaudit._io import canonical_json

        # Hashing, not a metric: the canonical JSON text is exactly what results.json holds.
        results_sha = hashlib.sha256(canonical_json(results).encode("utf-8")).hexdigest()
        sha_source = "sha256 of the canonical JSON of the results this report was rendered from"
    cmd = run_info.get("command") or run_info.get("argv")
    if isinstance(cmd, (list, tuple)):
        import shlex

        cmd = shlex.join(str(c) for c in cmd)
    facts = [("kdaudit version", _text(results.get("kdaudit_version"))),
             ("Results schema", _text(results.get("schema"))),
             ("Seed", _text(_get(prov, "seed", default=_get(settings, "seed"))))]
    for k in ("device", "precision", "batch_size", "n_rows"):
        if prov.get(k) is not None:
            facts.append((_human(k), _text(prov[k])))
    hashes = [(f"Data: {data['name']}", data["sha256"])]
    hashes += [(f"Model ({m['role']}): {m['name']}", m["sha256"]) for m in models]
    hashes.append(("results.json", str(results_sha)))
    run_rows = []
    for k, v in run_info.items():
        if k in ("command", "argv", "results_sha256", "generated_at", "cost"):
            continue
        if isinstance(v, Mapping):
            for k2, v2 in _flat(v).items():
                run_rows.append((f"{k}.{k2}", _text(v2)))
        elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            for x in v:
                label = str(x.get("name", "")) or k
                run_rows.append((f"{k}: {label}", ", ".join(f"{a} {_text(b)}" for a, b in x.items() if a != "name")))
        else:
            run_rows.append((str(k), _text(v)))
    versions = prov.get("versions") if isinstance(prov.get("versions"), Mapping) else {}
    prov_extra = [(str(k), _text(v)) for k, v in prov.items()
                  if k not in ("versions", "models", "seed", "device", "precision", "batch_size", "n_rows",
                               "data_sha256")]
    return {"facts": facts, "versions": sorted((str(k), str(v)) for k, v in versions.items()),
            "configs": blocks, "hashes": hashes, "results_sha256": str(results_sha), "results_sha_source": sha_source,
            "command": "" if cmd is None else str(cmd), "run_rows": run_rows, "provenance_extra": prov_extra}


# -------------------------------------------------------------------------------------------------- entry
def build_context(results: Mapping[str, Any], run_info: Mapping[str, Any] | None, generated_at: str | None,
                  *, charts_on: bool = True) -> dict[str, Any]:
    """Everything the templates show, as text, tables and charts (a fresh chart-id counter per call)."""
    run_info = dict(run_info or {})
    ids = charts.ChartIds()
    defs = _Definitions(results)
    findings = _findings(results, defs)
    models, teacher = _models(results)
    data = _data(results)
    classes = [c["name"] for c in data["classes"]]
    raw = [c for c in results.get("comparisons") or [] if isinstance(c, Mapping)]
    policy = results.get("policy") if isinstance(results.get("policy"), Mapping) else {}
    policy_name = str(policy.get("name") or "the policy")
    comparisons = []
    for rc in raw:
        student = str(rc.get("student") or "student")
        ctx = _Ctx(student=student, teacher=teacher, classes=classes, defs=defs, ids=ids, with_charts=charts_on)
        names = [s for s in SECTION_ORDER if s in rc] + [k for k, v in rc.items() if k not in SECTION_ORDER
                                                          and k not in ("student", "cost") and isinstance(v, Mapping)]
        comparisons.append({"student": student, "anchor": _anchor(student),
                            "sections": [_section(n, rc.get(n), ctx, findings) for n in names]})
    if generated_at is None:
        generated_at = run_info.get("generated_at")
    if generated_at is None:
        generated_at = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    students = [c["student"] for c in comparisons]
    stored = results.get("verdict")
    overall = _status(stored) if stored is not None else "n/a"
    return {
        "title": "Distillation audit report",
        "teacher": teacher,
        "students": students,
        "generated_at": str(generated_at),
        "verdict": _verdict(overall, findings, policy_name, "The audit" if len(students) != 1 else students[0]),
        "findings": findings,
        "findings_open": [f for f in findings if f["status"] in ("fail", "warn", "skipped")],
        "summary": _summary(comparisons, raw, findings, results, teacher, defs, policy_name),
        "models": models,
        "main_models": [m for m in models if m["role"] != "reference"],
        "reference_models": [m for m in models if m["role"] == "reference"],
        "data": data,
        "comparisons": comparisons,
        "cost": _cost(results, run_info, models, teacher, raw, findings, defs, ids, charts_on),
        "methodology": _methodology(results, raw, defs),
        "repro": _repro(results, run_info, models, data),
    }
