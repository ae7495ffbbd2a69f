"""Fitting scikit-learn students to a teacher's soft labels, and scikit-learn controls."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit._validation import check_sample_weight
from kdaudit.data._audit_data import AuditData
from kdaudit.distill._loss import check_temperature_alpha, soft_targets
from kdaudit.distill._train import (
    _as_numpy,
    _check_query_options,
    _effective_access,
    parse_access,
    query_set,
    teacher_outputs,
)

__all__ = ["distill_sklearn", "fit_sklearn_control"]


def _flat(X: Any) -> np.ndarray:
    arr = _as_numpy(X)
    return arr.reshape(len(arr), -1)


def _check_estimator(estimator: Any, *, needs_weight: bool) -> None:
    from sklearn.utils.validation import has_fit_parameter

    if not hasattr(estimator, "fit") or not hasattr(estimator, "predict_proba"):
        raise invalid_argument("estimator", type(estimator).__name__,
                               "a scikit-learn classifier with fit and predict_proba")
    if needs_weight and not has_fit_parameter(estimator, "sample_weight"):
        raise invalid_argument("estimator", type(estimator).__name__,
                               "an estimator whose fit accepts sample_weight (soft labels are fitted as weights); "
                               "use teacher_access='labels' to fit the teacher's hard labels instead")


def _check_classes(estimator: Any, n_classes: int) -> None:
    classes = np.asarray(getattr(estimator, "classes_", np.arange(n_classes)))
    if classes.shape != (n_classes,) or not np.array_equal(classes, np.arange(n_classes)):
        raise invalid_argument("data", f"training labels covering classes {classes.tolist()}",
                               f"all {n_classes} classes, so that predict_proba has one column per class "
                               "(use more rows or queries)")


def distill_sklearn(teacher: Any, estimator: Any, data: AuditData, *, temperature: float = 1.0, alpha: float = 1.0,
                    teacher_access: str = "probabilities", augment: str | None = None,
                    query_budget: int | None = None, seed: int = 0, device: Any = "cpu",
                    progress: bool = False) -> Any:
    """Fit a scikit-learn classifier to a teacher's soft labels.

    Each row is repeated once per class, with that class as its label and ``sample_weight`` equal to the target
    probability of the class. For estimators that minimise a weighted log-loss (logistic regression, MLPs, gradient
    boosting with log-loss, ...) this minimises the cross-entropy between the targets and the estimator's
    probabilities, which is the distillation objective; the weights of each original row sum to one, so
    regularisation keeps its usual strength. The estimator learns the softened distribution itself (its own
    temperature is 1), so no ``T^2`` factor applies.

    Parameters
    ----------
    teacher : model, or list of models (ensemble)
        As in :func:`distill`; queried through :func:`kdaudit.harness.run`.
    estimator : scikit-learn classifier
        Must accept ``sample_weight`` in ``fit`` (unless ``teacher_access="labels"``). Fitted in place and returned.
    data : AuditData
        Inputs are flattened to (n, features).
    temperature : float > 0, default 1.0
        Targets are ``softmax(log p / T)``.
    alpha : float in [0, 1], default 1.0
        Targets are ``alpha * teacher + (1 - alpha) * one_hot(y_true)`` (cross-entropy is linear in the target, so
        this is the same weighting as :func:`distill`'s two terms). Needs ``data.y_true`` when below 1.
    teacher_access, augment, query_budget, seed, device, progress
        As in :func:`distill`. With ``"labels"`` the estimator is fitted on the teacher's hard labels directly.

    Returns
    -------
    estimator
        Fitted, with ``classes_ == [0, ..., C - 1]``.
    """
    temperature, alpha = check_temperature_alpha(temperature, alpha)
    access, k = parse_access(teacher_access)
    _check_query_options(augment, query_budget)
    if not isinstance(data, AuditData):
        raise invalid_argument("data", type(data).__name__, "an AuditData (see kdaudit.data)")
    if alpha < 1.0 and data.y_true is None:
        raise invalid_argument("alpha", alpha, "1.0 for data without labels (y_true is None)")
    _check_estimator(estimator, needs_weight=access != "labels")
    queries, y_soft = query_set(data, augment=augment, query_budget=query_budget, seed=int(seed))
    out, _ = teacher_outputs(teacher, queries, device=device, seed=int(seed), progress=progress)
    access, k = _effective_access(out.access, out.top_k, access, k)
    n_classes = out.n_classes
    X = _flat(queries.X)
    if access == "labels" and (alpha == 1.0 or y_soft is None):
        estimator.fit(X, out.labels)
    else:
        targets = soft_targets(out.probs, out.logits, access=access, top_k=k, temperature=temperature)
        if alpha < 1.0:
            targets = alpha * targets + (1.0 - alpha) * y_soft  # type: ignore[operator]
        n = len(X)
        X_rep = np.repeat(X, n_classes, axis=0)
        y_rep = np.tile(np.arange(n_classes), n)
        w = targets.astype(np.float64).reshape(-1)
        # Zero-weight rows change nothing in the objective; dropping them keeps the fit small (top-k, labels).
        keep = w > 0
        estimator.fit(X_rep[keep], y_rep[keep], sample_weight=w[keep])
    _check_classes(estimator, n_classes)
    return estimator


def fit_sklearn_control(estimator: Any, data: AuditData, *, sample_weight: Any = None) -> Any:
    """Fit a scikit-learn classifier on ``data``'s true labels (a control without a teacher).

    Inputs are flattened to (n, features). Returns the fitted estimator (fitted in place).
    """
    if not isinstance(data, AuditData):
        raise invalid_argument("data", type(data).__name__, "an AuditData (see kdaudit.data)")
    if data.y_true is None:
        raise invalid_argument("data", "an AuditData without labels (y_true is None)", "data with y_true")
    _check_estimator(estimator, needs_weight=sample_weight is not None)
    w = check_sample_weight(sample_weight, len(data))
    X = _flat(data.X)
    if w is None:
        estimator.fit(X, data.y_true)
    else:
        estimator.fit(X, data.y_true, sample_weight=w)
    if data.n_classes is not None:
        _check_classes(estimator, int(data.n_classes))
    return estimator
