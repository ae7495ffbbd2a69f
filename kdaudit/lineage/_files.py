"""Probe files: .npy, .npz, .csv and .parquet inputs for ``kdaudit lineage --probes``."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit._io import read_arrays, read_table

__all__ = ["EXIT_DERIVED", "EXIT_MISMATCH", "EXIT_OK", "PROBE_LABEL_COLUMNS", "expand_patterns", "load_probes"]

#: Column (csv/parquet) or array (npz) names read as the probes' true labels rather than as inputs.
PROBE_LABEL_COLUMNS = ("y", "y_true", "label")
_INPUT_KEYS = ("X", "x", "probes", "inputs")


def check_probe_inputs(X: np.ndarray, *, what: str = "array", or_else: str = "") -> np.ndarray:
    """``X`` if it is a numeric array of shape (n_probes, ...) with at least one row; else raise naming ``probes``."""
    if X.ndim < 2 or len(X) == 0 or not np.issubdtype(X.dtype, np.number):
        raise invalid_argument("probes", f"{what} of shape {X.shape} and dtype {X.dtype}",
                               f"a numeric array of shape (n_probes, ...) with at least one row{or_else}")
    return X


def load_probes(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Read probe inputs and, when present, their true labels.

    Parameters
    ----------
    path : path
        ``.npy``: an array of inputs (n, ...). ``.npz``: inputs under ``X`` (or ``x``, ``probes``, ``inputs``, or
        the only array) and optional labels under ``y``, ``y_true`` or ``label``. ``.csv`` / ``.parquet``: one row
        per probe, numeric feature columns, and an optional label column named ``y``, ``y_true`` or ``label``.

    Returns
    -------
    (X, y) : (ndarray, ndarray or None)
        ``X`` never contains object or string values (pickled arrays are refused).
    """
    p = Path(path)
    if not p.is_file():
        raise invalid_argument("probes", str(path), "an existing .npy, .npz, .csv or .parquet file")
    suffix = p.suffix.lower()
    y = None
    if suffix in (".npy", ".npz"):
        arrays = read_arrays(p, what="probe file")
        if suffix == ".npy":
            X = arrays[""]
        else:
            keys = list(arrays)
            x_key = next((k for k in _INPUT_KEYS if k in keys), None)
            label_keys = [k for k in keys if k in PROBE_LABEL_COLUMNS]
            others = [k for k in keys if k not in PROBE_LABEL_COLUMNS]
            if x_key is None and len(others) == 1:
                x_key = others[0]
            if x_key is None:
                raise invalid_argument("probes", f"an .npz with arrays {keys}",
                                       f"inputs under one of {list(_INPUT_KEYS)} (labels optional under 'y')")
            X = arrays[x_key]
            y = arrays[label_keys[0]] if label_keys else None
    elif suffix in (".csv", ".parquet"):
        import pandas as pd

        frame = read_table(p, what="probe file")
        label_cols = [c for c in frame.columns if str(c) in PROBE_LABEL_COLUMNS]
        if label_cols:
            y = frame[label_cols[0]].to_numpy()
            frame = frame.drop(columns=label_cols)
        non_numeric = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if non_numeric:
            raise invalid_argument("probes", f"non-numeric columns {non_numeric[:5]}", "numeric feature columns")
        X = frame.to_numpy(dtype=np.float32)
    else:
        raise invalid_argument("probes", str(path), "a .npy, .npz, .csv or .parquet file")
    check_probe_inputs(X, what="inputs")
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise invalid_argument("probes", f"labels of shape {y.shape}", f"one label per probe ({len(X)},)")
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        if y.dtype.kind not in "iu":
            raise invalid_argument("probes", f"labels of dtype {y.dtype}", "integer class indices")
        y = y.astype(np.int64)
    return X, y


# exit codes of ``kdaudit lineage`` (classifier and language-model paths alike)
EXIT_OK = 0
EXIT_MISMATCH = 1  # --verify: the student is not the recorded one
EXIT_DERIVED = 1  # only with --fail-on-derived


def expand_patterns(patterns: list[str], what: str) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
        if not matches:
            raise invalid_argument(what, pattern, "a file path or a glob matching at least one file")
        files.extend(matches)
    return files


def candidate_pools(specs: list[str], teacher: Any, references: list[Any],
                    load: Callable[[str], Any]) -> dict[str, tuple[Any, list[Any]]]:
    """The candidate teachers of ``--candidate FILE[@REFERENCE_GLOB]`` (``load`` reads one model file), each with its
    own references, or the teacher's when the spec names none; the teacher comes first, and a repeated name gets a
    numbered suffix."""
    candidates: dict[str, tuple[Any, list[Any]]] = {teacher.name: (teacher, references)}
    for spec in specs:
        file, sep, ref_glob = spec.partition("@")
        cand = load(file)
        refs = [load(f) for f in expand_patterns([ref_glob], "--candidate")] if sep else references
        name = cand.name if cand.name not in candidates else f"{cand.name}_{len(candidates)}"
        candidates[name] = (cand, refs)
    return candidates
