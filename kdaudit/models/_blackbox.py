"""A model reachable only through a function call (an API): query counting, budget and retries."""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable

import numpy as np

from kdaudit._exceptions import QueryBudgetExceededError, invalid_argument
from kdaudit.models._base import Access, ModelAdapter

__all__ = ["BlackBoxModel"]

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


class BlackBoxModel(ModelAdapter):
    """A callable ``fn(X) -> outputs`` standing for a model the auditor can only query.

    Parameters
    ----------
    fn : callable
        Called with a batch of rows (as the data holds them). By ``access`` it returns:

        - ``"probabilities"``: an (n, n_classes) array of probabilities;
        - ``"top_k"``: either a tuple ``(indices, probs)`` of two (n, k) arrays (the form APIs return), or an
          (n, n_classes) array that is zero outside each row's top k. Both become the dense (n, n_classes) form,
          zero outside the top k;
        - ``"labels"``: an (n,) array of class indices (or of class names, when ``classes`` is given).
    n_classes : int
    name : str
    access : {"probabilities", "top_k", "labels"}
    top_k : int, optional
        Required for ``access="top_k"``.
    query_budget : int, optional
        Most rows this adapter may ever ask about. A call that would pass it raises
        :class:`~kdaudit.QueryBudgetExceededError` before ``fn`` is called, so no query is spent.
    max_retries : int
        Retries of a call that raised one of ``retry_on`` (transient network errors by default), waiting
        ``backoff_s * 2**attempt`` seconds before each.
    backoff_s : float
    retry_on : tuple of exception types
    classes : sequence of str, optional
    fingerprint : str, optional
        The model's identity (an endpoint and version, say). A black box has no weights to hash, so by default
        the identity is derived from ``name``, ``n_classes``, ``access`` and ``top_k``: a re-run with the same
        declaration resumes from the cache. Give a version string when the model behind the name can change.

    Attributes
    ----------
    query_count : int
        Rows answered so far (successful calls only).
    n_calls, n_failures : int
        Calls made and calls that raised (retried or not).
    """

    kind = "blackbox"

    def __init__(self, fn: Callable[[Any], Any], *, n_classes: int, name: str = "blackbox",
                 access: str | Access = "probabilities", top_k: int | None = None,
                 query_budget: int | None = None, max_retries: int = 3, backoff_s: float = 0.5,
                 retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS, classes: Any = None,
                 fingerprint: str | None = None) -> None:
        if not callable(fn):
            raise invalid_argument("fn", type(fn).__name__, "a callable fn(X) -> outputs")
        try:
            self.access = Access(access)
        except ValueError:
            raise invalid_argument("access", access, '"probabilities", "top_k" or "labels"') from None
        if not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise invalid_argument("n_classes", n_classes, "an integer >= 2")
        if self.access is Access.TOP_K:
            if not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= n_classes:
                raise invalid_argument("top_k", top_k, f"an integer in [1, {n_classes}] for access='top_k'")
        elif top_k is not None:
            raise invalid_argument("top_k", top_k, "None unless access='top_k'")
        if query_budget is not None and (not isinstance(query_budget, (int, np.integer)) or query_budget < 0):
            raise invalid_argument("query_budget", query_budget, "None or an integer >= 0")
        if max_retries < 0:
            raise invalid_argument("max_retries", max_retries, "an integer >= 0")
        if backoff_s < 0:
            raise invalid_argument("backoff_s", backoff_s, "a number of seconds >= 0")
        self.fn = fn
        self.name = name
        self.n_classes = int(n_classes)
        self.top_k = None if top_k is None else int(top_k)
        self.classes = None if classes is None else tuple(str(c) for c in classes)
        if self.classes is not None and len(self.classes) != self.n_classes:
            raise invalid_argument("classes", list(self.classes), f"{self.n_classes} class names")
        self.output = "labels" if self.access is Access.LABELS else "probabilities"
        self.query_budget = None if query_budget is None else int(query_budget)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.retry_on = tuple(retry_on)
        self._fingerprint = fingerprint
        self.query_count = 0
        self.n_calls = 0
        self.n_failures = 0
        self._sleep = time.sleep  # replaced in tests

    @property
    def remaining_budget(self) -> int | None:
        return None if self.query_budget is None else self.query_budget - self.query_count

    def check_budget(self, n_rows: int) -> None:
        """Raise :class:`QueryBudgetExceededError` if asking about ``n_rows`` more rows would pass the budget."""
        if self.query_budget is not None and self.query_count + n_rows > self.query_budget:
            raise QueryBudgetExceededError(
                f"model {self.name!r}: asking about {n_rows} more rows would use "
                f"{self.query_count + n_rows} queries, over its query_budget of {self.query_budget} "
                f"({self.query_count} used); raise query_budget or audit fewer rows",
                used=self.query_count, budget=self.query_budget)

    def predict(self, X: Any) -> np.ndarray:
        n = _n_rows(X)
        self.check_budget(n)
        attempt = 0
        while True:
            self.n_calls += 1
            try:
                raw = self.fn(X)
                break
            except self.retry_on:
                self.n_failures += 1
                if attempt >= self.max_retries:
                    raise
                self._sleep(self.backoff_s * (2 ** attempt))
                attempt += 1
            except Exception:
                self.n_failures += 1
                raise
        out = self._convert(raw, n)
        self.query_count += n
        return out

    def _convert(self, raw: Any, n: int) -> np.ndarray:
        where = f"output of model {self.name!r}"
        if self.access is Access.LABELS:
            y = np.asarray(raw).reshape(-1) if np.ndim(raw) <= 1 else np.asarray(raw)
            if y.ndim != 1 or len(y) != n:
                raise invalid_argument(where, f"shape {np.shape(raw)}", f"({n},) labels, one per row asked")
            if y.dtype.kind in "USO":
                if self.classes is None:
                    raise invalid_argument(where, f"labels of dtype {y.dtype}",
                                           "integer class indices (or give classes= to map names)")
                import pandas as pd

                codes = pd.Index(self.classes).get_indexer(y.astype(str))
                if (codes < 0).any():
                    bad = y[int(np.flatnonzero(codes < 0)[0])]
                    raise invalid_argument(where, f"unknown class {bad!r}", f"one of {list(self.classes)}")
                y = codes.astype(np.int64)
            return y.astype(np.int64) if y.dtype.kind in "iub" else y
        if self.access is Access.TOP_K and isinstance(raw, tuple):
            if len(raw) != 2:
                raise invalid_argument(where, f"a tuple of {len(raw)}", "(indices, probs), each of shape (n, k)")
            idx = np.asarray(raw[0])
            val = np.asarray(raw[1], dtype=np.float32)
            if idx.shape != val.shape or idx.ndim != 2 or idx.shape[0] != n or idx.shape[1] > self.n_classes:
                raise invalid_argument(where, f"indices {idx.shape} and probs {val.shape}",
                                       f"two arrays of shape ({n}, k) with k <= {self.n_classes}")
            if idx.dtype.kind not in "iu" or (idx < 0).any() or (idx >= self.n_classes).any():
                raise invalid_argument(where, "top-k indices outside the classes",
                                       f"integers in [0, {self.n_classes - 1}]")
            if idx.shape[1] > 1 and (np.diff(np.sort(idx, axis=1), axis=1) == 0).any():
                # a repeated class would silently overwrite its own probability in the dense row
                raise invalid_argument(where, "a class repeated among a row's top-k indices",
                                       "k distinct class indices per row")
            dense = np.zeros((n, self.n_classes), dtype=np.float32)
            np.put_along_axis(dense, idx.astype(np.int64), val, axis=1)
            return dense
        p = np.asarray(raw, dtype=np.float32)
        if p.shape != (n, self.n_classes):
            raise invalid_argument(where, f"shape {p.shape}", f"({n}, {self.n_classes}) probabilities")
        return p

    def fingerprint(self) -> str:
        ident = self._fingerprint or f"blackbox|{self.name}|{self.n_classes}|{self.access}|{self.top_k}"
        return hashlib.sha256(ident.encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"query_budget": self.query_budget, "queries": self.query_count})
        return d

    def __repr__(self) -> str:
        return f"BlackBoxModel(name={self.name!r}, access={self.access.value!r}, queries={self.query_count})"


def _n_rows(X: Any) -> int:
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) else len(X)
