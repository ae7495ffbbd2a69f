"""The Hinton et al. (2015) distillation loss, and how each teacher access level becomes soft targets."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kdaudit._exceptions import invalid_argument
from kdaudit.models._convert import keep_top_k, one_hot

__all__ = ["kd_loss", "soft_targets"]

# float32 softmax outputs underflow to exactly 0; log(0) would make the softened targets undefined.
_LOG_FLOOR = 1e-30


def _loss_from_targets(student_logits: torch.Tensor, targets_T: torch.Tensor | None, y_soft: torch.Tensor | None,
                       temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * T^2 * KL(targets_T || softmax(s / T)) + (1 - alpha) * CE(y_soft, softmax(s))``.

    ``targets_T`` are the teacher's distributions already softened at ``T``; ``y_soft`` are label distributions
    (one-hot rows for hard labels, blends for mixup). A missing part drops out and the other gets weight 1.
    """
    parts = []
    if targets_T is not None:
        log_s_T = F.log_softmax(student_logits / temperature, dim=1)
        # kl_div(input=log q_student, target=p_teacher) = sum p (log p - log q), with 0 log 0 = 0; the T^2 factor
        # keeps the gradient scale of this term independent of T (Hinton et al. 2015, section 2).
        kd = F.kl_div(log_s_T, targets_T, reduction="batchmean") * (temperature ** 2)
        parts.append((alpha if y_soft is not None else 1.0, kd))
    if y_soft is not None:
        ce = -(y_soft * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()
        parts.append((1.0 - alpha if targets_T is not None else 1.0, ce))
    if not parts:
        raise invalid_argument("targets", None, "teacher targets, labels, or both")
    return sum(w * p for w, p in parts)  # type: ignore[return-value]


def kd_loss(student_logits: Any, teacher_logits: Any, y_true: Any = None, *, temperature: float = 4.0,
            alpha: float = 0.9) -> torch.Tensor:
    """Hinton knowledge-distillation loss for one batch (mean over rows).

    ``loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(y_true, softmax(s))``

    Parameters
    ----------
    student_logits : torch.Tensor of shape (n, C)
    teacher_logits : torch.Tensor of shape (n, C)
        Logits, or log-probabilities (softmax ignores the per-row constant that separates them).
    y_true : torch.Tensor of shape (n,), optional
        True labels. Without them the loss is the distillation term alone (weight 1).
    temperature : float, default 4.0
    alpha : float in [0, 1], default 0.9
        Weight of the distillation term.

    Returns
    -------
    torch.Tensor
        A scalar, differentiable with respect to ``student_logits``.

    Examples
    --------
    >>> s = torch.tensor([[1.0, 0.0]]); t = torch.tensor([[0.0, 1.0]])
    >>> round(float(kd_loss(s, t, torch.tensor([0]), temperature=1.0, alpha=1.0)), 4)
    0.4621
    """
    temperature, alpha = check_temperature_alpha(temperature, alpha)
    s = torch.as_tensor(student_logits)
    t = torch.as_tensor(teacher_logits, dtype=s.dtype, device=s.device)
    if s.ndim != 2 or t.shape != s.shape:
        raise invalid_argument("teacher_logits", f"shape {tuple(t.shape)}",
                               f"the student's shape {tuple(s.shape)}, (n, n_classes)")
    y_soft = None
    if y_true is not None:
        y = torch.as_tensor(y_true, device=s.device).long()
        if y.shape != (s.shape[0],):
            raise invalid_argument("y_true", f"shape {tuple(y.shape)}", f"shape ({s.shape[0]},)")
        y_soft = F.one_hot(y, s.shape[1]).to(s.dtype)
    targets_T = F.softmax(t / temperature, dim=1).detach()
    return _loss_from_targets(s, targets_T, y_soft, temperature, alpha)


def check_temperature_alpha(temperature: Any, alpha: Any) -> tuple[float, float]:
    try:
        temperature = float(temperature)
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise invalid_argument("temperature", temperature, "a number > 0 (and alpha a number in [0, 1])") from None
    if not np.isfinite(temperature) or temperature <= 0:
        raise invalid_argument("temperature", temperature, "a finite number > 0")
    if not 0.0 <= alpha <= 1.0:
        raise invalid_argument("alpha", alpha, "a number in [0, 1]")
    return temperature, alpha


def soft_targets(probs: np.ndarray, logits: np.ndarray | None, *, access: str, top_k: int | None,
                 temperature: float) -> np.ndarray:
    """What a student can learn from each access level, as (n, C) float32 distributions softened at ``T``.

    - probabilities: ``softmax(logits / T)`` when the teacher gave logits, else ``softmax(log p / T)`` (the same
      thing: log-probabilities are logits up to a per-row constant);
    - top-k: the k visible probabilities are kept and the unseen mass ``1 - sum`` is spread evenly over the other
      classes (the maximum-entropy completion: it claims nothing about classes the teacher did not show), then
      softened like full probabilities;
    - labels: one-hot rows of the teacher's labels, not softened (a softened one-hot carries no extra information),
      which makes the distillation term the cross-entropy to the teacher's labels: label-only extraction.
    """
    n_classes = probs.shape[1]
    if access == "labels":
        return one_hot(probs.argmax(axis=1), n_classes)
    if access == "top_k":
        p = keep_top_k(probs.astype(np.float64), int(top_k))  # type: ignore[arg-type]
        hidden = p == 0
        n_hidden = hidden.sum(axis=1, keepdims=True)
        rest = np.clip(1.0 - p.sum(axis=1, keepdims=True), 0.0, None)
        p = np.where(hidden, rest / np.maximum(n_hidden, 1), p)
        p /= p.sum(axis=1, keepdims=True)
        z = np.log(np.maximum(p, _LOG_FLOOR))
    elif logits is not None:
        z = np.asarray(logits, dtype=np.float64)
    else:
        z = np.log(np.maximum(np.asarray(probs, dtype=np.float64), _LOG_FLOOR))
    z = z / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


