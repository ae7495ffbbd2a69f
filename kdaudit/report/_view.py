"""From the results dict to what the templates show: text, tables and charts. Formatting only.

Nothing here computes a metric. Every number shown is read from ``results`` (the content of results.json) or from
``run_info`` (what was measured when the report was generated). Parts of a section the report has no layout for are
still shown, as generic tables, so a new metric never silently disappears from a report.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from typing import Any, Mapping, Sequence

from kdaudit._rows import Row
from kdaudit.report import _charts as charts
from kdaudit.report._common import (
    _ROLE_ORDER,
    _STATUS_TEXT,
    SECTION_ORDER,
    SECTION_TITLES,
    _anchor,
    _Definitions,
    _direction,
    _fig,
    _flat,
    _get,
    _human,
    _status,
    _text,
    _walk_methods,
    _worst,
    row_of,
    whole_rows,
)
from kdaudit.report._claims import claim
from kdaudit.report._format import (
    as_estimate,
    fmt_against,
    fmt_bytes,
    fmt_count,
    fmt_interval,
    fmt_number,
    fmt_value,
    short_hash,
    thresholds_in,
)
from kdaudit.report._scorecard import scorecard
from kdaudit.report._sections import SectionContext, lineage_words, render_section
from kdaudit.report._tables import Cell, Table

__all__ = ["build_context"]


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _map(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


# ----------------------------------------------------------------------------------------------------- findings
def _findings(results: Mapping[str, Any], defs: _Definitions) -> list[dict[str, Any]]:
    out = []
    for f in _list(results.get("findings")):
        if not isinstance(f, Mapping):
            continue
        metric = str(f.get("metric") or "")
        section, _, key = metric.partition(".")
        kind = defs.kind(section, key) if key else "decimal"
        est = {"value": f.get("value"), "low": f.get("low"), "high": f.get("high"), "level": 0.95}
        status = _status(f.get("status"))
        limits = thresholds_in(f.get("threshold"))
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
            # A value beside its threshold gets the digits that put it visibly on the side the rule judged.
            "value_text": (fmt_against(f.get("value"), limits, kind) if f.get("value") is not None else "n/a"),
            "ci_text": fmt_interval(est, kind, against=limits) if f.get("value") is not None else "",
            "message": str(f.get("message") or ""),
        })
    # Worst first: a reader sees what blocks the release before what passed. (Stable sort keeps policy order.)
    order = {"fail": 0, "warn": 1, "skipped": 2, "info": 3, "pass": 4, "n/a": 5}
    out.sort(key=lambda r: order.get(r["status"], 5))
    return out


def _verdict(status: str, findings: list[dict[str, Any]], policy_name: str, who: str) -> dict[str, str]:
    n = {s: sum(f["status"] == s for f in findings) for s in ("pass", "warn", "fail", "skipped", "info")}
    counts = (f"{n['pass']} rule checks passed, {n['warn']} warned, {n['fail']} failed"
              + (f", {n['skipped']} could not be judged" if n["skipped"] else "")
              + (f", {n['info']} note{'s' if n['info'] != 1 else ''}" if n["info"] else ""))
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
            "text": text, "counts": counts if findings else "", "policy": policy_name, "covers": ""}


# ------------------------------------------------------------------------------------------------ models & data
_ROLE_LABELS = {"teacher": "teacher", "student": "student", "control": "control", "reference": "reference",
                "negative control": "negative control", "positive control": "positive control"}


def _disk(m: Mapping[str, Any]) -> str:
    """Size on disk: the model's file, or its members' files (an ensemble); "no file" for a model in memory."""
    if m.get("file_size_bytes") is not None:
        return fmt_bytes(m["file_size_bytes"])
    sizes = [x.get("file_size_bytes") for x in _list(m.get("members")) if isinstance(x, Mapping)]
    if sizes and all(isinstance(v, (int, float)) for v in sizes):
        return f"{fmt_bytes(sum(sizes))} ({len(sizes)} files)"
    return "no file"


def _models(results: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str]:
    models = [m for m in _list(results.get("models")) if isinstance(m, Mapping)]
    teacher = results.get("teacher")
    if teacher is None:
        teacher = next((m.get("name") for m in models if m.get("role") == "teacher"),
                       models[0].get("name") if models else "teacher")
    teacher = str(teacher)
    compared = {str(c.get("student")) for c in _list(results.get("comparisons")) if isinstance(c, Mapping)}
    known = {"name", "role", "kind", "access", "top_k", "n_classes", "classes", "sha256", "n_parameters",
             "size_bytes", "file_sha256", "file_size_bytes"}
    rows = []
    for m in models:
        access = str(m.get("access") or "n/a")
        if m.get("top_k"):
            access += f" (k = {m['top_k']})"
        role = str(m.get("role") or ("teacher" if str(m.get("name")) == teacher else "student"))
        if role == "control" and str(m.get("name")) not in compared:
            role = "negative control"  # a lineage control: tested, never audited as a comparison
        rows.append({
            "name": str(m.get("name")),
            "role": role,
            "role_class": role.replace(" ", "-"),
            "kind": str(m.get("kind") or "n/a"),
            "access": access,
            "n_classes": fmt_value(m.get("n_classes")),
            "parameters": fmt_count(m.get("n_parameters")) if m.get("n_parameters") is not None else "n/a",
            # On disk only when there is a file; the weights' size in memory is a different number, so labelled.
            "disk": _disk(m),
            "size": fmt_bytes(m.get("size_bytes")) if m.get("size_bytes") is not None else "n/a",
            "file_sha256": str(m.get("file_sha256") or ""),
            "sha256": str(m.get("sha256") or ""),
            "sha_short": short_hash(m.get("sha256")) or "n/a",
            "file_sha_short": short_hash(m.get("file_sha256")) or "",
            "classes": ", ".join(str(c) for c in _list(m.get("classes"))),
            # An ensemble's members as rows of their own, not a JSON dump.
            "members": [{"name": str(x.get("name")), "kind": str(x.get("kind") or "n/a"),
                         "parameters": fmt_count(x.get("n_parameters")) if x.get("n_parameters") is not None
                         else "n/a", "sha256": str(x.get("sha256") or ""),
                         "file_sha256": str(x.get("file_sha256") or "")}
                        for x in _list(m.get("members")) if isinstance(x, Mapping)],
            "extra": [(str(k), _text(v)) for k, v in m.items()
                      if k not in known and k != "members" and v not in (None, [], {})],
        })
    rows.sort(key=lambda r: _ROLE_ORDER.get(r["role"], 5))  # stable: keeps the audit's order within a role
    return rows, teacher


def _small_threshold(results: Mapping[str, Any]) -> float | None:
    """The small-group threshold the audit used, as the bias section recorded it."""
    for c in _list(results.get("comparisons")):
        bias = c.get("bias") if isinstance(c, Mapping) else None
        v = _get(_get(bias, "settings"), "min_group_size") or _get(bias, "min_group_size")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _data(results: Mapping[str, Any]) -> dict[str, Any]:
    d = results.get("data") if isinstance(results.get("data"), Mapping) else {}
    classes = [str(c) for c in _list(d.get("classes"))]
    counts = _list(d.get("class_counts"))
    class_rows = []
    for i, c in enumerate(classes or [str(i) for i in range(len(counts))]):
        class_rows.append({"index": i, "name": c, "count": fmt_count(counts[i]) if i < len(counts) else "n/a"})
    threshold = _small_threshold(results)
    features = []
    for feat, groups in _map(d.get("groups")).items():
        rows = []
        if isinstance(groups, Mapping):
            for g, n in groups.items():
                small = threshold is not None and isinstance(n, (int, float)) and n < threshold
                rows.append({"name": str(g), "count": fmt_count(n), "small": small})
        features.append({"name": str(feat), "groups": rows})
    known = {"name", "source", "n_rows", "sha256", "classes", "class_counts", "groups", "files"}
    files = [{"name": str(f.get("name") or f.get("path") or "file"), "sha256": str(f.get("sha256") or "")}
             for f in _list(d.get("files")) if isinstance(f, Mapping)]
    return {
        "name": str(d.get("name") or "n/a"),
        "source": str(d.get("source") or ""),
        "n_rows": fmt_count(d.get("n_rows")) if d.get("n_rows") is not None else "n/a",
        "sha256": str(d.get("sha256") or ""),
        "sha_short": short_hash(d.get("sha256")) or "n/a",
        "classes": class_rows,
        "features": features,
        "small_threshold": fmt_count(threshold) if threshold is not None else "",
        "files": files,
        "extra": [(str(k), _text(v)) for k, v in d.items() if k not in known],
    }


# --------------------------------------------------------------------------------------------------- summary
#: Sentences per section from the numbers it prefers (its ``summary_keys``, handed down by the caller).
SENTENCES_PER_SECTION = 2


_CHANGE_WORDS = {
    # (section, key): (what changes, word when the interval is above 0, word when below 0, consequence up, down)
    ("calibration", "ece_change"): ("calibration error (ECE, on a 0–1 scale)", "higher", "lower",
                                    "its confidence is less trustworthy than the teacher's",
                                    "its confidence is more trustworthy than the teacher's"),
    ("bias", "dp_amplification"): ("gap in positive-prediction rates between groups (demographic parity)", "wider",
                                   "narrower", "", ""),
    ("bias", "eo_amplification"): ("gap in error rates between groups (equalized odds)", "wider", "narrower", "",
                                   ""),
}


def _change_sentence(section: str, key: str, e: Any, who: str, defs: _Definitions) -> str:
    """A teacher-to-student change in words, through the one claim rule (:func:`claim`)."""
    kind = defs.kind(section, key)
    est = as_estimate(e)
    ci = fmt_interval(est, kind)
    ci = f" ({ci})" if ci else ""
    what, up, down, then_up, then_down = _CHANGE_WORDS.get(
        (section, key), (defs.label(section, key).lower(), "higher", "lower", "", ""))
    c = claim(est, up=up, down=down, kind=kind)
    if c.direction == "unknown" and c.words == "not computed":
        return f"The {what} of {who} could not be computed."
    if c.supported:
        then = then_up if c.direction == "up" else then_down
        return (f"The {what} of {who} is {c.words} than the teacher's, by {fmt_number(abs(est['value']), kind)}"
                f"{ci}" + (f": {then}." if then else "."))
    return f"The {what} of {who} differs from the teacher's by {fmt_number(est['value'], kind)}{ci}: {c.words}."


def _sentence(section: str, row: Row, who: str, defs: _Definitions) -> str:
    """One summary sentence from a tidy row. ``who`` is "the student" or "the control": the role the model plays."""
    key, e = row.metric, row.estimate.to_dict()
    if row.part == "change":
        return _change_sentence(section, key, e, who, defs)
    kind = defs.kind(section, key)
    est = as_estimate(e)
    v = fmt_number(est["value"], kind)
    ci = fmt_interval(est, kind)
    ci = f" ({ci})" if ci else ""
    Who = who[:1].upper() + who[1:]
    if (section, key) == ("agreement", "retained_accuracy"):
        c = claim(est, up="more accurate than the teacher", down="less accurate than the teacher", kind=kind,
                  no_change=1.0)
        judged = f"it is {c.words}" if c.supported else c.words
        return f"{Who} keeps {v} of the teacher's accuracy{ci}: {judged}."
    phrases = {
        ("agreement", "top1_agreement"): f"{Who} predicts the same class as the teacher on {v} of rows{ci}.",
        ("agreement", "student_accuracy"): f"{Who} is right on {v} of rows{ci}.",
        ("fingerprint", "inherited_error_rate"): f"On {v} of rows both models are wrong (errors inherited){ci}.",
        ("cost", "parameter_ratio"): f"{Who} has {v} of the teacher's parameters.",
        ("cost", "size_ratio"): f"{Who} needs {v} of the teacher's size.",
    }
    return phrases.get((section, key), f"{defs.label(section, key)}: {v}{ci}.")


_WHO = {"student": "the student", "control": "the control"}


def _summary(comparisons: list[dict[str, Any]], raw: list[Mapping[str, Any]], findings: list[dict[str, Any]],
             results: Mapping[str, Any], run_info: Mapping[str, Any], teacher: str, defs: _Definitions,
             policy_name: str, summary_keys: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    out = []
    by_student = results.get("verdict_by_student") if isinstance(results.get("verdict_by_student"), Mapping) else {}
    measured = run_info.get("cost") if isinstance(run_info.get("cost"), Mapping) else {}
    spec = results.get("scorecard") if isinstance(results.get("scorecard"), Mapping) else {}
    quality = [str(q) for q in _list(spec.get("quality"))] or None
    for comp, rc in zip(comparisons, raw):
        student, role = comp["student"], comp["role"]
        who = _WHO.get(role, f"the {role}")
        sentences = [_sentence(sec, row, who, defs) for sec, row in _sentence_rows(rc, results, findings, student,
                                                                                     summary_keys)]
        lineage = rc.get("lineage")
        if isinstance(lineage, Mapping) and lineage.get("available", True) and lineage.get("verdict"):
            p_row = row_of(lineage, "lineage", "p_value")
            p = None if p_row is None else p_row.estimate.value
            sentences.append(lineage_words(str(lineage["verdict"]), p, lineage.get("alpha"),
                                            who, "the teacher", method=str(lineage.get("p_value_method") or ""),
                                            n_references=lineage.get("n_references")))
        mine = [f for f in findings if f["student"] == student]
        status = _status(by_student[student]) if student in by_student else _worst(f["status"] for f in mine)
        if status == "info":  # notes alone never fail a student (the policy's verdict ignores them too)
            status = "pass"
        if not mine and student not in by_student:
            status = "n/a"
        sections = [{"title": s["title"], "anchor": s["anchor"], "status": s["status"],
                     "status_text": s["status_text"], "available": s["available"]} for s in comp["sections"]]
        cost = rc.get("cost")
        cost_findings = [f for f in mine if f["section"] == "cost"]
        if isinstance(cost, Mapping):
            st = _worst(f["status"] for f in cost_findings)
            sections.append({"title": "Cost", "anchor": "cost", "status": st,
                             "status_text": _STATUS_TEXT.get(st, st), "available": bool(cost.get("available", True))})
        m = measured.get(student) if isinstance(measured.get(student), Mapping) else {}
        t = measured.get(teacher) if isinstance(measured.get(teacher), Mapping) else {}
        ratio = _speed_ratio(m, t)
        m = dict(m, throughput_ratio=ratio) if ratio is not None else m
        lm_speed = _get(_get(run_info.get("speed"), "speedup"), student)  # a language-model run's scoring speed
        if ratio is None and isinstance(lm_speed, Mapping) and lm_speed.get("value") is not None:
            m = dict(m, throughput_ratio=lm_speed)
        out.append({"student": student, "role": role, "anchor": comp["anchor"], "sentences": sentences,
                    "sections": sections, "verdict": _verdict(status, mine, policy_name, student),
                    "scorecard": scorecard(rc, label_of=defs.label, measured=m, quality=quality,
                                           thresholds=_rule_thresholds(mine))})
    return out


def _sentence_rows(rc: Mapping[str, Any], results: Mapping[str, Any], findings: list[dict[str, Any]], student: str,
                   summary_keys: Mapping[str, Sequence[str]]) -> list[tuple[str, Row]]:
    """The whole-data tidy rows one comparison's summary puts in words, in order: each section's preferred numbers
    (its ``summary_keys``; a model's own number gives way to the change of the same quantity, which says more), at
    most :data:`SENTENCES_PER_SECTION` of them, then every number a rule of the policy names (in the rules' order)
    and any other number judged for this model (its findings).

    Cost is on the scorecard and a section with a verdict (lineage) gets its own sentence, so neither is repeated.
    """
    whole: dict[str, list[Row]] = {}

    def rows_of(sec: str) -> list[Row]:
        if sec not in whole:
            whole[sec] = whole_rows(sec, rc.get(sec), results)
        return whole[sec]

    chosen: list[tuple[str, str]] = []
    names = [s for s in SECTION_ORDER if s in rc] + [k for k in rc if k not in SECTION_ORDER]
    for sec in names:
        result = rc.get(sec)
        if sec == "cost" or not isinstance(result, Mapping) or result.get("verdict"):
            continue
        rows = {r.metric: r for r in rows_of(sec)}
        changed = {r.quantity for r in rows.values() if r.part == "change"}
        keys = [k for k in summary_keys.get(sec, ()) if k in rows
                and not (rows[k].part in ("teacher", "student") and rows[k].quantity in changed)]
        chosen.extend((sec, k) for k in keys[:SENTENCES_PER_SECTION])
    # every number a rule of the policy names (a control, never judged, is compared on them too), then any other
    # number judged for this student
    policy = _map(results.get("policy"))
    named = [str(r.get("metric") or "") for r in _list(policy.get("rules")) if isinstance(r, Mapping)]
    named += [f["metric"] for f in findings if f["student"] == student]
    for metric in named:
        sec, _, key = metric.partition(".")
        if key and sec != "cost" and (sec, key) not in chosen:
            chosen.append((sec, key))
    out = []
    for sec, key in chosen:
        row = next((r for r in rows_of(sec) if r.metric == key), None)
        if row is not None:
            out.append((sec, row))
    return out


def _rule_thresholds(findings: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """``metric -> thresholds`` of the whole-data rules in ``findings`` (one student's)."""
    out: dict[str, list[float]] = {}
    for f in findings:
        if not f.get("group"):
            out.setdefault(str(f.get("metric") or ""), []).extend(thresholds_in(f.get("threshold")))
    return out


# ------------------------------------------------------------------------------------------------------- cost
_LATENCY_BATCH = ("latency_ms_median", "latency_ms_per_batch", "latency_ms")


def _cost(results: Mapping[str, Any], run_info: Mapping[str, Any], models: list[dict[str, Any]], teacher: str,
          raw: list[Mapping[str, Any]], findings: list[dict[str, Any]], defs: _Definitions, ids: charts.ChartIds,
          with_charts: bool) -> dict[str, Any]:
    stored = _get(results.get("cost"), "models", default={})
    stored = stored if isinstance(stored, Mapping) else {}
    measured = run_info.get("cost") if isinstance(run_info.get("cost"), Mapping) else {}
    raw_models = {str(m.get("name")): m for m in _list(results.get("models")) if isinstance(m, Mapping)}
    rows = []
    conditions: dict[str, str] = {}
    for m in models:
        if m["role"] not in ("teacher", "student", "control"):
            continue  # lineage pool members and negative controls are not costed
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
            "latency_row": f"{per_row:.3g} ms" if isinstance(per_row, (int, float)) else "n/a",
            "latency_batch": (f"{fmt_number(per_batch)} ms" + (f" (p90 {fmt_number(p90)} ms)" if p90 is not None
                                                                 else "")) if per_batch is not None else "n/a",
            "throughput": f"{fmt_count(thr)} rows/s" if thr is not None else "n/a",
            "measured": bool(r) and any(x is not None for x in (per_row, per_batch, thr)),
        })
    gains = []
    # Charts of run measurements number their ids apart, so whether a run measured speed never shifts the ids of the
    # charts drawn from results.json.
    run_ids = charts.ChartIds("kdr")
    timing = {str(n): measured[n] for n in measured if isinstance(measured[n], Mapping)}
    for rc in raw:
        cost = rc.get("cost")
        student = str(rc.get("student"))
        if not isinstance(cost, Mapping):
            continue
        items = []
        headline = _map(cost.get("headline"))
        for row in whole_rows("cost", cost, results):
            v = row.estimate.value
            if row.metric in headline and v == v:
                items.append({"label": _COST_LABELS.get(row.metric, defs.label("cost", row.metric)), "ratio": v,
                              "key": row.metric})
        # Latency and throughput ratios are not in results.json (they vary between runs); drawn from run_info into
        # their own figure and sentence, which the template marks volatile, so the rest stays identical across runs.
        s_r = timing.get(student, {})
        role = str(rc.get("role") or "student")
        speed, speed_words = [], []
        ratio = _speed_ratio(s_r, timing.get(teacher, {}))
        if isinstance(ratio, Mapping) and ratio.get("value") is not None:
            est = as_estimate(ratio)
            v = est["value"]
            # One measurement, two views: the latency share is the throughput ratio's reciprocal (same median batch).
            speed = [{"label": "Throughput †", "ratio": v, "key": "throughput_ratio", "est": est},
                     {"label": "Latency per row †", "ratio": 1 / v, "key": "latency_ms_per_row",
                      "est": {"value": 1 / v, "low": 1 / est["high"], "high": 1 / est["low"], "level": est["level"]}}]
            c = claim(est, up="faster", down="slower", no_change=1.0, fmt=lambda d: f"{d:.2f}×")
            ci = (f"{est['level'] * 100:.0f}% CI {est['low']:.2f}–{est['high']:.2f}×"
                  if est["low"] == est["low"] and est["high"] == est["high"]
                  else "no interval: the run record has no repeated timings")
            batch = s_r.get("batch_size") or _get(run_info.get("cost_conditions"), "batch_size")
            speed_words = [f"{v:.2f}× the teacher's throughput ({ci}), that is {100 / v:.1f}% of its latency per row"
                           + (f" at batch size {_text(batch)}" if batch is not None else "") + ": "
                           + (f"{c.words} than the teacher" if c.supported else c.words)]
        title = f"Cost of {student} relative to the teacher ({teacher})"
        speed_title = f"Measured speed of {student} relative to the teacher ({teacher}) †"
        words = [f"{i['ratio'] * 100:.1f}% of its {_noun(i['key'])}" for i in items]
        mine = [f for f in findings if f["student"] == student and f["section"] == "cost"]
        gains.append({"student": student,
                      "figure": _cost_figure(items, title, student, ids, with_charts),
                      "role": role,
                      "sentence": _cost_sentence(f"Compared with the teacher, the {role} has ", words),
                      "measured_figure": _cost_figure(speed, speed_title, student, run_ids, with_charts),
                      "measured_sentence": _cost_sentence(f"Measured in this run, the {role} has ", speed_words),
                      "available": bool(cost.get("available", True)), "reason": str(cost.get("reason") or ""),
                      "findings": mine})
    stated = run_info.get("cost_conditions")
    if isinstance(stated, Mapping):
        conditions.update({str(k).replace("_", " "): _text(v) for k, v in stated.items()})
    return {"rows": rows, "gains": gains, "any_measured": any(r["measured"] for r in rows),
            "conditions": sorted(conditions.items())}


def _speed_ratio(student: Mapping[str, Any], teacher: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The student's throughput over the teacher's as the run recorded it, with its interval over repeats; a run
    record from before intervals were kept gives the plain ratio of the two throughputs, without an interval."""
    ratio = student.get("throughput_ratio")
    if isinstance(ratio, Mapping) and ratio.get("value") is not None:
        return ratio
    sv, tv = student.get("throughput_rows_per_s"), teacher.get("throughput_rows_per_s")
    if isinstance(sv, (int, float)) and isinstance(tv, (int, float)) and sv > 0 and tv > 0:
        return {"value": sv / tv, "low": None, "high": None, "level": 0.95, "method": "ratio of the two throughputs"}
    return None


_COST_LABELS = {"parameter_ratio": "Parameters", "size_ratio": "Size in memory"}


def _cost_sentence(start: str, words: list[str]) -> str:
    if not words:
        return ""
    return start + ", ".join(words[:-1]) + (" and " if len(words) > 1 else "") + words[-1] + "."


def _cost_figure(items: list[dict[str, Any]], title: str, student: str, ids: charts.ChartIds,
                 with_charts: bool) -> dict[str, Any] | None:
    if not items:
        return None
    chart = charts.cost_chart(items, ids=ids, title=title, student=student) if with_charts else None

    def cell(i: dict[str, Any]) -> Cell:
        est = i.get("est")
        if est is None:
            return Cell(f"{i['ratio'] * 100:.1f}%", "num")
        if i["key"] == "throughput_ratio":
            return Cell(f"{i['ratio']:.2f}×", "num", "", f"95% CI {est['low']:.2f}–{est['high']:.2f}×")
        return Cell(f"{i['ratio'] * 100:.1f}%", "num", "", f"95% CI {est['low'] * 100:.1f}–{est['high'] * 100:.1f}%")

    table = Table(f"{student} as a share of the teacher (100% = the teacher)", ["Quantity", "Student / teacher"],
                  [[Cell(i["label"], "", i["key"]), cell(i)] for i in items], [False, True])
    return _fig(title, chart, table, wide=False)


def _noun(key: str) -> str:
    return {"parameter_ratio": "parameters", "size_ratio": "size in memory",
            "latency_ms_per_row": "latency per row"}.get(
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
                for key in _map(section.get("headline")):
                    if (sec, key) not in used:
                        used.append((sec, key))

    def row(sec: str, key: str) -> dict[str, Any]:
        d = defs.get(sec, key)
        return {"section": SECTION_TITLES.get(sec, sec), "key": f"{sec}.{key}", "label": defs.label(sec, key),
                "formula": str(d.get("formula") or "not recorded"),
                "direction": _direction(d, "higher is better", "lower is better", "neither"),
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
    for r in _list(policy.get("rules")):
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
                      "students": ", ".join(str(s) for s in _list(r.get("students"))) or "every student",
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


_FINGERPRINT_WORDS = {
    "torch": "content fingerprint (sha256 of the weights)",
    "ensemble": "content fingerprint (of the members' fingerprints)",
    "sklearn": "content fingerprint (sha256 of the estimator pickled in memory, not of its file)",
    "onnx": "sha256 of the ONNX file",
    "": "content fingerprint",
}


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
    # What `sha256sum FILE` prints, for every file there is; content fingerprints (of weights or arrays, which a
    # reader cannot recompute with sha256sum) are labelled as such.
    hashes = [(f"Data: {data['name']}", "content fingerprint (sha256 of the arrays)", data["sha256"])]
    for f in data["files"]:
        hashes.append((f"Data file: {f['name']}", "file (sha256sum)", f["sha256"]))
    pool_hashes = []
    for m in models:
        target = hashes if m["role"] in ("teacher", "student", "control") else pool_hashes
        if m["file_sha256"]:
            target.append((f"Model ({m['role']}): {m['name']}", "file (sha256sum)", m["file_sha256"]))
        for x in m["members"]:
            if x["file_sha256"]:
                target.append((f"Model ({m['role']}): {m['name']}, member {x['name']}", "file (sha256sum)",
                               x["file_sha256"]))
        target.append((f"Model ({m['role']}): {m['name']}", _FINGERPRINT_WORDS.get(m["kind"], _FINGERPRINT_WORDS[""]),
                       m["sha256"]))
    hashes.append(("results.json", "file (sha256sum)", str(results_sha)))
    run_rows = []
    for k, v in run_info.items():
        if k in ("command", "argv", "results_sha256", "generated_at", "cost", "cost_conditions"):
            continue
        if isinstance(v, Mapping):
            for k2, v2 in _flat(v).items():
                run_rows.append(_run_item(f"{k}.{k2}", v2))
        elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            for x in v:
                label = str(x.get("name", "")) or k
                run_rows.append((f"{_run_key(str(k))[0]}: {label}",
                                 ", ".join(" ".join(_run_item(str(a), b)).lower() for a, b in x.items()
                                           if a != "name")))
        else:
            run_rows.append(_run_item(str(k), v))
    versions = prov.get("versions") if isinstance(prov.get("versions"), Mapping) else {}
    prov_extra = [(str(k), _text(v)) for k, v in prov.items()
                  if k not in ("versions", "models", "seed", "device", "precision", "batch_size", "n_rows",
                               "data_sha256")]
    return {"facts": facts, "version": _text(results.get("kdaudit_version")),
            "versions": sorted((str(k), str(v)) for k, v in versions.items()),
            "configs": blocks, "hashes": hashes, "pool_hashes": pool_hashes, "results_sha256": str(results_sha), "results_sha_source": sha_source,
            "command": "" if cmd is None else str(cmd), "run_rows": run_rows, "provenance_extra": prov_extra}


# -------------------------------------------------------------------------------------------------- entry
_RUN_WORDS = {"wall time": "wall time", "timings": "timings", "sections": "sections", "host": "host",
              "cpu count": "CPU cores", "render": "rendering this report", "total": "total"}


def _run_key(path: str) -> tuple[str, bool]:
    """A run-record key in words (``wall_time_s.sections_s.x/bias`` -> ``Wall time › sections › x/bias``) and
    whether its leaf is in seconds (the ``_s`` suffix used by run.json)."""
    parts = [p for p in path.split(".") if p]
    seconds = any(p.endswith("_s") for p in parts)  # "wall_time_s.sections_s.<name>" is in seconds too
    words = []
    for p in parts:
        w = p[:-2] if p.endswith("_s") else p
        w = w.replace("_", " ").strip()
        words.append(_RUN_WORDS.get(w, w))
    text = " › ".join(words)
    return (text[:1].upper() + text[1:]) if text else path, seconds


def _run_item(path: str, value: Any) -> tuple[str, str]:
    key, seconds = _run_key(path)
    if seconds and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return key, (f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:,.2f} s")
    return key, _text(value)


def build_context(results: Mapping[str, Any], run_info: Mapping[str, Any] | None, generated_at: str | None,
                  *, charts_on: bool = True, summary_keys: Mapping[str, Sequence[str]] | None = None
                  ) -> dict[str, Any]:
    """Everything the templates show, as text, tables and charts (a fresh chart-id counter per call).

    ``summary_keys`` (``section -> metric names``): the numbers each section prefers in the summary's sentences, as
    its :class:`~kdaudit.sections.Section` declares them (the caller hands them down: the report reads results only).
    """
    run_info = dict(run_info or {})
    ids = charts.ChartIds()
    defs = _Definitions(results)
    findings = _findings(results, defs)
    models, teacher = _models(results)
    data = _data(results)
    classes = [c["name"] for c in data["classes"]]
    raw = [c for c in _list(results.get("comparisons")) if isinstance(c, Mapping)]
    policy = results.get("policy") if isinstance(results.get("policy"), Mapping) else {}
    policy_name = str(policy.get("name") or "the policy")
    role_of = {m["name"]: m["role"] for m in models}
    comparisons = []
    for rc in raw:
        student = str(rc.get("student") or "student")
        role = str(rc.get("role") or role_of.get(student, "student"))
        ctx = SectionContext(student=student, teacher=teacher, classes=classes, defs=defs, ids=ids,
                             with_charts=charts_on, role=role, definitions=_map(results.get("definitions")))
        names = [s for s in SECTION_ORDER if s in rc] + [k for k, v in rc.items() if k not in SECTION_ORDER
                                                          and k not in ("student", "cost") and isinstance(v, Mapping)]
        comparisons.append({"student": student, "role": role, "anchor": _anchor(student),
                            "sections": [render_section(n, rc.get(n), ctx, findings) for n in names]})
    if generated_at is None:
        generated_at = run_info.get("generated_at")
    if generated_at is None:
        generated_at = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    students = [c["student"] for c in comparisons if c["role"] == "student"]
    controls = [c["student"] for c in comparisons if c["role"] != "student"]
    stored = results.get("verdict")
    overall = _status(stored) if stored is not None else "n/a"
    verdict = _verdict(overall, findings, policy_name, "The audit" if len(students) != 1 else students[0])
    if controls:
        verdict["covers"] = (f"This verdict covers {', '.join(students) or 'no student'}; "
                             f"{', '.join(controls)} {'is a control' if len(controls) == 1 else 'are controls'} "
                             "(trained without the teacher), shown for comparison and not judged by the policy.")
    summary = _summary(comparisons, raw, findings, results, run_info, teacher, defs, policy_name,
                       summary_keys or {})
    return {
        "title": "Distillation audit report",
        "teacher": teacher,
        "students": students,
        "controls": controls,
        "generated_at": str(generated_at),
        "verdict": verdict,
        "findings": findings,
        "findings_open": [f for f in findings if f["status"] in ("fail", "warn", "skipped", "info")],
        "summary": [x for x in summary if x["role"] == "student"],
        "control_summary": [x for x in summary if x["role"] != "student"],
        "models": models,
        "main_models": [m for m in models if m["role"] in ("teacher", "student", "control")],
        "reference_models": [m for m in models if m["role"] == "reference"],
        "negative_controls": [m for m in models if m["role"] == "negative control"],
        "positive_controls": [m for m in models if m["role"] == "positive control"],
        "data": data,
        "comparisons": [c for c in comparisons if c["role"] == "student"],
        "control_comparisons": [c for c in comparisons if c["role"] != "student"],
        "cost": _cost(results, run_info, models, teacher, raw, findings, defs, ids, charts_on),
        "methodology": _methodology(results, raw, defs),
        "repro": _repro(results, run_info, models, data),
    }
