"""``lineage_test`` and ``attribute``: was this suspect derived from our teacher, and from which candidate?

The null hypothesis is "the suspect is not derived from the teacher". It is made testable by an assumption the
teacher's owner can satisfy: K reference models trained by the teacher's own recipe and data with other seeds are,
under the null, exchangeable with the teacher in their relation to the suspect (the suspect was made without the
teacher, so nothing distinguishes the teacher from its siblings from the suspect's point of view). Every pool member
(teacher and references) gets a statistic by one symmetric procedure (:mod:`kdaudit.lineage._signatures`,
:mod:`kdaudit.lineage._stats`); the teacher's rank among them is uniform under the null, which gives an exact
p-value that never assumes probes are independent: the model, not the probe, is the unit of evidence.

Design choices, and why:

* Probes are chosen where the *pool* disagrees (:mod:`kdaudit.lineage._probes`), never where the teacher alone is
  unusual, so the selection is the same whichever member is the teacher.
* Pool members are seen through the least informative access level among them, so a black-box teacher is compared
  with references exactly as informative as it is.
* The verdict uses the exact rank p-value. It cannot go below ``1 / (K + 1)``, so with fewer than
  ``ceil(1 / alpha) - 1`` references (19 at alpha = 0.05) the verdict is "inconclusive" unless the caller opts into
  the parametric p-value (a t prediction interval, which adds a normality assumption, named in the result).
* The effect size is the teacher's combined statistic in units of the references' standard deviation, with a
  probe-bootstrap interval (block-Poisson, :class:`kdaudit.metrics._resampling.Bootstrap`): it says how separated the
  teacher is, while the p-value says how surprising that is under the null.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdaudit._estimate import Estimate
from kdaudit._exceptions import QueryBudgetExceededError, invalid_argument
from kdaudit.lineage._probes import disagreement_scores, mixup_blends, select_probes
from kdaudit.lineage._signatures import (
    CALIBRATED_WEIGHTS,
    NO_TYPICALITY_LINE,
    SIGNATURE_WEIGHTS,
    SIGNATURES,
    TWO_SIDED,
    _prob_view,
    compute_sums,
    statistics_from_totals,
)
from kdaudit.lineage._stats import (
    holm_parent,
    adjust_for_typicality,
    calibrate_by_controls,
    combined_statistic,
    effect_size,
    leave_one_out_z,
    min_references,
    nearer_half,
    parametric_p_value,
    rank_p_value,
)
from kdaudit.metrics._resampling import BlockStats, Bootstrap, block_of
from kdaudit.models._convert import keep_top_k, one_hot

__all__ = [
    "NULL_HYPOTHESIS",
    "AttributionResult",
    "LineageResult",
    "attribute",
    "lineage_test",
    "parse_access",
]

NULL_HYPOTHESIS = ("H0: the suspect is not derived from the teacher. Operationally: the teacher is exchangeable with "
                   "the reference models (the teacher's recipe and data with other seeds) in its relation to the "
                   "suspect, so the teacher's rank among the pool members' lineage statistics is uniformly "
                   "distributed.")

_ACCESS_ORDER = {"labels": 0, "top_k": 1, "probabilities": 2}
DEFAULT_QUERY_BUDGET = 2000
DEFAULT_N_PROBES = 2000
CONTROLS_MODES = ("check", "calibrate", "require")
#: fewest negative controls whose spread a member's statistics are scaled by: a standard deviation from fewer is too
#: noisy (relative standard error about 1/sqrt(2(L-1)): 16 % at 19, 24 % at 10), and 19 also let the suspect's rank
#: among the controls reach p = 0.05
MIN_CALIBRATION_CONTROLS = 19

#: What a positive control's share found means, and what it does not.
POSITIVE_ASSUMPTION = (
    "positive controls are models known to be derived from the teacher (students the owner made from it), tested "
    "exactly like the suspect (same pool, probes, access and calibration); the share the test finds estimates its "
    "power for this teacher against suspects made like them, not against other kinds of derivation. They do not "
    "enter the suspect's p-value")
#: calibrate each member against the controls most like the suspect (the nearer half; see nearer_half) instead of all
#: of them (False: all). A member's affinity to a whole family of models is then measured on
#: that family: on the Adult zoo the calibrated test found 0.87 / 0.70 of teacher A's students (probabilities /
#: labels; 0.67 / 0.63 against all 20 controls); on MNIST 0.80 / 0.93 (0.80 / 0.97). benchmarks/lineage.py
#: --part fast, lineage_*_nearest_fast_cpu.txt
CALIBRATE_BY_NEAREST = True
#: Share of students found at alpha = 0.05 on the benchmark zoos, quoted with every "not derived" (issue 16;
#: benchmarks/results/lineage_{adult,mnist}_fast_cpu.txt (plain) and lineage_{adult,mnist}_nearest_fast_cpu.txt
#: (calibrated): the development teacher A; lineage_{mnist,adult}_teacher_power_40_cpu.txt: 40 teachers drawn from
#: the recipe, each with students of its own; lineage_adult_teacher_power_student_controls_cpu.txt and
#: lineage_mnist_teacher_power_40_student_controls_cpu.txt: the same 40 with 20 more controls made like the suspects;
#: lineage_adult_recipe2_teacher_power_40{,_student_controls}_cpu.txt: 40 teachers of the second recipe, alike).
NOT_DERIVED_POWER = {
    "plain": ("77-90 % of an image classifier's students (MNIST; labels, probabilities) but 20-30 % of a binary "
              "tabular one's (UCI Adult), and none on a second tabular zoo of another recipe, for the teacher it was "
              "developed on; over teachers drawn from the recipe, 63-66 % (MNIST, 40 teachers; labels, "
              "probabilities) and 27-29 % (Adult, 40 teachers)"),
    "calibrated": ("80-93 % of an image classifier's students (MNIST; probabilities, labels) and 70-87 % of a binary "
                   "tabular one's (UCI Adult; 39-67 % on a second tabular zoo of another recipe), for the teacher it "
                   "was developed on; over teachers drawn from the recipe, 61-69 % (MNIST, 40 teachers; labels, "
                   "probabilities) and 34-43 % (Adult, 40 teachers; labels, probabilities), from 0 to 100 % by "
                   "teacher, and 70-79 % on MNIST, 54-63 % on Adult (71-81 % on the second recipe) with 20 more "
                   "controls made like the suspects (students of the teacher's siblings, train_student_controls): "
                   "positive controls measure it for yours"),
}
#: what the test missed by kind on the tabular benchmark (held-out probes), quoted with every "not derived"
NOT_DERIVED_MISSED = {
    "plain": "no student fine-tuned after distillation and no label-only extraction was found from held-out probes",
    "calibrated": ("1 of 6 students fine-tuned after distillation and 4 of 6 label-only extractions were found from "
                   "held-out probes (probabilities, labels)"),
}
#: What more queries bought on the binary benchmark task, quoted with every "not derived" of a two-class test so that
#: an owner does not spend queries where they do not help (issue 16 item 3;
#: benchmarks/results/lineage_adult_probes_cpu.txt): on UCI Adult the power rose up to about 2,000 probes and stayed
#: flat from 2,000 to 16,000, and the references' spread under the alternative did not shrink (a property of the
#: models, not probe noise).
BINARY_QUERIES_READING = (
    "on a binary task more queries did not raise the power: on UCI Adult 4,000 to 16,000 probes found about "
    "as many students as 2,000 (calibrated by all 20 controls: 67-73 % against 67 % with probabilities, 53-60 % "
    "against 63 % with labels; 500 found fewer), because the references' spread around the teacher is a property "
    "of the models, not probe noise; adding the rows the suspects' makers queried found no label-only, fine-tuned or "
    "pruned student either")


# ---------------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class LineageResult:
    """Outcome of :func:`lineage_test`.

    Attributes
    ----------
    verdict : {"derived", "not derived", "inconclusive"}
        "derived": the null is rejected at ``alpha``. "not derived": no evidence of derivation at ``alpha`` (a
        failure to reject, not a proof of independence). "inconclusive": no calibrated test was possible (no or too
        few references); ``reason`` says why.
    reason : str
    p_value : float
        The p-value the verdict used (NaN when none).
    p_value_method : {"exact rank", "parametric t", "none"}, or "larger of ... and controls rank"
    p_value_exact, p_value_parametric : float
        Both are always reported when computable.
    alpha : float
    effect : Estimate
        Teacher's combined statistic minus the references' mean, in references' standard deviations, with a probe
        bootstrap interval.
    statistic : float
        The teacher's combined statistic (mean of its leave-one-out z-scores).
    reference_statistics : tuple of float
    signatures : dict
        Per signature: description, teacher statistic, reference statistics, teacher z-score and the signature's own
        rank p-value (for explanation; the verdict uses the combination).
    raw_similarity : dict of str -> Estimate
        Plain similarities of suspect and teacher (top-1 agreement...), which alone do not establish lineage.
    queries_used : int
        Rows sent to the suspect in this test (cached rows are not re-sent).
    negative_controls : dict
        Empty unless ``controls`` were given: each control's p-value and effect, how many reached ``alpha``, the
        binomial probability of that many under a calibrated test, and the suspect's rank among the controls'
        effects (see :func:`lineage_test`).
    positive_controls : dict
        Empty unless ``positive_controls`` were given: each one's p-value, how many the test found, and the
        Clopper-Pearson interval of that share, the test's power for this teacher (see :func:`lineage_test`).
    """

    verdict: str
    reason: str
    p_value: float
    p_value_method: str
    p_value_exact: float
    p_value_parametric: float
    alpha: float
    effect: Estimate
    statistic: float
    reference_statistics: tuple[float, ...]
    signatures: Mapping[str, Any]
    raw_similarity: Mapping[str, Estimate]
    queries_used: int
    query_budget: int | None
    n_probes: int
    n_candidates: int
    n_references: int
    suspect_access: str
    pool_access: str
    teacher: str
    suspect: str
    null_hypothesis: str = NULL_HYPOTHESIS
    assumptions: tuple[str, ...] = ()
    methodology: str = ""
    probe_selection: Mapping[str, Any] = field(default_factory=dict)
    negative_controls: Mapping[str, Any] = field(default_factory=dict)
    positive_controls: Mapping[str, Any] = field(default_factory=dict)

    @property
    def derived(self) -> bool:
        return self.verdict == "derived"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the report's lineage section renders it)."""
        return {
            "available": True,
            "reason": self.reason,
            "verdict": self.verdict,
            "p_value": _num(self.p_value),
            "p_value_method": self.p_value_method,
            "p_value_exact": _num(self.p_value_exact),
            "p_value_parametric": _num(self.p_value_parametric),
            "alpha": self.alpha,
            "headline": {"effect": self.effect.to_dict(),
                         "p_value": Estimate(self.p_value, method=f"{self.p_value_method} p-value").to_dict(),
                         **{k: v.to_dict() for k, v in self.raw_similarity.items()}},
            "effect": self.effect.to_dict(),
            "statistic": _num(self.statistic),
            "reference_statistics": [_num(x) for x in self.reference_statistics],
            "signatures": {k: dict(v) for k, v in self.signatures.items()},
            "raw_similarity": {k: v.to_dict() for k, v in self.raw_similarity.items()},
            "queries_used": self.queries_used,
            "query_budget": self.query_budget,
            "n_probes": self.n_probes,
            "n_candidates": self.n_candidates,
            "n_references": self.n_references,
            "suspect_access": self.suspect_access,
            "pool_access": self.pool_access,
            "teacher": self.teacher,
            "suspect": self.suspect,
            "null_hypothesis": self.null_hypothesis,
            "assumptions": list(self.assumptions),
            "methodology": self.methodology,
            "probe_selection": dict(self.probe_selection),
            **({"negative_controls": dict(self.negative_controls)} if self.negative_controls else {}),
            **({"positive_controls": dict(self.positive_controls)} if self.positive_controls else {}),
        }


@dataclass(frozen=True)
class AttributionResult:
    """Outcome of :func:`attribute`: one lineage test per candidate teacher, Holm-Bonferroni across them.

    ``parent`` is the candidate with the largest effect among those whose Holm-adjusted p-value is at most
    ``alpha``, or ``"none"``. ``adjusted_p_values`` maps candidate -> Holm-adjusted p-value.
    """

    parent: str
    alpha: float
    results: Mapping[str, LineageResult]
    adjusted_p_values: Mapping[str, float]
    correction: str = "Holm-Bonferroni (family-wise error rate <= alpha across candidates)"
    queries_used: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "alpha": self.alpha,
            "correction": self.correction,
            "reason": self.reason,
            "queries_used": self.queries_used,
            "adjusted_p_values": {k: _num(v) for k, v in self.adjusted_p_values.items()},
            "candidates": {k: r.to_dict() for k, r in self.results.items()},
        }


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ---------------------------------------------------------------------------------------------------- access levels
def parse_access(value: Any) -> tuple[str, int | None] | None:
    """``"probabilities"``, ``"labels"``, ``"top_k:K"`` / ``"top-k:K"`` -> (access, k); None passes through."""
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2:
        value = value[0] if value[1] is None else f"top_k:{value[1]}"
    text = str(getattr(value, "value", value)).strip().lower().replace("-", "_")
    if text in ("probabilities", "labels"):
        return text, None
    if text.startswith("top_k"):
        rest = text[len("top_k"):]
        if rest.startswith(":") and rest[1:].isdigit() and int(rest[1:]) >= 1:
            return "top_k", int(rest[1:])
        if rest == "":
            return "top_k", None
    raise invalid_argument("suspect_access", value, '"probabilities", "top_k:K" (or "top-k:K", K >= 1) or "labels"')


def _least(a: tuple[str, int | None], b: tuple[str, int | None]) -> tuple[str, int | None]:
    """The less informative of two access levels (top-k with the smaller k)."""
    if _ACCESS_ORDER[a[0]] != _ACCESS_ORDER[b[0]]:
        return a if _ACCESS_ORDER[a[0]] < _ACCESS_ORDER[b[0]] else b
    if a[0] == "top_k":
        return ("top_k", min(x for x in (a[1], b[1]) if x is not None))
    return a


def _view(probs: np.ndarray, access: tuple[str, int | None]) -> np.ndarray:
    """Restrict probabilities to what an access level reveals (zero outside the top k; one-hot labels)."""
    kind, k = access
    if kind == "probabilities":
        return probs
    if kind == "labels":
        return one_hot(probs.argmax(axis=1), probs.shape[1]).astype(probs.dtype)
    return keep_top_k(probs, k)


# ---------------------------------------------------------------------------------------------- array-level analysis
def _combination(signatures: Sequence[str], *, calibrated: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The fixed weights (of the test calibrated by controls, or of the plain test) and two-sided flags of these
    signatures, in their order."""
    table = CALIBRATED_WEIGHTS if calibrated else SIGNATURE_WEIGHTS
    return (np.array([table[name] for name in signatures]),
            np.array([name in TWO_SIDED for name in signatures]))


def _analyse(pool: np.ndarray, suspect_probs: np.ndarray, suspect_labels: np.ndarray, *,
             access: tuple[str, int | None], y_true: np.ndarray | None, alpha: float, p_value_method: str,
             bootstrap: Bootstrap, probe_ids: np.ndarray, calibration: np.ndarray | None = None,
             nuisance: np.ndarray | None = None, memo: dict[bytes, np.ndarray] | None = None) -> dict[str, Any]:
    """Everything the result needs from the pool's and the suspect's outputs on the probes.

    ``pool`` is (1 + K, n_probes, n_classes), teacher first. ``calibration`` (L, 1 + K, S): the negative controls'
    typicality-adjusted statistics, by which each member's are standardised (:func:`calibrate_by_controls`).
    ``nuisance`` (1, n_probes, n_classes): the controls' mean answer in the suspect's view, a regressor of
    ``pool_regression`` (:func:`compute_sums`); the controls' statistics in ``calibration`` were computed alike.
    """
    M = pool.shape[0]
    K = M - 1
    sums = compute_sums(pool, suspect_probs, suspect_labels, access=access[0], top_k=access[1], y_true=y_true,
                        nuisance=nuisance)
    teacher_labels = pool[0].argmax(axis=1)
    agree = (teacher_labels == suspect_labels).astype(np.float64)
    n_sig_values = sums.values.shape[1]
    stats = BlockStats(n_sig_values + 2, n_blocks=bootstrap.n_blocks)
    stats.add(block_of(probe_ids, bootstrap.n_blocks),
              np.concatenate([sums.values, agree[:, None], np.ones((len(agree), 1))], axis=1))

    def signature_stats(totals: np.ndarray) -> np.ndarray:
        return statistics_from_totals(totals[..., 0, :n_sig_values], sums)

    weights, two_sided = _combination(sums.signatures, calibrated=calibration is not None)
    typicality = _typicality(pool, access=access, y_true=y_true, memo=memo, nuisance=nuisance)

    def calibrated(adjusted: np.ndarray) -> np.ndarray:
        return adjusted if calibration is None else calibrate_by_controls(adjusted, calibration)

    def effect_fn(totals: np.ndarray) -> np.ndarray:
        return effect_size(combined_statistic(calibrated(adjust_for_typicality(signature_stats(totals), typicality)),
                                              weights, two_sided=two_sided))

    point_stats = signature_stats(stats.total())  # (M, S)
    typical_adjusted = adjust_for_typicality(point_stats, typicality)
    near = None
    if calibration is not None:
        near = calibration_controls(typical_adjusted, calibration)
        calibration = calibration[near]
    adjusted = calibrated(typical_adjusted)
    z = leave_one_out_z(adjusted)
    combined = combined_statistic(adjusted, weights, two_sided=two_sided)
    raw = {"top1_agreement": bootstrap.estimate(stats, lambda t: t[..., 0, -2] / t[..., 0, -1])}

    signatures = {}
    for j, name in enumerate(sums.signatures):
        signatures[name] = {
            "description": SIGNATURES[name],
            "weight": float(weights[j]),
            "two_sided": bool(two_sided[j]),
            "teacher": float(point_stats[0, j]),
            "references": [float(x) for x in point_stats[1:, j]],
            "typicality": [float(x) for x in typicality[:, j]],
            "z_teacher": float(z[0, j]),
            "rank_p_value": rank_p_value(point_stats[0, j], point_stats[1:, j]) if K else float("nan"),
        }
    out: dict[str, Any] = {"signatures": signatures, "raw_similarity": raw, "statistic": float(combined[0]),
                           "reference_statistics": tuple(float(x) for x in combined[1:]),
                           "typical_adjusted": typical_adjusted,
                           "calibration_controls": None if near is None else sorted(int(j) for j in near)}
    if calibration is not None and K >= 2:
        # the plain test, exactly as without controls (no nuisance regressor, no scaling by the controls)
        plain_stats = typical_adjusted
        if nuisance is not None:
            plain_sums = compute_sums(pool, suspect_probs, suspect_labels, access=access[0], top_k=access[1],
                                      y_true=y_true)
            plain_stats = adjust_for_typicality(statistics_from_totals(plain_sums.values.sum(axis=0), plain_sums),
                                                _typicality(pool, access=access, y_true=y_true, memo=memo))
        plain = combined_statistic(plain_stats, _combination(sums.signatures)[0], two_sided=two_sided)
        out["uncalibrated"] = {"p_value": rank_p_value(plain[0], plain[1:]), "effect": _num(effect_size(plain)),
                               "statistic": float(plain[0])}
    if K == 0:
        out.update(verdict="inconclusive", p_value=math.nan, p_value_exact=math.nan, p_value_parametric=math.nan,
                   p_value_method="none", effect=Estimate(math.nan, method="undefined without references"),
                   reason=("no reference models were given, so there is no calibrated null: models trained on the "
                           "same data resemble each other without any distillation. Raw similarity is reported but "
                           "no p-value is claimed. Train references with the teacher's recipe and other seeds."))
        return out
    p_exact = rank_p_value(combined[0], combined[1:])
    p_param = parametric_p_value(combined[0], combined[1:])
    effect = bootstrap.estimate(stats, effect_fn) if K >= 2 else Estimate(math.nan, method="needs >= 2 references")
    need = min_references(alpha)
    rank = int(1 + np.sum(combined[1:] > combined[0]))
    where = f"the teacher ranks {rank} of {M} pool members on the combined statistic"
    if p_value_method == "parametric":
        if not math.isfinite(p_param):
            verdict, p, method = "inconclusive", math.nan, "none"
            reason = "the parametric p-value needs at least 2 references with distinct statistics"
        else:
            p, method = p_param, "parametric t"
            verdict = "derived" if p <= alpha else "not derived"
            reason = f"{where}; parametric p = {p:.3g} {'<=' if verdict == 'derived' else '>'} {alpha:.3g}"
    elif K < need:
        verdict, p, method = "inconclusive", p_exact, "exact rank"
        reason = (f"{K} references cannot give an exact p-value below {alpha:.3g} (the smallest possible is "
                  f"1/(K+1) = {1 / M:.3g}); train at least {need} references, or pass p_value_method='parametric' "
                  f"(parametric p = {p_param:.3g}, assuming normal pool statistics); {where}")
    else:
        p, method = p_exact, "exact rank"
        verdict = "derived" if p <= alpha else "not derived"
        reason = f"{where}; exact p = {p:.3g} {'<=' if verdict == 'derived' else '>'} {alpha:.3g}"
    if verdict == "not derived":
        reason = f"{reason}; {not_derived_reading(calibrated=calibration is not None, n_classes=pool.shape[2])}"
    out.update(verdict=verdict, p_value=p, p_value_exact=p_exact, p_value_parametric=p_param,
               p_value_method=method, effect=effect, reason=reason)
    return out


def calibration_controls(stats: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """Indices of the controls that calibrate a suspect's members, from its statistics ``stats`` (M, S) and the
    controls' ``controls`` (L, M, S): the nearer half (:func:`nearer_half`), or all (CALIBRATE_BY_NEAREST off)."""
    return nearer_half(stats, controls) if CALIBRATE_BY_NEAREST else np.arange(len(controls))


def controls_in_suspects_place(cstats: np.ndarray, suspect: np.ndarray) -> list[np.ndarray]:
    """Each control's statistics (``cstats`` (L, M, S)) calibrated as the suspect's (``suspect`` (M, S)) are: by the
    controls most like it (:func:`calibration_controls`) among the other controls and the suspect, so that suspect
    and controls are treated alike."""
    out = []
    for j in range(len(cstats)):
        others = np.concatenate([np.delete(cstats, j, axis=0), suspect[None]])
        out.append(calibrate_by_controls(cstats[j], others[calibration_controls(cstats[j], others)]))
    return out


def not_derived_reading(*, calibrated: bool, n_classes: int | None = None) -> str:
    """How to read a "not derived": what share of real students the test found on the benchmark zoos (issue 16), and
    for a two-class test (``n_classes == 2``) what more queries bought there."""
    found = NOT_DERIVED_POWER["calibrated" if calibrated else "plain"]
    binary = f"; {BINARY_QUERIES_READING}" if n_classes == 2 else ""
    return ("'not derived' is a failure to find evidence, not evidence of independence: on the benchmark zoos "
            f"(39 references, 2,000 held-out probes) this test{' calibrated by 20 controls' if calibrated else ''} "
            f"found {found}; on the tabular task {NOT_DERIVED_MISSED['calibrated' if calibrated else 'plain']}"
            f"{binary} (README, 'Lineage: power')")


def _typicality(pool: np.ndarray, *, access: tuple[str, int | None], y_true: np.ndarray | None,
                memo: dict[bytes, np.ndarray] | None = None, nuisance: np.ndarray | None = None) -> np.ndarray:
    """(M, S): each member's mean signature statistic with its siblings as suspects (seen at the suspect's access).

    Held at its full-probe value in the bootstrap: the effect-size interval reflects the suspect's probes, not the
    uncertainty of this covariate. Joint signatures and the likelihood (``NO_TYPICALITY_LINE``) get a constant
    typicality, which makes the adjustment a plain centring: a member's coefficient in the joint fit already
    excludes what its siblings explain, and a line fitted on the other members' typicality only added noise (on the
    Adult zoo it cost the joint signature a quarter of its detections).
    """
    memo = {} if memo is None else memo
    key = b"t" + _typicality_key(pool, access, y_true, nuisance)
    if key in memo:
        return memo[key].copy()
    M = pool.shape[0]
    rows = []
    for i in range(M):
        view = _view(pool[i], access)
        sums = compute_sums(pool, view, view.argmax(axis=1), access=access[0], top_k=access[1], y_true=y_true,
                            nuisance=nuisance)
        rows.append(statistics_from_totals(sums.values.sum(axis=0), sums))
    G = np.stack(rows)  # (pseudo-suspect i, member m, S)
    diagonal = G[np.arange(M), np.arange(M)]
    out = (G.sum(axis=0) - diagonal) / max(M - 1, 1)
    out[:, [j for j, name in enumerate(sums.signatures) if name in NO_TYPICALITY_LINE]] = 0.0
    _remember(memo, key, out)
    return out.copy()


def _remember(memo: dict[bytes, np.ndarray], key: bytes, value: np.ndarray) -> None:
    """Keep a pool statistic in the caller's memo (at most 16 entries: a few pools, each with its controls).

    Typicality and the controls' statistics depend only on the pool's (and controls') outputs on the probes, not on
    the suspect; tests that share a memo (the students of one audit, an attribution, a benchmark's suspects) compute
    them once. The memo belongs to the caller: nothing is kept between calls that do not pass one.
    """
    if len(memo) >= 16:
        memo.pop(next(iter(memo)))
    memo[key] = value


def _typicality_key(pool: np.ndarray, access: tuple[str, int | None], y_true: np.ndarray | None,
                    nuisance: np.ndarray | None = None) -> bytes:
    h = hashlib.sha256()
    h.update(repr((pool.shape, str(pool.dtype), access, None if y_true is None else y_true.shape,
                   None if nuisance is None else nuisance.shape)).encode())
    h.update(np.ascontiguousarray(pool).tobytes())
    if y_true is not None:
        h.update(np.ascontiguousarray(y_true, dtype=np.int64).tobytes())
    if nuisance is not None:
        h.update(np.ascontiguousarray(nuisance, dtype=np.float64).tobytes())
    return h.digest()


def _assumptions(p_value_method: str, pool_access: tuple[str, int | None], *, calibrated: bool = False
                 ) -> tuple[str, ...]:
    items = [
        ("Under H0 the teacher and the references are exchangeable with respect to the suspect: the references "
         "were trained by the teacher's recipe and data with other seeds (and not selected with the suspect in "
         "view)."),
        "The suspect's answers do not depend on which pool member is the teacher unless it was derived from it.",
        ("The p-value is exact over the draw of the teacher from its recipe, for this suspect; it does not bound how "
         "often this particular teacher accuses unrelated models of a family close to it (on the benchmark zoos a few "
         "teachers accused whole families, up to 71% of the unrelated models). Only controls of the suspect's family "
         "measure that (negative_controls)."),
        ("Probes were selected by a function symmetric in the pool members (their disagreement), never by the "
         "teacher alone; probe-level statistics are not assumed independent."),
        f"Pool members were compared at one access level ({_access_text(pool_access)}).",
    ]
    if calibrated:
        which = ("the negative controls most like the suspect (the nearer half, by their statistics with the whole "
                 "pool; listed in negative_controls.calibrated_by)" if CALIBRATE_BY_NEAREST else
                 "the negative controls")
        items.append(f"Each member's statistics were measured against their own mean and spread over {which}. The "
                     "controls must not be derived from any pool member (so that, under H0, they do not depend on "
                     "which member is the teacher); the same ones serve every member and their choice does not "
                     "depend on the members' order, so the rank p-value stays exact.")
    if p_value_method == "parametric":
        items.append("Parametric p-value: the pool members' combined statistics are i.i.d. normal under H0 "
                     "(Student-t prediction interval with K-1 degrees of freedom).")
    return tuple(items)


def _access_text(access: tuple[str, int | None]) -> str:
    return f"top-{access[1]}" if access[0] == "top_k" else access[0]


def _methodology(*, K: int, n_probes: int, n_candidates: int, signatures: Sequence[str], alpha: float,
                 method: str, suspect_access: str, n_controls: int = 0, controls_mode: str = "check",
                 calibrated: bool = False) -> str:
    sig_text = "; ".join(f"{s} ({SIGNATURES[s]})" for s in signatures)
    both = [s for s in signatures if s in TWO_SIDED]
    two_sided_text = (f" ({' and '.join(both)} count in either direction: students trained on hard labels follow "
                      "their teacher's small probabilities less closely than its siblings do)") if both else ""
    return (
        f"The suspect was queried on {n_probes} probe inputs ({suspect_access} access), chosen from {n_candidates} "
        f"candidates (held-out rows and blends of pairs of rows) where the teacher and its {K} reference models "
        "disagree most. The references are models trained like the teacher but with other random seeds: if the "
        "suspect was not made from the teacher, the teacher should look no more related to it than any reference "
        "does. For every model in this pool of teacher and references, the same signatures measure how closely "
        f"the suspect follows that model's peculiarities beyond what the pool agrees on: {sig_text}. Each "
        "signature is first corrected for how typical that model is (how strongly the same signature relates it to "
        "its own siblings, a line fitted on the other pool members), "
        + (f"then put on that model's own null scale, its mean and spread over {n_controls} negative controls "
           "(models known not to be derived from any pool member: some models relate to unrelated models more "
           "widely than others, and would otherwise top the ranking too often), " if calibrated else "")
        + "then standardised against the other pool "
        "members, and the standardised values are averaged, with weights fixed in advance, into one score per "
        f"model{two_sided_text}. The p-value is the teacher's rank among the K + 1 scores, "
        "(1 + number of references scoring at least as high as the teacher) / (K + 1), which is exact when the "
        "teacher is interchangeable with its references, whatever the dependence between probes; "
        f"the verdict uses the {method} p-value at alpha = {alpha}. The effect size is the teacher's score in "
        "reference standard deviations, with an interval from resampling the probes. Similarity alone (for "
        "example top-1 agreement) is reported but is not evidence: models trained on the same data agree without "
        "any distillation."
        + (f" As negative controls, {n_controls} models known not to be derived from the teacher were tested exactly "
           "like the suspect: a well-calibrated teacher lets about the significance level's share of them through, "
           "and the suspect's rank among their effects gives a second p-value, valid if the suspect, had it not "
           "been derived, would be made like them"
           + ("; the verdict uses the larger of the two p-values, so it holds if either the references or the "
              "controls stand for the null." if controls_mode == "require" else
              "; it is reported beside the verdict, with a caution when too many controls get through.")
           if n_controls else "")
    )


# ----------------------------------------------------------------------------------------------------- model access
class _SuspectOracle:
    """Answers for the suspect's rows, asking the model only about rows it has not answered before.

    Rows are keyed by the sha256 of their bytes, so a probe repeated within a test, across candidates of an
    attribution, or across tests sharing the oracle is paid for once.
    """

    def __init__(self, model: Any, *, budget: int | None, access: tuple[str, int | None] | None, n_classes: int,
                 batch_size: int = 256, device: Any = None, precision: str | None = None) -> None:
        self.model = model
        self.device, self.precision = device, precision
        self.budget = budget
        self.requested = access
        self.n_classes = n_classes
        self.batch_size = batch_size
        self.cache: dict[bytes, tuple[np.ndarray, int]] = {}
        self.queries = 0
        declared = (str(getattr(model, "access", "probabilities")), getattr(model, "top_k", None))
        declared = parse_access(declared) or ("probabilities", None)
        if access is None:
            self.access = declared
        else:
            if _ACCESS_ORDER[access[0]] > _ACCESS_ORDER[declared[0]] or (
                    access[0] == declared[0] == "top_k" and access[1] is not None and declared[1] is not None
                    and access[1] > declared[1]):
                raise invalid_argument("suspect_access", _access_text(access),
                                       f"at most what the suspect reveals ({_access_text(declared)})")
            k = access[1] if access[1] is not None else declared[1]
            if access[0] == "top_k" and k is None:
                raise invalid_argument("suspect_access", "top_k", '"top_k:K" with K, for a suspect that gives more')
            self.access = (access[0], k)

    @staticmethod
    def _key(row: np.ndarray) -> bytes:
        return hashlib.sha256(np.ascontiguousarray(row).tobytes()).digest()

    def ask(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probs view, labels) for rows of ``X``; only unseen rows reach the model."""
        keys = [self._key(x) for x in X]
        new: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self.cache and key not in new:
                new[key] = i
        if new:
            if self.budget is not None and self.queries + len(new) > self.budget:
                raise QueryBudgetExceededError(
                    f"lineage test: {len(new)} new suspect queries would use {self.queries + len(new)}, over the "
                    f"query_budget of {self.budget}; lower n_probes or raise query_budget",
                    used=self.queries, budget=self.budget)
            rows = np.asarray([X[i] for i in new.values()])
            probs = _predict_probs(self.model, rows, batch_size=self.batch_size, n_classes=self.n_classes,
                                   device=self.device, precision=self.precision)
            self.queries += len(new)
            probs = _view(probs, self.access)
            for j, key in enumerate(new):
                self.cache[key] = (probs[j], int(probs[j].argmax()))
        probs = np.stack([self.cache[k][0] for k in keys])
        labels = np.asarray([self.cache[k][1] for k in keys], dtype=np.int64)
        return probs, labels


def _run_named(models: Mapping[str, Any], X: np.ndarray, **kwargs: Any) -> Any:
    """``harness.run`` on a dict name -> adapter without renaming the caller's adapters (restored afterwards)."""
    from kdaudit.data._audit_data import AuditData
    from kdaudit.harness import run

    names = {name: m.name for name, m in models.items()}
    try:
        return run(dict(models), AuditData(X=X), teacher=next(iter(models)), progress=False, **kwargs)
    finally:
        for name, m in models.items():
            m.name = names[name]


def _predict_probs(model: Any, X: np.ndarray, *, batch_size: int, n_classes: int, device: Any = None,
                   precision: str | None = None) -> np.ndarray:
    """Probabilities (zero outside top-k, one-hot for labels) of one model through the harness."""
    result = _run_named({"suspect": model}, X, batch_size=batch_size, device=device, precision=precision)
    probs = np.asarray(result.outputs["suspect"].probs, dtype=np.float64)
    if probs.shape[1] != n_classes:
        raise invalid_argument("suspect", f"a model with {probs.shape[1]} classes",
                               f"{n_classes} classes, as the teacher")
    return probs


def _pool_outputs(models: Mapping[str, Any], X: np.ndarray, *, batch_size: int, cache_dir: Any,
                  seed: int, device: Any = None, precision: str | None = None
                  ) -> tuple[np.ndarray, tuple[str, int | None], list[str]]:
    """(M, n, C) probabilities of the pool on ``X`` (teacher first), at the pool's common access level.

    One run of the harness for the whole pool, at one device and precision, so that the teacher and its
    references are seen alike (the exchangeability the p-value rests on)."""
    result = _run_named(models, X, batch_size=batch_size, cache_dir=cache_dir, seed=seed, device=device,
                        precision=precision)
    outs = [result.outputs[name] for name in models]
    access: tuple[str, int | None] = ("probabilities", None)
    for o in outs:
        access = _least(access, parse_access((str(o.access), o.top_k)) or access)
    pool = np.stack([_view(np.asarray(o.probs, dtype=np.float64), access) for o in outs])
    return pool, access, list(models)


def _union_pool(pools: Mapping[str, Mapping[str, Any]], pool_arrays: Mapping[str, Any]) -> np.ndarray:
    """Outputs of every distinct model of all pools (a model shared by several pools counted once).

    Models are identified by their fingerprint (the hash of their weights or file), so the same reference loaded
    twice, or wrapped twice, still counts once.
    """
    seen: dict[Any, np.ndarray] = {}
    for cand, models in pools.items():
        outputs = pool_arrays[cand][0]
        for j, model in enumerate(models.values()):
            try:
                key: Any = model.fingerprint()
            except Exception:  # noqa: BLE001 - a model without a fingerprint is identified by the object
                key = id(model)
            seen.setdefault(key, outputs[j])
    return np.stack(list(seen.values()))


def _is_probe_source(obj: Any) -> bool:
    from kdaudit.data._audit_data import AuditData

    return (isinstance(obj, (AuditData, str)) or hasattr(obj, "__fspath__")
            or (isinstance(obj, np.ndarray) and obj.ndim >= 2))


def _as_array(probes: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Probe inputs and their true labels (or None) from an array, AuditData, a probe file path, or a list of those.

    A list or tuple of sources (AuditData, paths, arrays of rows) is concatenated in order; rows of a source without
    true labels get ``-1`` (unknown) when another source has them.
    """
    from kdaudit.data._audit_data import AuditData

    if isinstance(probes, (list, tuple)) and probes and all(_is_probe_source(p) for p in probes):
        parts = [_as_array(p) for p in probes]
        shapes = {x.shape[1:] for x, _ in parts}
        if len(shapes) != 1:
            raise invalid_argument("probes", f"sources with row shapes {sorted(map(str, shapes))}",
                                   "probe sources whose rows have one shape")
        X = np.concatenate([x for x, _ in parts])
        if all(y is None for _, y in parts):
            return X, None
        y = np.concatenate([np.full(len(x), -1, dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64)
                            for x, y in parts])
        return X, y
    if isinstance(probes, AuditData):
        return np.asarray(probes.X), probes.y_true
    from kdaudit.lineage._files import check_probe_inputs, load_probes

    if isinstance(probes, (str,)) or hasattr(probes, "__fspath__"):
        return load_probes(probes)
    return check_probe_inputs(np.asarray(probes), or_else=", an AuditData, a probe file, or a list of those"), None


def _adapter(obj: Any, name: str) -> Any:
    """An adapter for ``obj``; the caller's own adapters keep their names (the pool names are applied per run)."""
    from kdaudit.models import ModelAdapter, as_model

    return obj if isinstance(obj, ModelAdapter) else as_model(obj, name=name)


def _named_pool(teacher: Any, references: Sequence[Any] | None, prefix: str = "") -> dict[str, Any]:
    pool = {f"{prefix}teacher": _adapter(teacher, f"{prefix}teacher")}
    for i, ref in enumerate(references or ()):
        name = f"{prefix}reference_{i + 1:03d}"
        pool[name] = _adapter(ref, name)
    if len({id(m) for m in pool.values()}) != len(pool):
        raise invalid_argument("references", "the same model object twice (or the teacher among them)",
                               "distinct models: the teacher and K references trained with other seeds")
    return pool


def _check_common(alpha: float, p_value_method: str, query_budget: int | None, n_probes: int | None,
                  n_mixup: int | None) -> None:
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise invalid_argument("alpha", alpha, "a significance level in (0, 1), e.g. 0.05")
    if p_value_method not in ("exact", "parametric"):
        raise invalid_argument("p_value_method", p_value_method, '"exact" or "parametric"')
    if query_budget is not None and (not isinstance(query_budget, (int, np.integer)) or query_budget < 1):
        raise invalid_argument("query_budget", query_budget, "None or an integer >= 1")
    if n_probes is not None and (not isinstance(n_probes, (int, np.integer)) or n_probes < 10):
        raise invalid_argument("n_probes", n_probes, "None or an integer >= 10")
    if n_mixup is not None and (not isinstance(n_mixup, (int, np.integer)) or n_mixup < 0):
        raise invalid_argument("n_mixup", n_mixup, "None or an integer >= 0")


def _candidates(X: np.ndarray, y: np.ndarray | None, n_mixup: int | None, seed: int, *,
                n_probes: int = DEFAULT_N_PROBES) -> tuple[np.ndarray, np.ndarray | None]:
    """The probe candidates: the given rows plus mixup blends.

    Blends of two classes sit near the decision boundaries, where a seed (and so a particular teacher) decides and a
    copy inherits the decision. The default is twice as many blends as rows, at most as many as probes to send:
    enough for the selection to choose among, and never so many that the real rows (where a student met its
    teacher's answers, and the only rows with true labels) are crowded out of the selection. On the benchmark zoo
    three times as many blends as probes lowered every access mode's AUC.
    """
    n_mixup = min(2 * len(X), n_probes) if n_mixup is None else n_mixup
    if n_mixup == 0 or not np.issubdtype(X.dtype, np.number):
        return X, y
    # rows without a true label (-1) are paired as if each were its own class
    pairing = None if y is None else np.where(y >= 0, y, -1 - np.arange(len(y)))
    blends = mixup_blends(X, n_mixup, labels=pairing, seed=seed)
    Xc = np.concatenate([X.astype(blends.dtype), blends])
    yc = None if y is None else np.concatenate([y, np.full(n_mixup, -1, dtype=np.int64)])
    return Xc, yc


def _run_tests(pools: Mapping[str, Mapping[str, Any]], suspect: Any, probes: Any, *, suspect_access: Any,
               alpha: float, query_budget: int | None, n_probes: int | None, n_mixup: int | None, seed: int,
               p_value_method: str, n_replicates: int, batch_size: int, cache_dir: Any,
               controls: Sequence[Any] | None = None, controls_mode: str = "check", device: Any = None,
               precision: str | None = None, memo: dict[bytes, np.ndarray] | None = None,
               positive_controls: Sequence[Any] | None = None) -> tuple[dict[str, LineageResult], int]:
    """Shared core of :func:`lineage_test` (one pool) and :func:`attribute` (one pool per candidate).

    The probes are chosen once, by the disagreement of the union of all pools' distinct models, and the suspect is
    asked once; each candidate's test then uses its own pool. The union matters when candidates share references:
    summing per-pool scores would count a shared reference once per pool and a candidate teacher once, so the
    selection would no longer be symmetric in a pool's members (it favoured the teachers in our benchmark).
    """
    _check_common(alpha, p_value_method, query_budget, n_probes, n_mixup)
    memo = {} if memo is None else memo
    controls_mode = _resolve_controls_mode(controls_mode, controls)
    X, y = _as_array(probes)
    Xc, yc = _candidates(X, y, n_mixup, seed, n_probes=DEFAULT_N_PROBES if n_probes is None else int(n_probes))
    pool_arrays = {}
    for cand, models in pools.items():
        pool_arrays[cand] = _pool_outputs(models, Xc, batch_size=batch_size, cache_dir=cache_dir, seed=seed,
                                          device=device, precision=precision)
    n_classes = {p[0].shape[2] for p in pool_arrays.values()}
    if len(n_classes) != 1:
        raise invalid_argument("candidates", f"teachers with {sorted(n_classes)} classes", "one number of classes")
    C = n_classes.pop()
    requested = parse_access(suspect_access)
    suspect = _adapter(suspect, "suspect")
    oracle = _SuspectOracle(suspect, budget=query_budget, access=requested, n_classes=C, batch_size=batch_size,
                            device=device, precision=precision)
    budget = query_budget if query_budget is not None else math.inf
    remaining = getattr(suspect, "remaining_budget", None)
    if remaining is not None:
        budget = min(budget, remaining)
    n_want = DEFAULT_N_PROBES if n_probes is None else int(n_probes)
    n_sel = int(min(n_want, len(Xc), budget))
    if n_sel < 10:
        raise invalid_argument("query_budget", query_budget, "room for at least 10 suspect queries")
    # the suspect's effective access decides which disagreement matters; pools at a lower level cap it below
    score_access = oracle.access
    for pool, access, _ in pool_arrays.values():
        score_access = _least(score_access, access)
    idx = select_probes(disagreement_scores(_union_pool(pools, pool_arrays), access=score_access[0]), n_sel,
                        seed=seed)
    s_probs, s_labels = oracle.ask(Xc[idx])
    y_sel = None if yc is None else yc[idx]
    bootstrap = Bootstrap(n_replicates=n_replicates, seed=seed)
    suspect_name = str(getattr(suspect, "name", "suspect"))
    control_outputs = _control_outputs(controls, Xc[idx], n_classes=C, batch_size=batch_size, cache_dir=cache_dir,
                                       seed=seed, device=device, precision=precision)
    positive_outputs = _control_outputs(positive_controls, Xc[idx], n_classes=C, batch_size=batch_size,
                                        cache_dir=cache_dir, seed=seed, device=device, precision=precision,
                                        argument="positive_controls")
    results = {}
    for cand, (pool, pool_access, names) in pool_arrays.items():
        access = _least(oracle.access, pool_access)
        view = _view(s_probs, access) if access != oracle.access else s_probs
        control_stats = calibration = nuisance = None
        if control_outputs is not None:
            calibrating = controls_mode != "check" and len(control_outputs[0]) >= MIN_CALIBRATION_CONTROLS
            control_stats = _control_statistics(control_outputs, pool[:, idx], access=access, y_true=y_sel,
                                                memo=memo, joint_nuisance=calibrating)
            if calibrating:
                calibration = control_stats
                nuisance = _control_views(control_outputs[1], access).mean(axis=0)[None]
        a = _analyse(pool[:, idx], view, view.argmax(axis=1) if access[0] != "labels" else s_labels,
                     access=access, y_true=y_sel, alpha=alpha, p_value_method=p_value_method,
                     bootstrap=bootstrap, probe_ids=idx, calibration=calibration, nuisance=nuisance, memo=memo)
        K = pool.shape[0] - 1
        negative_controls: dict[str, Any] = {}
        if control_outputs is not None:
            negative_controls = _negative_controls(control_outputs[0], control_stats, a, alpha=alpha,
                                                   p_value_method=p_value_method, calibrated=calibration is not None,
                                                   mode=controls_mode)
            if controls_mode == "require":
                _require_controls(a, negative_controls, alpha=alpha)
            elif negative_controls.get("warning"):
                a["reason"] = f"{a['reason']}; caution: {negative_controls['warning']}"
        positive: dict[str, Any] = {}
        if positive_outputs is not None:
            positive = _positive_controls(positive_outputs, pool[:, idx], access=access, y_true=y_sel, alpha=alpha,
                                          p_value_method=p_value_method, probe_ids=idx, calibration=calibration,
                                          nuisance=nuisance, memo=memo, seed=seed, controls_mode=controls_mode,
                                          control_outputs=control_outputs, control_stats=control_stats)
            if a["verdict"] == "not derived":
                a["reason"] = f"{a['reason']}; {positive_reading(positive)}"
        results[cand] = LineageResult(
            verdict=a["verdict"], reason=a["reason"], p_value=a["p_value"], p_value_method=a["p_value_method"],
            p_value_exact=a["p_value_exact"], p_value_parametric=a["p_value_parametric"], alpha=alpha,
            effect=a["effect"], statistic=a["statistic"], reference_statistics=a["reference_statistics"],
            signatures=a["signatures"], raw_similarity=a["raw_similarity"], queries_used=oracle.queries,
            query_budget=query_budget, n_probes=len(idx), n_candidates=len(Xc), n_references=K,
            suspect_access=_access_text(access), pool_access=_access_text(pool_access), teacher=cand,
            suspect=suspect_name,
            assumptions=_assumptions(p_value_method, pool_access, calibrated=calibration is not None),
            methodology=_methodology(K=K, n_probes=len(idx), n_candidates=len(Xc),
                                     signatures=list(a["signatures"]), alpha=alpha,
                                     method=a["p_value_method"] if a["p_value_method"] != "none" else "no",
                                     suspect_access=_access_text(access),
                                     n_controls=len(control_outputs[0]) if control_outputs else 0,
                                     controls_mode=controls_mode, calibrated=calibration is not None),
            probe_selection={"method": "pool disagreement (symmetric in pool members), 20% random",
                             "n_given": len(X), "n_mixup": len(Xc) - len(X), "n_selected": len(idx),
                             "n_selected_mixup": int(np.sum(idx >= len(X))), "seed": seed},
            negative_controls=negative_controls,
            positive_controls=positive,
        )
    return results, oracle.queries


def _require_controls(a: dict[str, Any], nc: Mapping[str, Any], *, alpha: float) -> None:
    """Base the verdict on the larger of the pool p-value and the suspect's rank p-value among the controls.

    Each p-value is valid under its own assumption (the teacher exchangeable with its references; an underived
    suspect exchangeable with the controls); their maximum rejects only when both do, so it is valid when either
    assumption holds (an intersection-union test). It costs power: the suspect must also outrank the controls.
    """
    if a["p_value_method"] == "none":
        return
    need = min_references(alpha)
    p_ctrl = nc.get("suspect_rank_p_value")
    p_ctrl = math.nan if p_ctrl is None else float(p_ctrl)
    if nc["n"] < need or not math.isfinite(p_ctrl):
        a.update(verdict="inconclusive", reason=(
            f"{a['reason']}; with controls required, {nc['n']} controls cannot give a rank p-value below "
            f"{alpha:.3g} (the smallest possible is 1/(n+1)); give at least {need}"))
        return
    p = max(float(a["p_value"]), p_ctrl)
    verdict = "derived" if p <= alpha else "not derived"
    a.update(verdict=verdict, p_value=p, p_value_method=f"larger of {a['p_value_method']} and controls rank",
             reason=(f"{a['reason']}; the suspect's rank among {nc['n']} negative controls gives p = {p_ctrl:.3g}; "
                     f"the verdict uses the larger, {p:.3g} {'<=' if verdict == 'derived' else '>'} {alpha:.3g}, "
                     "valid if either the references or the controls stand for the null"))


def _control_outputs(controls: Sequence[Any] | None, X: np.ndarray, *, n_classes: int, batch_size: int,
                     cache_dir: Any, seed: int, device: Any = None, precision: str | None = None,
                     argument: str = "controls") -> tuple[list[str], np.ndarray, tuple[str, int | None]] | None:
    """Names, probabilities (n_controls, n_probes, C) and common access level of the negative controls (or, with
    ``argument="positive_controls"``, of the positive controls)."""
    if not controls:
        return None
    what = ("a list of models known not to be derived from the teacher" if argument == "controls" else
            "a list of models known to be derived from the teacher (students the owner made from it)")
    if isinstance(controls, (str, bytes)) or not isinstance(controls, Sequence):
        raise invalid_argument(argument, controls, what)
    prefix = "control" if argument == "controls" else "positive"
    models = {f"{prefix}_{i + 1:03d}": _adapter(m, f"{prefix}_{i + 1:03d}") for i, m in enumerate(controls)}
    if len({id(m) for m in models.values()}) != len(models):
        raise invalid_argument(argument, "the same model object twice", "distinct models")
    display = [str(getattr(m, "name", "") or key) for key, m in models.items()]
    result = _run_named(models, X, batch_size=batch_size, cache_dir=cache_dir, seed=seed, device=device,
                        precision=precision)
    access: tuple[str, int | None] = ("probabilities", None)
    for key in models:
        o = result.outputs[key]
        access = _least(access, parse_access((str(o.access), o.top_k)) or access)
    probs = np.stack([np.asarray(result.outputs[key].probs, dtype=np.float64) for key in models])
    if probs.shape[2] != n_classes:
        raise invalid_argument(argument, f"models with {probs.shape[2]} classes", f"{n_classes} classes")
    return display, probs, access


def _positive_controls(outputs: tuple[list[str], np.ndarray, tuple[str, int | None]], pool: np.ndarray, *,
                       access: tuple[str, int | None], y_true: np.ndarray | None, alpha: float, p_value_method: str,
                       probe_ids: np.ndarray, calibration: np.ndarray | None, nuisance: np.ndarray | None,
                       memo: dict[bytes, np.ndarray], seed: int, controls_mode: str,
                       control_outputs: tuple[list[str], np.ndarray, tuple[str, int | None]] | None,
                       control_stats: np.ndarray | None) -> dict[str, Any]:
    """Each positive control tested as the suspect is (:func:`_analyse` on the same pool, probes, access, controls'
    calibration and, with ``controls_mode="require"``, the same rule), and the share found with its Clopper-Pearson
    interval: the test's power for this teacher against students like them."""
    from scipy import stats as sps

    names, probs, p_access = outputs
    _check_reveals(p_access, access, "positive_controls", "positive controls")
    p_values, verdicts = [], []
    for j in range(len(probs)):
        view = _view(probs[j], access)
        a = _analyse(pool, view, view.argmax(axis=1), access=access, y_true=y_true, alpha=alpha,
                     p_value_method=p_value_method, bootstrap=Bootstrap(n_replicates=0, seed=seed),
                     probe_ids=probe_ids, calibration=calibration, nuisance=nuisance, memo=memo)
        if controls_mode == "require" and control_outputs is not None and control_stats is not None:
            nc = _negative_controls(control_outputs[0], control_stats, a, alpha=alpha, p_value_method=p_value_method,
                                    calibrated=calibration is not None, mode=controls_mode)
            _require_controls(a, nc, alpha=alpha)
        p_values.append(_num(a["p_value"]))
        verdicts.append(str(a["verdict"]))
    n, found = len(names), sum(v == "derived" for v in verdicts)
    interval = sps.binomtest(found, n).proportion_ci(confidence_level=0.95, method="exact")
    return {"n": n, "names": names, "p_values": p_values, "verdicts": verdicts, "n_found": found,
            "share_found": found / n, "interval": [float(interval.low), float(interval.high)],
            "confidence_level": 0.95, "interval_method": "Clopper-Pearson", "assumption": POSITIVE_ASSUMPTION}


def interval_text(interval: Sequence[float]) -> str:
    """A share's interval with two decimals, rounded outward (the printed interval contains the computed one)."""
    return f"{math.floor(interval[0] * 100) / 100:.2f}-{math.ceil(interval[1] * 100) / 100:.2f}"


def positive_reading(pc: Mapping[str, Any]) -> str:
    """How a "not derived" reads beside the positive controls' share found."""
    text = (f"of {pc['n']} students made from the teacher and given as positive controls the test found "
            f"{pc['n_found']} (its power for this teacher against students like them: 95% interval "
            f"{interval_text(pc['interval'])})")
    if pc["n_found"] * 2 < pc["n"]:
        text += ", so it misses most such students and 'not derived' says little here"
    return text


def _resolve_controls_mode(mode: str | None, controls: Sequence[Any] | None) -> str:
    """The controls' role: as given, or by default "calibrate" with enough controls and "check" with fewer."""
    if mode is not None and mode not in CONTROLS_MODES:
        raise invalid_argument("controls_mode", mode, 'None, "check", "calibrate" or "require"')
    n = len(controls) if isinstance(controls, Sequence) and not isinstance(controls, (str, bytes)) else 0
    if mode in ("calibrate", "require") and not controls:
        raise invalid_argument("controls", controls, f'negative control models (controls_mode="{mode}" needs them)')
    if mode == "calibrate" and n < MIN_CALIBRATION_CONTROLS:
        raise invalid_argument("controls", f"{n} models", f"at least {MIN_CALIBRATION_CONTROLS} negative controls to "
                               'calibrate by (or controls_mode="check", which only reports them)')
    if mode is None:
        return "calibrate" if n >= MIN_CALIBRATION_CONTROLS else "check"
    return mode


def _control_views(probs: np.ndarray, access: tuple[str, int | None]) -> np.ndarray:
    """(L, n, C): the controls' answers as the suspect's view presents them (``pool_regression``'s scale)."""
    return np.stack([_prob_view(_view(p, access), access[0]) for p in probs])


def _check_reveals(given: tuple[str, int | None], access: tuple[str, int | None], argument: str, what: str) -> None:
    """Models tested in the suspect's place (controls, positive controls) must reveal at least what the test uses."""
    if _ACCESS_ORDER[given[0]] < _ACCESS_ORDER[access[0]] or (
            access[0] == given[0] == "top_k" and given[1] is not None and access[1] is not None
            and given[1] < access[1]):
        raise invalid_argument(argument, f"models revealing {_access_text(given)}",
                               f"{what} revealing at least what the test uses ({_access_text(access)})")


def _control_statistics(control_outputs: tuple[list[str], np.ndarray, tuple[str, int | None]], pool: np.ndarray, *,
                        access: tuple[str, int | None], y_true: np.ndarray | None,
                        memo: dict[bytes, np.ndarray] | None = None, joint_nuisance: bool = False) -> np.ndarray:
    """(L, M, S): every pool member's typicality-adjusted signature statistics with each control as the suspect.

    With ``joint_nuisance`` (the calibrated test) the suspect's ``pool_regression`` has the controls' mean answer
    as a nuisance regressor; each control, in the suspect's place, has the mean of the *other* controls, so that it
    is not explained by itself and stands for an underived suspect as the suspect would."""
    _, probs, c_access = control_outputs
    _check_reveals(c_access, access, "controls", "controls")
    memo = {} if memo is None else memo
    key = b"c" + hashlib.sha256(_typicality_key(pool, access, y_true) + np.ascontiguousarray(probs).tobytes()
                                + bytes([joint_nuisance])).digest()
    if key not in memo:
        views = _control_views(probs, access) if joint_nuisance else None
        nuisance = None if views is None else views.mean(axis=0)[None]
        typicality = _typicality(pool, access=access, y_true=y_true, memo=memo, nuisance=nuisance)
        rows = []
        for j in range(len(probs)):
            view = _view(probs[j], access)
            others = None if views is None else np.delete(views, j, axis=0).mean(axis=0)[None]
            sums = compute_sums(pool, view, view.argmax(axis=1), access=access[0], top_k=access[1], y_true=y_true,
                                nuisance=others)
            rows.append(adjust_for_typicality(statistics_from_totals(sums.values.sum(axis=0), sums), typicality))
        _remember(memo, key, np.stack(rows))
    return memo[key].copy()


def _negative_controls(names: list[str], cstats: np.ndarray, a: Mapping[str, Any], *, alpha: float,
                       p_value_method: str, calibrated: bool, mode: str) -> dict[str, Any]:
    """The test run with each negative control as the suspect, on the suspect's probes and access level.

    ``cstats`` (L, M, S) are the controls' statistics from :func:`_control_statistics`; ``a`` is the suspect's
    analysis (:func:`_analyse`).

    Controls are models known not to be derived from the teacher or any reference (for example other architectures
    trained by the owner on the teacher's data). The exact p-value is calibrated on average over teachers drawn
    from the recipe; a particular teacher can still relate to a whole family of unrelated models more than its
    siblings do (on the benchmark zoo one teacher gave p <= 0.05 for a fifth of the unrelated models). The share of
    controls reaching ``alpha`` estimates this teacher's false-positive rate against models like the controls, and
    the suspect's rank among the controls' effects is a second p-value, valid when, under the null, the suspect is
    exchangeable with the controls (made like them).

    When the test is ``calibrated`` (members standardised by the controls), each control is standardised by the
    nearer half of the other controls and the suspect, as the suspect is by the nearer half of the controls
    (:func:`calibration_controls`): suspect and controls are treated alike, so the rank p-value stays exact, and the
    count describes the calibrated test.
    """
    from scipy import stats as sps

    weights, two_sided = _combination(list(a["signatures"]), calibrated=calibrated)
    per_control = controls_in_suspects_place(cstats, a["typical_adjusted"]) if calibrated else list(cstats)
    p_values, effects = [], []
    for stats in per_control:
        combined = combined_statistic(stats, weights, two_sided=two_sided)
        if len(combined) < 2:
            p_values.append(math.nan)
        elif p_value_method == "parametric":
            p_values.append(parametric_p_value(combined[0], combined[1:]))
        else:
            p_values.append(rank_p_value(combined[0], combined[1:]))
        effects.append(float(effect_size(combined)) if len(combined) >= 3 else math.nan)
    suspect_effect = a["effect"].value
    n = len(names)
    hits = int(sum(1 for p in p_values if math.isfinite(p) and p <= alpha))
    binomial_p = float(sps.binom.sf(hits - 1, n, alpha)) if hits else 1.0
    finite = [e for e in effects if math.isfinite(e)]
    rank_p = rank_p_value(suspect_effect, np.array(finite)) if math.isfinite(suspect_effect) and finite else math.nan
    warning = None
    if binomial_p < 0.05:
        if calibrated:
            advice = " even after calibrating by them"
        elif n < MIN_CALIBRATION_CONTROLS:
            advice = f"; with at least {MIN_CALIBRATION_CONTROLS} controls the test calibrates by them"
        else:
            advice = '; controls_mode="calibrate" scales every pool member by its spread over the controls'
        warning = (f"{hits} of {n} negative controls reach p <= {alpha:g} (about {alpha * n:.1f} expected), so for "
                   f"this teacher the false-positive rate against models like the controls may exceed alpha{advice}; "
                   f"weigh the verdict with the suspect's rank among the controls (p = {rank_p:.3g})")
    out = {"n": n, "names": names, "mode": mode, "calibrated": calibrated,
           "min_calibration_controls": MIN_CALIBRATION_CONTROLS,
           "p_values": [_num(x) for x in p_values], "effects": [_num(x) for x in effects],
           "n_at_alpha": hits, "share_at_alpha": hits / n, "expected_share": alpha, "binomial_p": binomial_p,
           "suspect_rank_p_value": _num(rank_p), "warning": warning,
           "assumption": ("the controls are models known not to be derived from the teacher or any reference; the "
                          "rank p-value among them assumes the suspect, if not derived, is exchangeable with them")}
    if "uncalibrated" in a:
        out["uncalibrated"] = dict(a["uncalibrated"])
    if calibrated and a.get("calibration_controls") is not None:
        out["calibrated_by"] = [names[j] for j in a["calibration_controls"]]
    return out


# ------------------------------------------------------------------------------------------------------- public API
def lineage_test(teacher: Any, suspect: Any, probes: Any, *, references: Sequence[Any] | None = None,
                 suspect_access: str | None = None, alpha: float = 0.05,
                 query_budget: int | None = DEFAULT_QUERY_BUDGET, n_probes: int | None = None,
                 n_mixup: int | None = None, p_value_method: str = "exact", n_replicates: int = 1000,
                 batch_size: int = 256, cache_dir: Any = None, seed: int = 0,
                 controls: Sequence[Any] | None = None, controls_mode: str | None = None, device: Any = None,
                 precision: str | None = None, memo: dict[bytes, Any] | None = None,
                 lm_options: Mapping[str, Any] | None = None,
                 positive_controls: Sequence[Any] | None = None) -> Any:
    """Test whether ``suspect`` was derived (distilled, extracted, fine-tuned...) from ``teacher``.

    Language models (:class:`~kdaudit.models.LanguageModel` teacher and suspect, a prompt set as ``probes``) are
    tested by :func:`kdaudit.lineage.lm_lineage_test` (``suspect_access`` "top_k:K" or "text", ``n_probes`` prompts,
    ``query_budget`` in prompts, ``lm_options`` its other options) and give an ``LMLineageResult``.

    Parameters
    ----------
    teacher : ModelAdapter or wrappable (nn.Module, sklearn estimator, callable)
        White-box or black-box; its access level caps the pool's.
    suspect : ModelAdapter or wrappable
        Typically a :class:`~kdaudit.models.BlackBoxModel`; only rows never asked before are sent to it.
    probes : array-like, AuditData, path (.npy/.npz/.csv/.parquet), or a list of those
        Candidate probe inputs (held-out rows of the teacher's input distribution). True labels (AuditData
        ``y_true``, or ``y`` in an .npz) enable the shared-errors signature. A list is concatenated: add any public
        data the suspect's maker may have queried the teacher with. A student copies its teacher most faithfully on
        its own query set, so those rows carry the strongest evidence, above all for label-only extraction
        (``benchmarks/lineage.py``, scenario "held-out + public rows").
    references : sequence of models, optional
        Models trained by the teacher's recipe and data with other seeds (see :func:`kdaudit.distill.train_control`).
        At least ``ceil(1/alpha) - 1`` (19 at alpha = 0.05) for an exact verdict. Without references the verdict
        is "inconclusive" and only raw similarity is reported.
    suspect_access : {"probabilities", "top_k:K", "labels"}, optional
        What to use of the suspect's answers; default: what it reveals. Asking for more than it reveals is an error.
    alpha : float, default 0.05
    query_budget : int or None, default 2000
        Most rows sent to the suspect; the number of probes is capped by it (and by the suspect's own budget).
    n_probes : int, optional
        Probes sent to the suspect (default 2,000, capped by the budget and the number of candidates). On a binary
        task that is where the power levels off: on UCI Adult 500 and 1,000 held-out probes found fewer students
        and 4,000 to 16,000 about as many as 2,000 (README, 'Lineage: power'); spend extra effort on negative controls
        like the suspects feared rather than on queries.
    n_mixup : int, optional
        Mixup blends added to the candidates (default: twice as many as probe rows, at most ``n_probes``;
        0 disables).
    p_value_method : {"exact", "parametric"}, default "exact"
        The p-value the verdict uses; "parametric" adds a normality assumption but works with fewer references.
    n_replicates : int, default 1000
        Probe-bootstrap replicates for the effect-size interval.
    device, precision : optional
        One device and autocast precision for every torch model the test runs (teacher, references, controls and
        suspect), applied for the test only (see :func:`kdaudit.harness.run`); default: each model as it is.
    memo : dict, optional
        Statistics of the pool that do not depend on the suspect, shared by the tests that pass the same dict (the
        students of one audit, a screening of many suspects); by default nothing outlives the call.
    batch_size : int
    cache_dir : path, optional
        Harness output cache for the pool (the suspect is cached in memory per call).
    seed : int, default 0
        Mixup blends, the random share of probes and the bootstrap.
    controls : sequence of models, optional
        Negative controls: models known not to be derived from the teacher or any reference (other architectures
        or recipes trained on the teacher's data, public models, and best, models made like the suspects feared:
        students extracted from siblings of the teacher kept out of the pool, :func:`train_student_controls`;
        README, "Lineage: power"). Each is tested exactly like the suspect (same
        probes, same access, no suspect queries). The result's ``negative_controls`` says how many reach ``alpha``
        (a calibrated teacher lets through about ``alpha`` of them) and ranks the suspect among them; the reason
        carries a caution when the controls show this teacher to be over-attractive to unrelated models.
    controls_mode : {"check", "calibrate", "require"}, optional
        Default: "calibrate" with at least 19 controls, else "check". "check": controls inform (counts, caution) but
        the verdict uses the plain pool p-value. "calibrate": every pool member's signature statistics are first
        standardised by their mean and spread over the controls most like the suspect (the nearer half, at least
        10; :func:`calibration_controls`), so a teacher that relates to unrelated models more
        widely than its siblings no longer tops the ranking too often; the rank p-value stays exact (the controls
        are the same for every member). On the benchmark zoo it brought an over-attractive teacher's false-positive
        rate from 13-26 % to 2-6 %, at some cost in power (``benchmarks/results/lineage_cpu.txt``); the result keeps
        the uncalibrated p-value and effect under ``negative_controls["uncalibrated"]``. "require": calibrate, and
        base the verdict on the larger of the pool p-value and the suspect's rank p-value among the controls, which
        is valid if either the references or the controls stand for the null (needs at least
        ``ceil(1/alpha) - 1`` controls).
    positive_controls : sequence of models, optional
        Positive controls: students the owner made from the teacher (by distillation, label-only extraction, ...),
        tested exactly like the suspect (same pool, probes, access, calibration; no suspect queries). The power of
        the test depends on the teacher: one that sits near the middle of its recipe leaves its students little of
        its own to inherit (``benchmarks/results/lineage_*_teacher_power_cpu.txt``). The share of them the test
        finds, with its Clopper-Pearson interval (``positive_controls`` of the result), is its power for *this*
        teacher against students made like them, and a "not derived" verdict quotes it. They never enter the
        suspect's p-value. Classifiers only.

    Returns
    -------
    LineageResult
    """
    from kdaudit.lineage._lm import is_language_model, lm_lineage_test

    if is_language_model(teacher) or is_language_model(suspect):
        if positive_controls:
            raise invalid_argument("positive_controls", f"{len(positive_controls)} models",
                                   "none for a language-model test (positive controls are for classifiers)")
        access = None if suspect_access is None else str(suspect_access).replace("-", "_")
        top_k = {}
        if access is not None and access.startswith("top_k:"):
            k = access.split(":", 1)[1]
            if not k.isdigit():
                raise invalid_argument("suspect_access", suspect_access, '"top_k:K" or "text" for language models')
            access, top_k = "top_k", {"top_k": int(k)}
        return lm_lineage_test(teacher, suspect, probes, references=references, controls=controls, access=access,
                               alpha=alpha, query_budget=query_budget, n_prompts=n_probes, seed=seed,
                               **top_k, **dict(lm_options or {}))
    _check_positive_controls(positive_controls, teacher=teacher, suspect=suspect, references=references,
                             controls=controls)
    results, _ = _run_tests({"teacher": _named_pool(teacher, references)}, suspect, probes,
                            suspect_access=suspect_access, alpha=alpha, query_budget=query_budget,
                            n_probes=n_probes, n_mixup=n_mixup, seed=seed, p_value_method=p_value_method,
                            n_replicates=n_replicates, batch_size=batch_size, cache_dir=cache_dir,
                            controls=controls, controls_mode=controls_mode, device=device, precision=precision,
                            memo=memo, positive_controls=positive_controls)
    result = results["teacher"]
    name = str(getattr(teacher, "name", "teacher") or "teacher")
    return _renamed(result, name)


def _check_positive_controls(positive: Sequence[Any] | None, *, teacher: Any, suspect: Any,
                             references: Sequence[Any] | None, controls: Sequence[Any] | None) -> None:
    """Positive controls are models of their own: not the teacher, the suspect, a reference or a negative control
    (a suspect counted as its own positive control would make the power look like the verdict)."""
    if not positive:
        return
    if isinstance(positive, (str, bytes)) or not isinstance(positive, Sequence):
        raise invalid_argument("positive_controls", positive, "a list of models known to be derived from the teacher "
                               "(students the owner made from it)")
    roles = {id(teacher): "the teacher", id(suspect): "the suspect"}
    for group, role in ((references, "a reference"), (controls, "a negative control")):
        if isinstance(group, Sequence) and not isinstance(group, (str, bytes)):
            roles.update({id(m): role for m in group})
    for i, m in enumerate(positive):
        if id(m) in roles:
            raise invalid_argument(f"positive_controls[{i}]", f"{roles[id(m)]} again",
                                   "a model that is not the teacher, the suspect, a reference or a negative control")


def _renamed(result: LineageResult, teacher: str) -> LineageResult:
    from dataclasses import replace

    return replace(result, teacher=teacher)


def attribute(suspect: Any, candidates: Mapping[str, tuple[Any, Sequence[Any]]], probes: Any, *,
              suspect_access: str | None = None, alpha: float = 0.05,
              query_budget: int | None = DEFAULT_QUERY_BUDGET, n_probes: int | None = None,
              n_mixup: int | None = None, p_value_method: str = "exact", n_replicates: int = 1000,
              batch_size: int = 256, cache_dir: Any = None, seed: int = 0,
              controls: Sequence[Any] | None = None, controls_mode: str | None = None, device: Any = None,
              precision: str | None = None, memo: dict[bytes, Any] | None = None) -> AttributionResult:
    """Which candidate teacher, if any, is the suspect's parent?

    One :func:`lineage_test` per candidate (each against its own references), on one shared set of probes chosen
    by the candidates' pools together (so the suspect is asked once), with Holm-Bonferroni correction across the
    candidates: the chance of naming any parent when none is the parent stays at most ``alpha``.

    Parameters
    ----------
    suspect : model
    candidates : dict of name -> (teacher, references)
    probes, suspect_access, alpha, query_budget, n_probes, n_mixup, p_value_method, n_replicates, batch_size,
    cache_dir, seed, controls, controls_mode
        As in :func:`lineage_test`. With the exact p-value each candidate needs at least
        ``ceil(n_candidates / alpha) - 1`` references to be able to reach significance.

    Returns
    -------
    AttributionResult
        ``parent`` is the significant candidate (Holm-adjusted p <= alpha) with the largest effect, else "none".
    """
    if not isinstance(candidates, Mapping) or not candidates:
        raise invalid_argument("candidates", candidates, "a non-empty dict name -> (teacher, references)")
    pools = {}
    for i, (name, value) in enumerate(candidates.items()):
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise invalid_argument(f"candidates[{name!r}]", value, "a pair (teacher, references)")
        pools[str(name)] = _named_pool(value[0], value[1], prefix=f"c{i}_")
    results, queries = _run_tests(pools, suspect, probes, suspect_access=suspect_access, alpha=alpha,
                                  query_budget=query_budget, n_probes=n_probes, n_mixup=n_mixup, seed=seed,
                                  p_value_method=p_value_method, n_replicates=n_replicates,
                                  batch_size=batch_size, cache_dir=cache_dir, controls=controls,
                                  controls_mode=controls_mode, device=device, precision=precision, memo=memo)
    return _attribution_from(results, alpha=alpha, queries=queries)


def _attribution_from(results: Mapping[str, LineageResult], *, alpha: float, queries: int) -> AttributionResult:
    """Holm across the candidates' p-values (each candidate's own verdict stays the unadjusted one)."""
    names = list(results)
    parent, adjusted = holm_parent(names, [results[n].p_value for n in names],
                                   [results[n].effect.value for n in names], alpha=alpha,
                                   eligible=[results[n].verdict != "inconclusive" for n in names])
    if parent != "none":
        reason = f"{parent} has the largest effect among the candidates significant after Holm correction"
    else:
        inconclusive = [n for n in names if results[n].verdict == "inconclusive"]
        need = min_references(alpha, len(names))
        few = [n for n in names if results[n].p_value_method == "exact rank" and results[n].n_references < need]
        reason = ("no candidate is significant after Holm correction" +
                  (f"; inconclusive: {', '.join(inconclusive)} ({results[inconclusive[0]].reason})"
                   if inconclusive else "") +
                  (f"; with {len(names)} candidates the exact test needs >= {need} references each "
                   f"(too few: {', '.join(few)})" if few else ""))
    return AttributionResult(parent=parent, alpha=alpha, results=dict(results),
                             adjusted_p_values=dict(zip(names, map(float, adjusted))), queries_used=queries,
                             reason=reason)
