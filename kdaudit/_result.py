"""What an audit returns: :class:`AuditResult` (results.json, run.json, report, DataFrame), and the helpers the
classifier audit (:mod:`kdaudit._audit`) and the language-model audit (:mod:`kdaudit._audit_lm`) share. Both import
from here, so neither imports the other's internals.

The result splits in two on purpose:

* ``AuditResult.to_dict()`` / ``results.json``: everything that follows from the inputs and the seed (numbers,
  intervals, hashes, versions, config, policy, findings). Identical inputs and seed give identical bytes.
* ``AuditResult.run_info`` / ``run.json``: what differs between runs (wall times, measured latency and throughput,
  the time stamp, the command line), plus the sha256 of ``results.json`` it belongs to.
"""

from __future__ import annotations

import copy
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from kdaudit._estimate import Estimate
from kdaudit._exceptions import KDAuditError, invalid_argument
from kdaudit._io import canonical_json, to_jsonable
from kdaudit._rows import result_rows, section_definitions
from kdaudit._version import RESULTS_SCHEMA
from kdaudit.sections import ModelContext, Section, registry

__all__ = ["AuditResult", "COST_DEFINITIONS", "SCHEMA"]

SCHEMA = RESULTS_SCHEMA


def _cost_definitions() -> dict[str, dict[str, Any]]:
    from kdaudit.sections._builtin import COST_DEFINITIONS as by_key

    return {f"cost.{k}": dict(v) for k, v in by_key.items()}


#: ``"cost.key" -> definition`` (the cost section's; the language-model audit records them too)
COST_DEFINITIONS = _cost_definitions()
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
    #: the sections to_frame and the summary read, in order; None: the registry's order (a language-model audit
    #: names its own)
    section_names: ClassVar[tuple[str, ...] | None] = None

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
        disparity or ``"feature=group"`` for a per-group number. The rows are those the policy judges: one reader,
        :func:`kdaudit._rows.result_rows`, of results.json's numbers and definitions.
        """
        import pandas as pd

        rows = []
        sections = registry()
        defs = self.results.get("definitions")
        for comp in self.results["comparisons"]:
            for name in self._section_names(comp, sections):
                for row in result_rows(name, comp[name], section_definitions(defs, name)):
                    rows.append({"student": comp["student"], **_frame_fields(row)})
        cols = ["student", "section", "metric", "group", "value", "low", "high", "method", "level"]
        return pd.DataFrame(rows, columns=cols)

    def _repr_html_(self) -> str:
        """A compact summary for Jupyter: verdict, findings counts and headline numbers with intervals (rendered by
        the report layer, :func:`kdaudit.report._summary.summary_html`, from the results alone)."""
        from kdaudit.report._summary import summary_html

        sections = registry()
        names = self.section_names or tuple(sections)
        return summary_html(self.results, sections=[(n, sections[n].summary_keys if n in sections else ())
                                                    for n in names])

    def _section_names(self, comp: Mapping[str, Any], sections: Mapping[str, Section]) -> list[str]:
        """The sections of one comparison that results.json holds, in results order."""
        return [name for name in (self.section_names or sections) if isinstance(comp.get(name), Mapping)]

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
            page = render_html(self.to_dict(), run_info=run_info, generated_at=run_info.get("generated_at"),
                               summary_keys={n: s.summary_keys for n, s in registry().items()})
            run_info["render_s"] = round(time.perf_counter() - t0, 4)
            files["report.html"] = page.encode("utf-8")
        files["run.json"] = canonical_json(run_info).encode("utf-8")
        written = write_file_set(out_dir, files)
        paths = {"results": written["results.json"], "run": written["run.json"]}
        if report:
            paths["report"] = written["report.html"]
        return paths


def _frame_fields(row: Any) -> dict[str, Any]:
    e = row.estimate
    return {"section": row.section, "metric": row.metric, "group": row.group, "value": e.value, "low": e.low,
            "high": e.high, "method": e.method, "level": e.level}


# ------------------------------------------------------------------------------------------------------- audit
def _judge(results: Mapping[str, Any], policy: Any) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """``results`` with the policy's findings, verdict and per-student verdicts (controls are not judged), and the
    findings themselves.

    Round-trips through canonical JSON before and after, so the findings are judged on exactly the numbers
    results.json holds and the result is plain JSON types.
    """
    import json

    from kdaudit._io import canonical_json
    from kdaudit.policy import verdict_of

    out = json.loads(canonical_json(results))
    findings = tuple(policy.evaluate(out))
    out["findings"] = [f.to_dict() for f in findings]
    out["verdict"] = verdict_of(findings)
    out["verdict_by_student"] = {
        c["student"]: verdict_of([f for f in findings if f.student == c["student"]])
        for c in out["comparisons"] if c.get("role", "student") == "student"}  # controls are not judged
    return json.loads(canonical_json(out)), findings


def _student_items(students: Any, *, accepted: str) -> list[tuple[str | None, Any]]:
    """``(name or None, model)`` pairs from one model, a list of models or a dict name -> model (``accepted`` names
    what a model is, for the error)."""
    if isinstance(students, Mapping):
        items: list[tuple[str | None, Any]] = [(str(k), v) for k, v in students.items()]
    elif isinstance(students, (list, tuple)):
        items = [(None, v) for v in students]
    else:
        items = [(None, students)]
    if not items:
        raise invalid_argument("students", students, f"{accepted}, a list of them or a dict name -> model")
    return items


def _renamed(model: Any, name: str | None) -> Any:
    """``model`` under the name the caller gave it in a dict: a shallow copy when the name differs, so the caller's
    adapter keeps its own name (an audit changes nothing on the caller's objects)."""
    if name is None or model.name == name:
        return model
    renamed = copy.copy(model)
    renamed.name = name
    return renamed


def _progress(enabled: bool, message: str) -> None:
    if enabled:
        print(f"[kdaudit] {message}", file=sys.stderr, flush=True)


def _make_bootstrap(bootstrap: Any, n_replicates: int | None, seed: int) -> Any:
    from kdaudit.metrics._resampling import Bootstrap

    if bootstrap is not None and n_replicates is not None:
        raise invalid_argument("n_replicates", n_replicates, "None when bootstrap= is given")
    if bootstrap is None:
        return Bootstrap(n_replicates=1000 if n_replicates is None else n_replicates, seed=seed)
    if not isinstance(bootstrap, Bootstrap):
        raise invalid_argument("bootstrap", bootstrap, "a kdaudit.metrics.Bootstrap")
    return bootstrap


def _unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason, "headline": {}}


def _model_sections(teacher_m: Any, student_ms: list[Any], data: Any, *, inputs_of: Any, chosen: Sequence[str],
                    reg: Mapping[str, Section], comparisons: list[dict[str, Any]],
                    section_objs: dict[str, dict[str, Any]], timings: dict[str, Any], boot: Any,
                    section_options: Mapping[str, Any], lineage_options: Mapping[str, Any] | None, seed: int,
                    batch_size: int, device: Any, precision: Any, cache_dir: Any, references: Any, controls: Any,
                    probes: Any, outputs: Any, measure_cost: bool, progress: bool, positive_controls: Any = None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every chosen section that works on the models rather than row by row (``stream = False``: cost, lineage, a
    language-model section asked of classifiers), through one loop: the skip rule per student, then the section's
    :meth:`~kdaudit.sections.Section.compute_models` once for every student it can run for (so the teacher's timing
    and lineage's reference pool are computed once per audit); both audits' (classifiers and language models) run
    them here. ``inputs_of(student)`` is what the skip rule judges of the teacher and that student. Fills
    ``comparisons`` and ``section_objs``; returns
    the results.json and run.json entries the sections own."""
    by_name = {c["student"]: c for c in comparisons}
    top: dict[str, Any] = {}
    run_info: dict[str, Any] = {}
    for name in chosen:
        sec = reg[name]
        if sec.stream:
            continue
        able = []
        for st in student_ms:
            why = sec.skip_reason(inputs_of(st))
            if why is None:
                able.append(st)
            else:
                by_name[st.name][name] = _unavailable(why)
        if not able:
            continue
        options = dict(section_options.get(name, {}))
        if name == "lineage":  # audit(lineage_options=...): lineage_test's arguments, beside the section's options
            options.update(lineage_options or {})
        context = ModelContext(
            teacher=teacher_m, students=tuple(able), data=data, options=options, bootstrap=boot, seed=seed,
            batch_size=batch_size, device=device, precision=precision, cache_dir=cache_dir,
            references=tuple(references or ()), controls=tuple(controls or ()),
            positive_controls=tuple(positive_controls or ()), probes=probes, outputs=outputs,
            measure_cost=measure_cost, progress=lambda message: _progress(progress, message))
        out = sec.compute_models(context)
        if out is not None:
            missing = [st.name for st in able if st.name not in out.by_student]
            foreign = sorted(k for k in out.results if k != name)
            if missing or foreign:  # a plugin's mistake, named instead of a KeyError or a clobbered results key
                raise KDAuditError(f"section {name!r}: compute_models gave no result for {missing}" if missing else
                                   f"section {name!r}: compute_models gave results.json entries {foreign}; a "
                                   "section owns only the entry under its own name")
        for st in able:
            if out is None:
                by_name[st.name][name] = _unavailable(f"the {name} section does not compute from these models")
                continue
            res = out.by_student[st.name]
            section_objs[st.name][name] = res
            d = to_jsonable(res)
            d.setdefault("available", True)
            d.setdefault("reason", None)
            by_name[st.name][name] = d
        if out is not None:
            top.update(out.results)
            run_info.update(out.run_info)
            timings["sections_s"].update(out.timings)
    return top, run_info


def _ratio(a: Any, b: Any) -> Estimate:
    """``a / b`` as an exact estimate: the cost section's (one formula for both audits)."""
    from kdaudit.sections._cost import ratio

    return ratio(a, b)


def _command_line() -> list[str]:
    argv = list(sys.argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return argv


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
