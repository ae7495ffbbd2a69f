"""The executor protocol: run a picklable task over the units of a job and hand back each unit's result in order.

An audit is a fold. The rows are cut into **units** whose boundaries depend on the data only (a fixed number of rows
of an in-memory :class:`~kdaudit.AuditData`, or whole row groups of sharded parquet files), never on the number of
workers. A **task** turns one unit into fixed-size accumulator states: it runs every model over the unit's rows (the
harness, teacher first, identical rows in identical order for every model) and feeds the outputs to a fresh
accumulator of every section. The driver merges the states **in unit order**. Floating-point addition is not
associative, so this order is what makes the result exact: the same units merged in the same order give the same
bits whichever executor computed them, on how many workers, after how many retries.

An :class:`Executor` therefore promises only this:

* :meth:`Executor.map` calls ``task.setup()`` (when the task has one) once in every worker before its first unit,
  then ``task(unit)`` for every unit, and yields the results **in the order of** ``units``, each exactly once;
* a unit whose worker dies is computed again (a task is a pure function of its unit, so a retry gives the same
  bits); the driver never sees partial results.

The names follow the streaming engine's executor interface (``map(fn, shards)``, ``name``; issue 11), so that the
engine's shard task runs unchanged on :class:`~kdaudit.executors.RayExecutor`: a unit may be any picklable value (a
row range, a ``Shard``, a parquet row-group list), and ``setup`` is optional.

What a task may return is up to the task (here: accumulator states, fixed size in the number of rows); what travels
to the workers is the task itself (models, or factories that build them, and the data source: in-memory rows travel
once, parquet shards as paths that each worker reads).
"""

from __future__ import annotations

import abc
from typing import Any, Iterator, Protocol, Sequence

# one local executor, one setup rule and one registry of executors by name for the engine and the executors (the
# engine's, in the harness layer; this package registers its own executors into it)
from kdaudit.harness._executor import EXECUTORS, LocalExecutor
from kdaudit.harness._executor import run_setup as setup

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "UnitTask", "setup"]


class UnitTask(Protocol):
    """What an executor runs: ``task(unit) -> result`` per unit (deterministic); an optional ``setup()`` runs once
    per worker first (building models there, say)."""

    def __call__(self, unit: Any) -> Any: ...


class Executor(abc.ABC):
    """An executor that holds workers (:class:`~kdaudit.executors.RayExecutor`): the engine's interface (``name``,
    ``map``; :class:`kdaudit.harness.Executor`) plus ``describe`` and ``close``. Runs a :class:`UnitTask` over units
    and yields the results in unit order (see the module docstring). The local executor is the engine's own
    :class:`kdaudit.harness.LocalExecutor`."""

    name: str = "executor"

    @abc.abstractmethod
    def map(self, task: UnitTask, units: Sequence[Any]) -> Iterator[Any]:
        """Yield ``task(unit)`` for every unit, in the order of ``units``; ``task.setup()`` runs first per worker."""

    def describe(self) -> dict[str, Any]:
        """A description for the run record (run.json), never for results.json: results do not depend on it."""
        return {"kind": self.name}

    def close(self) -> None:
        """Release what the executor holds (workers); a later :meth:`map` starts them again."""
