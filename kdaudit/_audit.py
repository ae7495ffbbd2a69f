"""``kdaudit.audit``: run teacher and students once through the harness, every section per student, the policy.

The result splits in two on purpose:

* ``AuditResult.to_dict()`` / ``results.json``: everything that follows from the inputs and the seed (numbers,
  intervals, hashes, versions, config, policy, findings). Identical inputs and seed give identical bytes.
* ``AuditResult.run_info`` / ``run.json``: what differs between runs (wall times, measured latency and throughput,
  the time stamp, the command line), plus the sha256 of ``results.json`` it belongs to.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import html
import importlib
import inspect
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from kdaudit._config import ALL_SECTIONS
from kdaudit._estimate import Estimate
from kdaudit._exceptions import invalid_argument
from kdaudit._io import canonical_json, to_jsonable

__all__ = ["AuditResult", "METRIC_SECTIONS", "SCHEMA", "audit", "audit_from_config"]

SCHEMA = "kdaudit.results/1"
#: metric sections computed from teacher and student outputs: name -> (module, section function)
METRIC_SECTIONS: dict[str, tuple[str, str]] = {
    "agreement": ("kdaudit.metrics._agreement", "agreement_section"),
    "calibration": ("kdaudit.metrics._calibration", "calibration_section"),
    "bias": ("kdaudit.metrics._bias", "bias_section"),
    "fingerprint": ("kdaudit.metrics._fingerprint", "fingerprint_section"),
}
_ALL = ALL_SECTIONS  # the canonical section order of results.json, shared with the config file's schema

COST_DEFINITIONS: dict[str, dict[str, Any]] = {
    "cost.parameter_ratio": {
        "label": "Parameter ratio",
        "formula": "parameters(student) / parameters(teacher)",
        "higher_is_better": False,
        "description": "Fraction of the teacher's parameters the student keeps (an ensemble teacher counts all its "
                       "members). Exact count; no interval.",
    },
    "cost.size_ratio": {
        "label": "Size ratio",
        "formula": "size_bytes(student) / size_bytes(teacher)",
        "higher_is_better": False,
        "description": "Fraction of the teacher's size in memory or on disk that the student needs. Exact; no "
                       "interval.",
    },
}


# ------------------------------------------------------------------------------------------------------ result
@dataclass(frozen=True, eq=False)
class AuditResult:
    """The outcome of :func:`audit`.

    Attributes
    ----------
    verdict : {"pass", "warn", "fail"}
        The policy's verdict over every student (see :mod:`kdaudit.policy`).
    findings : tuple of Finding
        One per rule, student (and group for per-group rules).
    sections : dict
        ``student -> section -> result object`` (e.g. the agreement section's ``SectionResult``).
    run_info : dict
        The non-deterministic part of the run: wall times, measured latency and throughput, time stamp, command
        line. Saved as ``run.json``; never part of ``results.json``.
    outputs : Outputs
        The harness's outputs (probabilities of every model on every row), for further analysis.
    """

    results: Mapping[str, Any] = field(repr=False)
    verdict: str
    findings: tuple[Any, ...] = field(repr=False)
    sections: Mapping[str, Mapping[str, Any]] = field(repr=False)
    run_info: Mapping[str, Any] = field(repr=False)
    outputs: Any = field(default=None, repr=False)
    #: the sections to_frame and the summary read, in order (a language-model audit has its own)
    section_names: ClassVar[tuple[str, ...]] = _ALL

    @property
    def students(self) -> list[str]:
        return [c["student"] for c in self.results["comparisons"]]

    @property
    def teacher(self) -> str:
        return next(m["name"] for m in self.results["models"] if m["role"] == "teacher")

    def __getitem__(self, student: str) -> Mapping[str, Any]:
        """The section result objects of one student: ``result["student"]["agreement"]``."""
        try:
            return self.sections[student]
        except KeyError:
            raise invalid_argument("student", student, f"one of {self.students}") from None

    def to_dict(self) -> dict[str, Any]:
        """The content of ``results.json`` (a deep copy): deterministic, no wall times."""
        return copy.deepcopy(dict(self.results))

    def to_json(self) -> str:
        """``results.json`` text: canonical JSON, byte-identical for identical inputs and seed."""
        return canonical_json(self.results)

    def to_frame(self) -> Any:
        """A tidy DataFrame: one row per (student, section, metric, group) with value, low, high, method, level.

        ``group`` is ``""`` for whole-data numbers; for the bias section it is ``"feature"`` for a per-feature
        disparity or ``"feature=group"`` for a per-group number.
        """
        import pandas as pd

        rows = []
        for comp in self.results["comparisons"]:
            for section in self.section_names:
                sec = comp.get(section)
                if not isinstance(sec, Mapping) or not sec.get("available", True):
                    continue
                for key, est in sorted((sec.get("headline") or {}).items()):
                    rows.append(_frame_row(comp["student"], section, key, "", est))
                if section in ("bias", "lm_bias"):
                    for metric, group, est in _bias_rows(sec):
                        rows.append(_frame_row(comp["student"], section, metric, group, est))
        cols = ["student", "section", "metric", "group", "value", "low", "high", "method", "level"]
        return pd.DataFrame(rows, columns=cols)

    def _repr_html_(self) -> str:
        """A compact summary for Jupyter: verdict, findings counts and headline numbers with intervals."""
        e = html.escape
        from kdaudit.policy import STATUSES

        counts = {s: sum(f.status == s for f in self.findings) for s in STATUSES}
        colour = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}.get(self.verdict, "#57606a")
        parts = [
            '<div class="kdaudit-summary">',
            f"<p><strong>kdaudit audit</strong> of teacher <code>{e(self.teacher)}</code> on "
            f"<code>{e(str(self.results['data'].get('name', '')))}</code> "
            f"({int(self.results['data'].get('n_rows', 0)):,} rows): verdict "
            f'<strong style="color:{colour}">{e(self.verdict.upper())}</strong> '
            f"({counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail, {counts['skipped']} skipped, "
            f"{counts['info']} notes)</p>",
            "<table><thead><tr><th>student</th><th>section</th><th>metric</th><th>value [95% CI]</th></tr></thead>"
            "<tbody>",
        ]
        defs = self.results.get("definitions", {})
        for comp in self.results["comparisons"]:
            for section in self.section_names:
                sec = comp.get(section)
                if not isinstance(sec, Mapping):
                    continue
                if not sec.get("available", True):
                    parts.append(f"<tr><td>{e(comp['student'])}</td><td>{e(section)}</td><td colspan=2>"
                                 f"unavailable: {e(str(sec.get('reason') or ''))}</td></tr>")
                    continue
                if section == "lineage" and sec.get("verdict"):
                    parts.append(f"<tr><td>{e(comp['student'])}</td><td>lineage</td><td>verdict</td>"
                                 f"<td>{e(str(sec['verdict']))}</td></tr>")
                for key in _headline_keys(section, sec):
                    est = Estimate.from_dict(sec["headline"][key]) if isinstance(sec["headline"][key], Mapping) \
                        else Estimate(float(sec["headline"][key]))
                    label = defs.get(f"{section}.{key}", {}).get("label", key)
                    parts.append(f"<tr><td>{e(comp['student'])}</td><td>{e(section)}</td>"
                                 f'<td title="{e(section + "." + key)}">{e(label)}</td><td>{e(f"{est:.4f}")}</td>'
                                 "</tr>")
        parts.append("</tbody></table>")
        bad = [f for f in self.findings if f.status in ("fail", "warn")]
        if bad:
            parts.append("<ul>" + "".join(f"<li><strong>{e(f.status)}</strong>: {e(f.message)}</li>"
                                          for f in bad[:10]) + "</ul>")
        parts.append("</div>")
        return "".join(parts)

    def __repr__(self) -> str:
        return (f"AuditResult(verdict={self.verdict!r}, teacher={self.teacher!r}, students={self.students!r}, "
                f"findings={len(self.findings)})")

    def save(self, out_dir: str | os.PathLike[str], *, report: bool = True) -> dict[str, Path]:
        """Write ``results.json``, ``run.json`` and ``report.html`` into ``out_dir`` as one set.

        The set replaces the previous one in a single rename (:func:`kdaudit._io.write_file_set`): a crash never
        leaves a new results.json beside an old report, and two audits saving into one folder take turns.
        ``run.json`` carries ``results_sha256``, the sha256 of the ``results.json`` bytes it was written with.
        Returns the paths written.
        """
        from kdaudit._io import write_file_set

        text = self.to_json()
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        run_info = dict(self.run_info)
        run_info["results_sha256"] = sha
        files = {"results.json": text.encode("utf-8")}
        if report:
            from kdaudit.report import render_html

            t0 = time.perf_counter()
            page = render_html(self.to_dict(), run_info=run_info,
                               generated_at=run_info.get("generated_at"))
            run_info["render_s"] = round(time.perf_counter() - t0, 4)
            files["report.html"] = page.encode("utf-8")
        files["run.json"] = canonical_json(run_info).encode("utf-8")
        written = write_file_set(out_dir, files)
        paths = {"results": written["results.json"], "run": written["run.json"]}
        if report:
            paths["report"] = written["report.html"]
        return paths


def _frame_row(student: str, section: str, metric: str, group: str, est: Any) -> dict[str, Any]:
    if isinstance(est, Mapping):
        e = Estimate.from_dict(est)
    elif isinstance(est, Estimate):
        e = est
    else:
        e = Estimate(math.nan if est is None else float(est))
    return {"student": student, "section": section, "metric": metric, "group": group, "value": e.value,
            "low": e.low, "high": e.high, "method": e.method, "level": e.level}


def _bias_rows(sec: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """Per-feature disparities and per-group values of the bias section as (metric, group, estimate)."""
    rows: list[tuple[str, str, Any]] = []
    for fname, feat in sorted((sec.get("features") or {}).items()):
        for dkey, entry in sorted((feat.get("disparities") or {}).items()):
            for part in ("teacher", "student", "amplification", "change"):
                if isinstance(entry.get(part), Mapping):
                    rows.append((f"{dkey}.{part}", fname, entry[part]))
        for g in feat.get("groups") or []:
            label = f"{fname}={g['group']}"
            for model in ("teacher", "student", "change"):
                for k, est in sorted((g.get(model) or {}).items()):
                    rows.append((f"{k}.{model}", label, est))
            if isinstance(g.get("group_agreement"), Mapping):
                rows.append(("group_agreement", label, g["group_agreement"]))
    return rows


_SUMMARY_KEYS = {
    "agreement": ("top1_agreement", "retained_accuracy", "teacher_accuracy", "student_accuracy"),
    "calibration": ("teacher_ece", "student_ece", "ece_change"),
    "bias": ("dp_amplification", "eo_amplification", "worst_group_agreement"),
    "fingerprint": ("error_consistency", "inherited_error_rate", "same_wrong_label_lift"),
    "cost": ("parameter_ratio", "size_ratio"),
    "lineage": ("p_value", "effect"),
}


def _headline_keys(section: str, sec: Mapping[str, Any]) -> list[str]:
    """Up to 4 headline keys for the compact summary: the preferred ones that exist, else the first ones."""
    headline = sec.get("headline") or {}
    keys = [k for k in _SUMMARY_KEYS.get(section, ()) if k in headline]
    return keys[:4] if keys else sorted(headline)[:4]


# ------------------------------------------------------------------------------------------------------- audit
def _progress(enabled: bool, message: str) -> None:
    if enabled:
        print(f"[kdaudit] {message}", file=sys.stderr, flush=True)


def _section_fn(section: str) -> Callable[..., Any] | None:
    module, name = METRIC_SECTIONS[section]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    return getattr(mod, name, None)


def available_sections() -> tuple[str, ...]:
    """Sections this installation can compute (a metric family missing from it is left out)."""
    out = [s for s in METRIC_SECTIONS if _section_fn(s) is not None]
    out.append("cost")
    try:
        importlib.import_module("kdaudit.lineage")
        if hasattr(importlib.import_module("kdaudit.lineage"), "lineage_test"):
            out.append("lineage")
    except ImportError:
        pass
    return tuple(out)


def _resolve_sections(sections: Any, has_references: bool) -> tuple[str, ...]:
    if sections is None:
        avail = available_sections()
        chosen = [s for s in _ALL if s in avail and (s != "lineage" or has_references)]
        return tuple(chosen)
    if isinstance(sections, str):
        sections = (sections,)
    sections = tuple(sections)
    for s in sections:
        if s not in _ALL:
            raise invalid_argument("sections", s, f"section names among {', '.join(_ALL)}")
    if "lineage" in sections and not has_references:
        raise invalid_argument("sections", "lineage", "'lineage' only with references= (models exchangeable with "
                                                      "the teacher, e.g. its recipe with other seeds)")
    missing = [s for s in sections if s not in available_sections()]
    if missing:
        raise invalid_argument("sections", missing[0], f"a section this installation provides: "
                                                       f"{', '.join(available_sections())}")
    # canonical order, whatever order was asked for, so results.json does not depend on it
    return tuple(s for s in _ALL if s in sections)


def _check_section_options(section: str, options: Any) -> None:
    """Options a section function accepts, checked before any model runs (a typo must not cost a full run)."""
    from kdaudit.policy import _did_you_mean

    if not isinstance(options, Mapping):
        raise invalid_argument(f"section_options[{section!r}]", options, "a mapping of option names to values")
    fn = _section_fn(section) if section in METRIC_SECTIONS else None
    if fn is None:
        if options:
            raise invalid_argument(f"section_options[{section!r}]", dict(options), "no options for this section")
        return
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
                and n not in ("ids", "bootstrap", "sensitive")]
    for key in options:
        if key not in accepted:
            raise invalid_argument(f"section_options[{section!r}]", key,
                                   f"one of the {section} options: {', '.join(accepted) or 'none'}"
                                   + _did_you_mean(str(key), accepted))


def _call_section(fn: Callable[..., Any], y_true: Any, teacher: Any, student: Any, *, ids: Any, sensitive: Any,
                  bootstrap: Any, options: Mapping[str, Any]) -> Any:
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {"ids": ids, "bootstrap": bootstrap}
    if "sensitive" in params:
        kwargs["sensitive"] = sensitive
    kwargs.update(options)
    return fn(y_true, teacher, student, **kwargs)


def _definitions(sections: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``"section.key" -> definition`` for every metric family used (the report's methodology reads these)."""
    out: dict[str, dict[str, Any]] = {}
    for section in sections:
        if section in METRIC_SECTIONS:
            mod = importlib.import_module(METRIC_SECTIONS[section][0])
            for key, d in getattr(mod, "DEFINITIONS", {}).items():
                out[f"{section}.{key}"] = dict(d)
        elif section == "cost":
            out.update(COST_DEFINITIONS)
        elif section == "lineage":
            mod = importlib.import_module("kdaudit.lineage")
            for key, d in getattr(mod, "DEFINITIONS", {}).items():
                out[key if key.startswith("lineage.") else f"lineage.{key}"] = dict(d)
    return out


def _as_models(teacher: Any, students: Any) -> tuple[Any, list[Any]]:
    from kdaudit.models import EnsembleModel, ModelAdapter, as_model

    if isinstance(teacher, (list, tuple)):
        if len(teacher) == 0:
            raise invalid_argument("teacher", teacher, "a model or a non-empty list of models (an ensemble)")
        t = teacher[0] if len(teacher) == 1 else EnsembleModel(list(teacher), name="teacher ensemble")
    else:
        t = teacher
    t = t if isinstance(t, ModelAdapter) else as_model(t, name="teacher")
    if isinstance(students, Mapping):
        items = [(str(k), v) for k, v in students.items()]
    elif isinstance(students, (list, tuple)):
        items = [(None, v) for v in students]
    else:
        items = [(None, students)]
    if not items:
        raise invalid_argument("students", students, "a model, a list of models or a dict name -> model")
    ss = []
    for i, (name, s) in enumerate(items):
        if isinstance(s, ModelAdapter):
            if name is not None and s.name != name:
                s.name = name
            ss.append(s)
        else:
            ss.append(as_model(s, name=name or (f"student{i + 1}" if len(items) > 1 else "student")))
    names = [t.name] + [s.name for s in ss]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise invalid_argument("students", f"the name {dup[0]!r} used twice",
                               "distinct model names (pass a dict name -> model, or name= to the adapter)")
    return t, ss


def _make_bootstrap(bootstrap: Any, n_replicates: int | None, seed: int) -> Any:
    from kdaudit.metrics._resampling import Bootstrap

    if bootstrap is not None and n_replicates is not None:
        raise invalid_argument("n_replicates", n_replicates, "None when bootstrap= is given")
    if bootstrap is None:
        return Bootstrap(n_replicates=1000 if n_replicates is None else n_replicates, seed=seed)
    if not isinstance(bootstrap, Bootstrap):
        raise invalid_argument("bootstrap", bootstrap, "a kdaudit.metrics.Bootstrap")
    return bootstrap


_COST_CONDITIONS = ("batch_size", "n_batches", "rounds", "device")
_COST_ROUNDS = 3


def _cost_split(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split a measure_cost dict into its deterministic part (counts, sizes), its timings and its conditions."""
    fixed = {k: raw[k] for k in ("n_parameters", "size_bytes") if raw.get(k) is not None}
    conditions = {k: raw[k] for k in _COST_CONDITIONS if k in raw}
    timing = {k: v for k, v in raw.items() if k not in fixed and k not in conditions and k != "n_parameters"
              and k != "size_bytes"}
    if "latency_ms_median" in timing:
        # the median batch latency is the per-batch latency the report shows
        timing["latency_ms_per_batch"] = timing["latency_ms_median"]
    return fixed, timing, conditions


def _ratio(a: Any, b: Any) -> Estimate:
    if a is None or b is None or not b:
        return Estimate(math.nan, method="exact (no interval)")
    return Estimate(float(a) / float(b), method="exact (no interval)")


def audit(
    teacher: Any,
    students: Any,
    data: Any,
    *,
    sections: Sequence[str] | None = None,
    bootstrap: Any = None,
    n_replicates: int | None = None,
    policy: Any = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    precision: str | None = None,
    batch_size: int = 256,
    references: Sequence[Any] | None = None,
    controls: Sequence[Any] | None = None,
    roles: Mapping[str, str] | None = None,
    probes: Any = None,
    lineage_options: Mapping[str, Any] | None = None,
    section_options: Mapping[str, Mapping[str, Any]] | None = None,
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
    measure_cost: bool = True,
    executor: Any = None,
    block_rows: int | None = None,
) -> AuditResult:
    """Audit distilled students against their teacher.

    The teacher (or ensemble) and every student run once through :func:`kdaudit.harness.run` on the same rows; each
    section then compares teacher and student on those outputs; the policy turns the numbers into findings.

    Parameters
    ----------
    teacher : model or list of models
        A model (adapter, ``nn.Module``, scikit-learn estimator, callable) or a list of models averaged as an
        ensemble teacher (mean of probabilities).
    students : model, list of models, or dict name -> model
    data : AuditData
        The audit rows (labels for accuracy and calibration; ``sensitive`` for bias).
    sections : sequence of str, optional
        Among ``agreement, calibration, bias, fingerprint, cost, lineage``. Default: every section this
        installation provides (lineage only when ``references`` are given).
    bootstrap : Bootstrap, optional
        Interval settings. Default ``Bootstrap(n_replicates=n_replicates or 1000, seed=seed)``.
    n_replicates : int, optional
        Shortcut for the bootstrap replicates (0: point estimates only).
    policy : path, mapping, Policy or None
        The review policy (:mod:`kdaudit.policy`). None uses :data:`kdaudit.policy.DEFAULT_POLICY`, restricted to
        the sections this audit runs.
    seed : int
        Seeds the bootstrap, the permutation tests and the lineage test.
    cache_dir, device, precision, batch_size
        Passed to the harness.
    references : sequence of models, optional
        Lineage references: models exchangeable with the teacher under "not derived" (the teacher's recipe and data
        with other seeds).
    controls : sequence of models, optional
        Lineage negative controls: models known not to be derived from the teacher or any reference (see
        :func:`kdaudit.lineage_test`; with 19 or more the test is calibrated by them).
    roles : mapping, optional
        ``student name -> "student" | "control"``. A control (say, the student's architecture trained without the
        teacher) is audited like a student and reported beside it for comparison, labelled as a control, but the
        policy does not judge it and the verdict does not cover it. Default: every entry of ``students`` is a
        student.
    probes : AuditData, array, or a list of those, optional
        Lineage probe inputs (default: the audit data); a list is concatenated (held-out rows plus any public data
        a student's maker may have queried the teacher with).
    lineage_options : mapping, optional
        Extra arguments of :func:`kdaudit.lineage_test` (``alpha``, ``query_budget``, ``suspect_access``).
    section_options : mapping, optional
        ``section -> keyword arguments`` of that section's function (e.g. ``{"calibration": {"n_bins": 10}}``).
    config : mapping, optional
        The configuration to record in results.json (the CLI passes the validated config file).
    progress : bool
        Progress messages and bars on stderr.
    measure_cost : bool
        Time each model for the cost section (wall times go to ``run_info`` only).
    executor : {None, "local", "ray"} or kdaudit.executors.Executor
        Where the metric sections run (:mod:`kdaudit.executors`): None runs the harness over all rows in this
        process; an executor cuts the rows into units, runs each unit's models and accumulators on its workers and
        merges the states in unit order, so "local" and "ray" give byte-identical results. With an executor,
        ``data`` may also be a :class:`kdaudit.executors.ParquetSource` (sharded parquet read by the workers) and
        ``AuditResult.outputs`` is None (outputs stay on the workers). What ran where goes to ``run_info``.
    block_rows : int, optional
        Rows per unit of in-memory data under an executor (default 262,144); results depend on it in the last
        bits (it fixes the order of the floating-point sums), never on the number of workers.

    Returns
    -------
    AuditResult
    """
    from kdaudit import __version__
    from kdaudit.data import AuditData
    from kdaudit.policy import load_policy, verdict_of

    from kdaudit._audit_lm import dispatch_lm
    lm = dispatch_lm(teacher, students, data, sections=sections, bootstrap=bootstrap, n_replicates=n_replicates,
                     policy=policy, seed=seed, section_options=section_options, config=config, progress=progress,
                     measure_cost=measure_cost, roles=roles, cache_dir=cache_dir,
                     unsupported={"references": references, "controls": controls, "probes": probes})
    if lm is not None:  # language models: kdaudit._audit_lm
        return lm
    t_start = time.perf_counter()
    from kdaudit.executors._base import get_executor

    executor = get_executor(executor)
    source = None
    if executor is not None:
        from kdaudit.executors._sources import as_source

        source = as_source(data, block_rows=block_rows)
        data = source.head()  # the rows the driver itself uses: all of them in memory, the first unit of shards
    elif not isinstance(data, AuditData):
        raise invalid_argument("data", type(data).__name__, "a kdaudit.AuditData (inputs, labels, sensitive, ids)"
                                                            " or, with an executor, a ParquetSource")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise invalid_argument("seed", seed, "an integer >= 0")
    has_refs = references is not None and len(references) > 0
    chosen = _resolve_sections(sections, has_refs)
    if sections is None and (data.sensitive is None if source is None else not source.sensitive_names):
        # bias transfer needs sensitive features; by default it is left out rather than reported unavailable
        chosen = tuple(s for s in chosen if s != "bias")
    boot = _make_bootstrap(bootstrap, n_replicates, seed)
    pol = load_policy(policy)
    if policy is None:
        # The default policy judges the sections this audit ran; a policy the caller gives is judged in full, so a
        # rule on a section that was not run shows up as skipped.
        from kdaudit.policy import Policy

        pol = Policy(rules=tuple(r for r in pol.rules if r.section in chosen), name=pol.name,
                     description=pol.description)
    section_options = dict(section_options or {})
    for key in section_options:
        if key not in _ALL:
            raise invalid_argument("section_options", key, f"section names among {', '.join(_ALL)}")
        _check_section_options(key, section_options[key])

    teacher_m, student_ms = _as_models(teacher, students)
    role_of = _roles(roles, [s.name for s in student_ms])
    from kdaudit import harness

    if source is not None:
        from kdaudit.executors._audit_task import run_units

        if "lineage" in chosen and probes is None and source.kind != "memory":
            raise invalid_argument("probes", None, "lineage probes (in memory) when the data is a ParquetSource")
        _progress(progress, f"running {1 + len(student_ms)} models on {source.n_rows:,} rows of {source.name!r} "
                            f"through the {executor.name} executor ({len(source.units)} units)")
        t0 = time.perf_counter()
        unit_run = run_units(executor, source, teacher_m, student_ms,
                             [s for s in chosen if s in METRIC_SECTIONS and _section_fn(s) is not None], boot,
                             section_options, section_fn=_section_fn, batch_size=batch_size, device=device,
                             precision=precision, cache_dir=cache_dir, seed=seed,
                             progress=(lambda msg: _progress(progress, msg)))
        timings: dict[str, Any] = {"harness_s": time.perf_counter() - t0, "sections_s": {}}
        outputs, provenance, data_summary = None, unit_run.provenance, unit_run.data_summary
        comparisons: list[dict[str, Any]] = []
        section_objs: dict[str, dict[str, Any]] = {}
        for student in student_ms:
            section_objs[student.name] = dict(unit_run.results[student.name])
            comp: dict[str, Any] = {"student": student.name, "role": role_of[student.name]}
            comp.update({sec: to_jsonable(res) for sec, res in unit_run.results[student.name].items()})
            comparisons.append(comp)
    else:
        _progress(progress, f"running {1 + len(student_ms)} models on {len(data):,} rows of {data.name!r}")
        t0 = time.perf_counter()
        run = harness.run([teacher_m, *student_ms], data, teacher=teacher_m.name, batch_size=batch_size,
                          device=device, precision=precision, cache_dir=cache_dir, seed=seed, progress=progress)
        timings = {"harness_s": time.perf_counter() - t0, "sections_s": {}}
        outputs = run.outputs
        t_out = outputs[teacher_m.name]

        comparisons = []
        section_objs = {}
        for student in student_ms:
            s_out = outputs[student.name]
            comp = {"student": student.name, "role": role_of[student.name]}
            objs: dict[str, Any] = {}
            for section in chosen:
                if section not in METRIC_SECTIONS:
                    continue
                _progress(progress, f"{section}: {teacher_m.name} vs {student.name}")
                t0 = time.perf_counter()
                fn = _section_fn(section)
                assert fn is not None  # _resolve_sections checked it
                res = _call_section(fn, data.y_true, t_out, s_out, ids=outputs.ids, sensitive=data.sensitive,
                                    bootstrap=boot, options=section_options.get(section, {}))
                timings["sections_s"][f"{student.name}/{section}"] = time.perf_counter() - t0
                objs[section] = res
                comp[section] = to_jsonable(res)
            comparisons.append(comp)
            section_objs[student.name] = objs
        provenance, data_summary = run.provenance, data.summary()

    cost_models: dict[str, Any] = {}
    cost_timing: dict[str, Any] = {}
    cost_conditions: dict[str, Any] = {}
    if "cost" in chosen:
        from kdaudit.harness import measure_cost as _measure

        cost_list = [teacher_m, *student_ms]
        raws: dict[str, list[dict[str, Any]]] = {m.name: [] for m in cost_list}
        if measure_cost:
            _progress(progress, f"cost: timing {len(cost_list)} models, {_COST_ROUNDS} interleaved rounds")
            # Interleaved rounds, then each model's median round: a burst of load on a shared machine then hits
            # every model alike instead of one model's whole measurement.
            for _ in range(_COST_ROUNDS):
                for m in cost_list:
                    raws[m.name].append(_measure(m, data, batch_size=batch_size, device=device))
        from kdaudit.harness._cost import pool_rounds, speed_ratio

        batches: dict[str, list[float]] = {}
        for m in cost_list:
            fixed = {"n_parameters": m.n_parameters(), "size_bytes": m.size_bytes()}
            if raws[m.name]:
                # Every timed batch of every round, pooled: the summary and the speed ratio's interval use them all.
                pooled = pool_rounds(raws[m.name])
                batches[m.name] = pooled.pop("batch_ms")
                f2, timing, conditions = _cost_split(pooled)
                fixed.update(f2)
                cost_timing[m.name] = timing
                cost_conditions = dict(conditions, rounds=_COST_ROUNDS, torch_threads=_torch_threads())
            cost_models[m.name] = fixed
        for s in student_ms:
            if s.name in batches and teacher_m.name in batches:
                cost_timing[s.name]["throughput_ratio"] = speed_ratio(batches[teacher_m.name], batches[s.name],
                                                                      seed=seed)
        for comp in comparisons:
            t_c, s_c = cost_models[teacher_m.name], cost_models[comp["student"]]
            headline = {"parameter_ratio": _ratio(s_c.get("n_parameters"), t_c.get("n_parameters")),
                        "size_ratio": _ratio(s_c.get("size_bytes"), t_c.get("size_bytes"))}
            comp["cost"] = to_jsonable({"available": True, "reason": None, "headline": headline,
                                        "teacher": t_c, "student": s_c})

    if "lineage" in chosen:
        from kdaudit.lineage import lineage_test

        probe_data = data if probes is None else probes
        ref_models = [r for r in references or ()]
        for comp, student in zip(comparisons, student_ms):
            _progress(progress, f"lineage: was {student.name} distilled from {teacher_m.name}? "
                                f"({len(ref_models)} references)")
            t0 = time.perf_counter()
            options = {"seed": seed, "batch_size": batch_size, "cache_dir": cache_dir, **dict(lineage_options or {})}
            res = lineage_test(teacher_m, student, probe_data, references=ref_models, controls=controls or None,
                               **options)
            timings["sections_s"][f"{student.name}/lineage"] = time.perf_counter() - t0
            section_objs[student.name]["lineage"] = res
            d = to_jsonable(res)
            d.setdefault("available", True)
            d.setdefault("reason", None)
            comp["lineage"] = d

    models_desc = [dict(to_jsonable(teacher_m.describe()), role="teacher")]
    models_desc += [dict(to_jsonable(s.describe()), role=role_of[s.name]) for s in student_ms]
    if has_refs:
        from kdaudit.models import ModelAdapter, as_model

        for i, r in enumerate(references or ()):
            ra = r if isinstance(r, ModelAdapter) else as_model(r, name=f"reference{i + 1}")
            models_desc.append(dict(to_jsonable(ra.describe()), role="reference"))
        for i, c in enumerate(controls or ()):
            ca = c if isinstance(c, ModelAdapter) else as_model(c, name=f"control{i + 1}")
            models_desc.append(dict(to_jsonable(ca.describe()), role="control"))

    settings = {
        "sections": list(chosen),
        "seed": seed,
        "bootstrap": {"n_replicates": boot.n_replicates, "seed": boot.seed, "level": boot.level,
                      "n_blocks": boot.n_blocks, "method": boot.method},
        "batch_size": batch_size,
        "device": device,
        "precision": precision,
        "section_options": to_jsonable(section_options),
        "lineage_options": to_jsonable(dict(lineage_options or {})),
    }
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "kdaudit_version": __version__,
        "data": to_jsonable(data_summary),
        "models": models_desc,
        "teacher": teacher_m.name,
        "comparisons": comparisons,
        "cost": {"models": to_jsonable(cost_models)} if "cost" in chosen else {},
        "provenance": to_jsonable(provenance.to_dict(include_timing=False)),
        "settings": settings,
        "config": to_jsonable(dict(config)) if config is not None else None,
        "definitions": to_jsonable(_definitions(chosen)),
        "policy": pol.to_dict(),
    }
    # Round-trip through canonical JSON so the findings are judged on exactly the numbers results.json holds.
    import json

    results = json.loads(canonical_json(results))
    findings = tuple(pol.evaluate(results))
    verdict = verdict_of(findings)
    results["findings"] = [f.to_dict() for f in findings]
    results["verdict"] = verdict
    results["verdict_by_student"] = {
        c["student"]: verdict_of([f for f in findings if f.student == c["student"]]) for c in comparisons
        if c["role"] == "student"  # controls are not judged (see ``roles``)
    }
    results = json.loads(canonical_json(results))

    timings["total_s"] = time.perf_counter() - t_start
    prov_timed = provenance.to_dict(include_timing=True)
    run_info = {
        "generated_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": " ".join(_command_line()),
        "host": {"python": platform.python_version(), "platform": platform.platform(),
                 "cpu_count": os.cpu_count()},
        "wall_time_s": to_jsonable(timings),
        "cost": to_jsonable(cost_timing),
        "cost_conditions": to_jsonable(cost_conditions),
        "models": [{"name": m.get("name"), "wall_time_s": m.get("wall_time_s"), "from_cache": m.get("from_cache"),
                    "queries": m.get("queries")} for m in to_jsonable(prov_timed.get("models", []))],
    }
    if source is not None:  # what ran where: never in results.json, which must not depend on it
        run_info["executor"] = to_jsonable(unit_run.info)
    _progress(progress, f"verdict {verdict.upper()} in {timings['total_s']:.1f} s")
    return AuditResult(results=results, verdict=verdict, findings=findings, sections=section_objs,
                       run_info=run_info, outputs=outputs)


_COMPARISON_ROLES = ("student", "control")


def _roles(roles: Mapping[str, str] | None, names: Sequence[str]) -> dict[str, str]:
    """Each audited model's role: ``roles`` checked against the students' names and the accepted roles."""
    out = {n: "student" for n in names}
    if roles is None:
        return out
    if not isinstance(roles, Mapping):
        raise invalid_argument("roles", type(roles).__name__, "a mapping student name -> 'student' or 'control'")
    for name, role in roles.items():
        if name not in out:
            raise invalid_argument("roles", name, f"names of the audited students ({', '.join(map(repr, names))})")
        if role not in _COMPARISON_ROLES:
            raise invalid_argument(f"roles[{name!r}]", role, " or ".join(map(repr, _COMPARISON_ROLES)))
        out[name] = role
    if "student" not in out.values():
        raise invalid_argument("roles", dict(roles), "at least one model left in the role 'student'")
    return out


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def _command_line() -> list[str]:
    argv = list(sys.argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return argv


def audit_from_config(config: Any, *, out_dir: str | os.PathLike[str] | None = None, save: bool = True,
                      progress: bool = True, **overrides: Any) -> AuditResult:
    """Run the audit a config file (or mapping) describes; see :mod:`kdaudit._config` for its keys.

    ``overrides`` replace audit() arguments (e.g. ``seed``, ``n_replicates``, ``policy``). With ``save``, the
    results are written to ``out_dir``, else to the config's ``out`` when it has one.
    """
    from kdaudit._config import load_config

    cfg = load_config(config)
    # overridden seed and replicates replace the config's, so the recorded config is the one that ran
    from dataclasses import replace as _replace

    n_rep = overrides.pop("n_replicates", None)
    cfg = _replace(cfg, seed=overrides.pop("seed", cfg.seed),
                   n_replicates=cfg.n_replicates if n_rep is None else n_rep)
    _progress(progress, f"loading data ({cfg.data.dataset or cfg.data.path})")
    data = cfg.load_data()
    _progress(progress, f"loading {len(cfg.teacher) + len(cfg.students) + len(cfg.references) + len(cfg.controls)} "
                        "models")
    teachers = [cfg.load_model(m) for m in cfg.teacher]
    students = {}
    roles: dict[str, str] = {}
    for i, spec in enumerate(cfg.students):
        model = cfg.load_model(spec)
        name = spec.name or getattr(model, "name", None) or f"student{i + 1}"
        if name in students:
            # two files with the same stem would otherwise silently replace one student by the other
            from kdaudit._exceptions import ConfigError

            raise ConfigError(f"{cfg.source}: config key 'models.students[{i}].name' got {spec.name!r}; expected a "
                              f"name distinct from the other students' (the model is named {name!r} after its "
                              "file, like another student: give each student a 'name')")
        students[name] = model
        if spec.role is not None:
            roles[name] = spec.role
    references = [cfg.load_model(m) for m in cfg.references] or None
    controls = [cfg.load_model(m) for m in cfg.controls] or None
    probes = [spec.load() for spec in cfg.probes] or None
    kwargs: dict[str, Any] = {
        "sections": cfg.sections, "seed": cfg.seed, "policy": cfg.policy, "cache_dir": cfg.cache_dir,
        "device": cfg.device, "precision": cfg.precision, "batch_size": cfg.batch_size, "references": references,
        "controls": controls, "roles": roles or None, "probes": probes, "lineage_options": dict(cfg.lineage) or None,
        "config": cfg.to_dict(),
        "progress": progress,
    }
    kwargs["bootstrap"] = cfg.bootstrap()
    if cfg.executor:  # the config's executor: block; an ``executor`` override (the CLI's --executor) replaces it
        ex = dict(cfg.executor)
        kind = ex.pop("kind")
        kwargs["block_rows"] = ex.pop("block_rows", None)
        kwargs["executor"] = kind if kind == "local" else ("ray", ex)
    kwargs.update(overrides)
    if isinstance(kwargs.get("executor"), tuple):
        from kdaudit.executors import get_executor

        kwargs["executor"] = get_executor(kwargs["executor"][0], **kwargs["executor"][1])
    teacher = teachers[0] if len(teachers) == 1 else teachers
    result = audit(teacher, students, data, **kwargs)
    target = out_dir if out_dir is not None else cfg.out
    if save and target is not None:
        result.save(target)
    return result
