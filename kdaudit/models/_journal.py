"""A write-ahead journal of queries sent to a model that is paid for or rate-limited per query.

A query is *reserved* (written and fsynced, its cost charged to the budget) before it is sent, and *completed*
(its answer written) after. So whatever kills the process, the journal never under-counts what the model's owner
received, a budget holds across crashes, and a resumed run reuses every answer already received.

Worst case after a crash: the queries that were in flight when the process died (reserved, not completed) may
have reached the owner without their answers reaching the journal. A resumed run re-sends them (each re-send is
charged again, so the budget still bounds what was sent), so the rows re-sent after one crash are at most the
cost of the calls in flight at that moment: one call (one batch) for a caller that sends one query at a time.

File format (JSON Lines, one object per line, appended only)::

    {"op": "header", "format": "kdaudit-query-journal/1", "identity": ..., "unit": "rows"}
    {"op": "reserve", "key": "...", "cost": 64}
    {"op": "complete", "key": "...", "payload": ...}
    {"op": "fail", "key": "...", "error": "TimeoutError: ..."}

Payloads are JSON values; numpy arrays inside them are stored as base64 ``.npy`` bytes and read back without
pickle. A line torn by a crash mid-write (the last line, without its newline) is dropped on reopening.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kdaudit._exceptions import KDAuditError, QueryBudgetExceededError, invalid_argument

__all__ = ["QueryJournal"]

FORMAT = "kdaudit-query-journal/1"


class QueryJournal:
    """Append-only, fsynced record of queries: reserved before sending, completed after.

    Parameters
    ----------
    path : str or Path
        The journal file (JSON Lines). Created if missing; an existing journal is resumed.
    budget : int, optional
        Most units (``unit``) that may ever be reserved under this journal, across every run that resumes it.
    unit : str
        What a query's ``cost`` counts: "rows", "prompts", "tokens", ...
    identity : str, optional
        What the queries are sent to (an endpoint and model version, say). Resuming a journal written for another
        identity raises, so answers from one model are never reused for another.

    Attributes
    ----------
    spent : int
        Units reserved so far (in this run and earlier ones): an upper bound on what the owner received.
    answered : int
        Units whose answers are in the journal.
    resent : int
        Units reserved again for a key reserved before (re-sends after a crash or a failed call).

    Examples
    --------
    >>> import tempfile, os
    >>> j = QueryJournal(os.path.join(tempfile.mkdtemp(), "q.jsonl"), budget=10)
    >>> j.query("batch-0", 4, lambda: {"labels": [1, 0, 2, 2]})
    {'labels': [1, 0, 2, 2]}
    >>> j.spent, j.remaining
    (4, 6)
    >>> j.close()
    """

    def __init__(self, path: str | os.PathLike[str], *, budget: int | None = None, unit: str = "rows",
                 identity: str | None = None) -> None:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, np.integer))
                                   or budget < 0):
            raise invalid_argument("budget", budget, "None or an integer >= 0")
        if not isinstance(unit, str) or not unit:
            raise invalid_argument("unit", unit, 'a non-empty string such as "rows", "prompts" or "tokens"')
        self.path = Path(path)
        self.budget = None if budget is None else int(budget)
        self.unit = unit
        self.identity = identity
        self.spent = 0
        self.answered = 0
        self.resent = 0
        self._answers: dict[str, Any] = {}
        self._costs: dict[str, int] = {}  # key -> cost of its latest reservation
        self._pending: dict[str, int] = {}  # reserved, not completed
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+b")  # noqa: SIM115 - held open for the journal's lifetime
        try:
            _lock_exclusive(self._fh, self.path)
            self._replay()
        except BaseException:
            self._fh.close()
            raise

    # -- reading back ----------------------------------------------------------------------------------
    def _replay(self) -> None:
        self._fh.seek(0)
        data = self._fh.read()
        good = data.rfind(b"\n") + 1  # everything after the last newline is a write torn by a crash
        if good < len(data):
            self._fh.truncate(good)
            _fsync(self._fh)
        lines = data[:good].splitlines()
        if not lines:
            self._append({"op": "header", "format": FORMAT, "identity": self.identity, "unit": self.unit})
            _fsync_dir(self.path.parent)
            return
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
                op = entry["op"]
            except (ValueError, TypeError, KeyError):
                raise KDAuditError(f"query journal {str(self.path)!r} is damaged at line {number}: expected one "
                                   "JSON object with an 'op' per line (move the file away to start afresh; its "
                                   "queries were sent and are not counted then)") from None
            if number == 1:
                self._check_header(entry)
            elif op == "reserve":
                key, cost = str(entry["key"]), int(entry["cost"])
                self._charge(key, cost)
            elif op == "complete":
                self._settle(str(entry["key"]), _decode(entry.get("payload")))
            elif op == "fail":
                self._pending.pop(str(entry["key"]), None)
            else:
                raise KDAuditError(f"query journal {str(self.path)!r} has an unknown entry {op!r} at line "
                                   f"{number}; expected reserve, complete or fail")

    def _check_header(self, entry: dict[str, Any]) -> None:
        if entry.get("op") != "header" or entry.get("format") != FORMAT:
            raise KDAuditError(f"file {str(self.path)!r} is not a kdaudit query journal (expected a first line "
                               f"with format {FORMAT!r}, got {str(entry)[:120]})")
        if entry.get("identity") != self.identity:
            raise KDAuditError(f"query journal {str(self.path)!r} was written for {entry.get('identity')!r}, not "
                               f"{self.identity!r}; its answers must not be reused for another model (use another "
                               "journal file)")
        if entry.get("unit") != self.unit:
            raise KDAuditError(f"query journal {str(self.path)!r} counts {entry.get('unit')!r}, not "
                               f"{self.unit!r}")

    # -- state -----------------------------------------------------------------------------------------
    def _charge(self, key: str, cost: int) -> None:
        if key in self._costs:
            self.resent += cost
        self._costs[key] = cost
        self._pending[key] = cost
        self.spent += cost

    def _settle(self, key: str, payload: Any) -> None:
        if key not in self._answers:
            self.answered += self._costs.get(key, 0)
        self._answers[key] = payload
        self._pending.pop(key, None)

    @property
    def remaining(self) -> int | None:
        """Units the budget still allows (None without a budget)."""
        return None if self.budget is None else max(self.budget - self.spent, 0)

    @property
    def pending(self) -> dict[str, int]:
        """Keys reserved but never answered (in flight at a crash, or failed), with their costs."""
        return dict(self._pending)

    def __contains__(self, key: str) -> bool:
        return key in self._answers

    def get(self, key: str) -> Any:
        """The recorded answer to ``key``, or None when it was never answered."""
        return self._answers.get(key)

    # -- writing ---------------------------------------------------------------------------------------
    def check_budget(self, cost: int) -> None:
        """Raise :class:`QueryBudgetExceededError` if reserving ``cost`` more units would pass the budget."""
        if self.budget is not None and self.spent + cost > self.budget:
            raise QueryBudgetExceededError(
                f"query journal {self.path.name!r}: {cost} more {self.unit} would make {self.spent + cost}, over "
                f"the budget of {self.budget} ({self.spent} already sent, {self.resent} of them re-sent after "
                "a crash or a failed call)", used=self.spent, budget=self.budget)

    def reserve(self, key: str, cost: int) -> None:
        """Charge ``cost`` to the budget and record the query durably, before it is sent."""
        if isinstance(cost, bool) or not isinstance(cost, (int, np.integer)) or cost < 0:
            raise invalid_argument("cost", cost, "an integer >= 0")
        with self._lock:
            self.check_budget(int(cost))
            self._append({"op": "reserve", "key": str(key), "cost": int(cost)})
            self._charge(str(key), int(cost))

    def complete(self, key: str, payload: Any) -> None:
        """Record the answer to a reserved query."""
        with self._lock:
            if str(key) not in self._costs:
                raise KDAuditError(f"query journal {self.path.name!r}: key {str(key)[:80]!r} completed without "
                                   "being reserved first")
            self._append({"op": "complete", "key": str(key), "payload": _encode(payload)})
            self._settle(str(key), payload)

    def fail(self, key: str, error: BaseException | str) -> None:
        """Record that a reserved query raised; its cost stays spent (the owner may have received it)."""
        with self._lock:
            text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self._append({"op": "fail", "key": str(key), "error": text[:500]})
            self._pending.pop(str(key), None)

    def query(self, key: str, cost: int, send: Callable[[], Any]) -> Any:
        """The recorded answer to ``key``, or reserve it, call ``send()``, record and return the answer."""
        if key in self._answers:
            return self._answers[key]
        self.reserve(key, cost)
        try:
            payload = send()
        except BaseException as exc:
            self.fail(key, exc)
            raise
        self.complete(key, payload)
        return payload

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        self._fh.seek(0, os.SEEK_END)
        self._fh.write(line)
        _fsync(self._fh)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()  # closing releases the lock

    def __enter__(self) -> QueryJournal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        budget = "" if self.budget is None else f"/{self.budget}"
        return f"QueryJournal({str(self.path)!r}, spent={self.spent}{budget} {self.unit})"


# -- payloads --------------------------------------------------------------------------------------------
def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise invalid_argument("payload", f"an array of dtype {obj.dtype}", "numeric or string arrays")
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return {"__ndarray__": base64.b64encode(buf.getvalue()).decode("ascii")}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if "__ndarray__" in obj or "__tuple__" in obj:
            raise invalid_argument("payload", "a dict with a reserved key", "no '__ndarray__'/'__tuple__' keys")
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise invalid_argument("payload", type(obj).__name__, "JSON values, tuples and numpy arrays")


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return np.load(io.BytesIO(base64.b64decode(obj["__ndarray__"])), allow_pickle=False)
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v) for v in obj["__tuple__"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


# -- durability ------------------------------------------------------------------------------------------
def _fsync(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the file itself is synced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _lock_exclusive(fh: Any, path: Path) -> None:
    """One writer per journal: a second process (or object) resuming it at the same time would double-send."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks; one writer is the caller's duty
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise KDAuditError(f"query journal {str(path)!r} is in use by another run; wait for it to finish "
                           "(two runs sharing one journal would send the same queries twice)") from None
