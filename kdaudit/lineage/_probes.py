"""Probe candidates (held-out rows plus mixup blends) and their selection by the pool's disagreement.

Where do a teacher's idiosyncrasies show? Where models trained by the same recipe disagree with each other: near the
decision boundaries the data does not pin down, which is exactly where a seed (and therefore a particular teacher)
decides, and where a student that copied the teacher inherits the decision. Selection therefore ranks candidates by
how much the *pool* (teacher and references together) disagrees. It never looks at the teacher alone: choosing probes
where the teacher is unusual would hand the teacher an advantage that no reference gets, break the exchangeability
of the pool members and with it the p-value. A function of the whole pool that does not depend on which member is
the teacher keeps every member's statistic computed under identical conditions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = ["disagreement_scores", "mixup_blends", "select_probes"]

# log(0) is undefined; float32 softmax underflows near 1e-38 but models disagree far above 1e-6. Shared with the
# signatures, so probe selection and the test look at log-probabilities the same way.
_LOG_FLOOR = 1e-6


def mixup_blends(X: Any, n: int, *, labels: np.ndarray | None = None, seed: int = 0,
                 low: float = 0.3, high: float = 0.7) -> np.ndarray:
    """``n`` convex blends ``lam * x_i + (1 - lam) * x_j`` of random pairs of rows, ``lam ~ U(low, high)``.

    Blends of two different classes lie between them, near the decision boundary, where models trained on the same
    data differ most. When ``labels`` is given, pairs are drawn from different labels.

    Parameters
    ----------
    X : array-like of shape (n_rows, ...)
        Numeric inputs (images, feature vectors).
    n : int
        Number of blends.
    labels : ndarray of shape (n_rows,), optional
    seed : int, default 0
    low, high : float
        Range of the mixing weight.

    Returns
    -------
    ndarray of shape (n, ...), dtype of ``X`` (float32 for integer inputs)
    """
    X = np.asarray(X)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(X), size=n)
    j = rng.integers(0, len(X), size=n)
    labels = None if labels is None else np.asarray(labels)
    for _ in range(100):  # redraw partners equal to (or, with labels, of the same class as) the first row
        same = (i == j) if labels is None else (labels[i] == labels[j]) | (i == j)
        if not same.any() or len(X) < 2:
            break
        j[same] = rng.integers(0, len(X), size=int(same.sum()))
    lam = rng.uniform(low, high, size=n).reshape((n,) + (1,) * (X.ndim - 1))
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float32
    return (lam * X[i] + (1 - lam) * X[j]).astype(dtype)


def disagreement_scores(pool: np.ndarray, *, access: str = "probabilities") -> np.ndarray:
    """How much the pool members disagree on each candidate: symmetric in the members.

    For probability-revealing suspects the score is the mean over classes of the variance across members of the
    centred log-probabilities; for label-only suspects it is the share of members not voting for the plurality label,
    with the log-probability variance breaking ties (ranks are averaged, 2:1 in favour of the label disagreement).

    Parameters
    ----------
    pool : ndarray of shape (n_members, n_candidates, n_classes)
    access : {"probabilities", "top_k", "labels"}
        The suspect's access level, which decides what disagreement is informative.
    """
    lp = np.log(np.maximum(pool.astype(np.float64), _LOG_FLOOR))
    lp -= lp.mean(axis=-1, keepdims=True)
    spread = lp.var(axis=0).mean(axis=-1)
    if access != "labels":
        return spread
    labels = pool.argmax(axis=-1)
    C = pool.shape[-1]
    shares = np.stack([(labels == c).mean(axis=0) for c in range(C)], axis=1)
    label_dis = 1.0 - shares.max(axis=1)
    return (2 * rankdata(label_dis) + rankdata(spread)) / (3 * len(spread))


def select_probes(scores: np.ndarray, n: int, *, seed: int = 0, explore: float = 0.2) -> np.ndarray:
    """Indices of ``n`` candidates: the highest-scoring ``(1 - explore) n`` plus ``explore n`` drawn at random.

    A random share keeps some ordinary rows among the probes, so signatures that live away from the boundary (the
    non-top class structure on confident rows) still see data. Sorted indices are returned.
    """
    N = len(scores)
    if n >= N:
        return np.arange(N)
    n_top = round(n * (1 - explore))
    order = np.argsort(-scores, kind="stable")
    top = order[:n_top]
    rest = order[n_top:]
    rng = np.random.default_rng(seed)
    extra = rng.choice(rest, size=n - n_top, replace=False) if n > n_top else np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate([top, extra]).astype(np.int64))

