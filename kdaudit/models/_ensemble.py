"""An ensemble teacher: the mean of its members' probabilities."""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Callable, Sequence

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit.models._base import Access, ModelAdapter
from kdaudit.models._convert import to_probabilities

__all__ = ["EnsembleModel"]


class EnsembleModel(ModelAdapter):
    """Mean of the members' probabilities (logits go through a softmax first), optionally weighted.

    Parameters
    ----------
    members : sequence of models
        Adapters or objects :func:`~kdaudit.models.as_model` wraps; all with full probability access, the same
        number of classes and, where declared, the same class names in the same order.
    name : str
    weights : sequence of float, optional
        Non-negative member weights (normalised to sum to 1). Default: equal.
    """

    kind = "ensemble"
    #: wraps a member that is not an adapter yet (``as_model``): set by ``kdaudit.models._loading``, which builds
    #: ensembles from lists and so sits above this module; the member wrapping is handed down instead of imported
    wrap_member: Any = None

    def __init__(self, members: Sequence[Any], *, name: str = "ensemble", weights: Sequence[float] | None = None
                 ) -> None:
        if isinstance(members, (str, bytes)) or not hasattr(members, "__len__") or len(members) == 0:
            raise invalid_argument("members", members, "a non-empty sequence of models")
        ms = [type(self).wrap_member(m, name=f"{name}[{i}]") if not isinstance(m, ModelAdapter) else m
              for i, m in enumerate(members)]
        for m in ms:
            if m.access is not Access.PROBABILITIES:
                raise invalid_argument("members", f"member {m.name!r} with {m.access} access",
                                       "members with full probability access")
        # a torch member's class count inferred from its last Linear layer is a guess; its outputs decide
        declared = [m.n_classes for m in ms if m.n_classes and getattr(m, "_n_classes_declared", True)]
        if len(set(declared)) > 1:
            raise invalid_argument("members", f"class counts {[(m.name, m.n_classes) for m in ms]}",
                                   "members with the same number of classes")
        named = [m.classes for m in ms if m.classes is not None]
        if any(c != named[0] for c in named):
            raise invalid_argument("members", f"class orders {[(m.name, m.classes) for m in ms]}",
                                   "members with the same class names in the same order")
        if weights is None:
            w = np.full(len(ms), 1.0 / len(ms))
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(ms),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise invalid_argument("weights", weights, f"{len(ms)} non-negative weights with a positive sum")
            w = w / w.sum()
        self.members = ms
        self.weights = w
        self.name = name
        guessed = [m.n_classes for m in ms if m.n_classes]
        self._n_classes_declared = bool(declared)
        self.n_classes = declared[0] if declared else (guessed[0] if guessed else 0)
        self.classes = named[0] if named else None
        self.access = Access.PROBABILITIES
        self.output = "probabilities"

    @property
    def query_count(self) -> int:  # type: ignore[override]
        return sum(m.query_count for m in self.members)

    @query_count.setter
    def query_count(self, value: int) -> None:  # the base class declares a default; members hold the counts
        pass

    def prepare(self, data: Any) -> None:
        for m in self.members:
            m.prepare(data)

    def for_rows(self, start: int, stop: int) -> ModelAdapter:
        members = [m.for_rows(start, stop) for m in self.members]
        if all(a is b for a, b in zip(members, self.members)):
            return self
        view = copy.copy(self)
        view.members = members
        return view

    def _mean(self, raws: list[np.ndarray]) -> np.ndarray:
        acc = None
        for m, raw, w in zip(self.members, raws, self.weights):
            p = to_probabilities(raw, m.output, raw.shape[1] if raw.ndim == 2 else self.n_classes)
            if acc is not None and p.shape != acc.shape:
                raise invalid_argument("members", f"member {m.name!r} output of shape {p.shape}",
                                       f"shape {acc.shape} like the other members")
            acc = p.astype(np.float64) * w if acc is None else acc + w * p
        assert acc is not None
        if not self._n_classes_declared:
            self.n_classes = int(acc.shape[1])
        return acc.astype(np.float32)

    def predict(self, X: Any) -> np.ndarray:
        return self._mean([np.asarray(m.predict(X)) for m in self.members])

    def predict_batch(self, X: Any, *, ids: np.ndarray | None = None, rows: tuple[int, int] | None = None
                      ) -> np.ndarray:
        return self._mean([np.asarray(m.predict_batch(X, ids=ids, rows=rows)) for m in self.members])

    def fingerprint(self) -> str:
        return self.fingerprint_later()()

    def fingerprint_later(self) -> Callable[[], str]:
        """Snapshot members' weights now; the returned function hashes them (safe to call in a thread)."""
        jobs = [getattr(m, "fingerprint_later", None) or (lambda m=m: m.fingerprint) for m in self.members]
        finishes = [job() for job in jobs]
        weights = self.weights.tolist()

        def finish() -> str:
            h = hashlib.sha256(b"ensemble|")
            for done, w in zip(finishes, weights):
                h.update(f"{done()}|{w:.17g}|".encode())
            return h.hexdigest()

        return finish

    def n_parameters(self) -> int | None:
        counts = [m.n_parameters() for m in self.members]
        return None if any(c is None for c in counts) else int(sum(counts))  # type: ignore[arg-type]

    def size_bytes(self) -> int | None:
        sizes = [m.size_bytes() for m in self.members]
        return None if any(s is None for s in sizes) else int(sum(sizes))  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["members"] = [m.describe() for m in self.members]
        d["weights"] = self.weights.tolist()
        return d

    def __repr__(self) -> str:
        return f"EnsembleModel(name={self.name!r}, members={[m.name for m in self.members]})"
