"""The cost section's computation: parameters and size of every model (deterministic, in results.json), and, when
asked, their latency and throughput (timed in interleaved rounds; run.json only).

A black box is never queried here: :func:`kdaudit.harness.measure_cost` reports what its own answers cost instead of
timing fresh queries.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Mapping

from kdaudit._estimate import Estimate
from kdaudit._io import to_jsonable
from kdaudit.sections._base import ModelContext, ModelResults

__all__ = ["compute_cost", "ratio"]

_COST_CONDITIONS = ("batch_size", "n_batches", "rounds", "device")
_COST_ROUNDS = 3


def ratio(a: Any, b: Any) -> Estimate:
    """``a / b`` as an exact estimate (no interval); NaN when either is missing or ``b`` is zero."""
    if a is None or b is None or not b:
        return Estimate(math.nan, method="exact (no interval)")
    return Estimate(float(a) / float(b), method="exact (no interval)")


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


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def compute_cost(context: ModelContext) -> ModelResults:
    """Every student's cost relative to the teacher; the teacher is measured once for all of them."""
    from kdaudit.harness import measure_cost as _measure
    from kdaudit.harness._cost import pool_rounds, speed_ratio

    teacher, students = context.teacher, list(context.students)
    cost_list = [teacher, *students]
    raws: dict[str, list[dict[str, Any]]] = {m.name: [] for m in cost_list}
    if context.measure_cost:
        context.progress(f"cost: timing {len(cost_list)} models, {_COST_ROUNDS} interleaved rounds")
        # Interleaved rounds, then each model's median round: a burst of load on a shared machine then hits every
        # model alike instead of one model's whole measurement.
        for _ in range(_COST_ROUNDS):
            for m in cost_list:
                raws[m.name].append(_measure(m, context.data, batch_size=context.batch_size, device=context.device))
    models: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    conditions: dict[str, Any] = {}
    batches: dict[str, list[float]] = {}
    for m in cost_list:
        fixed = {"n_parameters": m.n_parameters(), "size_bytes": m.size_bytes()}
        if raws[m.name]:
            # Every timed batch of every round, pooled: the summary and the speed ratio's interval use them all.
            pooled = pool_rounds(raws[m.name])
            batches[m.name] = pooled.pop("batch_ms")
            f2, timing, cond = _cost_split(pooled)
            fixed.update(f2)
            timings[m.name] = timing
            conditions = dict(cond, rounds=_COST_ROUNDS, torch_threads=_torch_threads())
        models[m.name] = fixed
    for s in students:
        if batches.get(s.name) and batches.get(teacher.name):
            timings[s.name]["throughput_ratio"] = speed_ratio(batches[teacher.name], batches[s.name],
                                                              seed=context.seed)
    by_student = {}
    t_c = models[teacher.name]
    for s in students:
        s_c = models[s.name]
        headline = {"parameter_ratio": ratio(s_c.get("n_parameters"), t_c.get("n_parameters")),
                    "size_ratio": ratio(s_c.get("size_bytes"), t_c.get("size_bytes"))}
        by_student[s.name] = to_jsonable({"available": True, "reason": None, "headline": headline,
                                          "teacher": t_c, "student": s_c})
    return ModelResults(by_student=by_student, results={"cost": {"models": to_jsonable(models)}},
                        run_info={"cost": to_jsonable(timings), "cost_conditions": to_jsonable(conditions)})
