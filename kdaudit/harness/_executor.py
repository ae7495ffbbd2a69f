"""Executors: where the shards of an audit run. The engine cuts the rows into shards, and an executor runs one
function per shard and hands back each shard's result, in shard order.

The contract (what a distributed executor, such as ``kdaudit.executors.RayExecutor``, must keep):

* ``map(fn, shards)`` calls ``fn(shard)`` once per shard (retrying a failed call is allowed: ``fn`` is idempotent
  given the on-disk output cache) and yields the results **in the order of** ``shards``, whatever order they finish
  in. The driver merges them in that order, so floating-point sums, and thus results.json, are identical for any
  number of workers.
* ``fn`` and a :class:`Shard` are picklable; ``fn``'s result is small and fixed-size (accumulators), never the
  rows' outputs (unless the audit asked to keep them).
* Models, data and the cache directory must be reachable from where ``fn`` runs (a local path for the local
  executor; a shared file system or object store for a cluster).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar, runtime_checkable

from kdaudit._exceptions import invalid_argument

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "Shard", "resolve_executor", "run_setup", "shards_of"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Rows ``start:stop`` of the audit data; ``index`` is the shard's place in the merge order."""

    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def shards_of(n_rows: int, shard_rows: int) -> list[Shard]:
    """Consecutive shards of at most ``shard_rows`` rows covering ``0:n_rows``."""
    if not isinstance(shard_rows, int) or isinstance(shard_rows, bool) or shard_rows < 1:
        raise invalid_argument("shard_rows", shard_rows, "an integer >= 1")
    return [Shard(i, a, min(a + shard_rows, n_rows)) for i, a in enumerate(range(0, n_rows, shard_rows))]


@runtime_checkable
class Executor(Protocol):
    """Runs one function per shard; see the module's docstring for the contract."""

    name: str

    def map(self, fn: Callable[[Shard], T], shards: Sequence[Shard]) -> Iterator[T]:
        """``fn(shard)`` for every shard, yielded in the order of ``shards``."""
        ...


def run_setup(fn: Any) -> None:
    """Call ``fn.setup()`` if ``fn`` has one: what a worker does once before its first shard (build models, say)."""
    setup = getattr(fn, "setup", None)
    if callable(setup):
        setup()


class LocalExecutor:
    """The default: every shard in this process, one after the other (memory holds one batch of outputs). The
    reference every other executor (``kdaudit.executors.RayExecutor``) must match byte for byte."""

    name = "local"

    def map(self, fn: Callable[[Shard], T], shards: Sequence[Shard]) -> Iterator[T]:
        run_setup(fn)
        for shard in shards:
            yield fn(shard)

    def describe(self) -> dict[str, Any]:
        """A description for the run record (run.json), never for results.json."""
        return {"kind": self.name}

    def close(self) -> None:
        """Nothing to release: no workers."""

    def __repr__(self) -> str:
        return "LocalExecutor()"


#: executors the harness layer knows by name (``audit`` resolves names with ``kdaudit.executors.get_executor``, which
#: adds ``"ray"``)
EXECUTORS: dict[str, Callable[[], Any]] = {"local": LocalExecutor}


def resolve_executor(executor: Any) -> Executor:
    """An executor from a name in :data:`EXECUTORS`, an object with ``map``, or None (the local executor)."""
    if executor is None:
        return LocalExecutor()
    if isinstance(executor, str):
        factory = EXECUTORS.get(executor)
        if factory is None:
            raise invalid_argument("executor", executor, f"one of {', '.join(sorted(EXECUTORS))}, or an object with "
                                   "map(fn, shards) (see kdaudit.harness.Executor)")
        return factory()
    if isinstance(executor, Executor):
        return executor
    raise invalid_argument("executor", type(executor).__name__, "an executor name or an object with a name and "
                           "map(fn, shards)")
