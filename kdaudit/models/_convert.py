"""Turning raw model outputs (logits, decision scores, top-k, labels) into probabilities."""

from __future__ import annotations

import numpy as np

__all__ = ["keep_top_k", "one_hot", "sigmoid_binary", "softmax", "to_probabilities"]


def softmax(scores: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise softmax computed in float64 (max-subtracted, so large logits cannot overflow), cast to float32.

    float32 softmax of logits that differ by ~100 loses the small probabilities the calibration and
    lineage metrics look at; float64 keeps them, and the cast happens once at the end.
    """
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    if out is None:
        return z.astype(np.float32)
    out[...] = z
    return out


def sigmoid_binary(scores: np.ndarray) -> np.ndarray:
    """(n,) decision scores of a binary classifier -> (n, 2) probabilities [P(class 0), P(class 1)]."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    # two logits (0, s) through the stable softmax equal the sigmoid, without overflow for large |s|
    return softmax(np.stack([np.zeros_like(s), s], axis=1))


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def keep_top_k(p: np.ndarray, k: int) -> np.ndarray:
    """Zero every entry outside each row's k largest (ties broken by the lower class index, as argsort does)."""
    if k >= p.shape[1]:
        return p
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    out = np.zeros_like(p)
    rows = np.arange(len(p))[:, None]
    out[rows, order] = p[rows, order]
    return out


def to_probabilities(raw: np.ndarray, output: str, n_classes: int) -> np.ndarray:
    """float32 (n, C) probabilities from what an adapter's ``predict`` returned (see ``ModelAdapter.output``)."""
    if output == "logits":
        return softmax(raw)
    if output == "labels":
        return one_hot(np.asarray(raw, dtype=np.int64), n_classes)
    return np.asarray(raw, dtype=np.float32)
