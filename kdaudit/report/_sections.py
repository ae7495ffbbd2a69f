"""Each audit section (agreement, calibration, bias, fingerprint, lineage) laid out as blocks: tables, charts, notes.

Formatting and chart drawing only: every number is read from the section's dict in the results.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

from kdaudit._rows import Row, result_rows, section_definitions
from kdaudit.report import _charts as charts
from kdaudit.report._common import (
    _STATUS_TEXT,
    SECTION_INTROS,
    SECTION_TITLES,
    _anchor,
    _Definitions,
    _details,
    _fig,
    _flat,
    _generic,
    _group_rows_table,
    _headline_tables,
    _human,
    _kv_table,
    _notes,
    _tbl,
    row_cell,
    _text,
    _worst,
)
from kdaudit.report._format import as_estimate, fmt_count, fmt_number, fmt_value
from kdaudit.report._tables import Cell, Table, est_cell

__all__ = ["SECTION_RENDERERS", "SectionContext", "lineage_words", "render_section"]


# ---------------------------------------------------------------------------------------------------- sections
def _new_section(name: str, student: str, findings: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [f for f in findings if f["student"] == student and f["section"] == name]
    status = _worst(f["status"] for f in mine)
    return {"name": name, "title": SECTION_TITLES.get(name, _human(name)), "intro": SECTION_INTROS.get(name, ""),
            "anchor": _anchor(student, name), "status": status, "status_text": _STATUS_TEXT.get(status, status),
            "findings": mine, "available": True, "reason": "", "blocks": [], "lineage": None}


class SectionContext:
    """What every section renderer needs."""

    def __init__(self, *, student: str, teacher: str, classes: Sequence[str], defs: _Definitions,
                 ids: charts.ChartIds, with_charts: bool, role: str = "student",
                 definitions: Mapping[str, Any] | None = None) -> None:
        self.student, self.teacher, self.classes = student, teacher, list(classes)
        self.definitions = definitions or {}  # results.json's definitions, for the tidy rows
        self.role = role  # "student" or "control": what the compared model is called in the text
        self.defs, self.ids, self.with_charts = defs, ids, with_charts

    def class_name(self, i: int) -> str:
        return self.classes[i] if i < len(self.classes) else str(i)


def _agreement(sec: Mapping[str, Any], c: SectionContext) -> tuple[set[str], list[dict[str, Any]]]:
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
        title = f"Accuracy per true class of the teacher ({c.teacher}) and the {c.role} ({c.student})"
        chart = None
        if c.with_charts:
            # One panel: accuracy per class, teacher beside student; agreement per class is in the table.
            panels = [{"metric": "Accuracy", "percent": True,
                       "rows": [{"label": r["label"], "teacher": r["teacher"], "student": r["student"]}
                                for r in chart_rows]}]
            chart = charts.group_interval_chart(panels, ids=c.ids, title=title, row_kind="class")
        blocks.append(_fig(title, chart, table, wide=True))
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


def _calibration(sec: Mapping[str, Any], c: SectionContext) -> tuple[set[str], list[dict[str, Any]]]:
    used: set[str] = {"reliability", "over_under", "options", "n_rows"}
    blocks: list[dict[str, Any]] = []
    rel = sec.get("reliability")
    if isinstance(rel, Mapping):
        curves = {r: _curve(rel.get(r)) for r in ("teacher", "student") if rel.get(r) is not None}
        curves = {r: cv for r, cv in curves.items() if cv is not None}
        if curves:
            names = {"teacher": c.teacher, "student": c.student}
            title = f"Reliability diagram of the teacher ({c.teacher}) and the {c.role} ({c.student})"
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
            table = Table("Reliability diagram data: per non-empty confidence bin, the mean confidence and the "
                          "observed accuracy", ["Model", "Bin", "Rows", "Confidence", "Accuracy"], rows,
                          [False, True, True, True, True])
            blocks.append(_fig(title, chart, table, wide=False))
    ou = sec.get("over_under")
    if isinstance(ou, Mapping) and ou:
        # a detail mapping of estimates laid out as rows, by the one row reader
        ou_rows = result_rows("calibration", {"headline": ou}, section_definitions(c.definitions, "calibration"))
        pair, single = _headline_tables("calibration", ou_rows, c.defs)
        for t in (pair, single):
            if t is not None:
                t.caption = "Over- and under-confidence" + (": " + t.caption.lower() if t is pair else "")
                blocks.append(_tbl(t))
    extra = {k: sec[k] for k in ("options", "n_rows") if sec.get(k) is not None}
    if extra:
        blocks.append(_details("Settings", [_tbl(_kv_table("Settings of this section", _flat(extra)))]))
    return used, blocks


def _bias(sec: Mapping[str, Any], c: SectionContext) -> tuple[set[str], list[dict[str, Any]]]:
    used: set[str] = {"features", "headline_features", "notes", "settings"}
    blocks: list[dict[str, Any]] = []
    defs = c.defs
    # the numbers, from the tidy rows; the features' stored structure gives only the layout (which groups, in order)
    index = _RowIndex(result_rows("bias", sec, section_definitions(c.definitions, "bias")))
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
        blocks.append(_group_overview(all_groups, c, index))
    for feat, fd in features.items():
        if not isinstance(fd, Mapping):
            continue
        feat = str(feat)
        blocks.append({"kind": "heading", "title": f"By {feat}",
                       "text": _feature_counts(fd)})
        disp = fd.get("disparities")
        if isinstance(disp, Mapping) and disp:
            cols_p = any(index.find(feat, str(k), "p_value") is not None for k in disp)
            out = []
            for k in disp:
                k = str(k)
                kind = defs.kind("bias", k)
                row = [Cell(defs.label("bias", k), "", k),
                       row_cell(index.find(feat, k, "teacher"), kind),
                       row_cell(index.find(feat, k, "student"), kind),
                       row_cell(index.find(feat, k, "change"), kind)]
                if cols_p:
                    p = index.find(feat, k, "p_value")
                    row.append(Cell(fmt_number(p.estimate.value, "p") if p is not None else "—", "num"))
                out.append(row)
            cols = ["Gap between groups", "Teacher", "Student", "Amplification (student − teacher)"]
            blocks.append(_tbl(Table(f"Gaps between {feat} groups: teacher, student and how much the student widens "
                                     "them", cols + (["p-value (amplification > 0)"] if cols_p else []), out,
                                     [False, True, True, True] + ([True] if cols_p else []))))
        groups = [g for g in fd.get("groups") or [] if isinstance(g, Mapping)]
        if groups:
            blocks.append(_details(f"Every {feat} group with intervals ({len(groups)} groups)",
                                   [_tbl(_group_table(feat, groups, c, index))]))
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


def _feature_counts(fd: Mapping[str, Any]) -> str:
    if fd.get("n_groups") is None:
        return ""
    text = f"{fd.get('n_groups', 'n/a')} groups, {fd.get('n_reliable_groups', 'n/a')} large enough to be compared."
    few = [str(g.get("group")) for g in fd.get("groups") or [] if isinstance(g, Mapping)
           and any(f in ("few_positives", "few_negatives") for f in g.get("flags") or [])]
    if few:
        text += (f" {len(few)} of them ({', '.join(few)}) have too few positive or negative rows for their rates to "
                 "be trusted; they are marked and left out of the gaps those rates would decide.")
    return text


_GROUP_PANELS = ("group_selection_rate", "group_tpr", "group_accuracy")


def _num(x: Any) -> float:
    """A stored number for sorting; anything else sorts last."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("-inf")
    return v if not math.isnan(v) else float("-inf")


def _is_small(g: Mapping[str, Any]) -> bool:
    return not g.get("reliable", True) or bool(g.get("small"))


_FLAG_WORDS = {"small_group": "small", "few_positives": "few positives", "few_negatives": "few negatives"}


def _flag_tag(g: Mapping[str, Any]) -> str:
    """Why a group is marked, in words: "small" alone would contradict "all groups large enough" when a large
    group is marked only for having too few positive (or negative) rows for its rates to be trusted."""
    flags = [str(f) for f in g.get("flags") or [] if f]
    return ", ".join(_FLAG_WORDS.get(f, f.replace("_", " ")) for f in flags) or "small"


def _flag_suffix(g: Mapping[str, Any]) -> str:
    return f" ({_flag_tag(g)})" if _is_small(g) else ""


class _RowIndex:
    """Tidy rows looked up by (group, quantity, part): how a section's own layout finds the number for a cell."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self._by: dict[tuple[str, str, str], Row] = {}
        for r in rows:
            self._by.setdefault((r.group, r.quantity or r.metric, r.part), r)

    def find(self, group: str, quantity: str, part: str = "") -> Row | None:
        return self._by.get((group, quantity, part))

    def quantities(self, group: str) -> list[str]:
        """The quantities of one group that compare the models, in row order."""
        out: list[str] = []
        for (g, q, part) in self._by:
            if g == group and part in ("teacher", "student") and q not in out:
                out.append(q)
        return out


def _label(feat: str, g: Mapping[str, Any]) -> str:
    """The tidy rows' group of a stored group record (``feature=group``)."""
    return f"{feat}={g.get('group')}"


def _group_table(feat: str, groups: list[Mapping[str, Any]], c: SectionContext, rows: _RowIndex) -> Table:
    """Every group of one feature: each group metric for teacher and student with intervals, and the change."""
    defs = c.defs
    metric_keys: list[str] = []
    for g in groups:
        for k in rows.quantities(_label(feat, g)):
            if k not in metric_keys:
                metric_keys.append(k)
    out = []
    for g in groups:
        small = _is_small(g)
        label = _label(feat, g)
        label_cell = Cell(str(g.get("group")) + _flag_suffix(g), "small-group" if small else "",
                          "; ".join(str(f) for f in g.get("flags") or []))
        agreement = rows.find(label, "group_agreement")
        keys = metric_keys + (["group_agreement"] if agreement is not None else [])
        for j, k in enumerate(keys):
            kind = defs.kind("bias", k)
            if k == "group_agreement":
                t, s, ch = None, agreement, None
            else:
                t, s, ch = (rows.find(label, k, part) for part in ("teacher", "student", "change"))
            out.append([label_cell if j == 0 else Cell(""),
                        Cell(fmt_count(g.get("n")) if j == 0 and g.get("n") is not None else "", "num"),
                        Cell(defs.label("bias", k), "", k),
                        row_cell(t, kind, missing="—"),
                        row_cell(s, kind, missing="—"),
                        row_cell(ch, "decimal", missing="—")])
    return Table(f"Every {feat} group: each metric for teacher and student (agreement: of the student with the "
                 "teacher)", ["Group", "Rows", "Metric", "Teacher", "Student", "Change"], out,
                 [False, True, False, True, True, True])


def _group_overview(groups: list[tuple[str, Mapping[str, Any]]], c: SectionContext,
                    rows: _RowIndex) -> dict[str, Any]:
    """One chart of the main group rates for every group of every feature, and its numbers."""
    defs = c.defs

    def est(feat: str, g: Mapping[str, Any], k: str, part: str) -> dict[str, Any] | None:
        r = rows.find(_label(feat, g), k, part)
        return None if r is None else r.estimate.to_dict()

    present = {k for feat, g in groups for k in rows.quantities(_label(feat, g))}
    keys = [k for k in _GROUP_PANELS if k in present] or sorted(present)[:3]
    labels = [f"{feat}: {g.get('group')}" for feat, g in groups]
    title = f"Group rates of the teacher ({c.teacher}) and the {c.role} ({c.student})"
    chart = None
    if c.with_charts and keys:
        panels = [{"metric": _short_metric(defs.label("bias", k)), "percent": defs.kind("bias", k) == "percent",
                   "rows": [{"label": lab, "small": _is_small(g), "tag": _flag_tag(g),
                             "teacher": est(feat, g, k, "teacher"),
                             "student": est(feat, g, k, "student")} for lab, (feat, g) in zip(labels, groups)]}
                  for k in keys]
        chart = charts.group_interval_chart(panels, ids=c.ids, title=title)
    out = []
    for lab, (feat, g) in zip(labels, groups):
        small = _is_small(g)
        row = [Cell(lab + _flag_suffix(g), "small-group" if small else ""),
               Cell(fmt_count(g.get("n")) if g.get("n") is not None else "n/a", "num")]
        for k in keys:
            kind = defs.kind("bias", k)
            t, s = (rows.find(_label(feat, g), k, part) for part in ("teacher", "student"))
            row.append(Cell(f"{fmt_number(t.estimate.value, kind) if t else 'n/a'} → "
                            f"{fmt_number(s.estimate.value, kind) if s else 'n/a'}", "num"))
        out.append(row)
    table = Table("Chart values, teacher → student (intervals in the tables by feature below)",
                  ["Group", "Rows"] + [_short_metric(defs.label("bias", k)) for k in keys], out,
                  [False, True] + [True] * len(keys))
    return _fig(title, chart, table)


def _short_metric(label: str) -> str:
    return label[6:].capitalize() if label.lower().startswith("group ") else label


_OUTCOMES = (("inherited", "Both wrong", "#555555"),
             ("new", "Only the student wrong", charts.STUDENT_COLOR),
             ("fixed", "Only the teacher wrong", charts.TEACHER_COLOR))


def _fingerprint(sec: Mapping[str, Any], c: SectionContext) -> tuple[set[str], list[dict[str, Any]]]:
    used: set[str] = {"counts", "n_rows", "null_model"}
    blocks: list[dict[str, Any]] = []
    counts = sec.get("counts")
    if isinstance(counts, Mapping) and all(isinstance(counts.get(k), (int, float)) for k, _, _ in _OUTCOMES) \
            and isinstance(counts.get("rows"), (int, float)):
        # The rows where both are right are the rows left over: a count, for the chart's full bar.
        both_right = counts["rows"] - sum(counts[k] for k, _, _ in _OUTCOMES)
        parts = [("Both right", both_right, "#9bbbd9")] + [(lab, counts[k], col) for k, lab, col in _OUTCOMES]
        title = f"Rows by who is right, the teacher ({c.teacher}) or the {c.role} ({c.student})"
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


def _lineage(sec: Mapping[str, Any], c: SectionContext) -> tuple[set[str], list[dict[str, Any]], dict[str, Any]]:
    used = {"verdict", "p_value", "p_value_method", "p_value_exact", "p_value_parametric", "alpha", "effect",
            "statistic", "reference_statistics", "signatures", "raw_similarity", "queries_used", "query_budget",
            "n_probes", "n_candidates", "n_references", "suspect_access", "pool_access", "teacher", "suspect",
            "null_hypothesis", "assumptions", "methodology", "probe_selection", "negative_controls",
            "positive_controls", "null_explained"}
    blocks: list[dict[str, Any]] = []
    index = _RowIndex(result_rows("lineage", sec, section_definitions(c.definitions, "lineage")))

    def number(metric: str) -> Any:
        """A whole-data number of the test, from its tidy row (None where not recorded or undefined)."""
        row = index.find("", metric)
        return None if row is None or math.isnan(row.estimate.value) else row.estimate.to_dict()

    p = _value(number("p_value"))
    verdict = str(sec.get("verdict") or "")
    alpha = sec.get("alpha")
    n_refs = sec.get("n_references")
    method = str(sec.get("p_value_method") or "")
    cite = _cite(sec, method, n_refs, number)
    box = {
        "verdict": verdict,
        "verdict_class": {"derived": "fail", "not derived": "pass", "inconclusive": "warn"}.get(verdict, "na"),
        "p_value": fmt_number(p, "p") if p is not None else "n/a",
        "p_method": _METHOD_WORDS.get(method, method),
        "alpha": fmt_value(alpha) if alpha is not None else "",
        "null": str(sec.get("null_hypothesis") or ""),
        # language-model lineage states its null (sibling references or unrelated controls) in plain words
        "null_plain": str(sec.get("null_explained") or ""),
        "plain": lineage_words(verdict, p, alpha, str(sec.get("suspect") or c.student),
                                str(sec.get("teacher") or c.teacher), method=method, n_references=n_refs),
        "assumes": cite["assumes"],
        "floor": cite["floor"],
        "effect": "",
        "facts": [],
        "shown": {"p_value"},  # the headline numbers the verdict box shows (left out of the headline table)
    }
    eff = number("effect")
    if eff is not None and not math.isnan(as_estimate(eff)["value"]):
        e = as_estimate(eff)
        from kdaudit.report._format import fmt_interval

        box["effect"] = (f"{fmt_number(e['value'])} reference standard deviations above the references' mean "
                         f"({fmt_interval(e) or 'no interval'}; the scale of the chart below)")
    for k, lab in (("n_references", "Reference models"), ("n_probes", "Probe rows sent"),
                   ("queries_used", "Queries used"), ("query_budget", "Query budget"),
                   ("suspect_access", "Suspect access"), ("pool_access", "Access used for all models")):
        if sec.get(k) is not None:
            box["facts"].append((lab, _text(sec[k])))
    if cite["others"]:
        blocks.append(_notes(cite["others"], "Other p-values (for reference; the verdict does not use them)"))
    refs = sec.get("reference_statistics")
    if isinstance(refs, list) and refs and sec.get("statistic") is not None:
        title = "Where the teacher's lineage statistic falls among the reference models"
        scaled = _effect_scale(sec["statistic"], refs, eff)
        chart = None
        if c.with_charts:
            if scaled is not None:
                chart = charts.reference_chart(scaled[1], scaled[0], ids=c.ids, title=title,
                                               observed_label=f"the teacher ({c.teacher})",
                                               xlabel="Lineage statistic in reference SDs from the references' mean "
                                                      "(the effect)")
            else:
                chart = charts.reference_chart(refs, sec["statistic"], ids=c.ids, title=title,
                                               observed_label=f"the teacher ({c.teacher})",
                                               xlabel="Combined lineage statistic (closeness to the suspect)")
        # Ranked, highest (closest to the suspect) first: the teacher's place in this list is what the p-value
        # counts, so the reader can check it by eye.
        pool = [(f"the teacher ({c.teacher})", sec["statistic"], True)]
        pool += [(f"reference {i + 1}", v, False) for i, v in enumerate(refs)]
        order = sorted(range(len(pool)), key=lambda j: (-_num(pool[j][1]), j))
        rows = [[Cell(str(rank + 1), "num"), Cell(pool[j][0], "strong" if pool[j][2] else ""),
                 Cell(fmt_number(pool[j][1]), "num")] for rank, j in enumerate(order)]
        blocks.append(_fig(title, chart, Table("Lineage statistic of each pool model, closest to the suspect first",
                                               ["Rank", "Model", "Statistic"], rows, [True, False, True]),
                           wide=len(rows) > 8))
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
    headline = sec.get("headline") if isinstance(sec.get("headline"), Mapping) else {}
    if isinstance(raw, Mapping) and raw and not set(raw) <= set(headline):  # else already in the headline table
        blocks.append(_tbl(_kv_table("Raw similarity of suspect and teacher on the probes (not evidence of "
                                     "lineage by itself)", raw, {k: c.defs.label("lineage", k) for k in raw})))
    nc = sec.get("negative_controls")
    if isinstance(nc, Mapping) and nc.get("n"):
        share = (f"{fmt_count(nc.get('n_at_alpha'))} of {fmt_count(nc['n'])} (a calibrated test: about "
                 f"{fmt_value(nc.get('expected_share'))})")
        box["facts"].append(("Negative controls at p ≤ α", share))
        rows = [[Cell(str(name)), Cell(fmt_number(pv, "p") if pv is not None else "n/a", "num"),
                 Cell(fmt_number(ef) if ef is not None else "n/a", "num")]
                for name, pv, ef in zip(nc.get("names") or [], nc.get("p_values") or [], nc.get("effects") or [])]
        rank_p = nc.get("suspect_rank_p_value")
        notes = [("Negative controls are models known not to be derived from the teacher, tested exactly like the "
                  "suspect. If the teacher is calibrated, about the significance level's share of them reach it; "
                  f"here {fmt_count(nc.get('n_at_alpha'))} of {fmt_count(nc['n'])} did (binomial p = "
                  f"{fmt_number(nc.get('binomial_p'), 'p')}). The suspect's effect ranks among the controls' "
                  f"effects with p = {fmt_number(rank_p, 'p') if rank_p is not None else 'n/a'}, valid if the "
                  "suspect, had it not been derived, would be made like the controls.")]
        least = nc.get("min_calibration_controls")  # results carry it (the report never imports the lineage code)
        if not nc.get("calibrated") and least is not None and int(nc["n"]) < int(least):
            notes.append(f"With at least {int(least)} controls the test itself is calibrated by them "
                         "(each pool model's statistics measured against its own spread over the controls).")
        if nc.get("calibrated"):
            box["facts"].append(("Calibrated by the negative controls", "yes"))
            unc = nc.get("uncalibrated") if isinstance(nc.get("uncalibrated"), Mapping) else {}
            by = nc.get("calibrated_by") if isinstance(nc.get("calibrated_by"), list) else None
            which = (f"the {len(by)} controls most like the suspect ({', '.join(str(b) for b in by)})" if by
                     else "the controls")
            unc_p = fmt_number(unc.get("p_value"), "p") if unc.get("p_value") is not None else "n/a"
            notes.append("The verdict's test was calibrated by these controls: each pool member's statistics were "
                         f"measured against their own mean and spread over {which}, so a teacher that relates to "
                         "unrelated models (or to the suspect's kind) more widely than its siblings is not favoured. "
                         "Each control in the table below was scaled alike, by the other controls and the suspect. "
                         f"Without this calibration the p-value would be {unc_p}.")
        if nc.get("warning"):
            notes.append(f"Caution: {nc['warning']}.")
        blocks.append(_notes(notes, "Negative controls"))
        blocks.append(_details("Negative controls, one by one", [_tbl(Table(
            "Each negative control tested as if it were the suspect", ["Control", "p-value", "Effect (reference SDs)"],
            rows, [False, True, True]))]))
    pc = sec.get("positive_controls")
    if isinstance(pc, Mapping) and pc.get("n"):
        low, high = (pc.get("interval") or [None, None])[:2]
        # two decimals, rounded outward: the printed interval still contains the computed one
        span = (f" (95% interval {math.floor(float(low) * 100) / 100:.2f} to "
                f"{math.ceil(float(high) * 100) / 100:.2f})" if low is not None and high is not None else "")
        box["facts"].append(("Power for this teacher (positive controls found)",
                             f"{fmt_count(pc.get('n_found'))} of {fmt_count(pc['n'])}{span}"))
        notes = [f"Positive controls are students made from the teacher, tested exactly like the suspect (same "
                 f"reference models, probes, access and calibration). The test found {fmt_count(pc.get('n_found'))} "
                 f"of {fmt_count(pc['n'])}{span}: that is its power for this teacher against suspects made like "
                 "them, and how much a 'not derived' verdict can say. They do not enter the suspect's p-value."]
        if pc.get("n_found") is not None and 2 * int(pc["n_found"]) < int(pc["n"]):
            notes.append("The test missed most of them: for this teacher, a 'not derived' verdict says little.")
        blocks.append(_notes(notes, "Positive controls"))
        rows = [[Cell(str(name)), Cell(fmt_number(pv, "p") if pv is not None else "n/a", "num"), Cell(str(v))]
                for name, pv, v in zip(pc.get("names") or [], pc.get("p_values") or [], pc.get("verdicts") or [])]
        blocks.append(_details("Positive controls, one by one", [_tbl(Table(
            "Each positive control tested as if it were the suspect", ["Positive control", "p-value", "Verdict"],
            rows, [False, True, False]))]))
    if sec.get("assumptions"):
        blocks.append(_notes(sec["assumptions"], "Assumptions behind the p-value"))
    if sec.get("methodology"):
        blocks.append(_notes([sec["methodology"]], "How the test works"))
    if isinstance(sec.get("probe_selection"), Mapping) and sec["probe_selection"]:
        blocks.append(_details("Probe selection", [_tbl(_kv_table("How probes were chosen",
                                                                  _flat(sec["probe_selection"])))]))
    return used, blocks, box


_METHOD_WORDS = {"exact rank": "exact rank test", "parametric t": "parametric t test (assumes normality)",
                 "none": "no test"}


def _floor_reached(p: Any, n_refs: Any) -> bool:
    try:
        return float(p) <= 1.0 / (int(n_refs) + 1) + 1e-12
    except (TypeError, ValueError):
        return False


def _value(e: Any) -> Any:
    return None if e is None else e["value"]


def _cite(sec: Mapping[str, Any], method: str, n_refs: Any, number: Any) -> dict[str, Any]:
    """Which p-value to cite, what it assumes, whether it sits at its floor, and the other p-values with theirs."""
    k = n_refs if isinstance(n_refs, int) else None
    exch = ("the reference models are exchangeable with the teacher if the suspect is not derived (they were trained "
            "by the teacher's recipe and data with other seeds, and not chosen with the suspect in view)")
    assumes = {"exact rank": exch,
               "parametric t": exch + ", and the pool's combined statistics are normally distributed (an extra "
                                      "assumption: this p-value is not exact)"}.get(method, "")
    if not assumes and method.startswith("larger of"):
        assumes = exch + "; or, the suspect, had it not been derived, would be exchangeable with the negative controls"
    floor = ""
    if method == "exact rank" and k and _floor_reached(_value(number("p_value")), k):
        floor = (f"With {k} references the exact p-value cannot go below 1/{k + 1} = {fmt_number(1 / (k + 1), 'p')}: "
                 "the teacher ranked first, and this p-value is at that floor. Stronger evidence needs more "
                 f"references ({2 * k + 1} reach {fmt_number(1 / (2 * k + 2), 'p')}).")
    others = []
    pe, pp = _value(number("p_value_exact")), _value(number("p_value_parametric"))
    if method != "exact rank" and pe is not None and not math.isnan(as_estimate(pe)["value"]):
        others.append(f"Exact rank p = {fmt_number(pe, 'p')}: assumes only that {exch}.")
    if method != "parametric t" and pp is not None and not math.isnan(as_estimate(pp)["value"]):
        others.append(f"Parametric p = {fmt_number(pp, 'p')}: additionally assumes that the pool's combined statistics "
                      "are normally distributed; it can go below the exact test's floor only through that assumption.")
    nc = sec.get("negative_controls")
    if isinstance(nc, Mapping) and nc.get("suspect_rank_p_value") is not None:
        others.append(f"Rank among the negative controls p = {fmt_number(nc['suspect_rank_p_value'], 'p')}: assumes the "
                      "suspect, had it not been derived, would be exchangeable with the controls.")
    return {"assumes": assumes, "floor": floor, "others": others}


def _effect_scale(statistic: Any, refs: list[Any], effect: Any) -> tuple[float, list[float]] | None:
    """The chart's values on the effect's scale (reference SDs from the references' mean): a change of unit for
    display, used only when it reproduces the stored effect, so headline and chart agree."""
    vals = [float(x) for x in refs if isinstance(x, (int, float)) and math.isfinite(float(x))]
    if len(vals) < 2 or not isinstance(statistic, (int, float)) or effect is None:
        return None
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1))
    target = as_estimate(effect)["value"]
    if sd <= 0 or math.isnan(target):
        return None
    z = (float(statistic) - mean) / sd
    if abs(z - target) > 1e-6 * max(1.0, abs(target)):
        return None  # the stored effect is on another scale (e.g. calibrated by controls): keep the raw one
    return z, [(x - mean) / sd for x in vals]


def lineage_words(verdict: str, p: Any, alpha: Any, suspect: str, teacher: str, *, method: str = "",
                  n_references: Any = None) -> str:
    pt = fmt_number(p, "p") if p is not None else "n/a"
    at = fmt_value(alpha) if alpha is not None else "the chosen level"
    how = f", {_METHOD_WORDS.get(method, method)}" if method else ""
    floor = (f"; with {n_references} references this is the smallest p-value the exact test can give"
             if method == "exact rank" and _floor_reached(p, n_references) else "")
    if verdict == "derived":
        return (f"The lineage test finds that {suspect} was derived from {teacher}: had it not been, a similarity "
                f"this strong would occur with probability p = {pt}{how} (significance level {at}{floor}).")
    if verdict == "not derived":
        return (f"The lineage test finds no evidence that {suspect} was derived from {teacher} (p = {pt}{how}, "
                f"significance level {at}); that is a failure to find evidence, not a proof of independence.")
    if verdict == "inconclusive":
        return ("The lineage test was inconclusive: no calibrated test was possible (too few or no reference "
                "models), so only raw similarity is reported.")
    return ""


def render_section(name: str, sec: Any, c: SectionContext, findings: list[dict[str, Any]]) -> dict[str, Any]:
    out = _new_section(name, c.student, findings)
    if not isinstance(sec, Mapping):
        out["available"] = False
        out["reason"] = "This section was not run."
        return out
    out["available"] = bool(sec.get("available", True))
    out["reason"] = str(sec.get("reason") or "")
    if not out["available"]:
        return out
    if name == "lineage" and out["status"] == "n/a" and sec.get("verdict"):
        # No rule judges lineage: show the test's own verdict as a note, never as "no rule".
        out["status"], out["status_text"] = "info", str(sec["verdict"]).capitalize()
    try:
        out["blocks"] = _blocks(name, sec, c, out)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
        # A section whose stored shape this report does not understand is still shown, raw, rather than lost or
        # fatal to the whole report.
        out["lineage"] = None
        out["blocks"] = [_notes([f"This section's stored data has an unexpected shape ({type(exc).__name__}: "
                                 f"{exc}); it is shown as stored."], "Shown as stored")]
        for key, value in sec.items():
            if key not in ("available", "reason"):
                out["blocks"].append({"kind": "pre", "title": _human(key),
                                      "text": json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False,
                                                         default=str)})
    return out


def _blocks(name: str, sec: Mapping[str, Any], c: SectionContext, out: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    # Every number shown as a number in a table comes from the section's tidy rows (as the policy reads them);
    # headline numbers first, then per-group rows. Detail fields feed the section's own figures below.
    rows = result_rows(name, sec, section_definitions(c.definitions, name))
    headline_keys = set(sec.get("headline") if isinstance(sec.get("headline"), Mapping) else ())
    top = [r for r in rows if not r.group and r.metric in headline_keys]
    stored_groups = sec.get("by_group") if isinstance(sec.get("by_group"), Mapping) else {}
    by_group = [r for r in rows if r.group and not r.part and isinstance(stored_groups.get(r.metric), Mapping)
                and r.group in {str(g) for g in stored_groups[r.metric]}]
    if name == "lineage":
        used, extra, box = _lineage(sec, c)
        out["lineage"] = box
        top = [r for r in top if r.metric not in box["shown"]]  # shown in the verdict box
    elif name in SECTION_RENDERERS:
        used, extra = SECTION_RENDERERS[name](sec, c)
    else:
        used, extra = set(), []
    if name == "fingerprint" and len(c.classes) == 2:
        left = [k for k in _BINARY_DEGENERATE if k in headline_keys]
        if left:
            top = [r for r in top if r.metric not in _BINARY_DEGENERATE]
            extra = [_notes([f"{', '.join(c.defs.label(name, k) for k in left)}: left out on this two-class task. "
                             "With two classes a row both models get wrong has only one wrong class, so the two "
                             "wrong labels always match (100%, and 100% by chance: a lift of 1), and the off-diagonal "
                             "of a 2×2 confusion matrix has two entries, so their correlation is ±1 and their cosine "
                             "near 1 whatever the models do. They carry no information here; the values stay in "
                             "results.json."], "Not informative on two classes")] + extra
    pair, single = _headline_tables(name, top, c.defs)
    blocks.extend(_tbl(t) for t in (pair, single) if t is not None)
    groups = _group_rows_table(name, by_group, c.defs)
    if groups is not None:
        blocks.append(_tbl(groups))
        used = set(used) | {"by_group"}
    blocks.extend(extra)
    for key, value in sec.items():
        if key in used or key in ("available", "reason", "headline"):
            continue
        blocks.extend(_generic(name, key, value, c.defs))
    return blocks


#: Fingerprint numbers that are fixed by the task, not the models, when there are two classes.
_BINARY_DEGENERATE = ("same_wrong_label_rate", "same_wrong_label_chance", "same_wrong_label_lift",
                      "confusion_correlation", "confusion_cosine")

SECTION_RENDERERS = {"agreement": _agreement, "calibration": _calibration, "bias": _bias, "fingerprint": _fingerprint}

