"""Calibration of teacher and student, and its change from teacher to student, with paired intervals.

Top-label calibration compares each row's confidence (its largest probability) with whether that class is right.
All binned metrics are computed from per-bin sums ``(weight, sum of confidence, sum of correct)``: these sums are
additive, so the plain functions, the streaming accumulator and every bootstrap replicate share one formula.

Bin conventions (``binning``; they only differ for confidences exactly on an edge or saturated at 1.0):

``"default"``
    Edges ``numpy.linspace(0, 1, n_bins + 1)`` in float64; bins ``[lo, hi)`` and the last bin ``[lo, 1]`` closed
    (the ``numpy.histogram`` rule). A saturated confidence of 1.0 is in the top bin.
``"torchmetrics"``
    As ``torchmetrics.classification.MulticlassCalibrationError``: confidences in float32, edges
    ``torch.linspace(0, 1, n_bins + 1)`` in float32, bins ``[lo, hi)``; a confidence of exactly 1.0 falls in an
    extra bin of its own.
``"netcal"``
    As ``netcal.metrics.ECE(bins)``: probabilities are first clipped to ``[eps, 1 - eps]`` (``eps`` the machine
    epsilon of the input dtype), then binned as ``"default"``. (netcal also treats any input whose labels take at most
    two distinct values as a binary problem; kdaudit does not.)

Quantile bins: the plain functions take equal-mass edges from the sorted confidences (``numpy.quantile``, linear
interpolation, first edge 0 and last edge 1, as netcal's ``equal_intervals=False``). The streaming accumulator cannot
sort, so it keeps a fixed fine histogram (``_N_FINE`` = 1024 bins, equally spaced in logit(confidence) over
[-12, 18], which resolves confidences near 1 finely) and merges consecutive fine bins into ``n_bins`` groups of
about equal mass: a fine bin joins the group in which its mass midpoint falls. Each group's mass then differs from
``1/n_bins`` by at most one fine bin's mass; tests bound the difference from the exact quantile ECE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special

from kdaudit._exceptions import invalid_argument
from kdaudit._kinds import Access
from kdaudit._validation import check_consistent_length, check_labels, check_sample_weight
from kdaudit.metrics._accumulator import SUM, Accumulator, finish
from kdaudit.metrics._common import (
    SectionResult,
    blocks_for,
    check_rows,
    default_chunk,
    definition,
    evaluate,
    point_only,
    scan_probabilities,
)
from kdaudit.metrics._resampling import BlockStats, Bootstrap, hash_ids

if TYPE_CHECKING:  # the statistics know no harness; section functions take its outputs duck-typed
    from kdaudit.harness._outputs import ModelOutputs

__all__ = [
    "DEFINITIONS",
    "CalibrationAccumulator",
    "CalibrationResult",
    "apply_temperature",
    "brier_score_loss",
    "calibration_accumulator",
    "calibration_fold",
    "calibration_section",
    "classwise_calibration_error",
    "confidence_gap",
    "expected_calibration_error",
    "fit_temperature",
    "maximum_calibration_error",
    "nll_loss",
    "reliability_diagram",
]

_STRATEGIES = ("uniform", "quantile")
_NORMS = ("l1", "l2")
_BINNINGS = ("default", "torchmetrics", "netcal")
_N_FINE = 1024
_LOGIT_RANGE = (-12.0, 18.0)
# Temperatures tried by the streaming fit: log-spaced, ratio ~1.12 between neighbours; refined by a parabola.
_T_GRID = np.geomspace(0.2, 5.0, 29)
_NLL_EPS = 1e-12


# ---------------------------------------------------------------------------------------------------------- checks
def _check_options(n_bins: Any, strategy: Any, norm: Any, binning: Any, debiased: bool = False) -> None:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise invalid_argument("n_bins", n_bins, "an integer >= 1")
    if strategy not in _STRATEGIES:
        raise invalid_argument("strategy", strategy, f"one of {_STRATEGIES}")
    if norm not in _NORMS:
        raise invalid_argument("norm", norm, f"one of {_NORMS}")
    if binning not in _BINNINGS:
        raise invalid_argument("binning", binning, f"one of {_BINNINGS}")
    if debiased and norm != "l2":
        raise invalid_argument("debiased", debiased, "False unless norm='l2' (the Kumar et al. 2019 estimator "
                                                     "debiases the squared L2 error)")
    if strategy == "quantile" and binning == "torchmetrics":
        raise invalid_argument("binning", binning, "'default' or 'netcal' with strategy='quantile'")


def _prepare(y_true: Any, y_prob: Any, sample_weight: Any, binning: str):
    y = check_labels(y_true, "y_true")
    p, label, conf, p_true = scan_probabilities(y_prob, "y_prob", y=None)
    check_consistent_length(y_true=y, y_prob=p)
    if y.max() >= p.shape[1]:
        raise invalid_argument("y_true", f"label {int(y.max())}", f"integers in [0, {p.shape[1] - 1}]")
    w = check_sample_weight(sample_weight, len(y))
    conf = _convention_conf(conf, binning)
    return y, p, label, conf, (np.ones(len(y)) if w is None else w)


def _convention_conf(conf: np.ndarray, binning: str) -> np.ndarray:
    if binning == "torchmetrics":
        return conf.astype(np.float32)
    if binning == "netcal":
        eps = np.finfo(conf.dtype).eps
        return np.clip(conf, eps, 1 - eps)
    return conf


# --------------------------------------------------------------------------------------------------------- binning
def _uniform_edges(n_bins: int, binning: str) -> np.ndarray:
    if binning == "torchmetrics":
        import torch  # torch is a dependency; its own linspace gives the float32 edges torchmetrics compares with

        return torch.linspace(0, 1, n_bins + 1, dtype=torch.float32).numpy()
    return np.linspace(0.0, 1.0, n_bins + 1)


def _bin_index(conf: np.ndarray, edges: np.ndarray, binning: str) -> np.ndarray:
    """Bin of each confidence in ``[0, n_bins]``; index ``n_bins`` (the extra bin) is used only by torchmetrics."""
    n_bins = len(edges) - 1
    if binning == "torchmetrics":
        return np.searchsorted(edges, conf.astype(np.float32), side="right") - 1
    idx = np.searchsorted(edges, conf, side="right") - 1
    return np.clip(idx, 0, n_bins - 1)


def _quantile_edges(conf: np.ndarray, n_bins: int, w: np.ndarray | None) -> np.ndarray:
    if w is None or np.all(w == w[0]):
        edges = np.quantile(conf.astype(np.float64), np.linspace(0, 1, n_bins + 1))
    else:  # weighted: inverse of the weighted empirical distribution function
        order = np.argsort(conf, kind="stable")
        cw = np.cumsum(w[order])
        pos = np.searchsorted(cw, np.linspace(0, 1, n_bins + 1) * cw[-1], side="left")
        edges = conf[order][np.clip(pos, 0, len(conf) - 1)].astype(np.float64)
    edges[0], edges[-1] = 0.0, 1.0
    return edges


def _binned_sums(conf, correct, w, cells, n_cells) -> np.ndarray:
    """(n_cells, 3) sums of weight, weighted confidence and weighted correctness."""
    out = np.empty((n_cells, 3))
    out[:, 0] = np.bincount(cells, weights=w, minlength=n_cells)
    out[:, 1] = np.bincount(cells, weights=w * conf, minlength=n_cells)
    out[:, 2] = np.bincount(cells, weights=w * correct, minlength=n_cells)
    return out


def _ce_from_bins(s: np.ndarray, norm: str, debiased: bool = False) -> np.ndarray:
    """Calibration error from per-bin sums ``s[..., bin, (w, conf, correct)]``, vectorised over leading axes."""
    n_b = s[..., 0]
    total = n_b.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(n_b > 0, s[..., 2] / n_b, 0.0)
        cnf = np.where(n_b > 0, s[..., 1] / n_b, 0.0)
        prop = n_b / total
    gap = acc - cnf
    if norm == "max":
        return np.abs(gap).max(axis=-1)
    if norm == "l1":
        return (prop * np.abs(gap)).sum(axis=-1)
    sq = prop * gap**2
    if debiased:
        with np.errstate(divide="ignore", invalid="ignore"):
            sq = sq - np.where(n_b > 1, prop * acc * (1 - acc) / (n_b - 1), 0.0)
    val = sq.sum(axis=-1)
    return np.sqrt(np.maximum(val, 0.0))


def _gaps_from_bins(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Over- and under-confidence: bin-weighted positive and negative parts of (confidence - accuracy)."""
    n_b = s[..., 0]
    total = n_b.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(n_b > 0, (s[..., 1] - s[..., 2]) / n_b, 0.0)
        prop = n_b / total
    return (prop * np.maximum(d, 0)).sum(axis=-1), (prop * np.maximum(-d, 0)).sum(axis=-1)


# ---------------------------------------------------------------------------------------------- plain functions
def _top_label_bins(y_true, y_prob, n_bins, strategy, binning, sample_weight, norm="l1", debiased=False):
    _check_options(n_bins, strategy, norm, binning, debiased)
    y, p, label, conf, w = _prepare(y_true, y_prob, sample_weight, binning)
    if strategy == "uniform":
        edges = _uniform_edges(n_bins, binning)
    else:
        edges = _quantile_edges(conf, n_bins, None if sample_weight is None else w)
    cells = _bin_index(conf, edges, binning)
    return _binned_sums(conf.astype(np.float64), label == y, w, cells, n_bins + 1), edges


def expected_calibration_error(
    y_true: Any,
    y_prob: Any,
    *,
    n_bins: int = 15,
    strategy: str = "uniform",
    norm: str = "l1",
    debiased: bool = False,
    binning: str = "default",
    sample_weight: Any = None,
) -> float:
    """Top-label expected calibration error.

    ``ECE = sum_b (n_b / n) |acc_b - conf_b|`` over bins of the top-label confidence (``norm="l1"``), or
    ``sqrt(sum_b (n_b / n) (acc_b - conf_b)^2)`` (``norm="l2"``).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True class indices.
    y_prob : array-like of shape (n_samples, n_classes)
        Predicted probabilities.
    n_bins : int, default=15
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width bins, or equal-mass bins from the confidences' quantiles (first edge 0, last edge 1).
    norm : {"l1", "l2"}, default="l1"
    debiased : bool, default=False
        With ``norm="l2"``: the debiased estimator of Kumar et al. (2019), which subtracts each bin's sampling
        variance ``acc_b (1 - acc_b) / (n_b - 1)`` from its squared gap before the square root (clipped at 0).
        Equal to torchmetrics' ``norm="l2", debias=True`` with ``binning="torchmetrics"``.
    binning : {"default", "torchmetrics", "netcal"}, default="default"
        Edge conventions; see the module docstring. ``"torchmetrics"`` reproduces
        ``MulticlassCalibrationError(num_classes, n_bins, norm)`` and ``"netcal"`` reproduces ``netcal`` ``ECE(bins)``
        (to float32 rounding, below 1e-6).
    sample_weight : array-like of shape (n_samples,), default=None

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.65, 0.35], [0.3, 0.7]])
    >>> round(expected_calibration_error([0, 1, 1], p, n_bins=5), 6)  # (0.1 + 2 * 0.175) / 3
    0.15
    """
    sums, _ = _top_label_bins(y_true, y_prob, n_bins, strategy, binning, sample_weight, norm, debiased)
    return float(_ce_from_bins(sums, norm, debiased))


def maximum_calibration_error(
    y_true: Any, y_prob: Any, *, n_bins: int = 15, strategy: str = "uniform", binning: str = "default",
    sample_weight: Any = None,
) -> float:
    """Largest ``|acc_b - conf_b|`` over non-empty bins (torchmetrics ``norm="max"``, netcal ``MCE``)."""
    sums, _ = _top_label_bins(y_true, y_prob, n_bins, strategy, binning, sample_weight)
    return float(_ce_from_bins(sums, "max"))


def reliability_diagram(
    y_true: Any, y_prob: Any, *, n_bins: int = 15, strategy: str = "uniform", binning: str = "default",
    sample_weight: Any = None,
) -> dict[str, np.ndarray]:
    """Data for a reliability diagram (no drawing): per bin its edges, weight, mean confidence and accuracy.

    Returns a dict of arrays of length ``n_bins`` (``n_bins + 1`` with ``binning="torchmetrics"``, whose extra bin
    holds confidences of exactly 1.0): ``lower``, ``upper``, ``count`` (sum of weights), ``confidence`` and
    ``accuracy`` (NaN in empty bins).
    """
    sums, edges = _top_label_bins(y_true, y_prob, n_bins, strategy, binning, sample_weight)
    return _diagram_from_bins(sums, edges, binning)


def _diagram_from_bins(sums: np.ndarray, edges: np.ndarray, binning: str) -> dict[str, np.ndarray]:
    n_bins = len(edges) - 1
    keep = n_bins + 1 if binning == "torchmetrics" else n_bins
    s = sums[:keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        conf = np.where(s[:, 0] > 0, s[:, 1] / s[:, 0], np.nan)
        acc = np.where(s[:, 0] > 0, s[:, 2] / s[:, 0], np.nan)
    lower = np.append(edges[:-1], 1.0)[:keep].astype(np.float64)
    upper = np.append(edges[1:], 1.0)[:keep].astype(np.float64)
    return {"lower": lower, "upper": upper, "count": s[:, 0].copy(), "confidence": conf, "accuracy": acc}


def confidence_gap(
    y_true: Any, y_prob: Any, *, n_bins: int = 15, strategy: str = "uniform", binning: str = "default",
    sample_weight: Any = None,
) -> dict[str, float]:
    """Over- and under-confidence.

    ``gap`` = mean top-label confidence - accuracy (positive: overconfident); ``overconfidence`` and
    ``underconfidence`` are the bin-weighted positive and negative parts of ``conf_b - acc_b`` (so
    ``overconfidence - underconfidence == gap`` and ``overconfidence + underconfidence == ECE``).
    """
    sums, _ = _top_label_bins(y_true, y_prob, n_bins, strategy, binning, sample_weight)
    over, under = _gaps_from_bins(sums)
    tot = sums.sum(axis=0)
    return {"gap": float((tot[1] - tot[2]) / tot[0]), "overconfidence": float(over), "underconfidence": float(under)}


def classwise_calibration_error(
    y_true: Any, y_prob: Any, *, n_bins: int = 15, norm: str = "l1", binning: str = "default",
    sample_weight: Any = None,
) -> float:
    """Classwise ECE (Kull et al. 2019): for each class c, the ECE of ``p_c`` against ``1{y == c}`` over equal-width
    bins of ``p_c``; the mean over classes."""
    _check_options(n_bins, "uniform", norm, binning)
    y, p, _, _, w = _prepare(y_true, y_prob, sample_weight, binning)
    sums = _classwise_sums(y, p, w, n_bins, binning)
    return float(_ce_from_bins(sums, norm).mean())


def _classwise_sums(y, p, w, n_bins, binning) -> np.ndarray:
    """(n_classes, n_bins + 1, 3) per-class bin sums."""
    n, c = p.shape
    edges = _uniform_edges(n_bins, binning)
    pc = _convention_conf(p, binning)
    cells = _bin_index(pc.ravel(), edges, binning).reshape(n, c) + np.arange(c) * (n_bins + 1)
    hit = (y[:, None] == np.arange(c))
    ww = np.broadcast_to(w[:, None], (n, c))
    return _binned_sums(pc.ravel().astype(np.float64), hit.ravel(), ww.ravel(), cells.ravel(),
                        c * (n_bins + 1)).reshape(c, n_bins + 1, 3)


def brier_score_loss(y_true: Any, y_prob: Any, *, sample_weight: Any = None) -> float:
    """Multiclass Brier score: mean over rows of ``sum_c (p_c - 1{y == c})^2`` (Brier 1950), in [0, 2].

    For two classes this is twice the binary ``sklearn.metrics.brier_score_loss`` of the positive column; it equals
    scikit-learn's multiclass ``brier_score_loss(y, P, scale_by_half=False)``.
    """
    y = check_labels(y_true, "y_true")
    p, _, _, p_true = scan_probabilities(y_prob, "y_prob", y=_safe_y(y, y_prob))
    check_consistent_length(y_true=y, y_prob=p)
    w = check_sample_weight(sample_weight, len(y))
    per_row = _brier_rows(p, p_true)
    return float(np.average(per_row, weights=w))


def _safe_y(y: np.ndarray, y_prob: Any) -> np.ndarray:
    c = np.shape(y_prob)[-1]
    if y.max() >= c:
        raise invalid_argument("y_true", f"label {int(y.max())}", f"integers in [0, {c - 1}]")
    return y


def _brier_rows(p: np.ndarray, p_true: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", p, p, dtype=np.float64) if p.dtype == np.float64 else \
        np.einsum("ij,ij->i", p.astype(np.float64), p.astype(np.float64))
    return sq - 2 * p_true.astype(np.float64) + 1.0


def nll_loss(y_true: Any, y_prob: Any, *, eps: float = _NLL_EPS, sample_weight: Any = None) -> float:
    """Mean negative log-likelihood of the true class, ``-log(max(p_y, eps))`` (natural log).

    Equal to ``sklearn.metrics.log_loss`` on probabilities that are normalised and above ``eps`` (scikit-learn clips
    at the dtype's machine epsilon and renormalises rows; kdaudit clips only ``p_y``).
    """
    y = check_labels(y_true, "y_true")
    p, _, _, p_true = scan_probabilities(y_prob, "y_prob", y=_safe_y(y, y_prob))
    check_consistent_length(y_true=y, y_prob=p)
    w = check_sample_weight(sample_weight, len(y))
    return float(np.average(-np.log(np.maximum(p_true.astype(np.float64), eps)), weights=w))


# ------------------------------------------------------------------------------------------------- temperature
def _as_log_scores(x: Any, name: str) -> np.ndarray:
    """Logits as given, or the log of probabilities (softmax(log p / T) is temperature scaling of probabilities)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or not np.isfinite(arr).all():
        raise invalid_argument(name, f"array of shape {arr.shape}", "a finite 2-D array of logits or probabilities")
    if arr.min() >= 0 and np.allclose(arr.sum(axis=1), 1.0, atol=1e-3):
        return np.log(np.maximum(arr, 1e-30))
    return arr


def _nll_at(z: np.ndarray, y: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Per-row NLL of softmax(z / t) for each temperature in ``t``: shape (n,) or (n, len(t))."""
    t = np.asarray(t, dtype=np.float64)
    zt = z[..., None] / t if t.ndim else z / t
    ax = 1
    lse = special.logsumexp(zt, axis=ax)
    zy = np.take_along_axis(zt, y.reshape(-1, *([1] * (zt.ndim - 1))), axis=ax).squeeze(ax)
    return lse - zy


def fit_temperature(y_true: Any, logits_or_probs: Any, *, sample_weight: Any = None,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature ``T`` minimising the NLL of ``softmax(z / T)`` (Guo et al. 2017), by bounded scalar search on
    ``log T``.

    ``logits_or_probs`` may be logits or probabilities (rows summing to 1; their logs are used). Fit on held-out
    rows, then apply with :func:`apply_temperature`.
    """
    y = check_labels(y_true, "y_true")
    z = _as_log_scores(logits_or_probs, "logits_or_probs")
    check_consistent_length(y_true=y, logits_or_probs=z)
    _safe_y(y, z)
    w = check_sample_weight(sample_weight, len(y))
    if not (0 < bounds[0] < bounds[1]):
        raise invalid_argument("bounds", bounds, "(low, high) with 0 < low < high")

    def objective(log_t: float) -> float:
        return float(np.average(_nll_at(z, y, np.exp(log_t)), weights=w))

    from scipy import optimize  # imported here: only the exact fit needs it

    res = optimize.minimize_scalar(objective, bounds=np.log(bounds), method="bounded",
                                   options={"xatol": 1e-8})
    return float(np.exp(res.x))


def apply_temperature(logits_or_probs: Any, temperature: float) -> np.ndarray:
    """``softmax(z / T)`` as float64 probabilities."""
    if not temperature > 0:
        raise invalid_argument("temperature", temperature, "a positive number")
    z = _as_log_scores(logits_or_probs, "logits_or_probs")
    return special.softmax(z / temperature, axis=1)


# ------------------------------------------------------------------------------------------------- accumulator
_MODELS = ("teacher", "student")
_ROW_VALUES = ("weight", "confidence", "correct", "brier", "nll")
_LABELS = {
    "ece": ("ECE", "Σ_b (n_b/n) |acc_b − conf_b| over bins of top-label confidence",
            "Expected calibration error: mean gap between confidence and accuracy."),
    "mce": ("MCE", "max_b |acc_b − conf_b| over non-empty bins",
            "Maximum calibration error: the worst bin's gap (sensitive to sparse bins)."),
    "classwise_ece": ("Classwise ECE", "(1/C) Σ_c Σ_b (n_cb/n) |freq_cb − mean p_c|",
                      "Calibration of every class probability, not just the top one (Kull et al. 2019)."),
    "brier": ("Brier score", "(1/n) Σ_i Σ_c (p_ic − 1{y_i = c})²", "Mean squared error of the probability vector."),
    "nll": ("NLL", "−(1/n) Σ_i log max(p_i,y_i, 1e-12)", "Negative log-likelihood of the true class (nats)."),
    "confidence_gap": ("Confidence gap", "mean top-label confidence − accuracy",
                       "Positive: overconfident; negative: underconfident."),
    "ece_after_temperature": ("ECE after temperature scaling",
                              "ECE of softmax(z/T) on evaluation rows, T fitted by NLL on the other rows",
                              "Calibration error that a single temperature cannot fix."),
}


def _make_definitions() -> dict[str, dict[str, Any]]:
    out = {}
    for m, (label, formula, desc) in _LABELS.items():
        hib: bool | None = None if m == "confidence_gap" else False
        for who in _MODELS:
            out[f"{who}_{m}"] = definition(f"{who.capitalize()} {label}", formula, hib, f"{desc} ({who}).")
        out[f"{m}_change"] = definition(f"{label} change (student − teacher)", f"{label}(student) − {label}(teacher)",
                                        hib, f"{desc} Change from teacher to student, paired interval.")
    out["temperature_teacher"] = definition("Teacher temperature", "argmin_T NLL(softmax(z/T)) on fit rows", None,
                                            "Fitted temperature (>1: the model was overconfident).")
    out["temperature_student"] = definition("Student temperature", "argmin_T NLL(softmax(z/T)) on fit rows", None,
                                            "Fitted temperature (>1: the model was overconfident).")
    return out


DEFINITIONS: dict[str, dict[str, Any]] = _make_definitions()


class CalibrationResult(SectionResult):
    """Calibration section: ``headline`` has ``teacher_<m>``, ``student_<m>`` and ``<m>_change`` for each metric
    ``m`` in ece, mce, classwise_ece, brier, nll, confidence_gap, ece_after_temperature, plus the fitted
    temperatures; ``detail`` has ``reliability`` (per model, per bin), ``over_under``, ``unavailable``
    ({key: reason}, e.g. for top-k models) and ``options``."""


class CalibrationAccumulator(Accumulator):
    """Streaming calibration statistics of a teacher and a student on the same rows.

    State (fixed size, all :class:`BlockStats`, so shards merge by addition and intervals are paired):

    * top-label bins per model (``2 x (n_bins + 1)`` cells; fine logit bins instead for ``strategy="quantile"``);
    * per-row sums (confidence, correctness, Brier, NLL) per model;
    * classwise bins per model (point estimates only, without intervals, when ``n_classes * (n_bins + 1) > 2048``);
    * temperature: rows whose id hash has its top bit set ("fit" rows, about half) add their NLL at each of 29
      temperatures in ``_T_GRID``; the other ("evaluation") rows add top-label bins at each grid temperature. The
      fitted T minimises the fit rows' NLL over the grid, refined by a parabola in log T (reported); the ECE after
      scaling is read at the grid temperature nearest the minimum (grid ratio 1.12). Each bootstrap replicate
      re-fits T, so the interval includes the fit's uncertainty. :func:`fit_temperature` is the exact fit.
    """

    states = {"_top": SUM, "_rows": SUM, "_cw": SUM, "_t_fit": SUM, "_t_eval": SUM, "n_rows": SUM}
    merge_key = ("n_classes", "n_bins", "strategy", "norm", "debiased", "binning", "bootstrap", "access",
                 "temperature")

    def __init__(self, n_classes: int, *, bootstrap: Bootstrap | None = None, n_bins: int = 15,
                 strategy: str = "uniform", norm: str = "l1", debiased: bool = False,
                 binning: str = "default", temperature: bool = True, teacher_access: Any = "probabilities",
                 student_access: Any = "probabilities") -> None:
        _check_options(n_bins, strategy, norm, binning, debiased)
        if not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise invalid_argument("n_classes", n_classes, "an integer >= 2")
        self.access = tuple(a if isinstance(a, Access) else Access(a) for a in (teacher_access, student_access))
        if Access.LABELS in self.access:
            raise invalid_argument("teacher_access" if self.access[0] == Access.LABELS else "student_access",
                                   "labels", "'probabilities' or 'top_k': calibration needs confidences")
        # top-k outputs give the top-label confidence but not the full distribution
        self.partial = Access.TOP_K in self.access
        self.n_classes = int(n_classes)
        self.bootstrap = bootstrap if bootstrap is not None else Bootstrap()
        self.n_bins, self.strategy, self.norm, self.debiased, self.binning = n_bins, strategy, norm, debiased, binning
        self.temperature = temperature and not self.partial
        nb = self.bootstrap.n_blocks
        self._edges = _uniform_edges(n_bins, binning)
        self._uniform64 = _uniform_edges(n_bins, "default")
        n_top = _N_FINE if strategy == "quantile" else n_bins + 1
        self._top = BlockStats(3, n_cells=2 * n_top, n_blocks=nb)
        self._rows = BlockStats(2 * len(_ROW_VALUES), n_blocks=nb)
        self._cw_blocked = n_classes * (n_bins + 1) <= 2048
        self._cw = BlockStats(3, n_cells=2 * n_classes * (n_bins + 1), n_blocks=nb if self._cw_blocked else 1)
        g = len(_T_GRID) if self.temperature else 0  # without temperature scaling these stay empty placeholders
        self._t_fit = BlockStats(g + 1, n_cells=2, n_blocks=nb)
        self._t_eval = BlockStats(3, n_cells=max(1, 2 * g * (n_bins + 1)), n_blocks=nb)
        self.n_rows = 0

    # -- update ------------------------------------------------------------------------------------------------
    def update(self, y_true: Any, p_teacher: Any, p_student: Any, *, ids: Any, sensitive: Any = None,
               sample_weight: Any = None, logits_teacher: Any = None, logits_student: Any = None
               ) -> CalibrationAccumulator:
        """Add a chunk of rows; ``logits_*`` (optional) replace log-probabilities in the temperature fit."""
        if y_true is None:
            raise invalid_argument("y_true", None, "true labels: calibration compares confidence with correctness")
        n = len(np.asarray(y_true))
        y, w = check_rows(y_true, self.n_classes, n, sample_weight)
        blocks = blocks_for(ids, n, self.bootstrap)
        row_vals = []
        fit = (hash_ids(np.asarray(ids)) >> np.uint64(63)).astype(bool) if self.temperature else None
        for m, (p_in, z_in) in enumerate(((p_teacher, logits_teacher), (p_student, logits_student))):
            name = f"p_{_MODELS[m]}"
            p, label, conf, p_true = scan_probabilities(p_in, name, n_classes=self.n_classes, y=y,
                                                        allow_partial=self.partial)
            if len(p) != n:
                raise invalid_argument(name, f"{len(p)} rows", f"{n} rows, like y_true")
            conf_c = _convention_conf(conf, self.binning)
            correct = (label == y).astype(np.float64)
            c64 = conf_c.astype(np.float64)
            if self.strategy == "quantile":
                cells = _fine_index(c64)
                n_top = _N_FINE
            else:
                cells = _bin_index(conf_c, self._edges, self.binning)
                n_top = self.n_bins + 1
            self._top.add(blocks, (w, w * c64, w * correct), cells + m * n_top)
            nll = -np.log(np.maximum(p_true.astype(np.float64), _NLL_EPS))
            row_vals += [w, w * c64, w * correct, w * _brier_rows(p, p_true), w * nll]
            cw_blocks = blocks if self._cw_blocked else np.zeros(n, dtype=np.int64)
            self._add_classwise(cw_blocks, y, p, w, m)
            if self.temperature:
                z = np.log(np.maximum(p, 1e-30)) if z_in is None else np.asarray(z_in)
                self._add_temperature(blocks, y, w, z, m, fit)
        self._rows.add(blocks, tuple(row_vals))
        self.n_rows += n
        return self

    def _add_classwise(self, blocks, y, p, w, m) -> None:
        n, c = p.shape
        nb1 = self.n_bins + 1
        pc = _convention_conf(p, self.binning)
        cells = _bin_index(pc.ravel(), self._edges, self.binning).reshape(n, c) + np.arange(c) * nb1 + m * c * nb1
        hit = (y[:, None] == np.arange(c)).ravel()
        ww = np.repeat(w, c)
        pv = pc.ravel().astype(np.float64)
        self._cw.add(np.repeat(blocks, c), (ww, ww * pv, ww * hit), cells.ravel())

    def _add_temperature(self, blocks, y, w, z, m, fit) -> None:
        g = len(_T_GRID)
        n = len(y)
        inv_t = (1.0 / _T_GRID).astype(np.float32)
        s = np.empty((n, g))
        zy = np.empty((n, g))
        # float32 is ample for the exponentials (NLL and confidences to ~1e-7 relative) and halves their cost; the
        # (rows, temperatures, classes) block is formed a few thousand rows at a time to stay small.
        step = max(64, (1 << 20) // (g * self.n_classes))
        for a in range(0, n, step):
            zc = np.asarray(z[a:a + step], dtype=np.float32)
            zc = zc - zc.max(axis=1, keepdims=True)
            zt = zc[:, None, :] * inv_t[None, :, None]
            s[a:a + step] = np.exp(zt).sum(axis=2, dtype=np.float64)
            zy[a:a + step] = zc[np.arange(len(zc)), y[a:a + step]][:, None] * inv_t
        # NLL at each temperature on fit rows (cell = model)
        rows = np.flatnonzero(fit)
        nll = np.log(s[rows]) - zy[rows]
        wf = w[rows]
        self._t_fit.add(blocks[rows], np.column_stack([wf[:, None] * nll, wf]), np.full(len(rows), m))
        # top-label bins at each temperature on evaluation rows (the arg-max does not change with T)
        ev = ~fit
        conf = (1.0 / s[ev]).ravel()  # max of softmax(z/T) is 1 / sum exp((z - max z)/T)
        correct = (np.asarray(z)[ev].argmax(axis=1) == y[ev]).astype(np.float64)
        nb1 = self.n_bins + 1
        cells = (_bin_index(conf, self._uniform64, "default").reshape(-1, g)
                 + np.arange(g) * nb1 + m * g * nb1).ravel()
        we = np.repeat(w[ev], g)
        self._t_eval.add(np.repeat(blocks[ev], g), (we, we * conf, we * np.repeat(correct, g)), cells)

    # -- merge / compute ---------------------------------------------------------------------------------------
    def _values(self, top, rows, cw, tfit, teval) -> dict[str, np.ndarray]:
        """All metrics from totals (leading axes: none for the point estimate, replicates for the bootstrap)."""
        lead = top.shape[:-2]
        nb1 = self.n_bins + 1
        if self.strategy == "quantile":
            top = _coarsen(top.reshape(*lead, 2, _N_FINE, 3), self.n_bins)
        else:
            top = top.reshape(*lead, 2, nb1, 3)
        k = len(_ROW_VALUES)
        rows = rows[..., 0, :].reshape(*lead, 2, k)
        cw = cw.reshape(*lead, 2, self.n_classes, nb1, 3)
        out: dict[str, np.ndarray] = {}
        vals = {
            "ece": _ce_from_bins(top, self.norm, self.debiased),
            "mce": _ce_from_bins(top, "max"),
            "classwise_ece": _ce_from_bins(cw, self.norm).mean(axis=-1),
            "brier": rows[..., 3] / rows[..., 0],
            "nll": rows[..., 4] / rows[..., 0],
            "confidence_gap": (rows[..., 1] - rows[..., 2]) / rows[..., 0],
        }
        over, under = _gaps_from_bins(top)
        vals["overconfidence"], vals["underconfidence"] = over, under
        if self.temperature:
            g = len(_T_GRID)
            nll = tfit[..., :, :g]  # (..., model, temperature)
            best = nll.argmin(axis=-1)
            vals["temperature"] = _refine_grid_min(nll, best)
            ev = teval.reshape(*lead, 2, g, nb1, 3)
            picked = np.take_along_axis(ev, best[..., None, None, None], axis=-3)[..., 0, :, :]
            vals["ece_after_temperature"] = _ce_from_bins(picked, self.norm, self.debiased)
        for key, v in vals.items():
            out[f"teacher_{key}"] = v[..., 0]
            out[f"student_{key}"] = v[..., 1]
            out[f"{key}_change"] = v[..., 1] - v[..., 0]
        return out

    def compute(self) -> CalibrationResult:
        if self.n_rows == 0:
            return CalibrationResult(available=False, reason="no rows were added")
        bs = self.bootstrap
        stats = [self._top, self._rows, self._cw, self._t_fit, self._t_eval]
        est = evaluate(bs, stats, self._values)
        headline, extra = {}, {}
        for key, e in est.items():
            if "classwise" in key and not self._cw_blocked:
                e = point_only(e, "classwise state kept without blocks: n_classes x (n_bins + 1) > 2048")
            base = key.replace("teacher_", "").replace("student_", "").replace("_change", "")
            if base in ("overconfidence", "underconfidence"):
                extra[key] = e
            elif base == "temperature":
                if key != "temperature_change":
                    headline[f"temperature_{key.split('_')[0]}"] = e
            else:
                headline[key] = e
        unavailable: dict[str, str] = {}
        if self.partial:
            for m in ("classwise_ece", "brier", "nll"):
                for key in (f"teacher_{m}", f"student_{m}", f"{m}_change"):
                    unavailable[key] = "needs full probabilities from both models (a model gives top-k only)"
                    headline.pop(key, None)
        if not self.temperature:
            for key in ("temperature_teacher", "temperature_student", "teacher_ece_after_temperature",
                        "student_ece_after_temperature", "ece_after_temperature_change"):
                unavailable[key] = ("temperature scaling needs full probabilities" if self.partial
                                    else "temperature scaling was not requested")
        top_t = self._top.total()
        detail = {
            "unavailable": unavailable,
            "reliability": self._reliability(top_t),
            "over_under": {k: v.to_dict() for k, v in sorted(extra.items())},
            "n_rows": self.n_rows,
            "options": {"n_bins": self.n_bins, "strategy": self.strategy, "norm": self.norm,
                        "debiased": self.debiased, "binning": self.binning,
                        "temperature_grid": [float(_T_GRID[0]), float(_T_GRID[-1]), len(_T_GRID)]},
        }
        return CalibrationResult(available=True, reason=None, headline=headline, detail=detail)

    def _reliability(self, top_t: np.ndarray) -> dict[str, Any]:
        out = {}
        if self.strategy == "quantile":
            coarse, edges = _coarsen(top_t.reshape(2, _N_FINE, 3), self.n_bins, return_edges=True)
            for m, who in enumerate(_MODELS):
                out[who] = _diagram_from_bins(coarse[m], edges[m], "default")
        else:
            t = top_t.reshape(2, self.n_bins + 1, 3)
            for m, who in enumerate(_MODELS):
                out[who] = _diagram_from_bins(t[m], self._edges, self.binning)
        return {who: {k: v.tolist() for k, v in d.items()} for who, d in out.items()}


def _refine_grid_min(nll: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Parabolic refinement of a grid minimum in log T (vectorised); the grid value at the boundary."""
    g = nll.shape[-1]
    logt = np.log(_T_GRID)
    i = np.clip(best, 1, g - 2)
    f0 = np.take_along_axis(nll, (i - 1)[..., None], -1)[..., 0]
    f1 = np.take_along_axis(nll, i[..., None], -1)[..., 0]
    f2 = np.take_along_axis(nll, (i + 1)[..., None], -1)[..., 0]
    h = logt[1] - logt[0]
    denom = f0 - 2 * f1 + f2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(denom > 0, 0.5 * h * (f0 - f2) / denom, 0.0)
    refined = np.exp(logt[i] + np.clip(shift, -h, h))
    at_edge = (best == 0) | (best == g - 1)
    return np.where(at_edge, _T_GRID[best], refined)


def _fine_index(conf: np.ndarray) -> np.ndarray:
    lo, hi = _LOGIT_RANGE
    c = np.clip(conf, 1e-12, 1 - 1e-12)
    lg = np.log(c) - np.log1p(-c)
    return np.clip(((lg - lo) / (hi - lo) * _N_FINE).astype(np.int64), 0, _N_FINE - 1)


def _fine_edges() -> np.ndarray:
    lo, hi = _LOGIT_RANGE
    e = special.expit(np.linspace(lo, hi, _N_FINE + 1))
    e[0], e[-1] = 0.0, 1.0
    return e


def _coarsen(fine: np.ndarray, n_bins: int, *, return_edges: bool = False):
    """Merge fine bins (axis -2) into ``n_bins`` groups of about equal mass (midpoint rule), vectorised."""
    mass = fine[..., 0]
    total = mass.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        mid = (np.cumsum(mass, axis=-1) - 0.5 * mass) / total
    group = np.clip(np.floor(np.nan_to_num(mid) * n_bins), 0, n_bins - 1).astype(np.int64)
    # Groups are runs of consecutive fine bins, so each coarse sum is a difference of two cumulative sums: the run
    # ends come from counting fine bins per group (one bincount over all leading indices at once).
    lead = group.shape[:-1]
    n_lead = int(np.prod(lead))
    offsets = (np.arange(n_lead) * n_bins)[:, None]
    ends = np.bincount((group.reshape(n_lead, -1) + offsets).ravel(), minlength=n_lead * n_bins)
    ends = ends.reshape(*lead, n_bins).cumsum(axis=-1)
    csum = np.concatenate([np.zeros((*lead, 1, fine.shape[-1])), np.cumsum(fine, axis=-2)], axis=-2)
    at_end = np.take_along_axis(csum, ends[..., None], axis=-2)
    coarse = np.diff(np.concatenate([np.zeros((*lead, 1, fine.shape[-1])), at_end], axis=-2), axis=-2)
    if not return_edges:
        return coarse
    fe = _fine_edges()
    edges = np.empty((*group.shape[:-1], n_bins + 1))
    for idx in np.ndindex(group.shape[:-1]):
        gr = group[idx]
        # lower edge of each group: the first fine bin assigned to it (empty groups collapse onto the next edge)
        first = np.searchsorted(gr, np.arange(n_bins), side="left")
        edges[idx] = np.append(fe[np.minimum(first, _N_FINE)], 1.0)
        edges[idx][0] = 0.0
    return coarse, edges


# ---------------------------------------------------------------------------------------------------- section
def calibration_section(y_true: Any, teacher: ModelOutputs, student: ModelOutputs, *, ids: Any,
                        sensitive: Any = None, bootstrap: Bootstrap | None = None, n_bins: int = 15,
                        strategy: str = "uniform", norm: str = "l1", debiased: bool = False,
                        binning: str = "default", chunk_size: int | None = None) -> CalibrationResult:
    """Calibration of teacher and student and its change, from harness outputs (streamed in chunks of rows).

    Needs true labels and confidences: a labels-only model makes the section unavailable; with a top-k model the
    top-label metrics (ECE, MCE, confidence gap, reliability) are computed and the rest (classwise ECE, Brier, NLL,
    temperature scaling) is listed in ``detail["unavailable"]``.
    """
    return finish(calibration_fold(y_true, teacher, student, ids=ids, bootstrap=bootstrap, n_bins=n_bins,
                                   strategy=strategy, norm=norm, debiased=debiased, binning=binning,
                                   chunk_size=chunk_size))


def calibration_accumulator(n_classes: int, teacher: Any, student: Any, *, bootstrap: Bootstrap | None = None,
                            n_bins: int = 15, strategy: str = "uniform", norm: str = "l1", debiased: bool = False,
                            binning: str = "default") -> CalibrationAccumulator:
    """The empty accumulator of :func:`calibration_fold` for this pair: the one place its options are set (the
    ``calibration`` section's accumulator is this). ``teacher``/``student`` need ``access``."""
    return CalibrationAccumulator(n_classes, bootstrap=bootstrap, n_bins=n_bins, strategy=strategy, norm=norm,
                                  debiased=debiased, binning=binning, teacher_access=teacher.access,
                                  student_access=student.access)


def calibration_fold(y_true: Any, teacher: ModelOutputs, student: ModelOutputs, *, ids: Any,
                     sensitive: Any = None, bootstrap: Bootstrap | None = None, n_bins: int = 15,
                     strategy: str = "uniform", norm: str = "l1", debiased: bool = False,
                     binning: str = "default", chunk_size: int | None = None
                     ) -> CalibrationAccumulator | CalibrationResult:
    """The accumulator of :func:`calibration_section` fed with these rows (logits, when a model gave them, feed
    the temperature fit), or its result when it cannot run."""
    if y_true is None:
        return CalibrationResult(available=False, reason="no true labels: calibration needs y_true")
    for mo in (teacher, student):
        if mo.access == Access.LABELS:
            return CalibrationResult(available=False, reason=(
                f"model {mo.name!r} exposes labels only; calibration needs confidences"))
    acc = calibration_accumulator(teacher.n_classes, teacher, student, bootstrap=bootstrap, n_bins=n_bins,
                                  strategy=strategy, norm=norm, debiased=debiased, binning=binning)
    y = np.asarray(y_true)
    ids = np.asarray(ids)
    step = chunk_size or default_chunk(teacher.n_classes)
    for start in range(0, len(y), step):
        sl = slice(start, start + step)
        acc.update(y[sl], teacher.probs[sl], student.probs[sl], ids=ids[sl],
                   logits_teacher=None if teacher.logits is None else teacher.logits[sl],
                   logits_student=None if student.logits is None else student.logits[sl])
    return acc
