"""Input checks at the public boundary. Private code assumes what these functions guarantee."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdaudit._exceptions import invalid_argument

__all__ = [
    "PROB_SUM_ATOL",
    "check_consistent_length",
    "check_labels",
    "check_probabilities",
    "check_sample_weight",
    "encode_labels",
]

# float32 softmax outputs over 1,000 classes sum to 1 within ~1e-5; anything farther is not a distribution.
PROB_SUM_ATOL = 1e-3


def check_probabilities(p: Any, name: str, *, n_classes: int | None = None, allow_partial: bool = False) -> np.ndarray:
    """Return ``p`` as a 2-D float array of probabilities, or raise naming ``name``.

    ``allow_partial`` accepts rows that sum to at most 1 (top-k outputs, where the rest of the mass is unknown).
    """
    arr = np.asarray(p)
    if arr.ndim != 2:
        raise invalid_argument(name, f"array of shape {arr.shape}", "a 2-D array of shape (n_samples, n_classes)")
    if arr.shape[0] == 0:
        raise invalid_argument(name, "an empty array", "at least one row")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if n_classes is not None and arr.shape[1] != n_classes:
        raise invalid_argument(name, f"{arr.shape[1]} columns", f"{n_classes} columns, one per class")
    finite = np.isfinite(arr)
    if not finite.all():
        row = int(np.argwhere(~finite)[0, 0])
        raise invalid_argument(name, f"NaN or inf at row {row}", "finite probabilities")
    if (arr < -1e-6).any() or (arr > 1 + 1e-6).any():
        row = int(np.argwhere((arr < -1e-6) | (arr > 1 + 1e-6))[0, 0])
        raise invalid_argument(name, f"values outside [0, 1] at row {row} (got {arr[row].tolist()[:5]})",
                               "probabilities in [0, 1]; pass logits through a softmax first")
    sums = arr.sum(axis=1, dtype=np.float64)
    bad = (sums > 1 + PROB_SUM_ATOL) if allow_partial else (np.abs(sums - 1) > PROB_SUM_ATOL)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise invalid_argument(name, f"a row summing to {sums[row]:.6g} at row {row}",
                               f"rows that sum to 1 (tolerance {PROB_SUM_ATOL})")
    return arr


def check_labels(y: Any, name: str, *, n_classes: int | None = None) -> np.ndarray:
    """Return integer class indices in ``[0, n_classes)`` as int64, or raise naming ``name``."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise invalid_argument(name, f"array of shape {arr.shape}", "a 1-D array of class indices")
    if arr.shape[0] == 0:
        raise invalid_argument(name, "an empty array", "at least one label")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise invalid_argument(name, "non-integer labels", "integer class indices")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "iub":
        arr = arr.astype(np.int64)
    else:
        raise invalid_argument(name, f"labels of dtype {arr.dtype}",
                               "integer class indices (map class names to indices with AuditData.classes)")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or (n_classes is not None and hi >= n_classes):
        bad = lo if lo < 0 else hi
        accepted = f"integers in [0, {n_classes - 1}]" if n_classes is not None else "non-negative integers"
        raise invalid_argument(name, f"label {bad}", accepted)
    return arr


def check_consistent_length(**arrays: Any) -> int:
    """All named arrays have the same first dimension; returns it."""
    lengths = {k: len(v) for k, v in arrays.items() if v is not None}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}={n}" for k, n in lengths.items())
        first = next(iter(lengths))
        raise invalid_argument(first, f"lengths {desc}", "arrays with the same number of rows")
    return next(iter(lengths.values())) if lengths else 0


def check_sample_weight(sample_weight: Any, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise invalid_argument("sample_weight", f"shape {w.shape}", f"shape ({n},)")
    if not np.isfinite(w).all() or (w < 0).any():
        raise invalid_argument("sample_weight", "negative or non-finite weights", "finite weights >= 0")
    if n and not (w > 0).any():
        raise invalid_argument("sample_weight", "weights that are all zero", "at least one weight > 0")
    return w


def encode_labels(values: Any, name: str, *, classes: Any = None) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Class indices for a label column, and the class names when the column held names.

    Integer labels (and floats holding whole numbers, as a CSV with a missing value makes them) are class indices.
    Names are mapped through ``classes`` when given, else in sorted order: numerically when every name is a
    number ("2" before "10"), else as text. Fractional numbers and missing labels are refused rather than guessed.
    """
    arr = np.asarray(values)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            row = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise invalid_argument(name, f"a missing or infinite label at row {row}", "a label on every row")
        if not np.all(arr == np.round(arr)):
            row = int(np.flatnonzero(arr != np.round(arr))[0])
            raise invalid_argument(name, f"the fractional label {arr[row]!r} at row {row}",
                                   "whole-number class indices or class names")
        arr = arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        return check_labels(arr, name, n_classes=None if classes is None else len(tuple(classes))), None
    text = arr.astype(str)
    if classes is not None:
        names = tuple(str(c) for c in classes)
    else:
        uniq = sorted(set(text.tolist()))
        try:
            names = tuple(sorted(uniq, key=float))  # numbers as text: numeric order, never "10" < "2"
        except ValueError:
            names = tuple(uniq)
    lookup = {c: i for i, c in enumerate(names)}
    codes = np.fromiter((lookup.get(v, -1) for v in text.tolist()), dtype=np.int64, count=len(text))
    if (codes < 0).any():
        bad = text[int(np.flatnonzero(codes < 0)[0])]
        raise invalid_argument(name, f"the label {bad!r}", f"one of the classes {list(names)[:20]}")
    return codes, names
