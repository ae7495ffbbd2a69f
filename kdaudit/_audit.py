"""``kdaudit.audit``: run teacher and students once through the harness, every section per student, the policy.

The result splits in two on purpose:

* ``AuditResult.to_dict()`` / ``results.json``: everything that follows from the inputs and the seed (numbers,
  intervals, hashes, versions, config, policy, findings). Identical inputs and seed give identical bytes.
* ``AuditResult.run_info`` / ``run.json``: what differs between runs (wall times, measured latency and throughput,
  the time stamp, the command line), plus the sha256 of ``results.json`` it belongs to.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from typing import Any, Mapping, Sequence

from kdaudit._exceptions import invalid_argument
from kdaudit._io import to_jsonable
from kdaudit._result import (  # the result, and the helpers the language-model audit shares
    COST_DEFINITIONS,
    SCHEMA,
    AuditResult,
    _command_line,
    _judge,
    _make_bootstrap,
    _model_sections,
    _progress,
    _roles,
    _renamed,
    _student_items,
)
from kdaudit.sections import (
    KIND_OF_ACCESS,
    Section,
    SectionInputs,
    check_section_options,
    definitions_of,
    get_section,
    registry,
)

__all__ = ["AuditResult", "COST_DEFINITIONS", "SCHEMA", "audit", "available_sections"]

def available_sections() -> tuple[str, ...]:
    """Every section this installation provides (built-ins and plugins), in results order."""
    return tuple(registry())


def _resolve_sections(sections: Any, has_references: bool, reg: Mapping[str, Section]) -> tuple[str, ...]:
    if sections is None:
        # the default: every section that runs by default (a plugin opts in) on classifier outputs, lineage only
        # with references (the language-model sections are the language-model audit's default)
        return tuple(n for n, s in reg.items() if s.default and s.needs.kinds & set(KIND_OF_ACCESS.values())
                     and (not s.needs.references or has_references))
    if isinstance(sections, str):
        sections = (sections,)
    sections = tuple(sections)
    for name in sections:
        section = get_section(name, reg)
        if section.needs.references and not has_references:
            raise invalid_argument("sections", name, f"{name!r} only with references= (models exchangeable with "
                                                     "the teacher, e.g. its recipe with other seeds)")
    # canonical order, whatever order was asked for, so results.json does not depend on it
    return tuple(n for n in reg if n in sections)


def _check_section_options(section_options: Mapping[str, Any] | None, reg: Mapping[str, Section]
                           ) -> dict[str, dict[str, Any]]:
    """``section -> options``, each checked by its section's one schema (the config and the CLI use it too)."""
    return check_section_options(section_options, reg)


def _inputs_of(t_out: Any, s_out: Any, data: Any, has_references: bool) -> SectionInputs:
    """What the skip rule judges of a teacher/student pair (two models, or their harness outputs: both name their
    access level)."""
    return SectionInputs(kinds=(KIND_OF_ACCESS[t_out.access], KIND_OF_ACCESS[s_out.access]),
                         access=(t_out.access, s_out.access), has_labels=data.y_true is not None,
                         has_sensitive=data.sensitive is not None, has_references=has_references,
                         names=(f"teacher {t_out.name!r}", f"student {s_out.name!r}"))


def _definitions(sections: Sequence[str], reg: Mapping[str, Section] | None = None) -> dict[str, dict[str, Any]]:
    """``"section.key" -> definition`` for every section used (the report's methodology reads these)."""
    return definitions_of(sections, registry() if reg is None else reg)


def _as_models(teacher: Any, students: Any) -> tuple[Any, list[Any]]:
    from kdaudit.models import EnsembleModel, ModelAdapter, as_model

    if isinstance(teacher, (list, tuple)):
        if len(teacher) == 0:
            raise invalid_argument("teacher", teacher, "a model or a non-empty list of models (an ensemble)")
        t = teacher[0] if len(teacher) == 1 else EnsembleModel(list(teacher), name="teacher ensemble")
    else:
        t = teacher
    t = t if isinstance(t, ModelAdapter) else as_model(t, name="teacher")
    items = _student_items(students, accepted="a model")
    ss = []
    for i, (name, s) in enumerate(items):
        if isinstance(s, ModelAdapter):
            ss.append(_renamed(s, name))
        else:
            ss.append(as_model(s, name=name or (f"student{i + 1}" if len(items) > 1 else "student")))
    names = [t.name] + [s.name for s in ss]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise invalid_argument("students", f"the name {dup[0]!r} used twice",
                               "distinct model names (pass a dict name -> model, or name= to the adapter)")
    return t, ss


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
    positive_controls: Sequence[Any] | None = None,
    roles: Mapping[str, str] | None = None,
    probes: Any = None,
    lineage_options: Mapping[str, Any] | None = None,
    section_options: Mapping[str, Mapping[str, Any]] | None = None,
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
    measure_cost: bool = True,
    executor: Any = None,
    block_rows: int | None = None,
    keep_outputs: bool = False,
) -> AuditResult:
    """Audit distilled students against their teacher.

    The teacher (or ensemble) and every student run through the harness on the same rows, unit by unit (the
    engine, :func:`kdaudit.sections._engine.stream_sections`); each unit's outputs feed every section's accumulator
    and are then dropped, so memory stays flat in the number of rows; the policy turns the numbers into findings.

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
    positive_controls : sequence of models, optional
        Lineage positive controls: students the owner made from the teacher (distilled, extracted), each tested
        exactly like every student; the lineage section then states the test's power for this teacher beside each
        verdict (the share found, with its Clopper-Pearson interval). They never enter a student's p-value.
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
    executor : {"local", "ray"} or Executor, optional
        Where the units run. None (the default) or ``"local"``: in this process, one after the other. With
        ``"ray"`` (or a :class:`kdaudit.executors.RayExecutor`) they run in a pool of Ray actors, and results.json
        is byte-identical to the local executor's (units are merged in unit order). ``data`` may also be a
        :class:`kdaudit.executors.ParquetSource` (sharded parquet read by the workers, never by the driver).
        With ``cache_dir`` each model's outputs are cached per unit in chunks that a re-run resumes from.
    block_rows : int, optional
        Rows per unit of in-memory data (default 65,536): the grain of parallelism, of retries and of memory (a
        unit's outputs are held while its sections fold them). An audit of at most this many rows is one unit.
        Results depend on it in the last bits (it fixes the order of floating-point sums), never on the executor
        or the number of workers.
    keep_outputs : bool
        Keep every model's outputs on every row (N x C float32 per model) as ``AuditResult.outputs``, for further
        analysis; memory then grows with the number of rows. Default False (``outputs`` is None).

    Returns
    -------
    AuditResult
    """
    from kdaudit._version import __version__
    from kdaudit.policy import load_policy

    from kdaudit._audit_lm import dispatch_lm
    lm = dispatch_lm(teacher, students, data, sections=sections, bootstrap=bootstrap, n_replicates=n_replicates,
                     policy=policy, seed=seed, section_options=section_options, config=config, progress=progress,
                     measure_cost=measure_cost, roles=roles, cache_dir=cache_dir, device=device, precision=precision,
                     unsupported={"references": references, "controls": controls,
                                  "positive_controls": positive_controls, "probes": probes,
                                  "executor": executor, "block_rows": block_rows})
    if lm is not None:  # language models: kdaudit._audit_lm
        return lm
    t_start = time.perf_counter()
    from kdaudit.executors import get_executor  # importing kdaudit.executors registers its executors by name
    from kdaudit.harness._source import as_source

    executor = get_executor(executor)
    source = as_source(data, block_rows=block_rows)
    data = source.head()  # the rows the driver itself uses: all of them in memory, the first unit of shards
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise invalid_argument("seed", seed, "an integer >= 0")
    has_refs = references is not None and len(references) > 0
    if positive_controls is not None and len(positive_controls) and not has_refs:
        raise invalid_argument("positive_controls", f"{len(positive_controls)} models",
                               "positive controls only with references (they measure the lineage test's power, "
                               "and the lineage test needs references)")
    reg = registry()
    chosen = _resolve_sections(sections, has_refs, reg)
    if sections is None and not source.sensitive_names:
        # bias transfer needs sensitive features; by default it is left out rather than reported unavailable
        chosen = tuple(s for s in chosen if s != "bias")
    boot = _make_bootstrap(bootstrap, n_replicates, seed)
    pol = load_policy(policy, sections=reg)
    if policy is None:
        # The default policy judges the sections this audit ran; a policy the caller gives is judged in full, so a
        # rule on a section that was not run shows up as skipped.
        from kdaudit.policy import Policy

        pol = Policy(rules=tuple(r for r in pol.rules if r.section in chosen), name=pol.name,
                     description=pol.description)
    section_options = _check_section_options(section_options, reg)

    teacher_m, student_ms = _as_models(teacher, students)
    role_of = _roles(roles, [s.name for s in student_ms])
    if "lineage" in chosen and probes is None and source.kind != "memory":
        raise invalid_argument("probes", None, "lineage probes (in memory) when the data is a ParquetSource")
    from kdaudit.executors._black_box import query_black_boxes_here
    from kdaudit.harness import LocalExecutor
    from kdaudit.sections._engine import stream_sections

    run_t, run_s = teacher_m, student_ms
    if not isinstance(executor, LocalExecutor):  # a paid API is asked here, once per row (kdaudit.executors)
        run_t, run_s = query_black_boxes_here([teacher_m, *student_ms], source, batch_size=batch_size,
                                              cache_dir=cache_dir, seed=seed)
    _progress(progress, f"running {1 + len(student_ms)} models on {source.n_rows:,} rows of {source.name!r}"
                        + ("" if len(source.units) == 1 else f" in {len(source.units)} units")
                        + ("" if isinstance(executor, LocalExecutor) else f" through the {executor.name} executor"))
    engine = stream_sections(
        run_t, run_s, source, sections=[reg[s] for s in chosen if reg[s].stream], bootstrap=boot,
        options=section_options, executor=executor, batch_size=batch_size, cache_dir=cache_dir, device=device,
        precision=precision, has_references=has_refs, seed=seed, keep_outputs=keep_outputs,
        progress=(lambda msg: _progress(progress, msg)) if progress else None)
    timings: dict[str, Any] = {"harness_s": engine.timings["models_and_folds_s"], "sections_s": {},
                               "sections_compute_s": engine.timings["compute_s"]}
    provenance, data_summary, outputs = engine.provenance, engine.data_summary, engine.outputs
    streamed = engine.results
    # results.json keeps the canonical section order
    comparisons = [{"student": st.name, **{n: to_jsonable(streamed[st.name][n]) for n in reg
                                           if n in streamed[st.name]}} for st in student_ms]
    section_objs = {st.name: dict(streamed[st.name]) for st in student_ms}

    for comp in comparisons:  # each comparison says whether its model is judged (a student) or shown (a control)
        comp_items = list(comp.items())
        comp.clear()
        comp.update([comp_items[0], ("role", role_of[comp_items[0][1]]), *comp_items[1:]])

    # the sections computed from the models themselves (cost, lineage), through one loop
    model_results, model_run_info = _model_sections(
        teacher_m, student_ms, data, inputs_of=lambda st: _inputs_of(teacher_m, st, data, has_refs), chosen=chosen,
        reg=reg, comparisons=comparisons, section_objs=section_objs,
        timings=timings, boot=boot, section_options=section_options, lineage_options=lineage_options, seed=seed,
        batch_size=batch_size, device=device, precision=precision, cache_dir=cache_dir, references=references,
        controls=controls, probes=probes, outputs=outputs, measure_cost=measure_cost, progress=progress,
        positive_controls=positive_controls)

    models_desc = [dict(to_jsonable(teacher_m.describe()), role="teacher")]
    models_desc += [dict(to_jsonable(s.describe()), role=role_of[s.name]) for s in student_ms]
    if has_refs:
        from kdaudit.models import ModelAdapter, as_model

        for role, stem, pool in (("reference", "reference", references), ("control", "control", controls),
                                 ("positive control", "positive_control", positive_controls)):
            for i, m in enumerate(pool or ()):
                adapter = m if isinstance(m, ModelAdapter) else as_model(m, name=f"{stem}{i + 1}")
                models_desc.append(dict(to_jsonable(adapter.describe()), role=role))

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
        "cost": model_results.pop("cost", {}),  # the cost section's per-model table ({} without it)
        "provenance": to_jsonable(provenance.to_dict(include_timing=False)),
        "settings": settings,
        "config": to_jsonable(dict(config)) if config is not None else None,
        "definitions": to_jsonable(_definitions(chosen, reg)),
        "policy": pol.to_dict(),
        **model_results,
    }
    results, findings = _judge(results, pol)
    verdict = results["verdict"]

    timings["total_s"] = time.perf_counter() - t_start
    prov_timed = provenance.to_dict(include_timing=True)
    run_info = {
        "generated_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": " ".join(_command_line()),
        "host": {"python": platform.python_version(), "platform": platform.platform(),
                 "cpu_count": os.cpu_count()},
        "wall_time_s": to_jsonable(timings),
        "cost": {},
        "cost_conditions": {},
        **model_run_info,
        "models": [{"name": m.get("name"), "wall_time_s": m.get("wall_time_s"), "from_cache": m.get("from_cache"),
                    "queries": m.get("queries")} for m in to_jsonable(prov_timed.get("models", []))],
    }
    # what ran where: never in results.json, which must not depend on it
    run_info["executor"] = to_jsonable(dict(engine.info["executor"], source=engine.info["source"],
                                            workers=engine.info["workers"]))
    _progress(progress, f"verdict {verdict.upper()} in {timings['total_s']:.1f} s")
    return AuditResult(results=results, verdict=verdict, findings=findings, sections=section_objs,
                       run_info=run_info, outputs=outputs)

