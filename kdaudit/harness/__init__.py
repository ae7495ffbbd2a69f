"""The harness: every model sees the same rows in the same order; outputs, provenance, caching, cost."""

from kdaudit.harness._cost import measure_cost
from kdaudit.harness._executor import EXECUTORS, Executor, LocalExecutor, Shard, resolve_executor, shards_of
from kdaudit.harness._outputs import ModelOutputs, ModelRecord, Outputs, Provenance
from kdaudit.harness._run import RunResult, library_versions, run

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "ModelOutputs",
    "ModelRecord",
    "Outputs",
    "Provenance",
    "RunResult",
    "Shard",
    "library_versions",
    "measure_cost",
    "resolve_executor",
    "run",
    "shards_of",
]
