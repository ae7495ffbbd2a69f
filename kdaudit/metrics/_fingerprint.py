"""Error fingerprints: does the student make the teacher's mistakes?

All statistics come from additive per-row sums and per-(true class, predicted class) tables kept per bootstrap
block, so they stream, merge and get paired intervals like the other families. Needs true labels; works with
labels-only models (only the predicted classes are used).

Null model of ``same_wrong_label_chance``: among rows that *both* models get wrong, within each true class y, the
student's wrong label is drawn independently of the teacher's wrong label, each from its own observed distribution
of wrong labels for class y (the product of the two models' wrong-label marginals, the expected count of a
contingency table under independence). The chance rate is then Σ_y Σ_k T_yk S_yk / N_y divided by the number of
rows both got wrong, where T_yk (S_yk) counts rows of class y both got wrong on which the teacher (student) said k,
and N_y = Σ_k T_yk. ``same_wrong_label_lift`` = observed / chance (> 1: the student repeats the teacher's specific
mistakes more than class-level confusion tendencies explain).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit._validation import check_consistent_length
from kdaudit.metrics._accumulator import SUM, Accumulator, finish
from kdaudit.metrics._common import (
    SectionResult,
    blocks_for,
    check_rows,
    default_chunk,
    definition,
    evaluate,
    labelled_pair,
    labels_of,
    point_only,
)
from kdaudit.metrics._resampling import BlockStats, Bootstrap

if TYPE_CHECKING:  # the statistics know no harness; section functions take its outputs duck-typed
    from kdaudit.harness._outputs import ModelOutputs

__all__ = [
    "DEFINITIONS",
    "FingerprintAccumulator",
    "FingerprintResult",
    "confusion_similarity",
    "error_consistency_score",
    "error_overlap",
    "fingerprint_accumulator",
    "fingerprint_fold",
    "fingerprint_section",
    "same_wrong_label_rate",
]

DEFINITIONS: dict[str, dict[str, Any]] = {
    "error_consistency": definition(
        "Error consistency (Geirhos κ)", "(c_obs − c_exp) / (1 − c_exp), c_exp = p_t p_s + (1 − p_t)(1 − p_s)", None,
        "Agreement of the correct/wrong patterns beyond what the two accuracies predict (Geirhos et al. 2020)."),
    "error_jaccard": definition("Error-set overlap (Jaccard)", "|E_t ∩ E_s| / |E_t ∪ E_s|", None,
                                "Overlap of the rows each model gets wrong."),
    "student_wrong_given_teacher_wrong": definition("P(student wrong | teacher wrong)", "|E_t ∩ E_s| / |E_t|", None,
                                                    "How often a teacher mistake is also a student mistake."),
    "same_wrong_label_rate": definition("Same wrong label", "P(ŝ = t̂ | both wrong)", None,
                                        "Among rows both get wrong, the share with the identical wrong class."),
    "same_wrong_label_chance": definition("Same wrong label by chance",
                                          "Σ_y Σ_k T_yk S_yk / N_y / |E_t ∩ E_s|", None,
                                          "The same rate if, within each true class, the two wrong labels were "
                                          "independent (see the module's null model)."),
    "same_wrong_label_lift": definition("Same-wrong-label lift", "same_wrong_label_rate / same_wrong_label_chance",
                                        None, "> 1: the student copies the teacher's specific mistakes."),
    "confusion_correlation": definition("Confusion-matrix correlation",
                                        "Pearson r of off-diagonal entries of the row-normalised confusion matrices",
                                        None, "Similarity of where the two models confuse classes."),
    "confusion_cosine": definition("Confusion-matrix cosine",
                                   "cosine of off-diagonal entries of the row-normalised confusion matrices", None,
                                   "Similarity of where the two models confuse classes (not centred)."),
    "inherited_error_rate": definition("Inherited errors", "|E_t ∩ E_s| / n", False,
                                       "Share of rows both models get wrong."),
    "new_error_rate": definition("New errors", "|E_s \\ E_t| / n", False,
                                 "Share of rows only the student gets wrong."),
    "fixed_error_rate": definition("Fixed errors", "|E_t \\ E_s| / n", True,
                                   "Share of rows only the teacher gets wrong."),
}

_ROW = ("w", "t_wrong", "s_wrong", "both_wrong", "same_wrong", "n", "n_t_wrong", "n_s_wrong", "n_both", "n_same")
_R = {k: i for i, k in enumerate(_ROW)}
# Confusion tables are kept per bootstrap block up to this many (true, predicted) cells; above it, without blocks.
_MAX_BLOCKED_CELLS = 4096


# ------------------------------------------------------------------------------------------------ formulas
def _consistency(w, tw, sw, both):
    c_obs = (w - tw - sw + 2 * both) / w
    p1, p2 = 1 - tw / w, 1 - sw / w
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    return (c_obs - c_exp) / (1 - c_exp)


def _confusion_similarity(ct: np.ndarray, cs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correlation and cosine of the off-diagonal, row-normalised confusion matrices (..., C, C)."""
    c = ct.shape[-1]
    n_y = ct.sum(axis=-1, keepdims=True)
    safe = np.where(n_y > 0, n_y, 1)  # classes without rows: zero rows, and no 0/0 warning
    mt = np.where(n_y > 0, ct / safe, 0.0)
    ms = np.where(n_y > 0, cs / safe, 0.0)
    off = ~np.eye(c, dtype=bool)
    a, b = mt[..., off], ms[..., off]
    cos = (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    a0 = a - a.mean(-1, keepdims=True)
    b0 = b - b.mean(-1, keepdims=True)
    cor = (a0 * b0).sum(-1) / np.sqrt((a0 * a0).sum(-1) * (b0 * b0).sum(-1))
    return cor, cos


def _chance_same(tb: np.ndarray, sb: np.ndarray) -> np.ndarray:
    """Expected number of identical wrong labels under within-class independence, tables (..., C, C)."""
    n_y = tb.sum(axis=-1)
    return np.where(n_y > 0, (tb * sb).sum(axis=-1) / np.where(n_y > 0, n_y, 1), 0.0).sum(axis=-1)


# ------------------------------------------------------------------------------------------ plain functions
def error_consistency_score(y_true: Any, p_teacher: Any, p_student: Any, *, sample_weight: Any = None) -> float:
    """Geirhos et al. (2020) error consistency: Cohen's kappa of the two models' correct/wrong patterns with
    ``c_exp = p_t p_s + (1 - p_t)(1 - p_s)`` from their accuracies. Labels or probabilities accepted."""
    y, lt, ls, w = labelled_pair(y_true, p_teacher, p_student, sample_weight)
    tw, sw = lt != y, ls != y
    return float(_consistency(w.sum(), w[tw].sum(), w[sw].sum(), w[tw & sw].sum()))


def error_overlap(y_true: Any, p_teacher: Any, p_student: Any, *, sample_weight: Any = None) -> dict[str, float]:
    """Error sets E_t, E_s: ``jaccard``, ``student_wrong_given_teacher_wrong``, and (weighted) counts and rates of
    ``inherited`` (both wrong), ``new`` (student only) and ``fixed`` (teacher only) errors."""
    y, lt, ls, w = labelled_pair(y_true, p_teacher, p_student, sample_weight)
    tw, sw = lt != y, ls != y
    both, n = float(w[tw & sw].sum()), float(w.sum())
    new, fixed = float(w[sw & ~tw].sum()), float(w[tw & ~sw].sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"jaccard": float(np.float64(both) / (w[tw].sum() + w[sw].sum() - both)),
                "student_wrong_given_teacher_wrong": float(np.float64(both) / w[tw].sum()),
                "inherited": both, "new": new, "fixed": fixed,
                "inherited_rate": both / n, "new_rate": new / n, "fixed_rate": fixed / n}


def _pair_tables(y, a, b, w, c):
    ta = np.bincount(y * c + a, weights=w, minlength=c * c).reshape(c, c)
    tb = np.bincount(y * c + b, weights=w, minlength=c * c).reshape(c, c)
    return ta, tb


def same_wrong_label_rate(y_true: Any, p_teacher: Any, p_student: Any, *, n_classes: int | None = None,
                          sample_weight: Any = None) -> dict[str, float]:
    """Among rows both models get wrong: the share with the same wrong label (``rate``), what the within-class
    independence null predicts (``chance``, see the module docstring) and their ratio (``lift``)."""
    y, lt, ls, w = labelled_pair(y_true, p_teacher, p_student, sample_weight)
    c = n_classes or int(max(y.max(), lt.max(), ls.max())) + 1
    both = (lt != y) & (ls != y)
    tb, sb = _pair_tables(y[both], lt[both], ls[both], w[both], c)
    nb = w[both].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.float64(w[both & (lt == ls)].sum()) / nb
        chance = _chance_same(tb, sb) / nb
        return {"rate": float(rate), "chance": float(chance), "lift": float(rate / chance)}


def confusion_similarity(y_true: Any, p_teacher: Any, p_student: Any, *, n_classes: int | None = None,
                         sample_weight: Any = None) -> dict[str, float]:
    """Pearson correlation and cosine similarity of the two models' off-diagonal confusion rates
    P(predicted k | true y), k ≠ y (rows normalised by the class count)."""
    y, lt, ls, w = labelled_pair(y_true, p_teacher, p_student, sample_weight)
    c = n_classes or int(max(y.max(), lt.max(), ls.max())) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        cor, cos = _confusion_similarity(*_pair_tables(y, lt, ls, w, c))
    return {"correlation": float(cor), "cosine": float(cos)}


# ---------------------------------------------------------------------------------------------- accumulator
class FingerprintResult(SectionResult):
    """Fingerprint section: ``headline`` keys of :data:`DEFINITIONS`; ``detail``: ``counts`` (unweighted inherited,
    new, fixed, both-wrong, same-wrong), ``null_model`` text, ``options``."""


class FingerprintAccumulator(Accumulator):
    """Streaming error-fingerprint statistics (fixed-size, mergeable; paired bootstrap intervals).

    State: per-block row sums, and per-block (true class, predicted class) tables for the two confusion matrices and
    the two wrong-label tables among rows both got wrong. With more than 64 classes the tables are kept without
    blocks (their metrics get point estimates only).
    """

    states = {"_rows": SUM, "_tables": SUM, "n_rows": SUM}
    merge_key = ("n_classes", "bootstrap")

    def __init__(self, n_classes: int, *, bootstrap: Bootstrap | None = None) -> None:
        if not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise invalid_argument("n_classes", n_classes, "an integer >= 2")
        self.n_classes = int(n_classes)
        self.bootstrap = bootstrap if bootstrap is not None else Bootstrap()
        nb = self.bootstrap.n_blocks
        self._rows = BlockStats(len(_ROW), n_blocks=nb)
        self._blocked_tables = self.n_classes**2 <= _MAX_BLOCKED_CELLS
        self._tables = BlockStats(4, n_cells=self.n_classes**2, n_blocks=nb if self._blocked_tables else 1)
        self.n_rows = 0

    def update(self, y_true: Any, p_teacher: Any, p_student: Any, *, ids: Any, sensitive: Any = None,
               sample_weight: Any = None) -> FingerprintAccumulator:
        if y_true is None:
            raise invalid_argument("y_true", None, "true labels: error fingerprints compare mistakes")
        lt = labels_of(p_teacher, "p_teacher", self.n_classes)
        ls = labels_of(p_student, "p_student", self.n_classes)
        n = len(lt)
        check_consistent_length(p_teacher=lt, p_student=ls)
        y, w = check_rows(y_true, self.n_classes, n, sample_weight)
        blocks = blocks_for(ids, n, self.bootstrap)
        tw, sw = lt != y, ls != y
        both = tw & sw
        same = both & (lt == ls)
        self._rows.add(blocks, (w, w * tw, w * sw, w * both, w * same, np.ones(n), tw, sw, both, same))
        tb = blocks if self._blocked_tables else np.zeros(n, dtype=np.int64)
        c = self.n_classes
        self._tables.add(tb, (w, 0, w * both, 0), y * c + lt)
        self._tables.add(tb, (0, w, 0, w * both), y * c + ls)
        self.n_rows += n
        return self

    def _values(self, rows: np.ndarray, tables: np.ndarray) -> dict[str, np.ndarray]:
        r = {k: rows[..., 0, i] for k, i in _R.items()}
        c = self.n_classes
        t = tables.reshape(*tables.shape[:-2], c, c, 4)
        cor, cos = _confusion_similarity(t[..., 0], t[..., 1])
        w, tw, sw, both = r["w"], r["t_wrong"], r["s_wrong"], r["both_wrong"]
        rate = r["same_wrong"] / both
        chance = _chance_same(t[..., 2], t[..., 3]) / both
        return {
            "error_consistency": _consistency(w, tw, sw, both),
            "error_jaccard": both / (tw + sw - both),
            "student_wrong_given_teacher_wrong": both / tw,
            "same_wrong_label_rate": rate,
            "same_wrong_label_chance": chance,
            "same_wrong_label_lift": rate / chance,
            "confusion_correlation": cor,
            "confusion_cosine": cos,
            "inherited_error_rate": both / w,
            "new_error_rate": (sw - both) / w,
            "fixed_error_rate": (tw - both) / w,
        }

    def compute(self) -> FingerprintResult:
        if self.n_rows == 0:
            return FingerprintResult(available=False, reason="no rows were added")
        est = evaluate(self.bootstrap, [self._rows, self._tables], self._values)
        if not self._blocked_tables:
            for key in ("same_wrong_label_chance", "same_wrong_label_lift", "confusion_correlation",
                        "confusion_cosine"):
                est[key] = point_only(est[key], f"{self.n_classes}² class-pair tables kept without blocks")
        tot = self._rows.total()[0]
        counts = {"rows": int(tot[_R["n"]]), "teacher_errors": int(tot[_R["n_t_wrong"]]),
                  "student_errors": int(tot[_R["n_s_wrong"]]), "inherited": int(tot[_R["n_both"]]),
                  "new": int(tot[_R["n_s_wrong"]] - tot[_R["n_both"]]),
                  "fixed": int(tot[_R["n_t_wrong"]] - tot[_R["n_both"]]),
                  "same_wrong_label": int(tot[_R["n_same"]])}
        detail = {"counts": counts, "n_rows": self.n_rows,
                  "null_model": "same_wrong_label_chance: within each true class, the two models' wrong labels "
                                "independent (product of their wrong-label distributions among rows both got "
                                "wrong); error_consistency's null (kappa 0) assumes independent errors, which "
                                "independently trained models on the same data already violate."}
        return FingerprintResult(available=True, reason=None, headline={k: est[k] for k in DEFINITIONS},
                                 detail=detail)


def fingerprint_section(y_true: Any, teacher: ModelOutputs, student: ModelOutputs, *, ids: Any,
                        sensitive: Any = None, bootstrap: Bootstrap | None = None,
                        chunk_size: int | None = None) -> FingerprintResult:
    """Error fingerprints from harness outputs (any access level: only predicted labels are used)."""
    return finish(fingerprint_fold(y_true, teacher, student, ids=ids, bootstrap=bootstrap, chunk_size=chunk_size))


def fingerprint_accumulator(n_classes: int, teacher: Any, student: Any, *,
                            bootstrap: Bootstrap | None = None) -> FingerprintAccumulator:
    """The empty accumulator of :func:`fingerprint_fold` for this pair: the one place its options are set (the
    ``fingerprint`` section's accumulator is this; only predicted labels are used, at any access level)."""
    return FingerprintAccumulator(n_classes, bootstrap=bootstrap)


def fingerprint_fold(y_true: Any, teacher: ModelOutputs, student: ModelOutputs, *, ids: Any,
                     sensitive: Any = None, bootstrap: Bootstrap | None = None,
                     chunk_size: int | None = None) -> FingerprintAccumulator | FingerprintResult:
    """The accumulator of :func:`fingerprint_section` fed with these rows, or its result when it cannot run."""
    if y_true is None:
        return FingerprintResult(available=False, reason="no true labels: error fingerprints need y_true")
    acc = fingerprint_accumulator(teacher.n_classes, teacher, student, bootstrap=bootstrap)
    step = chunk_size or default_chunk(teacher.n_classes)
    ids, y = np.asarray(ids), np.asarray(y_true)
    for a in range(0, len(ids), step):
        sl = slice(a, a + step)
        acc.update(y[sl], teacher.labels[sl], student.labels[sl], ids=ids[sl])
    return acc
