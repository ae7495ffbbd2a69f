"""Outputs computed elsewhere (by the model owner, a batch job, an API crawl), aligned to the data by id."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit._io import read_arrays, read_table, recorded_path
from kdaudit._validation import check_labels
from kdaudit.models._base import Access, ModelAdapter
from kdaudit.models._hashing import sha256_arrays

__all__ = ["PrecomputedModel"]

_KINDS = ("probabilities", "logits", "labels")
_NPZ_KEYS = {"probabilities": "probabilities", "probs": "probabilities", "logits": "logits", "labels": "labels"}


class PrecomputedModel(ModelAdapter):
    """Outputs already computed for the audit rows.

    Parameters
    ----------
    values : array-like
        (N, C) probabilities or logits, or (N,) labels.
    name : str
    ids : array-like, optional
        The sample id of each row of ``values``. With ids, rows are matched to the audit data's ids (in any
        order; the outputs may cover more rows than the data); without them, row ``i`` of ``values`` is row
        ``i`` of the data and the lengths must match.
    kind : {"probabilities", "logits", "labels"}
    classes : sequence of str, optional

    Notes
    -----
    ``predict(X)`` reads ``X`` as sample ids (positions when no ids were given): the model has no inputs.
    """

    kind = "precomputed"

    def __init__(self, values: Any, *, name: str = "precomputed", ids: Any = None, kind: str = "probabilities",
                 classes: Any = None, source: str | None = None) -> None:
        if kind not in _KINDS:
            raise invalid_argument("kind", kind, f"one of {_KINDS}")
        v = np.asarray(values)
        if kind == "labels":
            if v.ndim != 1 or v.dtype.kind not in "iu":
                raise invalid_argument("values", f"array of shape {v.shape} and dtype {v.dtype}",
                                       "an (N,) array of integer labels for kind='labels'")
        elif v.ndim != 2 or v.dtype.kind not in "fiu":
            raise invalid_argument("values", f"array of shape {v.shape} and dtype {v.dtype}",
                                   f"an (N, n_classes) numeric array of {kind}")
        if len(v) == 0:
            raise invalid_argument("values", "an empty array", "at least one row")
        self.values = v if kind == "labels" else v.astype(np.float32, copy=False)
        self.ids = None if ids is None else np.asarray(ids)
        if self.ids is not None:
            if self.ids.shape != (len(v),):
                raise invalid_argument("ids", f"shape {self.ids.shape}", f"shape ({len(v)},), one id per row")
            import pandas as pd

            self._index = pd.Index(self.ids)
            if not self._index.is_unique:
                raise invalid_argument("ids", "duplicate ids", "unique sample ids")
        self.name = name
        self.classes = None if classes is None else tuple(str(c) for c in classes)
        if kind == "labels":
            self.n_classes = len(self.classes) if self.classes is not None else int(v.max()) + 1
            self.access = Access.LABELS
        else:
            self.n_classes = int(v.shape[1])
            self.access = Access.PROBABILITIES
        self.output = kind
        self.source = source
        self.query_count = 0
        self._rows: np.ndarray | None = None
        self._whole: PrecomputedModel | None = None  # set on a view of some rows (for_rows)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, name: str | None = None, kind: str | None = None,
                  id_column: str = "id", classes: Any = None) -> PrecomputedModel:
        """Read outputs from ``.npy``, ``.npz`` (keys ``probabilities``/``probs``, ``logits`` or ``labels``, and
        optionally ``ids``), ``.csv`` or ``.parquet`` (an optional ``id_column`` and one numeric column per
        class, or a single label column). ``kind`` defaults to what the npz key says, else "probabilities"."""
        path = Path(path)
        ext = path.suffix.lower()
        ids = None
        if ext == ".npy":
            values = read_arrays(path, what="outputs file")[""]
        elif ext == ".npz":
            z = read_arrays(path, what="outputs file")
            keys = [k for k in z if k in _NPZ_KEYS]
            if len(keys) != 1:
                raise invalid_argument("path", str(path), "an .npz with exactly one of the arrays "
                                       "'probabilities' (or 'probs'), 'logits', 'labels', and optionally 'ids'")
            values = z[keys[0]]
            kind = kind or _NPZ_KEYS[keys[0]]
            ids = z.get("ids")
        elif ext in (".csv", ".parquet"):
            import pandas as pd

            df = read_table(path, what="outputs file")
            if id_column in df.columns:
                ids = df.pop(id_column).to_numpy()
            non_numeric = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
            if non_numeric:
                raise invalid_argument("path", f"{path.name} with non-numeric column {non_numeric[0]!r}",
                                       f"an {id_column!r} column and numeric output columns")
            values = df.to_numpy()
            if kind == "labels" or (kind is None and values.shape[1] == 1):
                kind, values = "labels", check_labels(values[:, 0], f"labels in {path.name}")
        else:
            raise invalid_argument("path", str(path), "a .npy, .npz, .csv or .parquet file of outputs")
        return cls(values, name=name or path.stem, ids=ids, kind=kind or "probabilities", classes=classes,
                   source=str(path))

    def prepare(self, data: Any) -> None:
        n = len(data)
        if self.ids is None:
            if len(self.values) != n:
                raise invalid_argument(f"outputs of model {self.name!r}", f"{len(self.values)} rows",
                                       f"one row per data row ({n}), or ids to match rows by sample id")
            self._rows = None
            return
        rows = self._index.get_indexer(np.asarray(data.ids))
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            raise invalid_argument(f"ids of model {self.name!r}",
                                   f"no output for {len(missing)} data ids (first: {data.ids[missing[0]]!r})",
                                   "an output row for every sample id of the data")
        self._rows = rows

    def predict_batch(self, X: Any, *, ids: np.ndarray | None = None, rows: tuple[int, int] | None = None
                      ) -> np.ndarray:
        if rows is not None:
            start, stop = rows
            take = np.arange(start, stop) if self._rows is None else self._rows[start:stop]
        else:
            take = self._lookup(ids)
        self.query_count += len(take)
        return self.values[take]

    def predict(self, X: Any) -> np.ndarray:
        take = self._lookup(np.asarray(X).reshape(-1))
        self.query_count += len(take)
        return self.values[take]

    def _lookup(self, ids: Any) -> np.ndarray:
        ids = np.asarray(ids)
        if self.ids is None:
            if ids.dtype.kind not in "iu" or (ids < 0).any() or (ids >= len(self.values)).any():
                raise invalid_argument("X", "ids outside the outputs",
                                       f"row positions in [0, {len(self.values) - 1}]")
            return ids.astype(np.int64)
        take = self._index.get_indexer(ids)
        if (take < 0).any():
            raise invalid_argument("X", f"unknown sample id {ids[int(np.flatnonzero(take < 0)[0])]!r}",
                                   f"ids that model {self.name!r} has outputs for")
        return take

    def for_rows(self, start: int, stop: int) -> ModelAdapter:
        if self.ids is not None or (start, stop) == (0, len(self.values)):
            return self  # matched by sample id (or all of it): the same model serves any rows
        view = copy.copy(self)
        view.values = self.values[start:stop]  # a view (of a memmap too): nothing is read here
        view._whole = self
        return view

    def fingerprint(self) -> str:
        if self._whole is not None:  # a view of some rows is the model of all of them
            return self._whole.fingerprint()
        parts = [("values", self.values)]
        if self.ids is not None:
            parts.append(("ids", self.ids.astype(str) if self.ids.dtype == object else self.ids))
        return sha256_arrays(parts)

    def size_bytes(self) -> int:
        return int((self.values if self._whole is None else self._whole.values).nbytes)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["output"] = self.output
        if self.source:
            d["source"] = recorded_path(self.source)
        return d

    def __repr__(self) -> str:
        return f"PrecomputedModel(name={self.name!r}, kind={self.output!r}, rows={len(self.values)})"
