"""Reference distillation (Hinton KD) and the same recipe without a teacher (controls, fine-tuning).

Teacher outputs always come through :func:`kdaudit.harness.run`, the same path an audit uses, so a student is
distilled from exactly what the audit will see of its teacher (access level, ensemble averaging, query counts).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from kdaudit._exceptions import KDAuditError, invalid_argument
from kdaudit.data._audit_data import AuditData
from kdaudit.distill._loss import _loss_from_targets, check_temperature_alpha, soft_targets
from kdaudit.models._convert import one_hot
from kdaudit.models._torch import resolve_device

__all__ = ["TrainingRecord", "distill", "finetune", "train_control"]

_ACCESS_RANK = {"labels": 0, "top_k": 1, "probabilities": 2}
_AUGMENTS = (None, "mixup")
# Mixing weights lambda ~ Beta(1, 1) = uniform: blends spread over the whole segment between two inputs, a query
# distribution clearly unlike the training inputs (the point of the "mixup" option).
_MIXUP_BETA = 1.0


@dataclass(frozen=True)
class TrainingRecord:
    """How a model was trained; attached to the returned module as ``module.kdaudit_record_``.

    It is the raw material of a lineage manifest: teacher hashes, the data hashes, settings and queries used.
    """

    method: str  # "hinton_kd", "control" or "finetune"
    settings: dict[str, Any]
    data_sha256: str
    query_data_sha256: str | None = None
    teachers: tuple[dict[str, Any], ...] = ()
    queries: int = 0
    n_rows: int = 0
    loss_history: tuple[float, ...] = ()
    wall_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, include_timing: bool = True) -> dict[str, Any]:
        d = {
            "method": self.method,
            "settings": dict(self.settings),
            "data_sha256": self.data_sha256,
            "query_data_sha256": self.query_data_sha256,
            "teachers": [dict(t) for t in self.teachers],
            "queries": self.queries,
            "n_rows": self.n_rows,
            "loss_history": list(self.loss_history),
            **self.extra,
        }
        if include_timing:
            d["wall_time_s"] = self.wall_time_s
        return d


# ------------------------------------------------------------------------------------------------ validation
def _check_common(student: Any, data: Any, epochs: Any, lr: Any, batch_size: Any, weight_decay: Any,
                  seed: Any) -> None:
    if not isinstance(student, nn.Module):
        raise invalid_argument("student", type(student).__name__, "a torch.nn.Module returning logits")
    if not any(p.requires_grad for p in student.parameters()):
        raise invalid_argument("student", type(student).__name__,
                               "a module with trainable parameters (quantize after training, not before)")
    if not isinstance(data, AuditData):
        raise invalid_argument("data", type(data).__name__, "an AuditData (see kdaudit.data)")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise invalid_argument("epochs", epochs, "an integer >= 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise invalid_argument("batch_size", batch_size, "an integer >= 1")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise invalid_argument("lr", lr, "a finite number > 0")
    if (isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real)
            or not math.isfinite(weight_decay) or weight_decay < 0):
        raise invalid_argument("weight_decay", weight_decay, "a finite number >= 0")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise invalid_argument("seed", seed, "an integer >= 0")


def parse_access(teacher_access: Any) -> tuple[str, int | None]:
    """``"probabilities"``, ``"top_k:K"`` (or ``"top-k:K"``) or ``"labels"`` -> (access, k)."""
    accepted = '"probabilities", "top_k:K" with an integer K >= 1, or "labels"'
    if not isinstance(teacher_access, str):
        raise invalid_argument("teacher_access", teacher_access, accepted)
    text = teacher_access.strip().lower().replace("-", "_")
    if text in ("probabilities", "labels"):
        return text, None
    if text.startswith("top_k:"):
        try:
            k = int(text.split(":", 1)[1])
        except ValueError:
            raise invalid_argument("teacher_access", teacher_access, accepted) from None
        if k >= 1:
            return "top_k", k
    raise invalid_argument("teacher_access", teacher_access, accepted)


def _check_query_options(augment: Any, query_budget: Any) -> None:
    if augment not in _AUGMENTS:
        raise invalid_argument("augment", augment, "None or 'mixup'")
    if query_budget is not None and (isinstance(query_budget, bool) or not isinstance(query_budget, (int, np.integer))
                                     or query_budget < 1):
        raise invalid_argument("query_budget", query_budget, "None or an integer >= 1")


# --------------------------------------------------------------------------------------------- query set
def _as_numpy(X: Any) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    if hasattr(X, "to_numpy"):
        return X.to_numpy(dtype=np.float32)
    return np.asarray(X)


def query_set(data: AuditData, *, augment: str | None, query_budget: int | None,
              seed: int) -> tuple[AuditData, np.ndarray | None]:
    """The rows the teacher is asked about, and the label distributions that go with them (None without labels).

    Without augmentation: the data itself, or a seeded random subset of ``query_budget`` rows. With ``"mixup"``:
    ``query_budget`` (default ``len(data)``) blends ``lam * x_i + (1 - lam) * x_j`` of random pairs of rows,
    ``lam ~ Beta(1, 1)``, with labels blended the same way; they form a new AuditData with ids ``0..m-1``.
    """
    n = len(data)
    n_classes = data.n_classes
    rng = np.random.default_rng(seed)
    if augment is None:
        if query_budget is None or query_budget >= n:
            sub = data
        else:
            sub = data.subset(np.sort(rng.choice(n, size=query_budget, replace=False)),
                              name=f"{data.name} [{query_budget} queries]")
        y_soft = None if sub.y_true is None else one_hot(sub.y_true, int(n_classes))
        return sub, y_soft
    m = n if query_budget is None else int(query_budget)
    i = rng.integers(0, n, size=m)
    j = rng.integers(0, n, size=m)
    lam = rng.beta(_MIXUP_BETA, _MIXUP_BETA, size=m)
    X = _as_numpy(data.X).astype(np.float32, copy=False)
    lam_x = lam.reshape((m,) + (1,) * (X.ndim - 1)).astype(np.float32)
    X_mix = lam_x * X[i] + (1.0 - lam_x) * X[j]
    y_soft = None
    if data.y_true is not None:
        eye = np.eye(int(n_classes), dtype=np.float32)
        lam_y = lam[:, None].astype(np.float32)
        y_soft = lam_y * eye[data.y_true[i]] + (1.0 - lam_y) * eye[data.y_true[j]]
    mixed = AuditData(X=np.ascontiguousarray(X_mix, dtype=np.float32), ids=np.arange(m, dtype=np.int64),
                      classes=data.classes, name=f"{data.name} [mixup queries, seed {seed}]", source=data.source)
    return mixed, y_soft


# ---------------------------------------------------------------------------------------------- teacher
def teacher_outputs(teacher: Any, data: AuditData, *, device: Any, seed: int,
                    progress: bool) -> tuple[Any, Any]:
    """Run the teacher (or the mean of an ensemble's probabilities) over ``data`` through the harness.

    Returns the teacher's ``ModelOutputs`` and the run's ``Provenance``.
    """
    from kdaudit.harness import run
    from kdaudit.models import EnsembleModel, ModelAdapter, as_model

    if isinstance(teacher, (list, tuple)):
        if len(teacher) == 0:
            raise invalid_argument("teacher", "an empty list", "a model, or a non-empty list of models (an ensemble)")
        model = EnsembleModel(list(teacher), name="teacher-ensemble")
    else:
        # an adapter keeps its own name (as_model would rename it in place)
        model = as_model(teacher, name=None if isinstance(teacher, ModelAdapter) else "teacher")
    result = run([model], data, device=device, seed=seed, progress=progress)
    outputs = result.outputs
    return outputs[outputs.teacher], result.provenance


def _effective_access(offered: Any, offered_k: int | None, requested: str, k: int | None) -> tuple[str, int | None]:
    offered = str(getattr(offered, "value", offered))
    if _ACCESS_RANK[requested] > _ACCESS_RANK[offered] or (
            requested == offered == "top_k" and k is not None and offered_k is not None and k > offered_k):
        shown = f"top_k:{offered_k}" if offered == "top_k" else offered
        raise invalid_argument("teacher_access", requested if k is None else f"top_k:{k}",
                               f"at most what the teacher gives ({shown})")
    return requested, k


# ------------------------------------------------------------------------------------------------- training
def _fit(student: nn.Module, X: np.ndarray, targets: np.ndarray | None, y_soft: np.ndarray | None, *,
         n_classes: int, temperature: float, alpha: float, epochs: int, lr: float, batch_size: int,
         weight_decay: float, seed: int, device: Any, progress: bool, desc: str) -> list[float]:
    """Adam on the Hinton loss; returns the mean loss of each epoch. Trains ``student`` in place."""
    dev = resolve_device(device)
    student.to(dev)
    X_t = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    t_t = None if targets is None else torch.from_numpy(targets)
    y_t = None if y_soft is None else torch.from_numpy(np.ascontiguousarray(y_soft, dtype=np.float32))
    n = len(X_t)
    history: list[float] = []
    cuda_devices = [dev] if dev.type == "cuda" else []
    # fork_rng: seeding here (dropout, shuffling) must not change the caller's global RNG stream.
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(student.parameters(), lr=lr, weight_decay=weight_decay)
        student.train()
        epoch_iter: Any = range(epochs)
        if progress:
            from tqdm.auto import tqdm

            epoch_iter = tqdm(epoch_iter, desc=desc, unit="epoch")
        try:
            for _ in epoch_iter:
                order = torch.randperm(n, generator=generator)
                total = 0.0
                for start in range(0, n, batch_size):
                    idx = order[start:start + batch_size]
                    out = student(X_t[idx].to(dev))
                    if out.ndim != 2 or out.shape[1] != n_classes:
                        raise invalid_argument("student", f"outputs of shape {tuple(out.shape)}",
                                               f"(batch, {n_classes}) logits, one column per class")
                    loss = _loss_from_targets(
                        out,
                        None if t_t is None else t_t[idx].to(dev),
                        None if y_t is None else y_t[idx].to(dev),
                        temperature, alpha,
                    )
                    if not torch.isfinite(loss):
                        raise KDAuditError(f"training diverged (loss {float(loss)}); argument 'lr' got {lr}; "
                                           "expected a smaller learning rate")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(idx)
                history.append(total / n)
                if progress:
                    epoch_iter.set_postfix(loss=f"{history[-1]:.4f}")
        finally:
            student.eval()
    return history


def distill(teacher: Any, student: nn.Module, data: AuditData, *, temperature: float = 4.0, alpha: float = 0.9,
            epochs: int = 10, lr: float = 1e-3, batch_size: int = 128, weight_decay: float = 0.0, seed: int = 0,
            device: Any = "cpu", teacher_access: str = "probabilities", augment: str | None = None,
            query_budget: int | None = None, progress: bool = False) -> nn.Module:
    """Distill ``teacher`` into ``student`` with the Hinton et al. (2015) loss.

    ``loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(y, softmax(s))``

    The teacher is queried once, through :func:`kdaudit.harness.run`, on the training rows (or on a subset, or on
    mixup blends of them); the student is then trained with Adam for ``epochs`` passes over those rows.

    Parameters
    ----------
    teacher : torch.nn.Module, fitted scikit-learn classifier, ModelAdapter, or list of these
        Anything :func:`kdaudit.models.as_model` accepts (wrap a bare callable in
        :class:`~kdaudit.models.BlackBoxModel`, which needs ``n_classes``). A list is an ensemble teacher: the mean of
        its members' probabilities. A teacher that gives probabilities but no logits is softened through its log-probabilities
        (``softmax(log p / T)``, the same as softening logits).
    student : torch.nn.Module
        Returns (n, n_classes) logits. Trained in place and returned (in eval mode).
    data : AuditData
        Training rows. ``y_true`` feeds the cross-entropy term; without labels the loss is the distillation term
        alone.
    temperature : float > 0, default 4.0
    alpha : float in [0, 1], default 0.9
        Weight of the distillation term.
    epochs, lr, batch_size, weight_decay
        Adam settings.
    seed : int, default 0
        Seeds shuffling, dropout, query subsets and mixup; the same seed and inputs give identical weights (on
        CPU). The caller's global torch RNG is left untouched.
    device : str, default "cpu"
    teacher_access : {"probabilities", "top_k:K", "labels"}, default "probabilities"
        What the student learns from: the full distribution; the top K probabilities (the unseen mass spread evenly
        over the other classes); or the teacher's labels only (label-only extraction: the distillation term becomes
        the cross-entropy to the teacher's labels, the temperature is not used). It may not exceed what the teacher
        gives (a black-box teacher that answers with labels cannot be distilled at "probabilities").
    augment : {None, "mixup"}, default None
        ``"mixup"`` asks the teacher about blends ``lam * x_i + (1 - lam) * x_j`` of random pairs of training rows
        (``lam`` uniform in [0, 1]) instead of the rows themselves: a different query distribution.
    query_budget : int, optional
        Number of teacher queries: a seeded random subset of the rows, or the number of mixup blends. Default: one
        query per row.
    progress : bool, default False
        Progress bars for the teacher run and the epochs.

    Returns
    -------
    torch.nn.Module
        ``student``, trained, with a :class:`TrainingRecord` in ``student.kdaudit_record_``.

    Examples
    --------
    >>> from kdaudit.data import load_digits
    >>> from kdaudit.distill import distill, mlp, train_control
    >>> data = load_digits()
    >>> teacher = train_control(mlp(64, 10, hidden=(64,), seed=1), data, epochs=3)
    >>> student = distill(teacher, mlp(64, 10, hidden=(16,), seed=2), data, temperature=4.0, epochs=3)
    >>> student.kdaudit_record_.queries
    1797
    """
    started = time.perf_counter()
    _check_common(student, data, epochs, lr, batch_size, weight_decay, seed)
    temperature, alpha = check_temperature_alpha(temperature, alpha)
    requested, k = parse_access(teacher_access)
    _check_query_options(augment, query_budget)

    queries, y_soft = query_set(data, augment=augment, query_budget=query_budget, seed=int(seed))
    out, provenance = teacher_outputs(teacher, queries, device=device, seed=int(seed), progress=progress)
    n_classes = out.n_classes
    if data.n_classes is not None and data.classes is not None and n_classes != data.n_classes:
        raise invalid_argument("teacher", f"{n_classes} output classes",
                               f"{data.n_classes}, one per class of the data {list(data.classes)}")
    if y_soft is not None and y_soft.shape[1] != n_classes:
        raise invalid_argument("data", f"labels for {y_soft.shape[1]} classes",
                               f"labels for the teacher's {n_classes} classes")
    access, k = _effective_access(out.access, out.top_k, requested, k)
    targets = soft_targets(out.probs, out.logits, access=access, top_k=k, temperature=temperature)
    X = _as_numpy(queries.X)
    # Hard labels carry nothing to soften: label-only extraction is the cross-entropy to the teacher's labels.
    loss_temperature = 1.0 if access == "labels" else temperature
    history = _fit(student, X, targets, y_soft, n_classes=n_classes, temperature=loss_temperature, alpha=alpha,
                   epochs=int(epochs), lr=float(lr), batch_size=int(batch_size), weight_decay=float(weight_decay),
                   seed=int(seed), device=device, progress=progress, desc="distill")
    settings = {
        "temperature": loss_temperature, "alpha": alpha, "epochs": int(epochs), "lr": float(lr),
        "batch_size": int(batch_size), "weight_decay": float(weight_decay), "seed": int(seed),
        "teacher_access": access if access != "top_k" else f"top_k:{k}", "augment": augment,
        "query_budget": query_budget, "loss": "hinton_kd",
    }
    student.kdaudit_record_ = TrainingRecord(  # type: ignore[assignment]
        method="hinton_kd",
        settings=settings,
        data_sha256=data.fingerprint(),
        query_data_sha256=queries.fingerprint(),
        teachers=tuple(m.to_dict(include_timing=False) for m in provenance.models),
        queries=int(sum(m.queries for m in provenance.models[:1])),
        n_rows=len(queries),
        loss_history=tuple(history),
        wall_time_s=time.perf_counter() - started,
    )
    return student


def _train_on_labels(method: str, student: nn.Module, data: AuditData, *, epochs: int, lr: float, batch_size: int,
                     weight_decay: float, seed: int, device: Any, progress: bool) -> nn.Module:
    started = time.perf_counter()
    _check_common(student, data, epochs, lr, batch_size, weight_decay, seed)
    if data.y_true is None:
        raise invalid_argument("data", "an AuditData without labels (y_true is None)", "data with y_true")
    n_classes = int(data.n_classes)  # type: ignore[arg-type]
    history = _fit(student, _as_numpy(data.X), None, one_hot(data.y_true, n_classes), n_classes=n_classes,
                   temperature=1.0, alpha=0.0, epochs=int(epochs), lr=float(lr), batch_size=int(batch_size),
                   weight_decay=float(weight_decay), seed=int(seed), device=device, progress=progress, desc=method)
    previous = getattr(student, "kdaudit_record_", None)
    extra = {"previous": previous.to_dict(include_timing=False)} if isinstance(previous, TrainingRecord) else {}
    student.kdaudit_record_ = TrainingRecord(  # type: ignore[assignment]
        method=method,
        settings={"epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size),
                  "weight_decay": float(weight_decay), "seed": int(seed), "loss": "cross_entropy"},
        data_sha256=data.fingerprint(),
        n_rows=len(data),
        loss_history=tuple(history),
        wall_time_s=time.perf_counter() - started,
        extra=extra,
    )
    return student


def train_control(student: nn.Module, data: AuditData, *, epochs: int = 10, lr: float = 1e-3, batch_size: int = 128,
                  weight_decay: float = 0.0, seed: int = 0, device: Any = "cpu", progress: bool = False) -> nn.Module:
    """Train ``student`` on the true labels alone: the distillation recipe without a teacher.

    Use it for independently trained control models, for a teacher, and for the teacher's own recipe with other
    seeds (the reference models a lineage test compares against). Same optimiser, batches and seeding as
    :func:`distill`; the loss is the cross-entropy to ``data.y_true``.

    Returns
    -------
    torch.nn.Module
        ``student``, trained in place, in eval mode, with a :class:`TrainingRecord` in ``kdaudit_record_``.
    """
    return _train_on_labels("control", student, data, epochs=epochs, lr=lr, batch_size=batch_size,
                            weight_decay=weight_decay, seed=seed, device=device, progress=progress)


def finetune(model: nn.Module, data: AuditData, *, epochs: int = 3, lr: float = 1e-4, batch_size: int = 128,
             weight_decay: float = 0.0, seed: int = 0, device: Any = "cpu", progress: bool = False) -> nn.Module:
    """Continue training ``model`` on ``data``'s true labels (cross-entropy), e.g. to disguise a distilled student.

    The same loop as :func:`train_control`, with a smaller default learning rate. A previous
    :class:`TrainingRecord` is kept inside the new one (``extra["previous"]``).
    """
    return _train_on_labels("finetune", model, data, epochs=epochs, lr=lr, batch_size=batch_size,
                            weight_decay=weight_decay, seed=seed, device=device, progress=progress)
