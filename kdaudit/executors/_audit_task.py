"""An audit as a fold over units: the task a worker runs on one unit, and the driver's ordered merge.

Per unit, a worker runs the harness (every model over the unit's rows, teacher first) and feeds the outputs to a
fresh accumulator of every (student, section); only the accumulators' fixed-size states and a small summary come
back. The driver merges them in unit order into fresh accumulators and computes the section results, which are
then bit for bit those of any other executor with the same units.

The feeders below are the executor's view of the four metric sections: the same accumulator, options and chunking
as the section functions of :mod:`kdaudit.metrics` (a test checks that a one-unit fold equals each section function
exactly); the section registry of the engine redesign replaces them by each section's own accumulator factory.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit.executors._base import Executor, LocalExecutor
from kdaudit.executors._sources import ColumnModel, as_source, merge_summaries, unit_summary
from kdaudit.models._base import Access, ModelAdapter

__all__ = ["AuditTask", "UnitRun", "query_black_boxes_here", "run_units"]


# -- section feeders ----------------------------------------------------------------------------------------
def _unavailable(section: str, y_present: bool, t: ModelAdapter, s: ModelAdapter,
                 sensitive: Sequence[str]) -> bool:
    """Whether the section function would return "unavailable" before reading a row (same conditions)."""
    if section == "calibration":
        return not y_present or Access.LABELS in (t.access, s.access)
    if section == "fingerprint":
        return not y_present
    if section == "bias":
        return not sensitive
    return False


def _section_fn(section: str) -> Callable[..., Any]:
    from kdaudit import metrics

    return getattr(metrics, f"{section}_section")


def _unavailable_result(section: str, fn: Callable[..., Any], y_present: bool, t: ModelAdapter,
                        s: ModelAdapter, bootstrap: Any, options: Mapping[str, Any]) -> Any:
    """The section function's own "unavailable" result: it returns before reading rows, so empty outputs do."""
    from kdaudit.harness._outputs import ModelOutputs

    def empty(m: ModelAdapter) -> ModelOutputs:
        return ModelOutputs(m.name, np.zeros((0, m.n_classes), np.float32), np.zeros(0, np.int64), m.access, m.top_k)

    kwargs = {"ids": np.zeros(0, np.int64), "bootstrap": bootstrap, **options}
    if section != "agreement":
        kwargs["sensitive"] = None
    return fn(None if not y_present else np.zeros(0, np.int64), empty(t), empty(s), **kwargs)


def _options(section: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    opts = dict(options)
    chunk = opts.pop("chunk_size", None)
    if section == "bias":
        opts.pop("n_classes", None)  # the outputs' width, as in bias_section
        if opts.get("sample_weight") is not None:
            raise invalid_argument("section_options['bias']['sample_weight']", "an array",
                                   "no sample weights through an executor (they would have to be a column)")
        opts.pop("sample_weight", None)
    return opts, chunk


def make_accumulator(section: str, t: ModelAdapter, s: ModelAdapter, sensitive: Sequence[str], bootstrap: Any,
                     options: Mapping[str, Any]) -> Any:
    from kdaudit import metrics

    opts, _ = _options(section, options)
    try:
        if section == "agreement":
            return metrics.AgreementAccumulator(t.n_classes, bootstrap=bootstrap, teacher_access=t.access,
                                                student_access=s.access, teacher_top_k=t.top_k,
                                                student_top_k=s.top_k, **opts)
        if section == "calibration":
            return metrics.CalibrationAccumulator(t.n_classes, bootstrap=bootstrap, teacher_access=t.access,
                                                  student_access=s.access, **opts)
        if section == "bias":
            return metrics.BiasAccumulator(t.n_classes, sensitive_names=list(sensitive), bootstrap=bootstrap, **opts)
        if section == "fingerprint":
            return metrics.FingerprintAccumulator(t.n_classes, bootstrap=bootstrap, **opts)
    except TypeError as exc:  # an option the section does not take
        raise invalid_argument(f"section_options[{section!r}]", sorted(options), f"options of the {section} "
                               f"section ({exc})") from None
    raise invalid_argument("section", section, "one of agreement, calibration, bias, fingerprint")


def feed(section: str, acc: Any, y: Any, t: Any, s: Any, ids: np.ndarray, sensitive: Any,
         options: Mapping[str, Any]) -> None:
    """Feed one unit's outputs (``ModelOutputs``) to ``acc`` in the section function's own chunks."""
    from kdaudit.metrics._common import default_chunk

    _, chunk = _options(section, options)
    n = len(ids)
    if section == "bias":
        step = chunk or (1 << 20)
        cols = {str(c): sensitive[c].to_numpy() for c in sensitive.columns}
        lt, ls = t.labels, s.labels
        ct = None if t.access == Access.LABELS else t.probs.max(axis=1)
        cs = None if s.access == Access.LABELS else s.probs.max(axis=1)
        for a in range(0, n, step):
            sl = slice(a, a + step)
            acc._update(None if y is None else y[sl], [lt[sl], ls[sl]],
                        [None if ct is None else ct[sl], None if cs is None else cs[sl]], ids=ids[sl],
                        sensitive={c: v[sl] for c, v in cols.items()}, sample_weight=None)
        return
    step = chunk or default_chunk(t.n_classes)
    for a in range(0, n, step):
        sl = slice(a, a + step)
        yy = None if y is None else y[sl]
        if section == "agreement":
            acc.update(yy, t.probs[sl], s.probs[sl], ids=ids[sl])
        elif section == "calibration":
            acc.update(yy, t.probs[sl], s.probs[sl], ids=ids[sl],
                       logits_teacher=None if t.logits is None else t.logits[sl],
                       logits_student=None if s.logits is None else s.logits[sl])
        else:
            acc.update(yy, t.labels[sl], s.labels[sl], ids=ids[sl])


# -- the task ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One accumulator of the fold: a student's section."""

    student: str
    section: str
    options: Mapping[str, Any]


@dataclass
class AuditTask:
    """What a worker runs on a unit (picklable; ``models`` may be adapters or zero-argument factories)."""

    source: Any
    models: Sequence[Any]
    jobs: Sequence[Job]
    sensitive: Sequence[str]
    bootstrap: Any
    batch_size: int
    device: Any
    precision: Any
    cache_dir: Any
    seed: int
    _built: list[ModelAdapter] | None = field(default=None, repr=False)

    def setup(self) -> None:
        if self._built is None:
            self._built = [m if isinstance(m, ModelAdapter) else m() for m in self.models]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_built"] = None  # what setup() built stays in the worker that built it
        return state

    def __call__(self, unit: Any) -> dict[str, Any]:
        from kdaudit import harness

        self.setup()
        assert self._built is not None
        columns = [m.column for m in self._built if isinstance(m, ColumnModel)]
        block = self.source.load(unit, columns)
        models = [m.bind(block.columns[m.column]) if isinstance(m, ColumnModel) else m for m in self._built]
        t_name = models[0].name
        run = harness.run(models, block.data, teacher=t_name, batch_size=self.batch_size, device=self.device,
                          precision=self.precision, cache_dir=self.cache_dir, seed=self.seed, progress=False)
        out = run.outputs
        d = block.data
        states = {}
        for job in self.jobs:
            t_m = self._built[0]
            s_m = next(m for m in self._built if m.name == job.student)
            acc = make_accumulator(job.section, t_m, s_m, self.sensitive, self.bootstrap, job.options)
            feed(job.section, acc, d.y_true, out[t_name], out[job.student], np.asarray(out.ids),
                 d.sensitive, job.options)
            states[(job.student, job.section)] = acc
        return {"states": states, "provenance": run.provenance,
                "summary": unit_summary(block, self._built[0].n_classes),
                "worker": {"pid": os.getpid(), "peak_rss_mb": _peak_rss_mb()}}


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return float("nan")
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


# -- black boxes stay on the driver -----------------------------------------------------------------------
def query_black_boxes_here(models: list[ModelAdapter], source: Any, *, batch_size: int, cache_dir: Any,
                            seed: int) -> tuple[ModelAdapter, list[ModelAdapter]]:
    """A black box (a paid API with a query budget) is asked here, on the driver, once per row, through the
    harness (its cache resumes an interrupted run); the workers get its answers as a stand-in with its name, kind,
    access and hash. Copies of the black box on every worker would each spend the budget, ask again whatever a
    lost worker had asked, and share no cache."""
    from kdaudit import harness
    from kdaudit.executors._pool import PoolOutputs
    from kdaudit.models import BlackBoxModel

    out = []
    for m in models:
        if not isinstance(m, BlackBoxModel):
            out.append(m)
            continue
        if source.kind != "memory":
            raise invalid_argument("models", m.name, "models the workers can run: a black box's answers on "
                                                     "sharded data would have to be gathered here (ask it once, "
                                                     "store its answers as a column, and use a ColumnModel)")
        run = harness.run([m], source.data, batch_size=batch_size, cache_dir=cache_dir, seed=seed, progress=False)
        o = run.outputs[m.name]
        labels = m.access == Access.LABELS
        stand_in = PoolOutputs(o.labels if labels else o.probs, ids=source.data.ids, like=m.describe(),
                               output="labels" if labels else "probabilities")
        stand_in.access, stand_in.top_k, stand_in.n_classes = m.access, m.top_k, m.n_classes
        out.append(stand_in)
    return out[0], out[1:]


# -- the driver's fold -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnitRun:
    """What the fold gives the audit: section results, the provenance and data summary, and run facts."""

    results: dict[str, dict[str, Any]]
    provenance: Any
    data_summary: dict[str, Any]
    info: dict[str, Any]


def _merge_provenance(parts: list[Any], data_sha: str, n_rows: int) -> Any:
    """One provenance for the whole audit: a model's queries are summed over units; its hash is the same in every
    unit (else the units' hashes are hashed in order); wall times add up."""
    import hashlib

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


def run_units(executor: Executor, data: Any, teacher: ModelAdapter, students: Sequence[ModelAdapter],
              sections: Iterable[str], bootstrap: Any, section_options: Mapping[str, Mapping[str, Any]], *,
              batch_size: int, device: Any, precision: Any,
              cache_dir: Any, seed: int, block_rows: int | None = None,
              progress: Callable[[str], None] | None = None) -> UnitRun:
    """Run the metric sections of an audit through ``executor``: units in parallel, states merged in unit order."""
    source = as_source(data, block_rows=block_rows)
    sections = list(sections)
    if not isinstance(executor, LocalExecutor):
        teacher, students = query_black_boxes_here([teacher, *students], source, batch_size=batch_size,
                                                    cache_dir=cache_dir, seed=seed)
    sensitive = source.sensitive_names
    results: dict[str, dict[str, Any]] = {s.name: {} for s in students}
    jobs = []
    for s in students:
        for section in sections:
            opts = dict(section_options.get(section, {}))
            if _unavailable(section, source.has_labels, teacher, s, sensitive):
                results[s.name][section] = _unavailable_result(section, _section_fn(section), source.has_labels,
                                                               teacher, s, bootstrap, opts)
            else:
                make_accumulator(section, teacher, s, sensitive, bootstrap, opts)  # bad options fail here, early
                jobs.append(Job(s.name, section, opts))
    bs = getattr(executor, "batch_size", None) or batch_size
    task = AuditTask(source, [teacher, *students], jobs, sensitive, bootstrap, bs, device, precision, cache_dir, seed)
    merged = {(j.student, j.section): make_accumulator(j.section, teacher,
                                                       next(m for m in students if m.name == j.student),
                                                       sensitive, bootstrap, j.options) for j in jobs}
    provs, summaries, workers = [], [], {}
    t0 = time.perf_counter()
    n_units = len(source.units)
    for k, res in enumerate(executor.map(task, source.units)):
        for key, state in res["states"].items():
            merged[key].merge(state)  # in unit order: the same bits on any executor
        provs.append(res["provenance"])
        summaries.append(res["summary"])
        w = res["worker"]
        workers[w["pid"]] = max(workers.get(w["pid"], 0.0), w["peak_rss_mb"])
        if progress is not None and (k + 1 == n_units or (k + 1) % max(1, n_units // 10) == 0):
            progress(f"{executor.name}: {k + 1}/{n_units} units merged")
    t_units = time.perf_counter() - t0
    for (student, section), acc in merged.items():
        results[student][section] = acc.compute()
    merged_summary = merge_summaries(summaries, source)
    data_sha = source.fingerprint([p["hash"] for p in summaries]) if source.kind != "memory" \
        else source.data.fingerprint()
    provenance = _merge_provenance(provs, data_sha, source.n_rows)
    ordered = {s.name: {sec: results[s.name][sec] for sec in sections} for s in students}
    info = {"executor": executor.describe(), "source": source.describe(), "units_s": t_units,
            "workers": [{"pid": pid, "peak_rss_mb": rss} for pid, rss in sorted(workers.items())]}
    return UnitRun(ordered, provenance, source.summary(merged_summary), info)
