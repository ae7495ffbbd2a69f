"""Bias transfer: group metrics of teacher and student, their disparities, and whether distillation amplified them.

For every sensitive feature and for intersections of features (``sex x race``), and for teacher and student, the
family reports per group: accuracy, selection rate, true- and false-positive rate (one-vs-rest on ``pos_label``),
top-label ECE and the student's agreement with the teacher. Across groups it reports fairlearn's
``between_groups`` differences (max minus min) of those rates: demographic parity difference (selection rate),
equalized odds difference (``max(TPR difference, FPR difference)``, fairlearn's ``agg="worst_case"``), and the
amplification ``student disparity - teacher disparity`` with a paired interval and a one-sided test.

Everything is computed from additive per-block, per-group sums (:class:`~kdaudit.metrics._resampling.BlockStats`,
cells = groups), so streaming, sharding, the paired bootstrap and the permutation test share one state. Groups are
discovered while streaming; at :meth:`BiasAccumulator.compute` they are sorted by name, so the result does not
depend on the order in which rows or shards arrived.

Reliability
    A group with fewer than ``min_group_size`` rows is flagged ``small_group``; one with fewer than
    ``min_class_count`` rows of the positive (negative) class is flagged ``few_positives`` (``few_negatives``).
    Flagged groups keep their row in the tables, marked ``reliable: false``, and are left out of the disparity maxima
    they cannot support (a note lists them). The set of groups used is fixed from the full data, never per replicate.

The amplification test
    Null: within every block of rows, the teacher's and the student's predictions are exchangeable (swapping which
    model is called "teacher" does not change their joint distribution), as when the student is another draw of the
    same predictor. Statistic: ``D(student) - D(teacher)`` for a disparity ``D``. Reference distribution: the same
    statistic after swapping teacher and student in a random subset of blocks (``n_permutations`` seeded sign flips,
    derived from a hash like the bootstrap weights, so shards merge exactly). One-sided p-value
    ``(1 + #{permuted >= observed}) / (1 + n_permutations)``; valid in finite samples under the null.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from kdaudit._estimate import Estimate
from kdaudit._exceptions import invalid_argument
from kdaudit._validation import check_consistent_length, check_labels, check_probabilities, check_sample_weight
from kdaudit.metrics._calibration import _bin_index, _ce_from_bins, _uniform_edges
from kdaudit.metrics._accumulator import ALL, KEYED, SAME, SUM, Accumulator, finish
from kdaudit.metrics._common import SectionResult
from kdaudit.metrics._resampling import BlockStats, Bootstrap, block_of, splitmix64

__all__ = [
    "DEFINITIONS",
    "BiasAccumulator",
    "BiasResult",
    "bias_accumulator",
    "bias_amplification",
    "bias_fold",
    "bias_section",
    "demographic_parity_difference",
    "equalized_odds_difference",
    "group_metrics",
]

INTERSECTION_SEP = " x "  # feature name of an intersection, e.g. "sex x race"
GROUP_SEP = ", "  # group label of an intersection, e.g. "Female, Black"

# Layout of the per-row values summed per (block, group). "w" is the sample weight (1 without weights).
_ROWS, _W, _W_LAB, _W_POS, _ROWS_POS, _ROWS_LAB, _AGREE = range(7)
_CORRECT, _SELECTED, _TP, _FP = range(4)  # offsets inside one model's slice
_MODEL0 = 7  # teacher's slice starts here, the student's 4 later
_N_VALUES = _MODEL0 + 8
_MODELS = ("teacher", "student")

# Group metrics (key -> per-group array from sums); the keys are also DEFINITIONS keys.
_GROUP_KEYS = ("group_accuracy", "group_selection_rate", "group_tpr", "group_fpr", "group_ece")
# Disparities: key -> (group metric it spreads, mask name)
_DIFFERENCES = {
    "dp_difference": ("group_selection_rate", "group"),
    "tpr_difference": ("group_tpr", "tpr"),
    "fpr_difference": ("group_fpr", "fpr"),
    "eo_difference": (None, None),  # max of the two above
    "accuracy_difference": ("group_accuracy", "labeled"),
}

_TEST_NULL = ("within every block of rows, teacher and student predictions are exchangeable (the student is no "
              "more disparate than another draw of the teacher)")


def _test_method(n_permutations: int, seed: int) -> str:
    return (f"one-sided block sign-flip permutation test of amplification > 0, {n_permutations} permutations, "
            f"seed {seed}; null: {_TEST_NULL}")


DEFINITIONS: dict[str, dict[str, Any]] = {
    "group_accuracy": {
        "label": "Group accuracy",
        "formula": "sum_i w_i [pred_i = y_i] / sum_i w_i over rows of the group",
        "higher_is_better": True,
        "description": "Share of the group's labelled rows the model classifies correctly.",
    },
    "group_selection_rate": {
        "label": "Group selection rate",
        "formula": "sum_i w_i [pred_i = pos_label] / sum_i w_i over rows of the group",
        "higher_is_better": None,
        "description": "Share of the group's rows predicted as the positive class (fairlearn's selection_rate).",
    },
    "group_tpr": {
        "label": "Group true-positive rate",
        "formula": "sum_i w_i [pred_i = pos, y_i = pos] / sum_i w_i [y_i = pos]",
        "higher_is_better": True,
        "description": "Share of the group's positive rows predicted positive (one-vs-rest on pos_label).",
    },
    "group_fpr": {
        "label": "Group false-positive rate",
        "formula": "sum_i w_i [pred_i = pos, y_i != pos] / sum_i w_i [y_i != pos]",
        "higher_is_better": False,
        "description": "Share of the group's negative rows predicted positive (one-vs-rest on pos_label).",
    },
    "group_ece": {
        "label": "Group ECE",
        "formula": "sum_b |sum_{i in b} w_i ([pred_i = y_i] - conf_i)| / sum_i w_i, 15 uniform [lo, hi) bins of "
                   "top-label confidence (the top bin closed at 1.0)",
        "higher_is_better": False,
        "description": "Top-label expected calibration error within the group (not computed for labels-only "
                       "outputs). Biased upward in small groups.",
    },
    "group_agreement": {
        "label": "Group agreement with the teacher",
        "formula": "sum_i w_i [pred_student_i = pred_teacher_i] / sum_i w_i over rows of the group",
        "higher_is_better": True,
        "description": "Share of the group's rows where the student predicts the teacher's label.",
    },
    "dp_difference": {
        "label": "Demographic parity difference",
        "formula": "max_g selection_rate_g - min_g selection_rate_g over reliable groups",
        "higher_is_better": False,
        "description": "fairlearn's demographic_parity_difference (method='between_groups').",
    },
    "dp_ratio": {
        "label": "Demographic parity ratio",
        "formula": "min_g selection_rate_g / max_g selection_rate_g over reliable groups",
        "higher_is_better": True,
        "description": "fairlearn's demographic_parity_ratio; below 0.8 fails the 'four-fifths' rule of thumb.",
    },
    "tpr_difference": {
        "label": "True-positive rate difference",
        "formula": "max_g TPR_g - min_g TPR_g over groups with enough positives",
        "higher_is_better": False,
        "description": "fairlearn's equal_opportunity_difference.",
    },
    "fpr_difference": {
        "label": "False-positive rate difference",
        "formula": "max_g FPR_g - min_g FPR_g over groups with enough negatives",
        "higher_is_better": False,
        "description": "Between-groups spread of the false-positive rate.",
    },
    "eo_difference": {
        "label": "Equalized odds difference",
        "formula": "max(tpr_difference, fpr_difference)",
        "higher_is_better": False,
        "description": "fairlearn's equalized_odds_difference (method='between_groups', agg='worst_case').",
    },
    "accuracy_difference": {
        "label": "Accuracy difference",
        "formula": "max_g accuracy_g - min_g accuracy_g over reliable groups",
        "higher_is_better": False,
        "description": "Between-groups spread of accuracy.",
    },
    "dp_difference_teacher": {
        "label": "Demographic parity difference (teacher)",
        "formula": "max over sensitive features and intersections of the teacher's dp_difference",
        "higher_is_better": False,
        "description": "The teacher's worst demographic parity difference over every feature and intersection.",
    },
    "dp_difference_student": {
        "label": "Demographic parity difference (student)",
        "formula": "max over sensitive features and intersections of the student's dp_difference",
        "higher_is_better": False,
        "description": "The student's worst demographic parity difference over every feature and intersection.",
    },
    "dp_amplification": {
        "label": "Demographic parity amplification",
        "formula": "dp_difference_student - dp_difference_teacher",
        "higher_is_better": False,
        "description": "How much more (positive) or less (negative) the student's selection rates differ between "
                       "groups than the teacher's; paired bootstrap interval.",
    },
    "dp_amplification_p_value": {
        "label": "p-value, demographic parity amplification > 0",
        "formula": "(1 + #{permuted amplification >= observed}) / (1 + n_permutations)",
        "higher_is_better": True,
        "description": "One-sided block sign-flip permutation test; null: " + _TEST_NULL + ".",
    },
    "eo_difference_teacher": {
        "label": "Equalized odds difference (teacher)",
        "formula": "max over sensitive features and intersections of the teacher's eo_difference",
        "higher_is_better": False,
        "description": "The teacher's worst equalized odds difference over every feature and intersection.",
    },
    "eo_difference_student": {
        "label": "Equalized odds difference (student)",
        "formula": "max over sensitive features and intersections of the student's eo_difference",
        "higher_is_better": False,
        "description": "The student's worst equalized odds difference over every feature and intersection.",
    },
    "eo_amplification": {
        "label": "Equalized odds amplification",
        "formula": "eo_difference_student - eo_difference_teacher",
        "higher_is_better": False,
        "description": "How much more (positive) or less (negative) the student's error rates differ between groups "
                       "than the teacher's; paired bootstrap interval.",
    },
    "eo_amplification_p_value": {
        "label": "p-value, equalized odds amplification > 0",
        "formula": "(1 + #{permuted amplification >= observed}) / (1 + n_permutations)",
        "higher_is_better": True,
        "description": "One-sided block sign-flip permutation test; null: " + _TEST_NULL + ".",
    },
    "worst_group_agreement": {
        "label": "Worst-group agreement",
        "formula": "min over reliable groups of every feature and intersection of group_agreement",
        "higher_is_better": True,
        "description": "Agreement of the student with the teacher in the group where they agree least.",
    },
    "max_group_accuracy_drop": {
        "label": "Largest group accuracy drop",
        "formula": "max over reliable groups of (teacher accuracy_g - student accuracy_g)",
        "higher_is_better": False,
        "description": "Accuracy the student loses, relative to the teacher, in the group where it loses most.",
    },
}


# --------------------------------------------------------------------------------------------------------------------
# Sensitive features: many input forms, one result: named columns of strings, no missing values.


def _sensitive_columns(sensitive: Any, n: int, names: Sequence[str] | None, arg: str) -> dict[str, np.ndarray]:
    """Return ``{name: 1-D object/str array}`` with ``n`` rows, or raise naming ``arg``."""
    if sensitive is None:
        raise invalid_argument(arg, None, "sensitive features: a DataFrame, Series, dict of arrays or array")
    if isinstance(sensitive, pd.DataFrame):
        cols = {str(c): sensitive[c].to_numpy() for c in sensitive.columns}
    elif isinstance(sensitive, pd.Series):
        cols = {str(sensitive.name) if sensitive.name is not None else "sensitive_feature_0": sensitive.to_numpy()}
    elif isinstance(sensitive, Mapping):
        cols = {str(k): np.asarray(v) for k, v in sensitive.items()}
    else:
        arr = np.asarray(sensitive)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise invalid_argument(arg, f"array of shape {arr.shape}", "a 1-D or 2-D array of group values")
        cols = {f"sensitive_feature_{j}": arr[:, j] for j in range(arr.shape[1])}
    if not cols:
        raise invalid_argument(arg, "no columns", "at least one sensitive feature")
    if names is not None:
        missing = [c for c in names if c not in cols]
        if missing and len(cols) == len(names) and not isinstance(sensitive, (pd.DataFrame, Mapping, pd.Series)):
            cols = dict(zip(names, cols.values()))  # unnamed columns take the declared names, in order
        elif missing:
            raise invalid_argument(arg, f"columns {sorted(cols)}", f"columns {list(names)}")
        cols = {c: cols[c] for c in names}
    for c, v in cols.items():
        if v.ndim != 1:
            raise invalid_argument(arg, f"column {c!r} of shape {v.shape}", "1-D columns")
        if len(v) != n:
            raise invalid_argument(arg, f"{len(v)} rows in column {c!r}", f"{n} rows, aligned with the predictions")
    return cols


def _factorize(values: np.ndarray, column: str, arg: str) -> tuple[np.ndarray, list[str]]:
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if len(codes) and codes.min() < 0:
        row = int(np.flatnonzero(codes < 0)[0])
        raise invalid_argument(arg, f"a missing value in column {column!r} at row {row}",
                               "a group for every row (fill missing values explicitly, e.g. with 'unknown')")
    return codes.astype(np.int64), [str(u) for u in np.asarray(uniques, dtype=object)]


def _combine(codes: list[np.ndarray], uniques: list[list[str]]) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Codes of the intersection of several factorized columns, and the value tuple of each code."""
    if len(codes) == 1:
        return codes[0], [(u,) for u in uniques[0]]
    flat = np.zeros_like(codes[0])
    for c, u in zip(codes, uniques):
        flat = flat * len(u) + c
    local, seen = pd.factorize(flat)
    keys = []
    for f in np.asarray(seen, dtype=np.int64):
        parts = []
        for u in reversed(uniques):
            f, r = divmod(int(f), len(u))
            parts.append(u[r])
        keys.append(tuple(reversed(parts)))
    return local.astype(np.int64), keys


# --------------------------------------------------------------------------------------------------------------------
# Per-feature state: groups discovered while streaming, per (block, group) sums that grow when a new group appears.


class _FeatureState:
    """Sums for one feature (or intersection): main values and, per model, calibration bins, cells = groups."""

    def __init__(self, n_blocks: int, n_bin_slots: int) -> None:
        self.n_blocks, self.n_bin_slots = n_blocks, n_bin_slots
        self.keys: list[tuple[str, ...]] = []
        self.index: dict[tuple[str, ...], int] = {}
        self.main = BlockStats(_N_VALUES, n_cells=0, n_blocks=n_blocks)
        self.calib = [BlockStats(3, n_cells=0, n_blocks=n_blocks) for _ in _MODELS]

    @property
    def n_groups(self) -> int:
        return len(self.keys)

    def codes_for(self, keys: list[tuple[str, ...]]) -> np.ndarray:
        """Global group index of each local key, registering new groups (and growing the sums) as needed."""
        new = [k for k in keys if k not in self.index]
        if new:
            for k in new:
                self.index[k] = len(self.keys)
                self.keys.append(k)
            self._grow(len(self.keys))
        return np.array([self.index[k] for k in keys], dtype=np.int64)

    def _grow(self, n_groups: int) -> None:
        def grown(stats: BlockStats, per_group: int) -> BlockStats:
            out = BlockStats(stats.n_values, n_cells=n_groups * per_group, n_blocks=self.n_blocks)
            out.sums[:, : stats.n_cells] = stats.sums  # cells are group-major, so old cells keep their place
            return out

        self.main = grown(self.main, 1)
        self.calib = [grown(c, self.n_bin_slots) for c in self.calib]

    def merge(self, other: _FeatureState) -> None:
        idx = self.codes_for(other.keys)
        self.main.sums[:, idx] += other.main.sums
        nb = self.n_bin_slots
        cal_idx = (idx[:, None] * nb + np.arange(nb)[None, :]).ravel()
        for mine, theirs in zip(self.calib, other.calib):
            mine.sums[:, cal_idx] += theirs.sums

    def sorted_sums(self) -> tuple[list[tuple[str, ...]], np.ndarray, list[np.ndarray]]:
        """Keys sorted by name, and the sums in that order: main (blocks, G, V), calib (blocks, G, slots, 3)."""
        order = sorted(range(len(self.keys)), key=lambda i: self.keys[i])
        keys = [self.keys[i] for i in order]
        main = self.main.sums[:, order]
        calib = [c.sums.reshape(self.n_blocks, self.n_groups, self.n_bin_slots, 3)[:, order] for c in self.calib]
        return keys, main, calib


def _bincount_into(sums: np.ndarray, flat: np.ndarray, columns: Sequence[np.ndarray | None]) -> None:
    """``sums`` is (n_blocks, n_cells, n_values); add ``columns[j]`` (None = a count of rows) binned by ``flat``."""
    size = sums.shape[0] * sums.shape[1]
    for j, col in enumerate(columns):
        sums[:, :, j] += np.bincount(flat, weights=col, minlength=size).reshape(sums.shape[:2])


def _main_columns(y: np.ndarray | None, preds: tuple[np.ndarray, np.ndarray], w: np.ndarray | None,
                  pos: Any) -> list[np.ndarray | None]:
    """Per-row values of the main sums (see the layout constants), already multiplied by the weight."""

    def weighted(mask: np.ndarray) -> np.ndarray:
        return mask.astype(np.float64) if w is None else np.where(mask, w, 0.0)

    n = len(preds[0])
    cols: list[np.ndarray | None] = [None] * _N_VALUES
    cols[_ROWS] = None
    cols[_W] = None if w is None else w
    if y is None:
        labeled = np.zeros(n, dtype=bool)
        is_pos = labeled
    else:
        labeled = np.ones(n, dtype=bool)
        is_pos = y == pos
    cols[_W_LAB] = weighted(labeled)
    cols[_W_POS] = weighted(is_pos)
    cols[_ROWS_POS] = is_pos.astype(np.float64)
    cols[_ROWS_LAB] = labeled.astype(np.float64)
    cols[_AGREE] = weighted(preds[0] == preds[1])
    for m, pred in enumerate(preds):
        base = _MODEL0 + 4 * m
        selected = pred == pos
        cols[base + _CORRECT] = weighted(labeled & (pred == y)) if y is not None else weighted(labeled)
        cols[base + _SELECTED] = weighted(selected)
        cols[base + _TP] = weighted(selected & is_pos)
        cols[base + _FP] = weighted(selected & labeled & ~is_pos)
    return cols


def _bin_slots(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each top-label confidence, by the calibration family's default convention (so group ECEs are that
    family's ECE on the group's rows): uniform float64 edges, bins [lo, hi), the top bin closed at 1.0."""
    return _bin_index(conf, _uniform_edges(n_bins, "default"), "default").astype(np.int64)


# --------------------------------------------------------------------------------------------------------------------
# Metrics from sums (vectorised over leading replicate axes).


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _group_values(main: np.ndarray, calib: list[np.ndarray | None]) -> dict[str, np.ndarray]:
    """``main`` (..., G, V), ``calib[m]`` (..., G, slots, 3) or None -> {"teacher.group_accuracy": (..., G), ...}."""
    out: dict[str, np.ndarray] = {}
    w, w_lab, w_pos = main[..., _W], main[..., _W_LAB], main[..., _W_POS]
    w_neg = w_lab - w_pos
    for m, model in enumerate(_MODELS):
        s = main[..., _MODEL0 + 4 * m: _MODEL0 + 4 * m + 4]
        out[f"{model}.group_accuracy"] = _ratio(s[..., _CORRECT], w_lab)
        out[f"{model}.group_selection_rate"] = _ratio(s[..., _SELECTED], w)
        out[f"{model}.group_tpr"] = _ratio(s[..., _TP], w_pos)
        out[f"{model}.group_fpr"] = _ratio(s[..., _FP], w_neg)
        if calib[m] is None:
            out[f"{model}.group_ece"] = np.full(w.shape, np.nan)
        else:
            out[f"{model}.group_ece"] = _ce_from_bins(calib[m], "l1")
    out["group_agreement"] = _ratio(main[..., _AGREE], w)
    return out


def _spread(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max and min of ``x`` (..., G) over groups in ``mask`` (G,) with a finite value, and how many there were."""
    ok = mask & np.isfinite(x)
    hi = np.where(ok, x, -np.inf).max(axis=-1, initial=-np.inf)
    lo = np.where(ok, x, np.inf).min(axis=-1, initial=np.inf)
    return hi, lo, ok.sum(axis=-1)


def _difference(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    hi, lo, n = _spread(x, mask)
    with np.errstate(invalid="ignore"):
        return np.where(n >= 2, hi - lo, np.nan)


def _disparities(values: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{"teacher.dp_difference": (...), ..., "student.dp_ratio": (...)} from group values."""
    out: dict[str, np.ndarray] = {}
    for model in _MODELS:
        for key, (metric, mask) in _DIFFERENCES.items():
            if metric is not None:
                out[f"{model}.{key}"] = _difference(values[f"{model}.{metric}"], masks[mask])
        out[f"{model}.eo_difference"] = np.fmax(out[f"{model}.tpr_difference"], out[f"{model}.fpr_difference"])
        # fmax ignores one NaN; EO needs both parts to be the worst case, so NaN if either is undefined
        either_nan = np.isnan(out[f"{model}.tpr_difference"]) | np.isnan(out[f"{model}.fpr_difference"])
        out[f"{model}.eo_difference"] = np.where(either_nan, np.nan, out[f"{model}.eo_difference"])
        hi, lo, n = _spread(values[f"{model}.group_selection_rate"], masks["group"])
        out[f"{model}.dp_ratio"] = np.where(n >= 2, _ratio(np.where(n >= 2, lo, 0.0), np.where(n >= 2, hi, 0.0)),
                                            np.nan)
    return out


def _fmax_over(arrays: list[np.ndarray]) -> np.ndarray:
    """Element-wise max over a list, ignoring NaN (NaN only where every entry is NaN)."""
    return np.fmax.reduce(np.stack(arrays), axis=0)


# --------------------------------------------------------------------------------------------------------------------
# Result


class BiasResult(SectionResult):
    """Bias-transfer section.

    ``headline``: worst-case disparities over every feature and intersection (``dp_difference_teacher``, ...,
    ``dp_amplification`` and its ``_p_value``, the same for ``eo``), ``worst_group_agreement`` and
    ``max_group_accuracy_drop``. ``detail``: ``features`` (per feature and intersection: ``groups``, one row per
    group with counts, flags and teacher/student/change Estimates; ``disparities``; ``excluded``; ``notes``),
    ``headline_features`` (the feature where each headline maximum is attained), ``settings`` and ``notes``.
    """

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return self.detail.get("features", {})

    @property
    def settings(self) -> dict[str, Any]:
        return self.detail.get("settings", {})

    @property
    def notes(self) -> list[str]:
        return self.detail.get("notes", [])

    @property
    def headline_features(self) -> dict[str, str | None]:
        return self.detail.get("headline_features", {})

    def group_table(self, feature: str) -> pd.DataFrame:
        """One row per group of ``feature``: n, flags and the point values of every group metric."""
        if feature not in self.features:
            raise invalid_argument("feature", feature, f"one of {list(self.features)}")
        rows = []
        for g in self.features[feature]["groups"]:
            row = {"group": g["group"], "n": g["n"], "reliable": g["reliable"], "flags": ",".join(g["flags"])}
            for model in _MODELS:
                for k, e in g[model].items():
                    row[f"{model}_{k}"] = e.value
            row["group_agreement"] = g["group_agreement"].value
            rows.append(row)
        return pd.DataFrame(rows).set_index("group")


def _unavailable(reason: str) -> BiasResult:
    return BiasResult(available=False, reason=reason, detail={"features": {}, "notes": []})


# --------------------------------------------------------------------------------------------------------------------
# Accumulator


_CONTROLLER: list[ThreadpoolController] = []


def _blas_controller() -> ThreadpoolController:
    """One controller per process: building one scans the loaded libraries, which costs milliseconds."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def _sign_flips(n_permutations: int, n_blocks: int, seed: int) -> np.ndarray:
    """(n_permutations, n_blocks) 0/1 swaps; entry (r, b) depends only on (seed, r, b), like the bootstrap weights."""
    r = np.arange(n_permutations, dtype=np.uint64)[:, None]
    b = np.arange(n_blocks, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        # a different multiplier from poisson_weights', so swaps are not correlated with bootstrap weights
        counter = splitmix64(np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + r) ^ b
    return (splitmix64(counter) >> np.uint64(63)).astype(np.float64)


def _swap_models(main: np.ndarray) -> np.ndarray:
    """The main sums with the teacher's and the student's slices exchanged."""
    out = main.copy()
    t, s = slice(_MODEL0, _MODEL0 + 4), slice(_MODEL0 + 4, _MODEL0 + 8)
    out[..., t], out[..., s] = main[..., s], main[..., t]
    return out


class BiasAccumulator(Accumulator):
    """Streaming, mergeable state of the bias-transfer section.

    Parameters
    ----------
    n_classes : int
        Number of classes; labels and predictions are class indices in ``[0, n_classes)``.
    sensitive_names : sequence of str, optional
        Sensitive feature columns to audit, in order. ``None`` takes the columns of the first ``update``.
    bootstrap : Bootstrap
        Paired block-Poisson bootstrap settings (also fixes the blocks the permutation test swaps).
    pos_label : int, optional
        The positive class for selection rate, TPR and FPR (one-vs-rest). Default: the last class (1 for binary).
    min_group_size : int, default 30
        Groups with fewer rows are flagged ``small_group`` and left out of every disparity.
    min_class_count : int, default 10
        Groups with fewer positive (negative) rows are flagged and left out of the TPR (FPR) difference.
    intersections : bool or sequence of sequences of str, default True
        ``True``: every pair of sensitive features; ``False``: none; or explicit tuples of feature names.
    n_bins : int, default 15
        Uniform bins of top-label confidence for the per-group ECE.
    n_permutations : int, default 999
        Sign-flip permutations of the amplification test (0 skips the test).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200); sex = np.where(rng.random(200) < 0.5, "F", "M")
    >>> acc = BiasAccumulator(2, sensitive_names=["sex"], bootstrap=Bootstrap(n_replicates=0), min_group_size=5)
    >>> _ = acc.update(y, y, 1 - y, ids=np.arange(200), sensitive={"sex": sex})
    >>> acc.compute().headline["dp_difference_student"].value >= 0
    True
    """

    # group sets may differ between shards: KEYED unites each feature's groups by name
    states = {"sensitive_names": SAME, "features": SAME, "_state": KEYED, "_has_conf": ALL, "_labelled": SAME,
              "_n_rows": SUM}
    merge_key = ("n_classes", "pos_label", "n_bins", "bootstrap", "min_group_size", "min_class_count")

    def __init__(self, n_classes: int, *, sensitive_names: Sequence[str] | None = None,
                 bootstrap: Bootstrap | None = None, pos_label: int | None = None, min_group_size: int = 30,
                 min_class_count: int = 10, intersections: bool | Sequence[Sequence[str]] = True, n_bins: int = 15,
                 n_permutations: int = 999) -> None:
        if not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise invalid_argument("n_classes", n_classes, "an integer >= 2")
        if pos_label is None:
            pos_label = n_classes - 1
        if not isinstance(pos_label, (int, np.integer)) or not 0 <= pos_label < n_classes:
            raise invalid_argument("pos_label", pos_label, f"a class index in [0, {n_classes - 1}]")
        for name, v, lo in (("min_group_size", min_group_size, 0), ("min_class_count", min_class_count, 0),
                            ("n_bins", n_bins, 1), ("n_permutations", n_permutations, 0)):
            if not isinstance(v, (int, np.integer)) or v < lo:
                raise invalid_argument(name, v, f"an integer >= {lo}")
        self.n_classes = int(n_classes)
        self.bootstrap = bootstrap if bootstrap is not None else Bootstrap()
        self.pos_label = int(pos_label)
        self.min_group_size = int(min_group_size)
        self.min_class_count = int(min_class_count)
        self.n_bins = int(n_bins)
        self.n_permutations = int(n_permutations)
        self._intersections = intersections
        self.sensitive_names: list[str] | None = None
        self.features: dict[str, tuple[str, ...]] = {}
        self._state: dict[str, _FeatureState] = {}
        self._has_conf = [True, True]
        self._labelled: bool | None = None  # whether chunks carry y_true; fixed by the first chunk
        self._n_rows = 0
        if sensitive_names is not None:
            self._set_names([str(c) for c in sensitive_names])

    # -- configuration -------------------------------------------------------------------------------------------

    def _set_names(self, names: list[str]) -> None:
        if not names or len(set(names)) != len(names):
            raise invalid_argument("sensitive_names", names, "distinct column names, at least one")
        self.sensitive_names = names
        inter = self._intersections
        if inter is True:
            combos = list(itertools.combinations(names, 2))
        elif inter is False or inter is None:
            combos = []
        else:
            combos = [tuple(str(c) for c in combo) for combo in inter]
            for combo in combos:
                if len(combo) < 2 or len(set(combo)) != len(combo) or any(c not in names for c in combo):
                    raise invalid_argument("intersections", combo, f"tuples of 2 or more distinct names of {names}")
        self.features = {c: (c,) for c in names}
        for combo in combos:
            self.features[INTERSECTION_SEP.join(combo)] = combo
        self._state = {f: _FeatureState(self.bootstrap.n_blocks, self.n_bins + 1) for f in self.features}

    # -- streaming -----------------------------------------------------------------------------------------------

    def update(self, y_true: Any, p_teacher: Any, p_student: Any, *, ids: Any, sensitive: Any = None,
               sample_weight: Any = None) -> BiasAccumulator:
        """Add a chunk of rows.

        ``p_teacher`` / ``p_student`` are (n, n_classes) probabilities (or top-k outputs, zero outside the top k), or
        1-D predicted class indices for labels-only models (their per-group ECE is then not computed). ``y_true``
        may be None (unlabelled rows: only selection rates, agreement and demographic parity are defined).
        """
        preds, confs = [], []
        for arg, p in (("p_teacher", p_teacher), ("p_student", p_student)):
            arr = np.asarray(p)
            if arr.ndim == 1:
                preds.append(check_labels(arr, arg, n_classes=self.n_classes))
                confs.append(None)
            else:
                probs = check_probabilities(arr, arg, n_classes=self.n_classes, allow_partial=True)
                preds.append(probs.argmax(axis=1))
                confs.append(probs.max(axis=1))
        y = None if y_true is None else check_labels(y_true, "y_true", n_classes=self.n_classes)
        return self._update(y, preds, confs, ids=ids, sensitive=sensitive, sample_weight=sample_weight)

    def _update(self, y: np.ndarray | None, preds: list[np.ndarray], confs: list[np.ndarray | None], *, ids: Any,
                sensitive: Any, sample_weight: Any) -> BiasAccumulator:
        """Add rows whose labels and predictions are already checked class indices."""
        n = check_consistent_length(p_teacher=preds[0], p_student=preds[1], y_true=y)
        ids_arr = np.asarray(ids)
        if ids_arr.ndim != 1 or len(ids_arr) != n:
            raise invalid_argument("ids", f"array of shape {ids_arr.shape}", f"a 1-D array of {n} sample ids")
        w = check_sample_weight(sample_weight, n)
        cols = _sensitive_columns(sensitive, n, self.sensitive_names, "sensitive")
        factorized = {c: _factorize(v, c, "sensitive") for c, v in cols.items()}
        blocks = block_of(ids_arr, self.bootstrap.n_blocks) if self.bootstrap.n_blocks > 1 else np.zeros(n, np.int64)
        if self._labelled is not None and self._labelled != (y is not None):
            raise invalid_argument("y_true", "labels in some chunks only", "labels in every chunk or in none")
        # every check has passed: from here on the state changes
        if self.sensitive_names is None:
            self._set_names(list(cols))
        self._labelled = y is not None
        for m in range(2):
            self._has_conf[m] = self._has_conf[m] and confs[m] is not None
        self._n_rows += n

        main_cols = _main_columns(y, (preds[0], preds[1]), w, self.pos_label)
        slots = [None if c is None else _bin_slots(c, self.n_bins) for c in confs]
        nb = self.n_bins + 1
        if y is not None:
            conf_cols = []
            for m in range(2):
                if confs[m] is None:
                    conf_cols.append(None)
                    continue
                correct = (preds[m] == y).astype(np.float64)
                conf = confs[m].astype(np.float64)
                conf_cols.append([w, conf if w is None else conf * w, correct if w is None else correct * w])

        for fname, combo in self.features.items():
            st = self._state[fname]
            local, keys = _combine([factorized[c][0] for c in combo], [factorized[c][1] for c in combo])
            codes = st.codes_for(keys)[local]
            flat = blocks * st.n_groups + codes
            _bincount_into(st.main.sums, flat, main_cols)
            if y is not None:
                for m in range(2):
                    if slots[m] is not None and self._has_conf[m]:
                        cflat = (blocks * st.n_groups + codes) * nb + slots[m]
                        _bincount_into(st.calib[m].sums, cflat, conf_cols[m])
        return self

    # -- results -------------------------------------------------------------------------------------------------

    def compute(self) -> BiasResult:
        """Group tables, disparities, paired intervals and amplification tests of every feature and intersection."""
        # The matrix products here are small (replicates x blocks times blocks x a few hundred sums); a multi-threaded
        # BLAS spends far longer waking threads than computing them, 10-20x longer on a busy 2-core machine.
        with _blas_controller().limit(limits=1, user_api="blas"):
            return self._compute()

    def _compute(self) -> BiasResult:
        if self.sensitive_names is None or self._n_rows == 0:
            return _unavailable("no rows with sensitive features were given")
        bs = self.bootstrap
        n_rep = bs.n_replicates
        W = bs.weights() if n_rep else None
        flips = _sign_flips(self.n_permutations, bs.n_blocks, bs.seed) if self.n_permutations else None
        test_method = _test_method(self.n_permutations, bs.seed)
        point_method = "point estimate only"

        # Smooth per-group rates get the caller's interval (BCa by default, with a leave-one-block-out jackknife).
        # Maxima/minima over groups and their differences get the intervals validated for them by simulation in
        # tests/test_bias.py, built on plain percentiles whatever the caller's choice.
        pct = dataclasses.replace(bs, interval="percentile") if hasattr(bs, "interval") else bs
        union_method = pct.method.replace("percentile", "union of percentile and basic (reverse-percentile)")

        def est(point: np.ndarray, reps: np.ndarray | None, jack: np.ndarray | None = None, *,
                kind: str = "rate", bounds: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
            """Estimates of ``kind`` "rate" (caller's interval), "difference" (percentile) or "extreme".

            An "extreme" (a max or min over groups: every disparity) is non-smooth where groups tie: the percentile
            interval then misses a true disparity of 0 entirely (every replicate's max - min is positive), while the
            basic interval ``[2 v - q_hi, 2 v - q_lo]`` under-covers well-separated groups in samples of a few
            thousand. Their union kept 91-97% coverage in our simulations and always contains ``v``; it is clipped to
            the quantity's range ``bounds`` (a spread is never negative). A difference of two extremes
            (amplification) uses the percentile interval, which covered 94-99% there.
            """
            if reps is None:
                out = np.empty(np.shape(point), dtype=object)
                for idx in np.ndindex(out.shape):
                    out[idx] = Estimate(np.asarray(point)[idx], method=point_method)
                return out
            if kind == "rate":
                if jack is not None and getattr(bs, "interval", None) == "bca":
                    return bs.from_replicates(point, reps, jack)
                return bs.from_replicates(point, reps)
            out = pct.from_replicates(point, reps)
            if kind == "extreme":
                for idx in np.ndindex(out.shape):
                    e = out[idx]
                    if e.has_interval:
                        lo = max(min(e.low, 2 * e.value - e.high), bounds[0])
                        hi = min(max(e.high, 2 * e.value - e.low), bounds[1])
                        out[idx] = Estimate(e.value, lo, hi, union_method, e.level)
            return out

        def est_many(points: dict[str, np.ndarray], reps: dict[str, np.ndarray] | None,
                     jack: dict[str, np.ndarray] | None = None, *, kind: str = "rate") -> dict[str, np.ndarray]:
            """:func:`est` of several same-shaped quantities in one call (the interval code is vectorised)."""
            keys = list(points)
            stacked = est(np.stack([np.asarray(points[k], dtype=np.float64) for k in keys]),
                          None if reps is None else np.stack([reps[k] for k in keys], axis=1),
                          None if jack is None else np.stack([jack[k] for k in keys], axis=1), kind=kind)
            return {k: stacked[i:i + 1].reshape(stacked.shape[1:]) for i, k in enumerate(keys)}

        notes: list[str] = []
        if not self._labelled:
            notes.append("no true labels: accuracy, TPR, FPR, ECE and equalized odds are not computed")
        for m, model in enumerate(_MODELS):
            if not self._has_conf[m]:
                notes.append(f"the {model} gave labels only (or not in every chunk): its group ECE is not computed")

        features_out: dict[str, dict[str, Any]] = {}
        # per feature, for the headline: point, replicates ("r") and permutation values ("p") of each model
        collect: dict[str, dict[str, list]] = {k: {"t": [], "s": [], "tr": [], "sr": [], "tp": [], "sp": []}
                                               for k in ("dp_difference", "eo_difference")}
        agree_parts, drop_parts = [], []
        for fname, combo in self.features.items():
            st = self._state[fname]
            keys, main_b, calib_b = st.sorted_sums()
            G = len(keys)
            calib_b = [c if self._has_conf[m] and self._labelled else None for m, c in enumerate(calib_b)]
            main_t = main_b.sum(axis=0)
            calib_t = [None if c is None else c.sum(axis=0) for c in calib_b]
            values = _group_values(main_t, calib_t)
            reps_values = jack_values = None
            if W is not None:
                main_r = np.tensordot(W, main_b, axes=(1, 0))
                calib_r = [None if c is None else np.tensordot(W, c, axes=(1, 0)) for c in calib_b]
                with np.errstate(invalid="ignore", divide="ignore"):
                    reps_values = _group_values(main_r, calib_r)
                    # leave-one-block-out values, for the BCa acceleration; blocks without rows carry no information
                    jack_values = _group_values(main_t[None] - main_b,
                                                [None if c is None else c.sum(axis=0)[None] - c for c in calib_b])
                empty = main_b[:, :, _ROWS].sum(axis=1) == 0
                for v in jack_values.values():
                    v[empty] = np.nan

            rows_n = main_t[:, _ROWS]
            rows_pos = main_t[:, _ROWS_POS]
            rows_neg = main_t[:, _ROWS_LAB] - rows_pos
            big = rows_n >= self.min_group_size
            masks = {
                "group": big,
                "labeled": big & (main_t[:, _ROWS_LAB] >= max(self.min_group_size, 1)),
                "tpr": big & (rows_pos >= max(self.min_class_count, 1)),
                "fpr": big & (rows_neg >= max(self.min_class_count, 1)),
            }

            # group rows
            def changes(d: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
                return None if d is None else {f"change.{k}": d[f"student.{k}"] - d[f"teacher.{k}"]
                                               for k in _GROUP_KEYS}

            group_est = est_many({**values, **changes(values)}, None if reps_values is None else
                                 {**reps_values, **changes(reps_values)},
                                 None if jack_values is None else {**jack_values, **changes(jack_values)})
            groups = []
            for g, key in enumerate(keys):
                flags = []
                if rows_n[g] < self.min_group_size:
                    flags.append("small_group")
                if self._labelled:
                    if rows_pos[g] < self.min_class_count:
                        flags.append("few_positives")
                    if rows_neg[g] < self.min_class_count:
                        flags.append("few_negatives")
                groups.append({
                    "group": GROUP_SEP.join(key),
                    "values": dict(zip(combo, key)),
                    "n": int(rows_n[g]),
                    "weight": float(main_t[g, _W]),
                    "n_positive": int(rows_pos[g]) if self._labelled else None,
                    "n_negative": int(rows_neg[g]) if self._labelled else None,
                    "flags": flags,
                    "reliable": not flags,
                    # which spreads this group takes part in (a group with few positives still counts for parity)
                    "in_disparities": {"dp_difference": bool(masks["group"][g]),
                                       "tpr_difference": bool(masks["tpr"][g]),
                                       "fpr_difference": bool(masks["fpr"][g]),
                                       "accuracy_difference": bool(masks["labeled"][g])},
                    "teacher": {k: group_est[f"teacher.{k}"][g] for k in _GROUP_KEYS},
                    "student": {k: group_est[f"student.{k}"][g] for k in _GROUP_KEYS},
                    "change": {k: group_est[f"change.{k}"][g] for k in _GROUP_KEYS},
                    "group_agreement": group_est["group_agreement"][g],
                })

            # disparities, their paired replicates and their permutation distribution
            disp = _disparities(values, masks)
            disp_r = None
            if reps_values is not None:
                with np.errstate(invalid="ignore"):
                    disp_r = _disparities(reps_values, masks)
            disp_p = None
            if flips is not None:
                main_sw = _swap_models(main_b)
                perm_main = (np.tensordot(1.0 - flips, main_b, axes=(1, 0))
                             + np.tensordot(flips, main_sw, axes=(1, 0)))
                with np.errstate(invalid="ignore", divide="ignore"):
                    disp_p = _disparities(_group_values(perm_main, [None, None]), masks)
            disp_keys = list(_DIFFERENCES) + ["dp_ratio"]

            def amplification(d: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
                return None if d is None else {k: d[f"student.{k}"] - d[f"teacher.{k}"] for k in disp_keys}

            disp_est = est_many(disp, disp_r, kind="extreme")
            amp_est = est_many(amplification(disp), amplification(disp_r), kind="difference")
            disparities: dict[str, dict[str, Any]] = {}
            for key in disp_keys:
                t, s = disp[f"teacher.{key}"], disp[f"student.{key}"]
                tr = None if disp_r is None else disp_r[f"teacher.{key}"]
                sr = None if disp_r is None else disp_r[f"student.{key}"]
                entry: dict[str, Any] = {"teacher": disp_est[f"teacher.{key}"][()],
                                         "student": disp_est[f"student.{key}"][()]}
                entry["change" if key == "dp_ratio" else "amplification"] = amp_est[key][()]
                if key != "dp_ratio":
                    entry["p_value"] = None
                    if disp_p is not None and np.isfinite(s - t):
                        null = disp_p[f"student.{key}"] - disp_p[f"teacher.{key}"]
                        entry["p_value"] = _p_value(float(s - t), null)
                disparities[key] = entry
                if key in collect:
                    c = collect[key]
                    c["t"].append(t)
                    c["s"].append(s)
                    c["tr"].append(tr)
                    c["sr"].append(sr)
                    c["tp"].append(None if disp_p is None else disp_p[f"teacher.{key}"])
                    c["sp"].append(None if disp_p is None else disp_p[f"student.{key}"])

            # worst-group agreement and largest accuracy drop over reliable groups
            ag = values["group_agreement"]
            agr = None if reps_values is None else reps_values["group_agreement"]
            agree_parts.append((_masked_extreme(ag, masks["group"], np.min),
                                None if agr is None else _masked_extreme(agr, masks["group"], np.min)))
            drop = values["teacher.group_accuracy"] - values["student.group_accuracy"]
            dropr = (None if reps_values is None
                     else reps_values["teacher.group_accuracy"] - reps_values["student.group_accuracy"])
            drop_parts.append((_masked_extreme(drop, masks["labeled"], np.max),
                               None if dropr is None else _masked_extreme(dropr, masks["labeled"], np.max)))

            excluded = {
                "all": [gr["group"] for gr, ok in zip(groups, masks["group"]) if not ok],
                "tpr": [gr["group"] for gr, ok in zip(groups, masks["tpr"]) if not ok],
                "fpr": [gr["group"] for gr, ok in zip(groups, masks["fpr"]) if not ok],
            }
            fnotes = []
            if excluded["all"]:
                fnotes.append(f"{len(excluded['all'])} of {G} groups have fewer than {self.min_group_size} rows; "
                              "they are left out of every disparity")
            if self._labelled and (len(excluded["tpr"]) > len(excluded["all"])
                                     or len(excluded["fpr"]) > len(excluded["all"])):
                fnotes.append(f"groups with fewer than {self.min_class_count} positive (negative) rows are left out "
                              "of the TPR (FPR) difference and so of equalized odds")
            if int(masks["group"].sum()) < 2:
                fnotes.append("fewer than two reliable groups: no disparity is defined")
            features_out[fname] = {
                "columns": list(combo),
                "n_groups": G,
                "n_reliable_groups": int(masks["group"].sum()),
                "groups": groups,
                "disparities": disparities,
                "excluded": excluded,
                "notes": fnotes,
            }

        headline, headline_features = self._headline(collect, agree_parts, drop_parts, est, test_method)
        settings = {
            "pos_label": self.pos_label,
            "min_group_size": self.min_group_size,
            "min_class_count": self.min_class_count,
            "n_bins": self.n_bins,
            "n_permutations": self.n_permutations,
            "n_rows": int(self._n_rows),
            "sensitive_names": list(self.sensitive_names),
            "features": list(self.features),
            "interval_method": bs.method,
            "test": {"method": test_method, "null": _TEST_NULL, "alternative": "amplification > 0"}
            if self.n_permutations else None,
        }
        notes.append("p-values are per disparity and per feature, without a multiplicity correction; the headline "
                     "tests the maximum over all features and intersections")
        return BiasResult(available=True, headline=headline,
                          detail={"features": features_out, "headline_features": headline_features,
                                  "settings": settings, "notes": notes})

    def _headline(self, collect: dict[str, dict[str, list]], agree_parts: list, drop_parts: list, est: Any,
                  test_method: str) -> tuple[dict[str, Estimate], dict[str, str | None]]:
        names = list(self.features)
        headline: dict[str, Estimate] = {}
        where: dict[str, str | None] = {}
        short = {"dp_difference": "dp", "eo_difference": "eo"}
        for key, c in collect.items():
            pre = short[key]
            t, s = _fmax_over(c["t"]), _fmax_over(c["s"])
            tr = None if c["tr"][0] is None else _fmax_over(c["tr"])
            sr = None if c["sr"][0] is None else _fmax_over(c["sr"])
            headline[f"{pre}_difference_teacher"] = est(t, tr, kind="extreme")[()]
            headline[f"{pre}_difference_student"] = est(s, sr, kind="extreme")[()]
            headline[f"{pre}_amplification"] = est(s - t, None if tr is None else sr - tr, kind="difference")[()]
            where[f"{pre}_difference_teacher"] = _argmax_name(np.stack(c["t"]), names)
            where[f"{pre}_difference_student"] = _argmax_name(np.stack(c["s"]), names)
            where[f"{pre}_amplification"] = None
            if c["tp"][0] is not None and np.isfinite(s - t):
                null = _fmax_over(c["sp"]) - _fmax_over(c["tp"])
                headline[f"{pre}_amplification_p_value"] = Estimate(_p_value(float(s - t), null), method=test_method)
        for key, parts, better, bounds in (("worst_group_agreement", agree_parts, np.fmin, (0.0, 1.0)),
                                           ("max_group_accuracy_drop", drop_parts, np.fmax, (-1.0, 1.0))):
            pts = np.stack([p[0] for p in parts])
            point = better.reduce(pts, axis=0)
            reps = None if parts[0][1] is None else better.reduce(np.stack([p[1] for p in parts]), axis=0)
            headline[key] = est(point, reps, kind="extreme", bounds=bounds)[()]
            where[key] = (None if not np.isfinite(pts).any()
                          else names[int(np.nanargmin(pts) if better is np.fmin else np.nanargmax(pts))])
        return headline, where


def _masked_extreme(x: np.ndarray, mask: np.ndarray, fn: Any) -> np.ndarray:
    hi, lo, n = _spread(x, mask)
    return np.where(n >= 1, lo if fn is np.min else hi, np.nan)


def _argmax_name(points: np.ndarray, names: list[str]) -> str | None:
    if not np.isfinite(points).any():
        return None
    return names[int(np.nanargmax(points))]


def _p_value(observed: float, null: np.ndarray) -> float | None:
    """One-sided permutation p-value; permutations where the statistic is undefined count as not exceeding."""
    null = np.asarray(null, dtype=np.float64)
    if not np.isfinite(observed):
        return None
    # a relative tolerance keeps ties (e.g. identical models, where every permuted value equals the observed) ties
    exceed = np.isfinite(null) & (null >= observed - 1e-12 * max(1.0, abs(observed)))
    return float((1 + exceed.sum()) / (1 + len(null)))


# --------------------------------------------------------------------------------------------------------------------
# Section


def _model_parts(model: Any, arg: str, n_classes: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(predicted class indices, top-label confidence or None for labels-only outputs, n_classes)."""
    if hasattr(model, "probs") and hasattr(model, "labels"):  # ModelOutputs (duck-typed: metrics know no models)
        probs = np.asarray(model.probs)
        k = int(probs.shape[1])
        if n_classes is not None and k != n_classes:
            raise invalid_argument(arg, f"outputs with {k} classes", f"{n_classes} classes, as the other model")
        labels = check_labels(model.labels, f"{arg}.labels", n_classes=k)
        access = getattr(getattr(model, "access", None), "value", getattr(model, "access", "probabilities"))
        conf = None if access == "labels" else probs.max(axis=1)
        return labels, conf, k
    arr = np.asarray(model)
    if arr.ndim == 1:
        return check_labels(arr, arg, n_classes=n_classes), None, int(n_classes)
    probs = check_probabilities(arr, arg, n_classes=n_classes, allow_partial=True)
    return probs.argmax(axis=1), probs.max(axis=1), int(probs.shape[1])


def bias_section(y_true: Any, teacher: Any, student: Any, *, ids: Any, sensitive: Any = None,
                 bootstrap: Bootstrap | None = None, sample_weight: Any = None, pos_label: int | None = None,
                 min_group_size: int = 30, min_class_count: int = 10,
                 intersections: bool | Sequence[Sequence[str]] = True, n_bins: int = 15, n_permutations: int = 999,
                 n_classes: int | None = None, chunk_size: int = 1 << 20) -> BiasResult:
    """Bias transfer from ``teacher`` to ``student`` per sensitive feature and intersection.

    Parameters
    ----------
    y_true : array-like of shape (n,) or None
        True class indices (None: only selection rates, agreement and demographic parity).
    teacher, student : ModelOutputs or array-like
        Model outputs on the same rows: ``ModelOutputs``, (n, n_classes) probabilities, or 1-D class indices.
    ids : array-like of shape (n,)
        Sample ids; they fix each row's bootstrap block.
    sensitive : DataFrame, dict of arrays, Series or array, optional
        Sensitive features, row-aligned. Without them the section is unavailable.
    bootstrap : Bootstrap, optional
        Interval settings (default ``Bootstrap()``: 1000 replicates).
    sample_weight, pos_label, min_group_size, min_class_count, intersections, n_bins, n_permutations
        See :class:`BiasAccumulator`.
    n_classes : int, optional
        Number of classes; by default from the probabilities, or (labels only) the largest label + 1, at least 2.
    chunk_size : int
        Rows per accumulator update, to bound temporary memory.

    Returns
    -------
    BiasResult
    """
    return finish(bias_fold(y_true, teacher, student, ids=ids, sensitive=sensitive, bootstrap=bootstrap,
                            sample_weight=sample_weight, pos_label=pos_label, min_group_size=min_group_size,
                            min_class_count=min_class_count, intersections=intersections, n_bins=n_bins,
                            n_permutations=n_permutations, n_classes=n_classes, chunk_size=chunk_size))


def bias_accumulator(n_classes: int, teacher: Any, student: Any, *, bootstrap: Bootstrap | None = None,
                     sensitive_names: Sequence[str] | None = None, pos_label: int | None = None,
                     min_group_size: int = 30, min_class_count: int = 10,
                     intersections: bool | Sequence[Sequence[str]] = True, n_bins: int = 15,
                     n_permutations: int = 999) -> BiasAccumulator:
    """The empty accumulator of :func:`bias_fold` for this pair: the one place its options are set (the ``bias``
    section's accumulator is this; ``sensitive_names`` None takes them from the first rows). The models' outputs
    are not needed to configure it; they are taken for the same signature as every family's accumulator."""
    return BiasAccumulator(n_classes, sensitive_names=sensitive_names, bootstrap=bootstrap, pos_label=pos_label,
                           min_group_size=min_group_size, min_class_count=min_class_count,
                           intersections=intersections, n_bins=n_bins, n_permutations=n_permutations)


def bias_fold(y_true: Any, teacher: Any, student: Any, *, ids: Any, sensitive: Any = None,
              bootstrap: Bootstrap | None = None, sample_weight: Any = None, pos_label: int | None = None,
              min_group_size: int = 30, min_class_count: int = 10,
              intersections: bool | Sequence[Sequence[str]] = True, n_bins: int = 15, n_permutations: int = 999,
              n_classes: int | None = None, chunk_size: int = 1 << 20) -> BiasAccumulator | BiasResult:
    """The accumulator of :func:`bias_section` fed with these rows, or its result when it cannot run."""
    if sensitive is None or (isinstance(sensitive, pd.DataFrame) and sensitive.shape[1] == 0):
        return _unavailable("no sensitive features were given")
    if n_classes is None:  # from probabilities when there are any, else from the largest label seen
        for m in (teacher, student):
            arr = getattr(m, "probs", m)
            if np.ndim(arr) == 2:
                n_classes = int(np.shape(arr)[1])
                break
        else:
            labels = [np.asarray(getattr(m, "labels", m)) for m in (teacher, student)]
            labels += [] if y_true is None else [np.asarray(y_true)]
            n_classes = max(2, 1 + max(int(np.max(a)) if a.size and a.dtype.kind in "iuf" else 0 for a in labels))
    pred_t, conf_t, k = _model_parts(teacher, "teacher", n_classes)
    pred_s, conf_s, _ = _model_parts(student, "student", k)
    y = None if y_true is None else check_labels(y_true, "y_true", n_classes=k)
    n = check_consistent_length(teacher=pred_t, student=pred_s, y_true=y)
    ids_arr = np.asarray(ids)
    if ids_arr.shape != (n,):
        raise invalid_argument("ids", f"array of shape {ids_arr.shape}", f"a 1-D array of {n} sample ids")
    w = check_sample_weight(sample_weight, n)
    cols = _sensitive_columns(sensitive, n, None, "sensitive")
    acc = bias_accumulator(k, teacher, student, bootstrap=bootstrap, sensitive_names=list(cols),
                           pos_label=pos_label, min_group_size=min_group_size, min_class_count=min_class_count,
                           intersections=intersections, n_bins=n_bins, n_permutations=n_permutations)
    for start in range(0, n, chunk_size):
        sl = slice(start, start + chunk_size)
        acc._update(None if y is None else y[sl], [pred_t[sl], pred_s[sl]],
                    [None if conf_t is None else conf_t[sl], None if conf_s is None else conf_s[sl]],
                    ids=ids_arr[sl], sensitive={c: v[sl] for c, v in cols.items()},
                    sample_weight=None if w is None else w[sl])
    return acc


# --------------------------------------------------------------------------------------------------------------------
# Plain functions (fairlearn-shaped). Labels may be any values; the positive class is ``pos_label``. All groups
# count, however small, as in fairlearn; groups without positives (negatives) have no TPR (FPR) and are skipped.


def _plain_sums(y_true: Any, y_preds: Sequence[Any], sensitive_features: Any, sample_weight: Any,
                pos_label: Any) -> tuple[list[tuple[str, ...]], list[str], np.ndarray]:
    """(sorted group keys, column names, (G, V) sums) with every sensitive column intersected (like MetricFrame)."""
    preds = [np.asarray(p) for p in y_preds]
    y = None if y_true is None else np.asarray(y_true)
    for name, a in (("y_true", y), *(("y_pred", p) for p in preds)):
        if a is not None and a.ndim != 1:
            raise invalid_argument(name, f"array of shape {a.shape}", "a 1-D array of labels")
    n = check_consistent_length(y_true=y, y_pred=preds[0])
    if len(preds) > 1:
        check_consistent_length(y_pred=preds[0], y_pred_student=preds[1])
    if n == 0:
        raise invalid_argument("y_pred", "an empty array", "at least one row")
    w = check_sample_weight(sample_weight, n)
    cols = _sensitive_columns(sensitive_features, n, None, "sensitive_features")
    fact = [_factorize(v, c, "sensitive_features") for c, v in cols.items()]
    local, keys = _combine([f[0] for f in fact], [f[1] for f in fact])
    st = _FeatureState(1, 1)
    codes = st.codes_for(keys)[local]
    p2 = (preds[0], preds[-1])
    _bincount_into(st.main.sums, codes, _main_columns(y, p2, w, pos_label))
    keys_sorted, main, _ = st.sorted_sums()
    return keys_sorted, list(cols), main[0]


def group_metrics(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
                  pos_label: Any = 1) -> pd.DataFrame:
    """Per-group accuracy, selection rate, TPR and FPR, like fairlearn's ``MetricFrame(...).by_group``.

    Several sensitive columns are intersected (one row per combination that occurs), as ``MetricFrame`` does.

    Returns
    -------
    pandas.DataFrame
        Indexed by group value (a MultiIndex for several columns), sorted by the groups' string values; columns
        ``n``, ``accuracy``, ``selection_rate``, ``tpr``, ``fpr``. Undefined rates (a group without positives or
        negatives) are NaN.

    Examples
    --------
    >>> group_metrics([1, 0, 1, 1], [1, 0, 0, 1], sensitive_features=["a", "a", "b", "b"])["accuracy"].tolist()
    [1.0, 0.5]
    """
    keys, names, main = _plain_sums(y_true, [y_pred], sensitive_features, sample_weight, pos_label)
    v = _group_values(main, [None, None])
    if len(names) == 1:
        index = pd.Index([k[0] for k in keys], name=names[0])
    else:
        index = pd.MultiIndex.from_tuples(keys, names=names)
    return pd.DataFrame({
        "n": main[:, _ROWS].astype(np.int64),
        "accuracy": v["teacher.group_accuracy"],
        "selection_rate": v["teacher.group_selection_rate"],
        "tpr": v["teacher.group_tpr"],
        "fpr": v["teacher.group_fpr"],
    }, index=index)


def demographic_parity_difference(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
                                  pos_label: Any = 1) -> float:
    """Max minus min over groups of the selection rate (fairlearn's definition, ``method="between_groups"``).

    ``y_true`` is not used (kept for the scikit-learn signature); it may be None.

    Examples
    --------
    >>> demographic_parity_difference(None, [1, 1, 0, 1], sensitive_features=["a", "a", "b", "b"])
    0.5
    """
    keys, _, main = _plain_sums(None, [y_pred], sensitive_features, sample_weight, pos_label)
    v = _group_values(main, [None, None])
    return float(_difference(v["teacher.group_selection_rate"], np.ones(len(keys), dtype=bool)))


def equalized_odds_difference(y_true: Any, y_pred: Any, *, sensitive_features: Any, sample_weight: Any = None,
                              pos_label: Any = 1) -> float:
    """``max(TPR difference, FPR difference)`` over groups (fairlearn's ``agg="worst_case"``, ``between_groups``).

    Examples
    --------
    >>> equalized_odds_difference([1, 0, 1, 0], [1, 0, 0, 0], sensitive_features=["a", "a", "b", "b"])
    1.0
    """
    if y_true is None:
        raise invalid_argument("y_true", None, "true labels (equalized odds conditions on them)")
    keys, _, main = _plain_sums(y_true, [y_pred], sensitive_features, sample_weight, pos_label)
    v = _group_values(main, [None, None])
    everyone = np.ones(len(keys), dtype=bool)
    return float(np.fmax(_difference(v["teacher.group_tpr"], everyone), _difference(v["teacher.group_fpr"], everyone)))


def bias_amplification(y_true: Any, y_pred_teacher: Any, y_pred_student: Any, *, sensitive_features: Any,
                       metric: str = "demographic_parity", sample_weight: Any = None, pos_label: Any = 1) -> float:
    """Student disparity minus teacher disparity (``metric`` = "demographic_parity" or "equalized_odds").

    Examples
    --------
    >>> bias_amplification(None, [1, 0, 1, 0], [1, 1, 0, 0], sensitive_features=["a", "a", "b", "b"])
    1.0
    """
    fns = {"demographic_parity": demographic_parity_difference, "equalized_odds": equalized_odds_difference}
    if metric not in fns:
        raise invalid_argument("metric", metric, f"one of {sorted(fns)}")
    fn = fns[metric]
    kw = {"sensitive_features": sensitive_features, "sample_weight": sample_weight, "pos_label": pos_label}
    return fn(y_true, y_pred_student, **kw) - fn(y_true, y_pred_teacher, **kw)
