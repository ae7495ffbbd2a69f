"""The streaming engine: every model runs batch by batch, each batch feeds every section's accumulator, and only
fixed-size accumulator states are kept; memory does not grow with the number of rows.

Rows are cut into shards (:func:`kdaudit.harness.shards_of`); an executor (:mod:`kdaudit.harness._executor`) runs
:class:`ShardTask` on each shard and hands back the accumulators' ``state_dict()``; the driver merges them in shard
order and computes each section's result. With ``cache_dir``, each batch's outputs are written as one chunk
(``<model key>.partial/rows-<start>-<stop>.npz``, the harness's chunk format), so a re-run, or a retried shard,
reads them back instead of asking the models again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from kdaudit._kinds import Access
from kdaudit.data._audit_data import AuditData
from kdaudit.harness._cache import OutputCache
from kdaudit.harness._executor import Shard, resolve_executor, shards_of
from kdaudit.harness._run import _device_of, _precision_of, _settings, model_record, provenance_of
from kdaudit.models._base import ModelAdapter
from kdaudit.models._convert import to_probabilities
from kdaudit.sections._base import KIND_OF_ACCESS, Section, SectionInputs

__all__ = ["ShardTask", "stream_sections"]


@dataclass
class ShardTask:
    """What an executor runs on one shard: the models over its rows, batch by batch, into fresh accumulators.

    Picklable (models, data and settings travel with it); returns ``{"states": {(student, section): state_dict},
    "from_cache": {model: rows read from the cache}}``.
    """

    teacher: ModelAdapter
    students: Sequence[ModelAdapter]
    data: AuditData
    plan: Mapping[tuple[str, str], tuple[Section, Mapping[str, Any]]]  # (student, section) -> (section, options)
    bootstrap: Any
    n_classes: int
    batch_size: int
    cache_dir: Any = None
    keys: Mapping[str, str] = field(default_factory=dict)  # model name -> cache key

    def accumulators(self) -> dict[tuple[str, str], Any]:
        by_name = {s.name: s for s in self.students}
        return {(st, name): section.accumulator(n_classes=self.n_classes, teacher=self.teacher,
                                                student=by_name[st], bootstrap=self.bootstrap, options=opts)
                for (st, name), (section, opts) in self.plan.items()}

    def _probs(self, model: ModelAdapter, x: Any, a: int, b: int, cache: OutputCache | None,
               from_cache: dict[str, int]) -> np.ndarray:
        key = self.keys.get(model.name)
        if cache is not None and key is not None:
            hit = cache.load_chunk(key, a, b)
            if hit is not None:
                raw, probs = hit
                from_cache[model.name] += b - a
                return probs if probs is not None else to_probabilities(raw, _output(model), self.n_classes)
        raw = np.asarray(model.predict_batch(x, ids=self.data.ids[a:b], rows=(a, b)))
        probs = to_probabilities(raw, _output(model), self.n_classes)
        if cache is not None and key is not None:
            cache.save_chunk(key, a, b, raw, probs if _output(model) == "logits" else None, model.query_count)
        return probs

    def __call__(self, shard: Shard) -> dict[str, Any]:
        accs = self.accumulators()
        from_cache = {m.name: 0 for m in (self.teacher, *self.students)}
        # queries counted where they happen: on a remote worker the driver's model objects are never asked
        asked0 = {m.name: m.query_count for m in (self.teacher, *self.students)}
        cache = OutputCache(self.cache_dir) if self.cache_dir is not None else None
        data = self.data
        y = data.y_true
        for a in range(shard.start, shard.stop, self.batch_size):
            b = min(a + self.batch_size, shard.stop)
            x = data.rows(a, b)
            ids = data.ids[a:b]
            sens = None if data.sensitive is None else data.sensitive.iloc[a:b].reset_index(drop=True)
            t = self._probs(self.teacher, x, a, b, cache, from_cache)
            for s in self.students:
                p = self._probs(s, x, a, b, cache, from_cache)
                for (st, name), acc in accs.items():
                    if st == s.name:
                        acc.update(None if y is None else y[a:b], t, p, ids=ids, sensitive=sens)
        asked = {m.name: m.query_count - asked0[m.name] for m in (self.teacher, *self.students)}
        return {"states": {k: acc.state_dict() for k, acc in accs.items()}, "from_cache": from_cache,
                "asked": asked}


def _output(model: ModelAdapter) -> str:
    return "labels" if model.access is Access.LABELS else model.output


def stream_sections(teacher: ModelAdapter, students: Sequence[ModelAdapter], data: AuditData, *,
                    sections: Sequence[Section], bootstrap: Any, options: Mapping[str, Mapping[str, Any]] | None = None,
                    executor: Any = None, batch_size: int = 65_536, shard_rows: int | None = None,
                    cache_dir: Any = None, device: Any = None, precision: str | None = None,
                    has_references: bool = False, seed: int = 0
                    ) -> tuple[dict[str, dict[str, Any]], Any, dict[str, Any]]:
    """Every streaming section for every student, from the models, in fixed memory.

    Returns ``({student: {section: result}}, provenance, timings)``; a section that cannot run on what a pair of models reveals
    gets ``{"available": False, "reason": ...}`` (the one rule of :meth:`Section.skip_reason`). ``n_classes`` comes
    from the teacher (declared, or its first batch's width).
    """
    options = dict(options or {})
    ex = resolve_executor(executor)
    n = len(data)
    t0 = time.perf_counter()
    models = [teacher, *students]
    with _settings(models, device=device, precision=precision):
        for m in models:
            m.prepare(data)
        n_classes = int(teacher.n_classes or data.n_classes or 0)
        if n_classes < 2:  # a torch model's count is inferred from its last layer; else the data decides
            raise ValueError("the teacher's number of classes is unknown; declare n_classes")
        results: dict[str, dict[str, Any]] = {s.name: {} for s in students}
        plan: dict[tuple[str, str], tuple[Section, Mapping[str, Any]]] = {}
        for s in students:
            inputs = SectionInputs(kinds=(KIND_OF_ACCESS[teacher.access], KIND_OF_ACCESS[s.access]),
                                   access=(teacher.access, s.access), has_labels=data.y_true is not None,
                                   has_sensitive=data.sensitive is not None, has_references=has_references,
                                   names=(f"teacher {teacher.name!r}", f"student {s.name!r}"))
            for section in sections:
                why = section.skip_reason(inputs)
                if why is not None:
                    results[s.name][section.name] = {"available": False, "reason": why, "headline": {}}
                else:
                    plan[(s.name, section.name)] = (section, options.get(section.name, {}))
        keys: dict[str, str] = {}
        if cache_dir is not None:
            data_sha = data.fingerprint()
            for m in (teacher, *students):
                keys[m.name] = OutputCache.key(m.fingerprint(), data_sha, _precision_of(m), _output(m),
                                               device=_device_of(m))
        task = ShardTask(teacher=teacher, students=list(students), data=data, plan=plan, bootstrap=bootstrap,
                         n_classes=n_classes, batch_size=int(batch_size), cache_dir=cache_dir, keys=keys)
        merged = task.accumulators()
        empty = task.accumulators()
        cached = {m.name: 0 for m in models}
        asked = {m.name: 0 for m in models}
        for out in ex.map(task, shards_of(n, int(shard_rows or max(n, 1)))):  # merged in shard order
            for key, state in out["states"].items():
                merged[key].merge(empty[key].load_state_dict(state))
            for name, rows in out["from_cache"].items():
                cached[name] += rows
            for name, rows in out["asked"].items():
                asked[name] += rows
        # as in the harness: ``queries`` counts the rows asked for these outputs, in this run or a cached one; the
        # shards report what they asked, wherever they ran (the local executor's shards ask these very objects)
        records = [model_record(m, sha=m.fingerprint(), precision=_precision_of(m),
                                queries=asked[m.name] + cached[m.name], queries_new=asked[m.name],
                                from_cache=cached[m.name] == n, rows_from_cache=cached[m.name])
                   for m in models]
        provenance = provenance_of(models, data, records=records, seed=seed, batch_size=batch_size,
                                   wall_time_s=time.perf_counter() - t0)
    t1 = time.perf_counter()
    for (st, name), acc in merged.items():
        results[st][name] = acc.compute()
    return results, provenance, {"models_and_updates_s": t1 - t0, "compute_s": time.perf_counter() - t1, "executor": ex.name}
