"""The harness: every model sees the same rows in the same order; outputs, provenance, caching, cost.
For language models: the same prompts in the same order (``score_all``, ``generate_all``)."""

from kdaudit.harness._cost import measure_cost
from kdaudit.harness._executor import (
    EXECUTORS,
    Executor,
    LocalExecutor,
    Shard,
    get_executor,
    register_executor,
    shards_of,
)
from kdaudit.harness._outputs import ModelOutputs, ModelRecord, Outputs, Provenance
from kdaudit.harness._run import RunResult, library_versions, run
from kdaudit.harness._sequence import MAX_TOP_K, Generations, OutputKind, TokenTopK
from kdaudit.harness._sequence_run import (
    ComparisonLevel,
    SequenceRunResult,
    comparison_level,
    generate_all,
    score_all,
)

__all__ = [
    "ComparisonLevel",
    "EXECUTORS",
    "Executor",
    "Generations",
    "LocalExecutor",
    "MAX_TOP_K",
    "ModelOutputs",
    "ModelRecord",
    "OutputKind",
    "Outputs",
    "Provenance",
    "RunResult",
    "SequenceRunResult",
    "Shard",
    "TokenTopK",
    "comparison_level",
    "generate_all",
    "get_executor",
    "library_versions",
    "measure_cost",
    "register_executor",
    "run",
    "score_all",
    "shards_of",
]
