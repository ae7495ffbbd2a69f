"""scikit-learn estimators behind the model protocol."""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit._io import recorded_path
from kdaudit.models._base import Access, ModelAdapter
from kdaudit.models._convert import sigmoid_binary, softmax

__all__ = ["SklearnModel"]


class SklearnModel(ModelAdapter):
    """A fitted scikit-learn classifier (or pipeline).

    Probabilities come from ``predict_proba``; an estimator without it (``LinearSVC``, ``RidgeClassifier``) has
    its ``decision_function`` scores turned into probabilities by a sigmoid (binary) or softmax (multiclass). Those
    are monotone in the scores, so top-1 agreement is exact, but they are not calibrated probabilities; the
    adapter reports ``output_source`` so a report can say so.

    Columns follow the estimator's ``classes_`` order. Integer classes ``0..C-1`` are treated as indices (no
    names); any other classes become the class names checked against the teacher's and the data's.
    """

    kind = "sklearn"

    def __init__(self, estimator: Any, *, name: str | None = None, source: str | None = None) -> None:
        if not (hasattr(estimator, "predict_proba") or hasattr(estimator, "decision_function")):
            raise invalid_argument("estimator", type(estimator).__name__,
                                   "a fitted classifier with predict_proba or decision_function")
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise invalid_argument("estimator", type(estimator).__name__,
                                   "a fitted classifier (it has no classes_; call fit first)")
        classes = np.asarray(classes)
        self.estimator = estimator
        self.name = name or type(estimator).__name__
        self.n_classes = int(len(classes))
        is_index = classes.dtype.kind in "iu" and np.array_equal(classes, np.arange(len(classes)))
        self.classes = None if is_index else tuple(str(c) for c in classes)
        self.access = Access.PROBABILITIES
        self.output = "probabilities"
        self.source = source
        self.query_count = 0
        self.output_source = "predict_proba" if _has_proba(estimator) else "decision_function"

    def predict(self, X: Any) -> np.ndarray:
        if self.output_source == "predict_proba":
            p = np.asarray(self.estimator.predict_proba(X), dtype=np.float32)
        else:
            s = np.asarray(self.estimator.decision_function(X))
            p = sigmoid_binary(s) if s.ndim == 1 or s.shape[1] == 1 else softmax(s)
        self.query_count += int(p.shape[0])
        return p

    def fingerprint(self) -> str:
        # Pickling is safe (unpickling is the risk); for one library version the bytes depend only on the
        # fitted state, so the same model hashes the same across processes.
        return hashlib.sha256(pickle.dumps(self.estimator, protocol=4)).hexdigest()

    def n_parameters(self) -> int:
        return _count_parameters(self.estimator, set())

    def size_bytes(self) -> int:
        return len(pickle.dumps(self.estimator, protocol=4))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["output_source"] = self.output_source
        if self.source:
            d["source"] = recorded_path(self.source)
        return d

    def __repr__(self) -> str:
        return f"SklearnModel(name={self.name!r}, estimator={type(self.estimator).__name__})"


def _has_proba(est: Any) -> bool:
    # predict_proba may exist but be unavailable (SVC(probability=False) raises AttributeError on access)
    try:
        return callable(est.predict_proba)
    except AttributeError:
        return False


def _count_parameters(obj: Any, seen: set[int]) -> int:
    """Fitted real numbers in an estimator: float arrays in its fitted attributes (``*_``), trees' thresholds
    and leaf values, and the same in nested estimators (pipelines, ensembles)."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return sum(_count_parameters(o, seen) for o in obj.ravel())
        # fitted parameters are real numbers; integer arrays are bookkeeping (n_iter_, indices, counts)
        return int(obj.size) if obj.dtype.kind in "fc" else 0
    if isinstance(obj, (list, tuple)):
        return sum(_count_parameters(o, seen) for o in obj)
    if isinstance(obj, dict):
        return sum(_count_parameters(o, seen) for o in obj.values())
    if type(obj).__name__ == "Tree" and hasattr(obj, "threshold"):
        return int(obj.threshold.size + obj.value.size)
    if hasattr(obj, "get_params") and hasattr(obj, "__dict__"):
        total = 0
        for key, value in vars(obj).items():
            if key.endswith("_") and not key.startswith("_") and key != "classes_":
                total += _count_parameters(value, seen)
            elif key in ("steps", "estimators", "estimator"):  # pipelines and meta-estimators
                total += _count_parameters(value, seen)
        return total
    return 0
