"""Helpers shared by the metric families: input checks fused with the row scan, result containers, definitions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from kdaudit._estimate import Estimate
from kdaudit._exceptions import invalid_argument
from kdaudit._io import to_jsonable
from kdaudit._validation import (
    PROB_SUM_ATOL,
    check_consistent_length,
    check_labels,
    check_probabilities,
    check_sample_weight,
)
from kdaudit.metrics._resampling import Bootstrap, block_of

__all__ = [
    "SectionResult",
    "blocks_for",
    "check_ids",
    "check_rows",
    "default_chunk",
    "definition",
    "evaluate",
    "labelled_pair",
    "labels_of",
    "point_only",
    "scan_probabilities",
]

# Rows per chunk in the row scans: a chunk of float32 probabilities stays in the CPU cache (~2 MiB) while it is
# checked, reduced and arg-maxed, so large inputs are read from memory once.
_CHUNK_BYTES = 1 << 21


def _chunk_rows(n_cols: int, itemsize: int) -> int:
    return max(256, _CHUNK_BYTES // max(1, n_cols * itemsize))


def scan_probabilities(
    p: Any, name: str, *, n_classes: int | None = None, allow_partial: bool = False, y: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Check a probability matrix and reduce it row by row in one cache-friendly pass.

    Returns ``(p, top_label, top_confidence, p_true)``: ``p`` as a 2-D float array (not copied when already float),
    the arg-max class (first of ties, like ``np.argmax``), its probability (in ``p``'s dtype) and, when ``y`` is
    given, the probability of the true class. The checks are those of ``kdaudit._validation.check_probabilities``
    (finite, within [0, 1], rows summing to 1 or, with ``allow_partial``, to at most 1); on failure that function is
    called on the whole array so the error message is the standard one.
    """
    arr = np.asarray(p)
    if arr.ndim != 2 or arr.shape[0] == 0 or not np.issubdtype(arr.dtype, np.floating):
        arr = check_probabilities(arr, name, n_classes=n_classes, allow_partial=allow_partial)
    if n_classes is not None and arr.shape[1] != n_classes:
        check_probabilities(arr, name, n_classes=n_classes)
    n, c = arr.shape
    label = np.empty(n, dtype=np.int64)
    conf = np.empty(n, dtype=arr.dtype)
    p_true = None if y is None else np.empty(n, dtype=arr.dtype)
    step = _chunk_rows(c, arr.itemsize)
    ok = True
    for start in range(0, n, step):
        chunk = arr[start:start + step]
        # The row maxima are the confidences and, with the minimum, check the range; NaN propagates through max and
        # sum, so these reductions also check finiteness. Sums in the input dtype: float32 error is far below the
        # tolerance.
        top = chunk.max(axis=1)
        sums = chunk.sum(axis=1)
        if not (chunk.min() >= -1e-6 and (top <= 1 + 1e-6).all() and (sums <= 1 + PROB_SUM_ATOL).all()
                and (allow_partial or (sums >= 1 - PROB_SUM_ATOL).all())):
            ok = False
            break
        label[start:start + step] = chunk.argmax(axis=1)
        conf[start:start + step] = top
        if p_true is not None:
            p_true[start:start + step] = chunk[np.arange(len(chunk)), y[start:start + step]]
    if not ok:
        check_probabilities(arr, name, n_classes=n_classes, allow_partial=allow_partial)
        raise AssertionError("check_probabilities accepted what the fast scan rejected")  # pragma: no cover
    return arr, label, conf, p_true


def labels_of(x: Any, name: str, n_classes: int | None = None) -> np.ndarray:
    """Class labels from a 1-D label array, or the arg-max of a 2-D (possibly top-k) probability array."""
    if np.ndim(x) == 1:
        return check_labels(x, name, n_classes=n_classes)
    return scan_probabilities(x, name, n_classes=n_classes, allow_partial=True)[1]


def labelled_pair(y_true: Any, p_teacher: Any, p_student: Any, sample_weight: Any
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True labels, the two models' predicted labels and the weights (ones when None), checked together."""
    y = check_labels(y_true, "y_true")
    lt, ls = labels_of(p_teacher, "p_teacher"), labels_of(p_student, "p_student")
    check_consistent_length(y_true=y, p_teacher=lt, p_student=ls)
    w = check_sample_weight(sample_weight, len(y))
    return y, lt, ls, (np.ones(len(y)) if w is None else w)


def default_chunk(n_classes: int) -> int:
    """Rows per chunk in the section functions: about 4M probability entries per model."""
    return max(1024, (1 << 22) // max(1, n_classes))


def check_ids(ids: Any, n: int) -> np.ndarray:
    """Sample ids of a chunk: required by accumulators (they decide each row's bootstrap block)."""
    if ids is None:
        raise invalid_argument("ids", None, f"an array of {n} sample ids (AuditData.ids); they place rows in "
                                            "bootstrap blocks so that shards merge exactly")
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise invalid_argument("ids", f"shape {ids.shape}", f"shape ({n},)")
    return ids


def check_rows(y_true: Any, n_classes: int, n: int, sample_weight: Any) -> tuple[np.ndarray | None, np.ndarray]:
    """Labels (or None) and weights (ones when None) of a chunk of ``n`` rows."""
    y = None if y_true is None else check_labels(y_true, "y_true", n_classes=n_classes)
    if y is not None:
        check_consistent_length(y_true=y, rows=np.empty(n))
    w = check_sample_weight(sample_weight, n)
    return y, (np.ones(n) if w is None else w)


def blocks_for(ids: Any, n: int, bootstrap: Bootstrap) -> np.ndarray:
    return block_of(check_ids(ids, n), bootstrap.n_blocks)


def definition(label: str, formula: str, higher_is_better: bool | None, description: str) -> dict[str, Any]:
    return {"label": label, "formula": formula, "higher_is_better": higher_is_better, "description": description}


@dataclass(frozen=True)
class SectionResult:
    """Result of one metric family for one teacher/student pair.

    ``headline`` maps metric keys (each defined in the family's ``DEFINITIONS``) to Estimates; ``detail`` holds the
    rest (per-class and per-bin tables, counts, tests). ``to_dict()`` gives
    ``{"available", "reason", "headline": {key: Estimate.to_dict()}, **detail}`` with plain JSON values.
    """

    available: bool
    reason: str | None = None
    headline: Mapping[str, Estimate] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Estimate:
        try:
            return self.headline[key]
        except KeyError:
            raise invalid_argument("key", key, f"one of {sorted(self.headline)}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "available": self.available,
            "reason": self.reason,
            "headline": {k: v.to_dict() for k, v in sorted(self.headline.items())},
        }
        out.update(to_jsonable(dict(self.detail)))
        return out


def evaluate(bootstrap: Bootstrap, stats: list, fn: Any) -> dict[str, Any]:
    """Apply ``fn(*totals) -> {key: array}`` to the totals and to every bootstrap replicate; return Estimates.

    All ``stats`` share the bootstrap's blocks, so replicate ``r`` weights the same rows in each: intervals of
    differences and ratios across them are paired. For BCa intervals ``fn`` is also applied to the leave-one-block-out
    totals (the jackknife). Stats kept without blocks (``n_blocks == 1``, used when a table would be too large) enter
    replicates as NaN, so their metrics get point estimates only. Values are a 0-d Estimate or an object array.
    """
    nb = bootstrap.n_blocks
    blocked = [s.n_blocks == nb for s in stats]
    with np.errstate(divide="ignore", invalid="ignore"):
        totals = [s.total() for s in stats]
        point = fn(*totals)
        reps = jack = None
        if bootstrap.n_replicates:
            w = bootstrap.weights()
            reps = fn(*(s.replicates(w) if b else np.full((bootstrap.n_replicates, s.n_cells, s.n_values), np.nan)
                        for s, b in zip(stats, blocked)))
            if bootstrap.interval == "bca" and nb > 1:
                jack = fn(*(t[None] - s.sums if b else np.broadcast_to(t, (nb, *t.shape))
                            for s, t, b in zip(stats, totals, blocked)))
                empty = ~np.any([s.sums.reshape(nb, -1).any(axis=1) for s, b in zip(stats, blocked) if b], axis=0)
    # All keys go through one interval computation: flatten, concatenate, split back.
    keys = list(point)
    shapes = [np.shape(point[k]) for k in keys]
    sizes = [int(np.prod(sh)) for sh in shapes]
    flat_point = np.concatenate([np.asarray(point[k], dtype=np.float64).ravel() for k in keys])
    if reps is None:
        flat = np.array([Estimate(v) for v in flat_point] + [None], dtype=object)[:-1]
    else:
        r = bootstrap.n_replicates
        flat_reps = np.concatenate([np.asarray(reps[k], dtype=np.float64).reshape(r, -1) for k in keys], axis=1)
        flat_jack = None
        if jack is not None:
            flat_jack = np.concatenate([np.asarray(jack[k], dtype=np.float64).reshape(nb, -1) for k in keys], axis=1)
            flat_jack[empty] = np.nan
        flat = bootstrap.from_replicates(flat_point, flat_reps, flat_jack)
    out: dict[str, Any] = {}
    start = 0
    for key, shape, size in zip(keys, shapes, sizes):
        arr = flat[start:start + size].reshape(shape)
        start += size
        out[key] = arr[()] if arr.ndim == 0 else arr
    return out


def point_only(est: Estimate, why: str) -> Estimate:
    return Estimate(est.value, method=f"point estimate only ({why})")
