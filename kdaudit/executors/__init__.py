"""kdaudit.executors: where an audit runs. The local executor (this process) and Ray (a cluster, or a local Ray).

An executor runs a picklable task over the units of an audit (fixed-size row ranges of in-memory data, or row groups
of sharded parquet files) and yields each unit's result (fixed-size accumulator states) in unit order; the driver
merges them in that order, so every executor gives byte-identical results. See :class:`Executor`.

>>> import kdaudit                                                     # doctest: +SKIP
>>> kdaudit.audit(teacher, students, data, executor="ray")                # doctest: +SKIP
>>> kdaudit.audit(teacher, students, data,                                # doctest: +SKIP
...               executor=RayExecutor(address="auto", num_actors=8, num_gpus_per_actor=1))
"""

from kdaudit.executors._base import EXECUTORS, Executor, LocalExecutor, UnitTask
from kdaudit.executors._pool import PoolOutputs, query_pool, train_pool
from kdaudit.executors._ray import RayExecutor
from kdaudit.executors._sources import DEFAULT_BLOCK_ROWS, ColumnModel, MemorySource, ParquetSource
from kdaudit.harness._executor import get_executor, register_executor

__all__ = [
    "DEFAULT_BLOCK_ROWS",
    "EXECUTORS",
    "ColumnModel",
    "Executor",
    "LocalExecutor",
    "MemorySource",
    "ParquetSource",
    "PoolOutputs",
    "RayExecutor",
    "UnitTask",
    "get_executor",
    "query_pool",
    "register_executor",
    "train_pool",
]
