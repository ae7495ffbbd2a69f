"""The engine: the one path from models to section results, for every executor and every source of rows.

An audit is a fold. A source (:mod:`kdaudit.harness._source`: an in-memory :class:`~kdaudit.AuditData` cut into
shards of ``block_rows`` rows, or sharded parquet read by the workers) cuts the rows into **units** whose boundaries
depend on the data only. An executor (:mod:`kdaudit.harness._executor`; ``kdaudit.executors.RayExecutor``) runs
:class:`ShardTask` on each unit: the harness runs every model over the unit's rows (teacher first, identical rows in
identical order, the audit's device and precision, the chunked output cache that a re-run or a retried unit resumes
from), and each (student, section) folds the unit's outputs into a fresh accumulator (:meth:`Section.fold`). Only
the accumulators come back; the driver merges them **in unit order** and computes each section's result once.
Floating-point addition is not associative, so that order is what makes results.json the same bytes for any
executor and any number of workers. Memory holds one unit's outputs plus fixed-size accumulator states, whatever the
number of rows.
"""

from __future__ import annotations

import copy
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from kdaudit._exceptions import KDAuditError
from kdaudit.harness._executor import LocalExecutor, Shard, get_executor
from kdaudit.harness._outputs import ModelOutputs, Outputs
from kdaudit.harness._run import run as run_models
from kdaudit.harness._source import as_source, merge_summaries, unit_summary
from kdaudit.metrics._accumulator import Accumulator
from kdaudit.models._base import ModelAdapter
from kdaudit.sections._base import KIND_OF_ACCESS, Section, SectionInputs

__all__ = ["EngineRun", "ShardTask", "stream_sections"]


def _is_column(m: Any) -> bool:
    """A model whose outputs are a column of the source (``kdaudit.executors.ColumnModel``): bound per unit."""
    return isinstance(getattr(m, "column", None), str) and callable(getattr(m, "bind", None))


@dataclass
class ShardTask:
    """What an executor runs on one unit: the harness over the unit's rows, then every planned (student, section)
    folds the outputs (picklable; ``models`` are adapters, teacher first, or zero-argument factories that
    :meth:`setup` builds once per worker).

    Returns ``{"folds": {(student, section): accumulator or final result}, "provenance", "summary", "outputs"
    (only with ``keep_outputs``), "worker"}``.
    """

    source: Any
    models: Sequence[Any]
    plan: Sequence[tuple[str, str]]  # (student, section) pairs to fold
    sections: Mapping[str, Section]
    options: Mapping[str, Mapping[str, Any]]
    bootstrap: Any
    batch_size: int
    device: Any = None
    precision: str | None = None
    cache_dir: Any = None
    seed: int = 0
    progress: bool = False
    keep_outputs: bool = False
    fingerprints: Mapping[str, str] | None = None  # model name -> sha256, hashed once for every unit
    _built: list[ModelAdapter] | None = field(default=None, repr=False)

    def setup(self) -> None:
        if self._built is None:
            self._built = [m if isinstance(m, ModelAdapter) else m() for m in self.models]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_built"] = None  # what setup() built stays in the worker that built it
        return state

    def __call__(self, unit: Any) -> dict[str, Any]:
        self.setup()
        assert self._built is not None
        columns = [m.column for m in self._built if _is_column(m)]
        block = self.source.load(unit, columns)
        models = [m.bind(block.columns[m.column]) if _is_column(m) else m for m in self._built]
        if isinstance(unit, Shard):  # rows of in-memory data: outputs aligned by position follow the unit
            models = [m.for_rows(unit.start, unit.stop) for m in models]
        try:
            run = run_models(models, block.data, batch_size=self.batch_size, device=self.device,
                             precision=self.precision, cache_dir=self.cache_dir, seed=self.seed,
                             progress=self.progress, fingerprints=self.fingerprints)
        except KDAuditError as exc:
            if len(self.source.units) > 1 and exc.args and isinstance(exc.args[0], str):
                # the harness counts rows from the unit's first row: say which unit
                where = f"rows {unit.start}:{unit.stop}" if isinstance(unit, Shard) else repr(unit)
                exc.args = (f"{exc.args[0]} (in unit {where} of the audit data; row numbers count from the unit's "
                            "first row)", *exc.args[1:])
            raise
        out, d = run.outputs, block.data
        teacher = out[out.teacher]
        folds = {}
        for student, name in self.plan:
            folds[(student, name)] = self.sections[name].fold(
                y_true=d.y_true, teacher=teacher, student=out[student], ids=out.ids, sensitive=d.sensitive,
                bootstrap=self.bootstrap, options=self.options.get(name, {}))
        return {"folds": folds, "provenance": run.provenance, "summary": unit_summary(block, teacher.n_classes),
                "outputs": out if self.keep_outputs else None,
                "worker": {"pid": os.getpid(), "peak_rss_mb": _peak_rss_mb()}}


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return float("nan")
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


@dataclass(frozen=True)
class EngineRun:
    """What the engine gives the audit: ``{student: {section: result}}``, the provenance and data summary of the
    whole run, the outputs (only with ``keep_outputs``), run facts for run.json, and timings."""

    results: dict[str, dict[str, Any]]
    provenance: Any
    data_summary: dict[str, Any]
    outputs: Outputs | None
    info: dict[str, Any]
    timings: dict[str, float]


def stream_sections(teacher: ModelAdapter, students: Sequence[ModelAdapter], data: Any, *,
                    sections: Sequence[Section], bootstrap: Any, options: Mapping[str, Mapping[str, Any]] | None = None,
                    executor: Any = None, batch_size: int = 256, block_rows: int | None = None,
                    cache_dir: Any = None, device: Any = None, precision: str | None = None,
                    has_references: bool = False, seed: int = 0, keep_outputs: bool = False,
                    progress: Callable[[str], None] | None = None) -> EngineRun:
    """Every section that computes from rows (``stream = True``), for every student, from the models, unit by unit
    through ``executor``.

    ``data`` is an :class:`~kdaudit.AuditData` (cut into units of ``block_rows`` rows) or a source such as
    ``kdaudit.executors.ParquetSource``. A section that cannot run on what a pair of models reveals gets
    ``{"available": False, "reason": ...}`` (the one rule of :meth:`Section.skip_reason`); one that finds, on the
    rows, that it cannot run (no labels, no sensitive features) reports its own result.
    """
    options = dict(options or {})
    ex = get_executor(executor)
    source = as_source(data, block_rows=block_rows)
    models = [teacher, *students]
    results: dict[str, dict[str, Any]] = {s.name: {} for s in students}
    plan: list[tuple[str, str]] = []
    for s in students:
        inputs = SectionInputs(kinds=(KIND_OF_ACCESS[teacher.access], KIND_OF_ACCESS[s.access]),
                               access=(teacher.access, s.access), has_labels=source.has_labels,
                               has_sensitive=bool(source.sensitive_names), has_references=has_references,
                               names=(f"teacher {teacher.name!r}", f"student {s.name!r}"))
        for section in sections:
            why = section.skip_reason(inputs)
            if why is not None:
                results[s.name][section.name] = {"available": False, "reason": why, "headline": {}}
            else:
                plan.append((s.name, section.name))
    if len(source.units) > 1 and cache_dir is None:
        # each unit's run checks a black box's budget for its own rows; the whole audit is refused up front
        # instead of spending part of the budget and stopping
        for m in models:
            check_budget = getattr(m, "check_budget", None)
            if check_budget is not None:
                check_budget(source.n_rows)
    local = isinstance(ex, LocalExecutor)
    # Several units: each model is hashed once here rather than once per unit (one unit: the harness hashes it
    # while the models run, as any run does).
    fingerprints = {m.name: m.fingerprint() for m in models} if len(source.units) > 1 else None
    task = ShardTask(source=source, models=models, plan=plan, sections={s.name: s for s in sections},
                     options=options, bootstrap=bootstrap,
                     batch_size=int(getattr(ex, "batch_size", None) or batch_size), device=device,
                     precision=precision, cache_dir=cache_dir, seed=seed,
                     progress=local and progress is not None and len(source.units) == 1, keep_outputs=keep_outputs,
                     fingerprints=fingerprints)
    merged: dict[tuple[str, str], Any] = {}
    final: dict[tuple[str, str], Any] = {}
    provs, summaries, outs, workers = [], [], [], {}
    n_units = len(source.units)
    t0 = time.perf_counter()
    for k, res in enumerate(ex.map(task, source.units)):  # in unit order: the same bits on any executor
        for key, fold in res["folds"].items():
            if not isinstance(fold, Accumulator):
                final.setdefault(key, fold)  # the section's own result, decided before reading a row
            elif key in merged:
                merged[key].merge(fold)
            else:  # the driver's own copy: a remote worker's arrays arrive read-only (Ray's object store)
                merged[key] = copy.deepcopy(fold)
        provs.append(res["provenance"])
        summaries.append(res["summary"])
        if res["outputs"] is not None:
            outs.append(res["outputs"])
        w = res["worker"]
        workers[w["pid"]] = max(workers.get(w["pid"], 0.0), w["peak_rss_mb"])
        if progress is not None and n_units > 1 and (k + 1 == n_units or (k + 1) % max(1, n_units // 10) == 0):
            progress(f"{ex.name}: {k + 1}/{n_units} units merged")
    t1 = time.perf_counter()
    for student, name in plan:
        key = (student, name)
        results[student][name] = final[key] if key in final else merged[key].compute()
    merged_summary = merge_summaries(summaries, source)
    provenance = _merge_provenance(provs, merged_summary["sha256"], source.n_rows)
    ordered = {s.name: {sec.name: results[s.name][sec.name] for sec in sections} for s in students}
    info = {"executor": ex.describe() if hasattr(ex, "describe") else {"kind": ex.name},
            "source": source.describe(),
            "workers": [{"pid": pid, "peak_rss_mb": rss} for pid, rss in sorted(workers.items())]}
    return EngineRun(ordered, provenance, source.summary(merged_summary),
                     _concat_outputs(outs, merged_summary["sha256"]) if keep_outputs else None, info,
                     {"models_and_folds_s": t1 - t0, "compute_s": time.perf_counter() - t1})


def _merge_provenance(parts: list[Any], data_sha: str, n_rows: int) -> Any:
    """One provenance for the whole audit: a model's queries are summed over units; its hash is the same in every
    unit (else the units' hashes are hashed in order); wall times add up. One unit: the harness's own."""
    first = parts[0]
    records = []
    for i, rec in enumerate(first.models):
        recs = [p.models[i] for p in parts]
        shas = [r.sha256 for r in recs]
        sha = shas[0] if len(set(shas)) == 1 else hashlib.sha256("".join(shas).encode()).hexdigest()
        records.append(replace(rec, sha256=sha, queries=sum(r.queries for r in recs),
                               queries_this_run=sum(r.queries_this_run for r in recs),
                               rows_from_cache=sum(r.rows_from_cache for r in recs),
                               from_cache=all(r.from_cache for r in recs),
                               wall_time_s=sum(r.wall_time_s for r in recs)))
    return replace(first, data_sha256=data_sha, n_rows=n_rows, models=tuple(records),
                   wall_time_s=sum(p.wall_time_s for p in parts))


def _concat_outputs(parts: list[Outputs], data_sha: str) -> Outputs:
    """The units' outputs, in unit order, as one :class:`~kdaudit.harness.Outputs` (``keep_outputs``)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]

    def cat(arrays: list[Any]) -> Any:
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    models = {}
    for name in first.names:
        mos = [p[name] for p in parts]
        m0 = mos[0]
        models[name] = ModelOutputs(name, cat([m.probs for m in mos]), cat([m.labels for m in mos]), m0.access,
                                    m0.top_k, cat([m.logits for m in mos]))
    return Outputs(models=models, ids=np.concatenate([p.ids for p in parts]), data_sha256=data_sha,
                   teacher=first.teacher)
