"""Executors by name: ``audit(executor="local" | "ray" | an executor)``."""

from __future__ import annotations

from typing import Any

from kdaudit._exceptions import invalid_argument
from kdaudit.executors._base import EXECUTORS, Executor, LocalExecutor
from kdaudit.executors._ray import RayExecutor

__all__ = ["get_executor"]


def get_executor(executor: Any = None, **options: Any) -> Any:
    """An executor from a name (``"local"``, ``"ray"``; ``options`` go to its constructor), an executor (returned
    as is), or None (the default: the local executor)."""
    if executor is None:
        if options:
            raise invalid_argument("executor", None, "a name when options are given")
        return LocalExecutor()
    if isinstance(executor, Executor) or (hasattr(executor, "map") and hasattr(executor, "name")):
        # an executor of ours, or any object with the engine's interface (name, map(fn, shards))
        if options:
            raise invalid_argument("executor", type(executor).__name__, "a name when options are given")
        return executor
    if executor == "local":
        if options:
            raise invalid_argument("executor options", sorted(options), "no options for the local executor")
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor(**options)
    raise invalid_argument("executor", executor, f"one of {EXECUTORS} or an Executor instance")
