"""Model pools in parallel: train lineage references and controls, and query them, through an executor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit.executors._base import Executor
from kdaudit.harness._executor import get_executor
from kdaudit.models._base import ModelAdapter
from kdaudit.models._precomputed import PrecomputedModel

__all__ = ["PoolOutputs", "query_pool", "train_pool"]


@dataclass
class _Call:
    """A unit task that calls ``fn(unit)``."""

    fn: Callable[[Any], Any]

    def setup(self) -> None:
        pass

    def __call__(self, unit: Any) -> Any:
        return self.fn(unit)


def train_pool(recipe: Callable[[int], Any], seeds: Sequence[int], *, executor: Any = None) -> list[Any]:
    """Train one model per seed with ``recipe(seed)``, in parallel on the executor's workers, in seed order.

    ``recipe`` must be picklable (a module-level function or a ``functools.partial`` of one, e.g. of
    :func:`kdaudit.distill.train_control` with the recipe's architecture and data) and deterministic in its seed:
    then the pool is the same whichever worker trained which member, and a member lost with its worker is trained
    again with the same seed. The trained models travel back to the driver (pickled).
    """
    if not callable(recipe):
        raise invalid_argument("recipe", type(recipe).__name__, "a picklable callable seed -> model")
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in seeds):
        raise invalid_argument("seeds", seeds, "a non-empty sequence of integer seeds")
    ex = get_executor(executor)
    return list(ex.map(_Call(recipe), seeds))


class PoolOutputs(PrecomputedModel):
    """A pool member's outputs on some rows, standing in for the member (same name, kind, hash and size)."""

    def __init__(self, values: Any, *, ids: Any, like: dict[str, Any], output: str) -> None:
        super().__init__(values, name=like["name"], ids=ids, kind=output)
        self._like = like
        self.kind = like["kind"]

    def fingerprint(self) -> str:
        return self._like["sha256"]

    def n_parameters(self) -> int | None:
        return self._like.get("n_parameters")

    def size_bytes(self) -> int | None:  # type: ignore[override]
        return self._like.get("size_bytes")


@dataclass
class _Query:
    """Run one pool member (by index) over the whole data through the harness."""

    models: Sequence[Any]
    data: Any
    batch_size: int
    device: Any
    precision: Any
    seed: int

    def setup(self) -> None:
        pass

    def __call__(self, i: int) -> tuple[np.ndarray, str, dict[str, Any]]:
        from kdaudit import harness
        from kdaudit.models import as_model

        m = self.models[i]
        m = m if isinstance(m, ModelAdapter) else as_model(m, name=f"member{i + 1}")
        run = harness.run([m], self.data, batch_size=self.batch_size, device=self.device, precision=self.precision,
                          seed=self.seed, progress=False)
        out = run.outputs[m.name]
        values, output = (out.labels, "labels") if str(m.access) == "labels" else (out.probs, "probabilities")
        return values, output, m.describe()


def query_pool(models: Sequence[Any], data: Any, *, executor: Any = None, batch_size: int = 256,
               device: Any = None, precision: Any = None, seed: int = 0) -> list[PoolOutputs]:
    """Each pool member's outputs on ``data`` (one member per task, in parallel), as stand-ins for the members.

    Give the returned stand-ins to :func:`kdaudit.lineage_test` as ``references=`` / ``controls=``: the pool is
    then run once, across the workers, whatever the number of suspects tested against it. Black-box models do not
    belong here: a suspect behind an API is queried by the lineage test on the driver, which asks each probe once.
    """
    from kdaudit.data import AuditData
    from kdaudit.models import BlackBoxModel

    if not isinstance(data, AuditData):
        data = AuditData(data)
    for i, m in enumerate(models):
        if isinstance(m, BlackBoxModel):
            raise invalid_argument(f"models[{i}]", m.name, "models the workers may run (a black box is queried on "
                                                           "the driver, once per probe)")
    ex: Executor = get_executor(executor)
    task = _Query(list(models), data, batch_size, device, precision, seed)
    return [PoolOutputs(v, ids=data.ids, like=like, output=output)
            for v, output, like in ex.map(task, list(range(len(models))))]
