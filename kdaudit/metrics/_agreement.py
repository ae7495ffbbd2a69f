"""Agreement and fidelity of a student to its teacher, and the accuracy it retains.

Every statistic is a ratio of additive per-row sums, kept per bootstrap block (see ``_resampling``): the plain
functions, the streaming :class:`AgreementAccumulator` and the bootstrap replicates use the same formulas.

Conventions: divergences are in nats. ``kl_divergence`` is KL(teacher || student) = Σ_c t_c log(t_c / max(s_c, eps))
with ``eps = 1e-12``: terms with t_c = 0 contribute 0, and a student probability of 0 where the teacher's is positive
is clipped to ``eps`` (so the divergence stays finite; no renormalisation). ``js_divergence`` is the Jensen-Shannon
divergence ½KL(t||m) + ½KL(s||m), m = (t + s)/2 (no clipping needed), i.e. the *square* of
``scipy.spatial.distance.jensenshannon`` (natural log). ``total_variation`` is ½ Σ_c |t_c − s_c|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit._kinds import Access
from kdaudit._validation import check_consistent_length, check_sample_weight
from kdaudit.metrics._accumulator import SAME, SUM, Accumulator
from kdaudit.metrics._common import (
    SectionResult,
    blocks_for,
    check_rows,
    default_chunk,
    definition,
    evaluate,
    labelled_pair,
    labels_of,
    scan_probabilities,
)
from kdaudit.metrics._resampling import BlockStats, Bootstrap

if TYPE_CHECKING:  # the statistics know no harness; section functions take its outputs duck-typed
    from kdaudit.harness._outputs import ModelOutputs

__all__ = [
    "DEFINITIONS",
    "AgreementAccumulator",
    "AgreementResult",
    "McNemarResult",
    "agreement_accumulator",
    "agreement_fold",
    "agreement_section",
    "cohen_kappa_score",
    "conditional_agreement_score",
    "js_divergence",
    "kl_divergence",
    "mcnemar_test",
    "per_class_agreement_score",
    "retained_accuracy_score",
    "top1_agreement_score",
    "top_k_overlap_score",
    "total_variation_distance",
]

KL_EPS = 1e-12

DEFINITIONS: dict[str, dict[str, Any]] = {
    "top1_agreement": definition("Top-1 agreement", "(1/n) Σ_i 1{argmax t_i = argmax s_i}", True,
                                 "Share of rows where the student predicts the teacher's class."),
    "top_k_overlap": definition("Top-k overlap", "(1/n) Σ_i |topk(t_i) ∩ topk(s_i)| / k", True,
                                "Mean overlap of the two models' k most likely classes."),
    "kl_divergence": definition("KL(teacher‖student)", "(1/n) Σ_i Σ_c t_ic log(t_ic / max(s_ic, 1e-12))", False,
                                "Predictive KL divergence from teacher to student, in nats."),
    "js_divergence": definition("Jensen-Shannon divergence", "(1/n) Σ_i [½KL(t_i‖m_i) + ½KL(s_i‖m_i)], m = (t+s)/2",
                                False, "Symmetric, bounded (≤ ln 2) divergence between the outputs, in nats."),
    "total_variation": definition("Total variation", "(1/n) Σ_i ½ Σ_c |t_ic − s_ic|", False,
                                  "Mean largest difference in probability the models give to any event."),
    "cohen_kappa": definition("Cohen's kappa (teacher vs student labels)", "(p_o − p_e) / (1 − p_e)", True,
                              "Agreement of predicted labels beyond what the label frequencies predict."),
    "agreement_teacher_correct": definition("Agreement where the teacher is right", "P(ŝ = t̂ | t̂ = y)", True,
                                            "Agreement on rows the teacher classifies correctly."),
    "agreement_teacher_wrong": definition("Agreement where the teacher is wrong", "P(ŝ = t̂ | t̂ ≠ y)", None,
                                          "Agreement on the teacher's mistakes: copying them is fidelity, "
                                          "not accuracy."),
    "teacher_accuracy": definition("Teacher accuracy", "(1/n) Σ_i 1{t̂_i = y_i}", True, "Teacher's accuracy."),
    "student_accuracy": definition("Student accuracy", "(1/n) Σ_i 1{ŝ_i = y_i}", True, "Student's accuracy."),
    "retained_accuracy": definition("Retained accuracy", "acc(student) / acc(teacher)", True,
                                    "Share of the teacher's accuracy the student keeps."),
    "accuracy_change": definition("Accuracy change (student − teacher)", "acc(student) − acc(teacher)", True,
                                      "Change in accuracy; tested by an exact McNemar test."),
}

# Per-row sums kept for every block (weighted unless noted).
_ROW = ("w", "agree", "t_correct", "s_correct", "both_correct", "kl", "js", "tv", "topk", "n", "b", "c")
_R = {k: i for i, k in enumerate(_ROW)}


# --------------------------------------------------------------------------------------------------- row kernels
def _divergence_rows(t: np.ndarray, s: np.ndarray, eps: float = KL_EPS) -> tuple[np.ndarray, ...]:
    """Per-row KL(t||s), JS(t, s) and TV(t, s) (float64)."""
    t = t.astype(np.float64, copy=False)
    s = s.astype(np.float64, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        lt = np.log(t)
        kl = np.where(t > 0, t * (lt - np.log(np.maximum(s, eps))), 0.0).sum(axis=1)
        m = 0.5 * (t + s)
        lm = np.log(m)
        js = 0.5 * (np.where(t > 0, t * (lt - lm), 0.0).sum(axis=1)
                    + np.where(s > 0, s * (np.log(s) - lm), 0.0).sum(axis=1))
    tv = 0.5 * np.abs(t - s).sum(axis=1)
    return kl, js, tv


def _topk_rows(t: np.ndarray, s: np.ndarray, k: int) -> np.ndarray:
    """|topk(t) ∩ topk(s)| / k per row (ties broken by position, as ``np.argpartition`` does)."""
    if k >= t.shape[1]:
        return np.ones(len(t))
    it = np.argpartition(-t, k - 1, axis=1)[:, :k]
    is_ = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return (it[:, :, None] == is_[:, None, :]).sum(axis=(1, 2)) / k


# ---------------------------------------------------------------------------------------------- plain functions
def top1_agreement_score(p_teacher: Any, p_student: Any, *, sample_weight: Any = None) -> float:
    """Share of rows where both models predict the same class.

    ``p_teacher`` and ``p_student`` are (n, C) probabilities or (n,) labels.

    Examples
    --------
    >>> top1_agreement_score([0, 1, 2, 2], [0, 1, 1, 2])
    0.75
    """
    lt, ls = labels_of(p_teacher, "p_teacher"), labels_of(p_student, "p_student")
    check_consistent_length(p_teacher=lt, p_student=ls)
    return float(np.average(lt == ls, weights=check_sample_weight(sample_weight, len(lt))))


def top_k_overlap_score(p_teacher: Any, p_student: Any, *, k: int = 5, sample_weight: Any = None) -> float:
    """Mean share of the teacher's top-k classes that are also among the student's top-k."""
    t = scan_probabilities(p_teacher, "p_teacher", allow_partial=True)[0]
    s = scan_probabilities(p_student, "p_student", n_classes=t.shape[1], allow_partial=True)[0]
    check_consistent_length(p_teacher=t, p_student=s)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise invalid_argument("k", k, "an integer >= 1")
    return float(np.average(_topk_rows(t, s, min(k, t.shape[1])), weights=check_sample_weight(sample_weight, len(t))))


def _pair_probs(p_teacher: Any, p_student: Any) -> tuple[np.ndarray, np.ndarray]:
    t = scan_probabilities(p_teacher, "p_teacher")[0]
    s = scan_probabilities(p_student, "p_student", n_classes=t.shape[1])[0]
    check_consistent_length(p_teacher=t, p_student=s)
    return t, s


def kl_divergence(p_teacher: Any, p_student: Any, *, eps: float = KL_EPS, sample_weight: Any = None) -> float:
    """Mean KL(teacher || student) in nats; student probabilities are clipped below at ``eps`` (see module doc).

    Equal to the mean of ``scipy.stats.entropy(t_i, s_i)`` when all student probabilities exceed ``eps``.
    """
    t, s = _pair_probs(p_teacher, p_student)
    return float(np.average(_divergence_rows(t, s, eps)[0], weights=check_sample_weight(sample_weight, len(t))))


def js_divergence(p_teacher: Any, p_student: Any, *, sample_weight: Any = None) -> float:
    """Mean Jensen-Shannon divergence in nats: ``scipy.spatial.distance.jensenshannon(t, s) ** 2`` averaged."""
    t, s = _pair_probs(p_teacher, p_student)
    return float(np.average(_divergence_rows(t, s)[1], weights=check_sample_weight(sample_weight, len(t))))


def total_variation_distance(p_teacher: Any, p_student: Any, *, sample_weight: Any = None) -> float:
    """Mean total variation distance ½ Σ_c |t_c − s_c|."""
    t, s = _pair_probs(p_teacher, p_student)
    return float(np.average(_divergence_rows(t, s)[2], weights=check_sample_weight(sample_weight, len(t))))


def _kappa(agree: Any, t_counts: Any, s_counts: Any, total: Any) -> Any:
    po = agree / total
    pe = (t_counts * s_counts).sum(axis=-1) / total**2
    return (po - pe) / (1 - pe)


def cohen_kappa_score(p_teacher: Any, p_student: Any, *, sample_weight: Any = None) -> float:
    """Cohen's kappa between the two models' predicted labels (``sklearn.metrics.cohen_kappa_score`` convention:
    unweighted, p_e from the product of the label marginals). Accepts labels or probabilities."""
    lt, ls = labels_of(p_teacher, "p_teacher"), labels_of(p_student, "p_student")
    check_consistent_length(p_teacher=lt, p_student=ls)
    w = check_sample_weight(sample_weight, len(lt))
    w = np.ones(len(lt)) if w is None else w
    c = int(max(lt.max(), ls.max())) + 1
    return float(_kappa(w[lt == ls].sum(), np.bincount(lt, w, c), np.bincount(ls, w, c), w.sum()))


def conditional_agreement_score(y_true: Any, p_teacher: Any, p_student: Any, *,
                                sample_weight: Any = None) -> dict[str, float]:
    """Agreement on rows the teacher gets right and on rows it gets wrong: ``{"teacher_correct", "teacher_wrong"}``
    (NaN when there are no such rows)."""
    y, lt, ls, w = labelled_pair(y_true, p_teacher, p_student, sample_weight)
    tc, ag = lt == y, lt == ls
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"teacher_correct": float(w[tc & ag].sum() / w[tc].sum()),
                "teacher_wrong": float(w[~tc & ag].sum() / w[~tc].sum())}


def per_class_agreement_score(y_true: Any, p_teacher: Any, p_student: Any, *, n_classes: int | None = None,
                              sample_weight: Any = None) -> np.ndarray:
    """Top-1 agreement among the rows of each true class (NaN for absent classes), shape (n_classes,)."""
    y, lt, ls, w = labelled_pair(y_true, p_teacher, p_student, sample_weight)
    c = n_classes or int(max(y.max(), lt.max(), ls.max())) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.bincount(y, w * (lt == ls), c) / np.bincount(y, w, c)


def retained_accuracy_score(y_true: Any, p_teacher: Any, p_student: Any, *, sample_weight: Any = None) -> float:
    """Student accuracy divided by teacher accuracy (``sklearn.metrics.accuracy_score`` for each)."""
    y, lt, ls, w = labelled_pair(y_true, p_teacher, p_student, sample_weight)
    return float(w[ls == y].sum() / w[lt == y].sum())


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test: ``b`` rows only the teacher gets right, ``c`` rows only the student gets right; under
    H0 (equal accuracy) ``c ~ Binomial(b + c, 1/2)``; ``p_value`` is two-sided (``scipy.stats.binomtest``)."""

    b: int
    c: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {"test": "exact McNemar (two-sided binomial on discordant pairs)", "b_teacher_only_correct": self.b,
                "c_student_only_correct": self.c, "n_discordant": self.b + self.c, "p_value": self.p_value,
                "null_hypothesis": "teacher and student have equal accuracy on this population"}


def _mcnemar(b: int, c: int) -> McNemarResult:
    from scipy.stats import binomtest  # scipy.stats takes a second to import; only this test needs it

    p = 1.0 if b + c == 0 else float(binomtest(int(c), int(b + c), 0.5).pvalue)
    return McNemarResult(int(b), int(c), p)


def mcnemar_test(y_true: Any, p_teacher: Any, p_student: Any) -> McNemarResult:
    """Exact McNemar test of equal accuracy on paired rows (unweighted counts)."""
    y, lt, ls, _ = labelled_pair(y_true, p_teacher, p_student, None)
    tc, sc = lt == y, ls == y
    return _mcnemar(int((tc & ~sc).sum()), int((~tc & sc).sum()))


# ------------------------------------------------------------------------------------------------- accumulator
class AgreementResult(SectionResult):
    """Agreement section. ``headline``: keys of :data:`DEFINITIONS` that the models' access allows; ``detail``:
    ``mcnemar``, ``per_class`` (by true class and by teacher label), ``counts``, ``unavailable`` {key: reason},
    ``options``."""


def _access(a: Any) -> Access:
    return a if isinstance(a, Access) else Access(a)


class AgreementAccumulator(Accumulator):
    """Streaming agreement statistics (fixed-size, mergeable state; paired bootstrap intervals).

    Parameters
    ----------
    n_classes : int
    bootstrap : Bootstrap, optional
    k : int, default=5
        ``k`` of the top-k overlap (capped at ``n_classes``).
    teacher_access, student_access : {"probabilities", "top_k", "labels"}
        What each model exposes. Divergences need full probabilities; top-k overlap needs at least ``k`` outputs.
    teacher_top_k, student_top_k : int, optional
        The number of classes a ``"top_k"`` model returns.
    """

    states = {"_rows": SUM, "_by_true": SUM, "_by_pred": SUM, "n_rows": SUM, "has_labels": SAME}
    merge_key = ("n_classes", "k", "access", "bootstrap")

    def __init__(self, n_classes: int, *, bootstrap: Bootstrap | None = None, k: int = 5,
                 teacher_access: Any = "probabilities", student_access: Any = "probabilities",
                 teacher_top_k: int | None = None, student_top_k: int | None = None, eps: float = KL_EPS) -> None:
        if not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise invalid_argument("n_classes", n_classes, "an integer >= 2")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise invalid_argument("k", k, "an integer >= 1")
        self.n_classes, self.k, self.eps = int(n_classes), min(int(k), int(n_classes)), eps
        self.bootstrap = bootstrap if bootstrap is not None else Bootstrap()
        self.access = (_access(teacher_access), _access(student_access))
        self.top_ks = (teacher_top_k, student_top_k)
        nb = self.bootstrap.n_blocks
        self._rows = BlockStats(len(_ROW), n_blocks=nb)
        self._by_true = BlockStats(4, n_cells=self.n_classes, n_blocks=nb)
        self._by_pred = BlockStats(3, n_cells=self.n_classes, n_blocks=nb)
        self.n_rows = 0
        self.has_labels: bool | None = None

    def _full(self) -> bool:
        return all(a == Access.PROBABILITIES for a in self.access)

    def _topk_ok(self) -> bool:
        if self.k == 1:
            return True
        return all(a == Access.PROBABILITIES or (a == Access.TOP_K and (tk or 0) >= self.k)
                   for a, tk in zip(self.access, self.top_ks))

    def update(self, y_true: Any, p_teacher: Any, p_student: Any, *, ids: Any, sensitive: Any = None,
               sample_weight: Any = None) -> AgreementAccumulator:
        """Add a chunk of rows (``y_true`` may be None: accuracy-based metrics then become unavailable)."""
        t, lt, _, _ = scan_probabilities(p_teacher, "p_teacher", n_classes=self.n_classes, allow_partial=True)
        s, ls, _, _ = scan_probabilities(p_student, "p_student", n_classes=self.n_classes, allow_partial=True)
        n = len(t)
        check_consistent_length(p_teacher=t, p_student=s)
        y, w = check_rows(y_true, self.n_classes, n, sample_weight)
        if self.has_labels is not None and self.has_labels != (y is not None):
            raise invalid_argument("y_true", "None" if y is None else "labels",
                                   "labels in every chunk or in none (the accumulator already has "
                                   f"{'labels' if self.has_labels else 'no labels'})")
        self.has_labels = y is not None
        blocks = blocks_for(ids, n, self.bootstrap)
        agree = (lt == ls).astype(np.float64)
        vals = np.zeros((n, len(_ROW)))
        vals[:, _R["w"]] = w
        vals[:, _R["agree"]] = w * agree
        vals[:, _R["n"]] = 1.0
        if self._full():
            kl, js, tv = _divergence_rows(t, s, self.eps)
            vals[:, _R["kl"]], vals[:, _R["js"]], vals[:, _R["tv"]] = w * kl, w * js, w * tv
        if self._topk_ok():
            vals[:, _R["topk"]] = w * _topk_rows(t, s, self.k)
        if y is not None:
            tc, sc = (lt == y), (ls == y)
            vals[:, _R["t_correct"]] = w * tc
            vals[:, _R["s_correct"]] = w * sc
            vals[:, _R["both_correct"]] = w * (tc & sc)
            vals[:, _R["b"]] = tc & ~sc
            vals[:, _R["c"]] = ~tc & sc
            self._by_true.add(blocks, (w, w * agree, w * tc, w * sc), y)
        self._rows.add(blocks, vals)
        self._by_pred.add(blocks, (w, w * agree, 0), lt)
        self._by_pred.add(blocks, (0, 0, w), ls)
        self.n_rows += n
        return self

    @staticmethod
    def _values(rows: np.ndarray, by_true: np.ndarray, by_pred: np.ndarray) -> dict[str, np.ndarray]:
        r = {k: rows[..., 0, i] for k, i in _R.items()}
        wt = r["w"]
        tacc, sacc = r["t_correct"] / wt, r["s_correct"] / wt
        return {
            "top1_agreement": r["agree"] / wt,
            "top_k_overlap": r["topk"] / wt,
            "kl_divergence": r["kl"] / wt,
            "js_divergence": r["js"] / wt,
            "total_variation": r["tv"] / wt,
            "cohen_kappa": _kappa(r["agree"], by_pred[..., 0], by_pred[..., 2], wt),
            "agreement_teacher_correct": r["both_correct"] / r["t_correct"],
            "agreement_teacher_wrong": (r["agree"] - r["both_correct"]) / (wt - r["t_correct"]),
            "teacher_accuracy": tacc,
            "student_accuracy": sacc,
            "retained_accuracy": sacc / tacc,
            "accuracy_change": sacc - tacc,
            "class_agreement": by_true[..., 1] / by_true[..., 0],
            "class_teacher_accuracy": by_true[..., 2] / by_true[..., 0],
            "class_student_accuracy": by_true[..., 3] / by_true[..., 0],
            "pred_agreement": by_pred[..., 1] / by_pred[..., 0],
        }

    def compute(self) -> AgreementResult:
        if self.n_rows == 0:
            return AgreementResult(available=False, reason="no rows were added")
        est = evaluate(self.bootstrap, [self._rows, self._by_true, self._by_pred], self._values)
        unavailable: dict[str, str] = {}
        if not self._full():
            for key in ("kl_divergence", "js_divergence", "total_variation"):
                unavailable[key] = "needs full probabilities from both models"
        if not self._topk_ok():
            unavailable["top_k_overlap"] = f"needs at least the top {self.k} classes from both models"
        if not self.has_labels:
            for key in ("agreement_teacher_correct", "agreement_teacher_wrong", "teacher_accuracy",
                        "student_accuracy", "retained_accuracy", "accuracy_change"):
                unavailable[key] = "needs true labels"
        headline = {k: est[k] for k in DEFINITIONS if k not in unavailable}
        tot = self._rows.total()[0]
        by_true = self._by_true.total()
        by_pred = self._by_pred.total()
        per_class: dict[str, Any] = {
            "by_teacher_label": {"weight": by_pred[:, 0], "agreement": [e.to_dict() for e in est["pred_agreement"]],
                                 "student_label_weight": by_pred[:, 2]},
        }
        detail: dict[str, Any] = {"per_class": per_class, "unavailable": unavailable, "n_rows": self.n_rows,
                                  "options": {"k": self.k, "kl_eps": self.eps,
                                              "access": [a.value for a in self.access]}}
        if self.has_labels:
            per_class["by_true_class"] = {
                "weight": by_true[:, 0],
                "agreement": [e.to_dict() for e in est["class_agreement"]],
                "teacher_accuracy": [e.to_dict() for e in est["class_teacher_accuracy"]],
                "student_accuracy": [e.to_dict() for e in est["class_student_accuracy"]],
            }
            detail["mcnemar"] = _mcnemar(int(round(tot[_R["b"]])), int(round(tot[_R["c"]]))).to_dict()
        return AgreementResult(available=True, reason=None, headline=headline, detail=detail)


def agreement_section(y_true: Any, teacher: ModelOutputs, student: ModelOutputs, *, ids: Any,
                      sensitive: Any = None, bootstrap: Bootstrap | None = None, k: int = 5,
                      chunk_size: int | None = None) -> AgreementResult:
    """Agreement section from harness outputs. Labels-only and top-k models get what their outputs allow; the rest
    is listed in ``detail["unavailable"]`` with the reason."""
    return agreement_fold(y_true, teacher, student, ids=ids, bootstrap=bootstrap, k=k,
                          chunk_size=chunk_size).compute()


def agreement_accumulator(n_classes: int, teacher: Any, student: Any, *, bootstrap: Bootstrap | None = None,
                          k: int = 5) -> AgreementAccumulator:
    """The empty accumulator of :func:`agreement_fold` for this pair: the one place its options are set (the
    ``agreement`` section's accumulator is this). ``teacher``/``student`` need ``access`` and ``top_k``."""
    return AgreementAccumulator(n_classes, bootstrap=bootstrap, k=k, teacher_access=teacher.access,
                                student_access=student.access, teacher_top_k=teacher.top_k,
                                student_top_k=student.top_k)


def agreement_fold(y_true: Any, teacher: ModelOutputs, student: ModelOutputs, *, ids: Any,
                   sensitive: Any = None, bootstrap: Bootstrap | None = None, k: int = 5,
                   chunk_size: int | None = None) -> AgreementAccumulator:
    """The accumulator of :func:`agreement_section`, fed with these rows (the streaming engine merges one per
    shard)."""
    acc = agreement_accumulator(teacher.n_classes, teacher, student, bootstrap=bootstrap, k=k)
    step = chunk_size or default_chunk(teacher.n_classes)
    ids = np.asarray(ids)
    y = None if y_true is None else np.asarray(y_true)
    for a in range(0, len(ids), step):
        sl = slice(a, a + step)
        acc.update(None if y is None else y[sl], teacher.probs[sl], student.probs[sl], ids=ids[sl])
    return acc
