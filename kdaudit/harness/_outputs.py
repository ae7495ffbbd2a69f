"""What the harness returns: per-model outputs aligned with the data, and the provenance of the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit.models._base import Access

__all__ = ["ModelOutputs", "ModelRecord", "Outputs", "Provenance"]


@dataclass(frozen=True, eq=False)
class ModelOutputs:
    """One model's outputs on every row of the audit data, in the data's order.

    ``probs`` is (N, C) float32. For ``TOP_K`` access it is zero outside each row's top k (rows sum to at most 1);
    for ``LABELS`` access it is one-hot. ``labels`` is the predicted class index per row (argmax, or the label the
    model returned). ``logits`` is kept when the model produced them.
    """

    name: str
    probs: np.ndarray
    labels: np.ndarray
    access: Access = Access.PROBABILITIES
    top_k: int | None = None
    logits: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return int(self.probs.shape[1])

    def __len__(self) -> int:
        return int(self.probs.shape[0])


@dataclass(frozen=True, eq=False)
class Outputs:
    """Outputs of several models on the same rows. The first entry is the teacher (or ensemble teacher)."""

    models: Mapping[str, ModelOutputs]
    ids: np.ndarray
    data_sha256: str
    teacher: str

    def __getitem__(self, name: str) -> ModelOutputs:
        try:
            return self.models[name]
        except KeyError:
            raise invalid_argument("name", name, f"one of {list(self.models)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @property
    def students(self) -> list[str]:
        return [n for n in self.models if n != self.teacher]


@dataclass(frozen=True)
class ModelRecord:
    """Provenance of one model in a run.

    ``queries`` counts the rows the model was asked about to produce these outputs, over every run that
    contributed to them (a cached or resumed run reports the same number as a fresh one); ``queries_this_run``
    counts only the new ones (0 on a cache hit) and, like the wall time, is left out of ``to_dict(
    include_timing=False)``. ``wall_time_s`` is the time spent in the model's calls; on CUDA, where kernels run
    asynchronously, it is the time to launch them, and the run's total wall time is the meaningful figure.
    """

    name: str
    kind: str
    sha256: str
    access: str
    n_classes: int
    n_parameters: int | None = None
    size_bytes: int | None = None
    queries: int = 0
    from_cache: bool = False
    wall_time_s: float = 0.0
    members: tuple[str, ...] = ()
    queries_this_run: int = 0
    rows_from_cache: int = 0
    device: str = ""
    precision: str = ""
    file_sha256: str | None = None

    def to_dict(self, *, include_timing: bool = True) -> dict[str, Any]:
        d = {
            "name": self.name,
            "kind": self.kind,
            "sha256": self.sha256,
            "access": self.access,
            "n_classes": self.n_classes,
            "n_parameters": self.n_parameters,
            "size_bytes": self.size_bytes,
            "queries": self.queries,
            "members": list(self.members),
            "device": self.device,
            "precision": self.precision,
        }
        if self.file_sha256 is not None:
            d["file_sha256"] = self.file_sha256
        if include_timing:
            # these change between a fresh run and a cached or resumed one, so they stay out of results.json
            d["from_cache"] = self.from_cache
            d["wall_time_s"] = self.wall_time_s
            d["queries_this_run"] = self.queries_this_run
            d["rows_from_cache"] = self.rows_from_cache
        return d


@dataclass(frozen=True)
class Provenance:
    """How outputs were produced: hashes, versions, seed, device, timings and query counts.

    ``to_dict(include_timing=False)`` is the deterministic part that goes into ``results.json``; wall times and
    cache hits vary between runs and go into the run record instead.
    """

    data_sha256: str
    n_rows: int
    models: tuple[ModelRecord, ...]
    versions: Mapping[str, str]
    seed: int
    device: str
    precision: str
    batch_size: int
    wall_time_s: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self, *, include_timing: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "data_sha256": self.data_sha256,
            "n_rows": self.n_rows,
            "models": [m.to_dict(include_timing=include_timing) for m in self.models],
            "versions": dict(self.versions),
            "seed": self.seed,
            "device": self.device,
            "precision": self.precision,
            "batch_size": self.batch_size,
        }
        if include_timing:
            d["wall_time_s"] = self.wall_time_s
        d.update(self.extra)
        return d
