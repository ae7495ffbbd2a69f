"""Where the engine's rows come from: a source cuts them into **units** (shards) whose boundaries depend on the
data only, never on the number of workers, and loads one unit's rows where the shard runs.

:class:`MemorySource` cuts an in-memory :class:`~kdaudit.AuditData` into consecutive row ranges;
``kdaudit.executors.ParquetSource`` (sharded parquet read by the workers) keeps the same interface: ``units``,
``load(unit, columns)``, ``n_rows``, ``name``, ``kind``, ``has_labels``, ``sensitive_names``,
``fingerprint(unit_hashes)``, ``summary(merged)``, ``head()`` and ``describe()``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit.data._audit_data import AuditData
from kdaudit.harness._executor import Shard, shards_of

__all__ = ["DEFAULT_BLOCK_ROWS", "Block", "MemorySource", "as_source", "check_block_rows", "merge_summaries",
           "unit_summary"]

#: Rows per unit of an in-memory source. A unit is the grain of exactness (states merge in unit order), of retries
#: and of memory: a unit's outputs, and the sections' temporaries over them (the temperature fit's 29 grid points per
#: row, the classwise bins' one cell per class), are held while its sections fold it. 65,536 rows keep that to about
#: 150 MB at 10 classes and give a 10^7-row audit 153 units to spread over workers. An audit of at most this many
#: rows is one unit: the harness runs every model over all of it, as a plain in-memory run would.
DEFAULT_BLOCK_ROWS = 1 << 16


def check_block_rows(block_rows: Any) -> int:
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
        raise invalid_argument("block_rows", block_rows, "an integer >= 1 (rows per unit)")
    return int(block_rows)


@dataclass(frozen=True)
class Block:
    """One unit's rows: the audit data of the unit, the output columns some models read (``ColumnModel``), and a
    hash of both (empty when the source hashes its data itself)."""

    data: AuditData
    columns: Mapping[str, np.ndarray]
    fingerprint: str


class MemorySource:
    """An in-memory :class:`~kdaudit.AuditData` cut into units (:class:`~kdaudit.harness.Shard`) of ``block_rows``
    consecutive rows."""

    kind = "memory"

    def __init__(self, data: AuditData, *, block_rows: int = DEFAULT_BLOCK_ROWS) -> None:
        if not isinstance(data, AuditData):
            raise invalid_argument("data", type(data).__name__, "a kdaudit.AuditData")
        self.data = data
        self.block_rows = check_block_rows(block_rows)
        self.units: list[Shard] = shards_of(len(data), self.block_rows)

    @property
    def n_rows(self) -> int:
        return len(self.data)

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def has_labels(self) -> bool:
        return self.data.y_true is not None

    @property
    def sensitive_names(self) -> list[str]:
        return [] if self.data.sensitive is None else [str(c) for c in self.data.sensitive.columns]

    def load(self, unit: Shard, columns: Sequence[str] = ()) -> Block:
        if columns:
            raise invalid_argument("models", f"column models {list(columns)}",
                                   "column models only with a ParquetSource (in memory, use PrecomputedModel)")
        a, b = unit.start, unit.stop
        d = self.data
        if (a, b) == (0, len(d)):  # one unit: the caller's own object (its fingerprint is already computed)
            return Block(d, {}, "")
        part = AuditData(X=d.rows(a, b), y_true=None if d.y_true is None else d.y_true[a:b],
                         sensitive=None if d.sensitive is None else d.sensitive.iloc[a:b].reset_index(drop=True),
                         ids=d.ids[a:b], classes=d.classes, name=d.name, source=d.source)
        return Block(part, {}, "")

    def fingerprint(self, unit_hashes: Sequence[str]) -> str:
        return self.data.fingerprint()  # the rows are here: the audit's usual data hash

    def summary(self, merged: Mapping[str, Any]) -> dict[str, Any]:
        return self.data.summary()

    def head(self) -> AuditData:
        """Rows the driver may use itself (cost timing, default lineage probes): here, all of them."""
        return self.data

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "block_rows": self.block_rows, "units": len(self.units)}


def unit_summary(block: Block, n_classes: int | None) -> dict[str, Any]:
    """The additive summary of one unit (row count, class counts, group counts) a sharded source reports."""
    d = block.data
    out: dict[str, Any] = {"n_rows": len(d), "hash": block.fingerprint}
    if d.y_true is not None:
        out["class_counts"] = np.bincount(d.y_true, minlength=n_classes or 0)
    if d.sensitive is not None:
        out["groups"] = {c: Counter(d.sensitive[c].value_counts().to_dict()) for c in d.sensitive.columns}
    return out


def merge_summaries(parts: Sequence[Mapping[str, Any]], source: Any) -> dict[str, Any]:
    """The units' summaries added up, in unit order (the data hash covers the units' hashes in that order)."""
    counts = None
    groups: dict[str, Counter] = {}
    for p in parts:
        if "class_counts" in p:
            c = p["class_counts"]
            if counts is None:
                counts = c.astype(np.int64)
            else:
                width = max(len(counts), len(c))
                counts = np.pad(counts, (0, width - len(counts))) + np.pad(c, (0, width - len(c)))
        for col, cnt in p.get("groups", {}).items():
            groups.setdefault(col, Counter()).update(cnt)
    return {"sha256": source.fingerprint([p["hash"] for p in parts]),
            "class_counts": None if counts is None else [int(v) for v in counts],
            "groups": {c: {k: int(v) for k, v in sorted(g.items())} for c, g in groups.items()}}


def as_source(data: Any, *, block_rows: int | None = None) -> Any:
    """The source behind ``data``: a source (``units`` and ``load``, such as a ParquetSource) as is, an AuditData
    cut into units of ``block_rows`` rows (default :data:`DEFAULT_BLOCK_ROWS`)."""
    if isinstance(data, AuditData):
        return MemorySource(data, block_rows=DEFAULT_BLOCK_ROWS if block_rows is None else block_rows)
    if hasattr(data, "units") and callable(getattr(data, "load", None)):
        return data
    raise invalid_argument("data", type(data).__name__, "a kdaudit.AuditData (inputs, labels, sensitive, ids) or "
                                                        "a kdaudit.executors.ParquetSource")
