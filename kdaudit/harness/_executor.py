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

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar, runtime_checkable

from kdaudit._exceptions import invalid_argument

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "Shard", "get_executor", "register_executor", "run_setup",
           "shards_of"]

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


#: The one registry of executors by name: ``name -> factory(**options)``. The harness registers the local executor;
#: ``kdaudit.executors`` registers ``"ray"`` when it is imported (the audit imports it before looking a name up), so
#: this layer never imports the executors above it.
EXECUTORS: dict[str, Callable[..., Any]] = {}


def register_executor(name: str, factory: Callable[..., Any]) -> None:
    """Make ``factory(**options)`` the executor that ``get_executor(name, **options)`` (and so ``audit(executor=
    name)``) builds. Registering a name again replaces its factory."""
    if not isinstance(name, str) or not name:
        raise invalid_argument("name", name, "a non-empty executor name")
    if not callable(factory):
        raise invalid_argument("factory", type(factory).__name__, "a callable that builds an executor")
    EXECUTORS[name] = factory


register_executor("local", LocalExecutor)


def get_executor(executor: Any = None, **options: Any) -> Executor:
    """The one executor lookup: a name in :data:`EXECUTORS` (``options`` go to its factory), an executor (an object
    with ``name`` and ``map(fn, shards)``, returned as is), or None (the local executor)."""
    if executor is None:
        if options:
            raise invalid_argument("executor", None, "a name when options are given")
        return LocalExecutor()
    if isinstance(executor, str):
        factory = EXECUTORS.get(executor)
        if factory is None:
            raise invalid_argument("executor", executor, f"one of {', '.join(sorted(EXECUTORS))}, or an object with "
                                   "a name and map(fn, shards) (see kdaudit.harness.Executor)")
        _check_options(executor, factory, options)
        return factory(**options)
    if isinstance(executor, Executor):
        if options:
            raise invalid_argument("executor", type(executor).__name__, "a name when options are given")
        return executor
    raise invalid_argument("executor", type(executor).__name__, "an executor name or an object with a name and "
                           "map(fn, shards)")


def _check_options(name: str, factory: Callable[..., Any], options: dict[str, Any]) -> None:
    """Options the factory does not take are refused by name (not a TypeError from inside the factory)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature: let it check for itself
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = sorted(n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise invalid_argument("executor options", unknown, f"options of the {name} executor "
                               f"({', '.join(accepted) or 'none'})")
