"""``AuditData``: the one set of rows every model in an audit sees, in one order."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd

from kdaudit._exceptions import invalid_argument
from kdaudit._validation import check_labels

__all__ = ["AuditData", "hash_array_like"]

_HASH_CHUNK_ROWS = 65_536


def hash_array_like(x: Any) -> str:
    """sha256 of an array, tensor or DataFrame's content (dtype and shape included), read in chunks."""
    h = hashlib.sha256()
    if isinstance(x, pd.DataFrame):
        h.update(repr(list(map(str, x.columns))).encode())
        h.update(repr([str(t) for t in x.dtypes]).encode())
        h.update(pd.util.hash_pandas_object(x, index=False).to_numpy().tobytes())
        return h.hexdigest()
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        # shape and each element's type too: a (2, 3) and a (3, 2) array, or 1 and "1", must not hash alike
        flat = arr.ravel()
        h.update(f"object{arr.shape}".encode())
        h.update(pd.util.hash_array(flat.astype(str)).tobytes())
        h.update(pd.util.hash_array(np.array([type(v).__name__ for v in flat], dtype=object)).tobytes())
        return h.hexdigest()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    for start in range(0, max(len(arr), 1), _HASH_CHUNK_ROWS):
        h.update(np.ascontiguousarray(arr[start:start + _HASH_CHUNK_ROWS]).tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class AuditData:
    """Inputs, labels, sensitive features and sample ids, aligned row by row.

    Parameters
    ----------
    X : array-like, torch.Tensor or pandas.DataFrame
        Model inputs, first dimension = rows. May be a ``numpy.memmap`` for data larger than memory.
    y_true : array-like of int, optional
        True class indices in ``[0, n_classes)``.
    sensitive : pandas.DataFrame, optional
        One column per sensitive feature (e.g. ``sex``, ``race``); values are group names.
    ids : array-like, optional
        Unique sample ids (int or str). Default ``0..n-1``. Bootstrap weights derive from them, so shards of one
        dataset merge exactly when they carry their global ids.
    classes : sequence of str, optional
        Class names in the order of the models' output columns.
    name : str
        A label for reports.
    """

    X: Any
    y_true: np.ndarray | None = None
    sensitive: pd.DataFrame | None = None
    ids: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    name: str = "data"
    source: str = ""
    _hash: list[str] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = _n_rows(self.X)
        if n == 0:
            raise invalid_argument("X", "an empty dataset", "at least one row")
        classes = None if self.classes is None else tuple(str(c) for c in self.classes)
        if classes is not None and len(set(classes)) != len(classes):
            raise invalid_argument("classes", list(classes), "distinct class names")
        object.__setattr__(self, "classes", classes)
        if self.y_true is not None:
            n_classes = len(classes) if classes is not None else None
            y = check_labels(self.y_true, "y_true", n_classes=n_classes)
            if len(y) != n:
                raise invalid_argument("y_true", f"{len(y)} labels", f"one label per row of X ({n})")
            object.__setattr__(self, "y_true", y)
        if self.sensitive is not None:
            s = self.sensitive
            if isinstance(s, pd.Series):
                s = s.to_frame(name=s.name or "group")
            if not isinstance(s, pd.DataFrame):
                raise invalid_argument("sensitive", type(s).__name__, "a pandas DataFrame with one column per feature")
            if len(s) != n:
                raise invalid_argument("sensitive", f"{len(s)} rows", f"one row per row of X ({n})")
            if s.isna().any().any():
                col = s.columns[s.isna().any()].tolist()[0]
                raise invalid_argument("sensitive", f"missing values in column {col!r}",
                                       "a group for every row (map missing values to a named group)")
            object.__setattr__(self, "sensitive", s.reset_index(drop=True).astype(str))
        if self.ids is None:
            object.__setattr__(self, "ids", np.arange(n, dtype=np.int64))
        else:
            ids = np.asarray(self.ids)
            if ids.shape != (n,):
                raise invalid_argument("ids", f"shape {ids.shape}", f"shape ({n},), one id per row")
            if len(pd.unique(ids)) != n:
                raise invalid_argument("ids", "duplicate ids", "unique sample ids")
            object.__setattr__(self, "ids", ids)

    def __len__(self) -> int:
        return _n_rows(self.X)

    @property
    def n_classes(self) -> int | None:
        if self.classes is not None:
            return len(self.classes)
        return None if self.y_true is None else int(self.y_true.max()) + 1

    def rows(self, start: int, stop: int) -> Any:
        """Inputs of rows ``start:stop`` in the form they were given."""
        if isinstance(self.X, pd.DataFrame):
            return self.X.iloc[start:stop]
        return self.X[start:stop]

    def batches(self, batch_size: int) -> Iterator[tuple[int, int, Any]]:
        if batch_size < 1:
            raise invalid_argument("batch_size", batch_size, "an integer >= 1")
        n = len(self)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield start, stop, self.rows(start, stop)

    def subset(self, indices: Any, *, name: str | None = None) -> AuditData:
        idx = np.asarray(indices)
        X = self.X.iloc[idx].reset_index(drop=True) if isinstance(self.X, pd.DataFrame) else self.X[idx]
        return AuditData(
            X=X,
            y_true=None if self.y_true is None else self.y_true[idx],
            sensitive=None if self.sensitive is None else self.sensitive.iloc[idx].reset_index(drop=True),
            ids=self.ids[idx],
            classes=self.classes,
            name=name or self.name,
            source=self.source,
        )

    def fingerprint(self) -> str:
        """sha256 over inputs, labels, sensitive features, ids and class names (computed once)."""
        if not self._hash:
            h = hashlib.sha256()
            for part in (self.X, self.y_true, self.sensitive, self.ids):
                h.update(b"|" if part is None else hash_array_like(part).encode())
            h.update(repr(self.classes).encode())
            self._hash.append(h.hexdigest())
        return self._hash[0]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "n_rows": len(self),
            "sha256": self.fingerprint(),
            "classes": list(self.classes) if self.classes is not None else None,
        }
        if self.y_true is not None:
            counts = np.bincount(self.y_true, minlength=self.n_classes or 0)
            out["class_counts"] = counts.tolist()
        if self.sensitive is not None:
            out["groups"] = {c: self.sensitive[c].value_counts().sort_index().to_dict() for c in self.sensitive.columns}
        return out


def _n_rows(X: Any) -> int:
    if X is None:
        raise invalid_argument("X", None, "an array, tensor or DataFrame of inputs")
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    try:
        return len(X)
    except TypeError:
        raise invalid_argument("X", type(X).__name__, "an array, tensor or DataFrame with a length") from None
