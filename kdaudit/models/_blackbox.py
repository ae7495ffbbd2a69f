"""A model reachable only through a function call (an API): query counting, budget, timeouts, retries and a
write-ahead journal of what was sent."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Any, Callable

import numpy as np

from kdaudit._exceptions import QueryBudgetExceededError, invalid_argument
from kdaudit.models._base import Access, ModelAdapter
from kdaudit.models._journal import QueryJournal

__all__ = ["BlackBoxModel"]

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)  # TimeoutError: timeout_s


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
        Most rows this adapter may ever send. Every attempt counts (a call that failed or timed out may still have
        reached the model's owner); a call that would pass the budget raises
        :class:`~kdaudit.QueryBudgetExceededError` before ``fn`` is called. With ``journal``, the budget holds
        across runs and crashes.
    max_retries : int
        Retries of a call that raised one of ``retry_on`` (transient network errors and timeouts by default),
        waiting ``backoff_s * 2**attempt`` seconds before each.
    backoff_s : float
    retry_on : tuple of exception types
    timeout_s : float, optional
        Most seconds one call may take; a slower call raises ``TimeoutError`` (transient: retried). The call runs
        in a worker thread, which is abandoned (not killed) when it times out.
    deadline_s : float, optional
        Most seconds this adapter may spend on calls in all, counted from its first call (retries and waits
        included). Past it, no call or retry starts: ``TimeoutError`` is raised and not retried.
    journal : str, Path or QueryJournal, optional
        A write-ahead journal (:class:`~kdaudit.models.QueryJournal`): each batch is recorded before it is sent
        and its answer after, so a run killed at any point and started again reuses every answer received, counts
        the calls that were in flight as sent, and keeps ``query_budget`` across runs. The worst case re-sent after
        a crash is the one batch in flight. A path opens (or resumes) a journal for this model's identity.
    classes : sequence of str, optional
    fingerprint : str, optional
        The model's identity (an endpoint and version, say). A black box has no weights to hash, so by default
        the identity is derived from ``name``, ``n_classes``, ``access`` and ``top_k``: a re-run with the same
        declaration resumes from the cache. Give a version string when the model behind the name can change.

    Attributes
    ----------
    query_count : int
        Rows sent so far by this object (every attempt, answered or not): at least what the owner received.
    rows_answered, rows_reused : int
        Rows answered by ``fn``, and rows answered from the journal without a call.
    n_calls, n_failures : int
        Calls made and calls that raised (retried or not).
    call_times : list of (rows, seconds)
        Duration of each answered call: the latency the cost section reports, so it never queries again.
    """

    kind = "blackbox"

    def __init__(self, fn: Callable[[Any], Any], *, n_classes: int, name: str = "blackbox",
                 access: str | Access = "probabilities", top_k: int | None = None,
                 query_budget: int | None = None, max_retries: int = 3, backoff_s: float = 0.5,
                 retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS, classes: Any = None,
                 fingerprint: str | None = None, timeout_s: float | None = None, deadline_s: float | None = None,
                 journal: str | os.PathLike[str] | QueryJournal | None = None) -> None:
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
        for arg, value in (("timeout_s", timeout_s), ("deadline_s", deadline_s)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value > 0):
                raise invalid_argument(arg, value, "None or a number of seconds > 0")
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
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.deadline_s = None if deadline_s is None else float(deadline_s)
        self.query_count = 0
        self.rows_answered = 0
        self.rows_reused = 0
        self.n_calls = 0
        self.n_failures = 0
        self.call_times: list[tuple[int, float]] = []
        self._first_call: float | None = None
        self._sleep = time.sleep  # replaced in tests
        self._clock = time.monotonic
        if journal is not None and not isinstance(journal, QueryJournal):
            journal = QueryJournal(journal, budget=self.query_budget, unit="rows", identity=self._identity())
        self.journal = journal

    def _identity(self) -> str:
        return self._fingerprint or f"blackbox|{self.name}|{self.n_classes}|{self.access}|{self.top_k}"

    @property
    def remaining_budget(self) -> int | None:
        if self.journal is not None and self.journal.budget is not None:
            return self.journal.remaining
        return None if self.query_budget is None else self.query_budget - self.query_count

    def check_budget(self, n_rows: int) -> None:
        """Raise :class:`QueryBudgetExceededError` if sending ``n_rows`` more rows would pass the budget.

        With a journal, rows whose answers it holds are reused, not sent, so they are allowed for here; each
        call is then checked exactly as it is reserved.
        """
        if self.journal is not None:
            self.journal.check_budget(max(n_rows - self.journal.answered, 0))
            if self.journal.budget is not None:
                return
        self._check_own_budget(n_rows)

    def _check_own_budget(self, n_rows: int) -> None:
        if self.query_budget is not None and self.query_count + n_rows > self.query_budget:
            raise QueryBudgetExceededError(
                f"model {self.name!r}: asking about {n_rows} more rows would use "
                f"{self.query_count + n_rows} queries, over its query_budget of {self.query_budget} "
                f"({self.query_count} used); raise query_budget or audit fewer rows",
                used=self.query_count, budget=self.query_budget)

    def predict(self, X: Any) -> np.ndarray:
        n = _n_rows(X)
        key = None
        if self.journal is not None:
            key = _batch_key(self._identity(), X)
            if key in self.journal:
                self.rows_reused += n
                return np.asarray(self.journal.get(key))
        attempt = 0
        while True:
            self._check_deadline()
            if self.journal is None or self.journal.budget is None:
                self._check_own_budget(n)
            if self.journal is not None:
                self.journal.reserve(key, n)  # type: ignore[arg-type] - on disk before the call is made
            self.n_calls += 1
            self.query_count += n  # sent: the owner may receive it even if the call fails
            t0 = time.perf_counter()
            try:
                out = self._convert(self._call(X), n)
            except self.retry_on as exc:
                self._failed(key, exc)
                if attempt >= self.max_retries or self._past_deadline():
                    raise
                self._sleep(self.backoff_s * (2 ** attempt))
                attempt += 1
                continue
            except BaseException as exc:
                self._failed(key, exc)
                raise
            self.call_times.append((n, time.perf_counter() - t0))
            self.rows_answered += n
            if self.journal is not None:
                self.journal.complete(key, out)  # type: ignore[arg-type]
            return out

    def _failed(self, key: str | None, exc: BaseException) -> None:
        self.n_failures += 1
        if self.journal is not None and key is not None:
            self.journal.fail(key, exc)

    def _past_deadline(self) -> bool:
        return (self.deadline_s is not None and self._first_call is not None
                and self._clock() - self._first_call >= self.deadline_s)

    def _check_deadline(self) -> None:
        if self._first_call is None:
            self._first_call = self._clock()
        if self._past_deadline():
            raise TimeoutError(f"model {self.name!r}: the overall deadline_s={self.deadline_s:g}s has passed "
                               f"({self.rows_answered} rows answered in {self.n_calls} calls); raise deadline_s")

    def _call(self, X: Any) -> Any:
        """``fn(X)``, given at most ``timeout_s`` (and what is left of ``deadline_s``) seconds."""
        limit = self.timeout_s
        if self.deadline_s is not None and self._first_call is not None:
            left = self.deadline_s - (self._clock() - self._first_call)
            limit = left if limit is None else min(limit, left)
        if limit is None:
            return self.fn(X)
        box: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["out"] = self.fn(X)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["exc"] = exc
            finally:
                done.set()

        # a daemon thread: a call that never returns cannot keep the interpreter from exiting
        threading.Thread(target=target, name=f"kdaudit-blackbox-{self.name}", daemon=True).start()
        if not done.wait(max(limit, 0.0)):
            raise TimeoutError(f"model {self.name!r} did not answer within {limit:.3g}s (timeout_s="
                               f"{self.timeout_s}, deadline_s={self.deadline_s})")
        if "exc" in box:
            raise box["exc"]
        return box["out"]

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
            if y.dtype.kind == "f" and np.isfinite(y).all() and np.all(y == np.round(y)):
                y = y.astype(np.int64)  # whole numbers sent as floats (JSON numbers) are indices
            if y.dtype.kind not in "iu":
                bad = y[0] if y.dtype.kind != "f" else y[int(np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))[0])]
                raise invalid_argument(where, f"the label {bad!r} (dtype {y.dtype})",
                                       "integer class indices (or class names with classes=)")
            return y.astype(np.int64)
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
        return hashlib.sha256(self._identity().encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"query_budget": self.query_budget, "queries": self.query_count})
        if self.journal is not None:
            d["journal"] = {"rows_sent_all_runs": self.journal.spent, "rows_resent": self.journal.resent,
                            "rows_reused": self.rows_reused}
        return d

    def __repr__(self) -> str:
        return f"BlackBoxModel(name={self.name!r}, access={self.access.value!r}, queries={self.query_count})"


def _batch_key(identity: str, X: Any) -> str:
    """A stable key for one batch of inputs: the model's identity and the batch's content."""
    h = hashlib.sha256(identity.encode())
    if hasattr(X, "to_numpy") and hasattr(X, "columns"):  # a DataFrame: its columns and values
        import pandas as pd

        h.update(repr(list(map(str, X.columns))).encode())
        h.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    else:
        arr = np.asarray(X)
        if arr.dtype.hasobject:  # text and other Python objects: their printed form
            h.update(repr(arr.tolist()).encode())
        else:
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _n_rows(X: Any) -> int:
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) else len(X)
