"""kdaudit.metrics: agreement, calibration, bias transfer and error fingerprints of a student against its teacher.

Each family offers plain functions (shaped like scikit-learn's metrics), a streaming accumulator with fixed-size,
mergeable state (``update``, ``merge``, ``compute``) and a section function over harness outputs. Every headline
number carries a paired block-Poisson bootstrap interval (:class:`Bootstrap`). ``DEFINITIONS`` maps every headline
key to its label, formula, direction and description.
"""

from kdaudit.metrics._agreement import DEFINITIONS as _AGREEMENT_DEFINITIONS
from kdaudit.metrics._agreement import (
    AgreementAccumulator,
    AgreementResult,
    McNemarResult,
    agreement_section,
    cohen_kappa_score,
    conditional_agreement_score,
    js_divergence,
    kl_divergence,
    mcnemar_test,
    per_class_agreement_score,
    retained_accuracy_score,
    top1_agreement_score,
    top_k_overlap_score,
    total_variation_distance,
)
from kdaudit.metrics._bias import DEFINITIONS as _BIAS_DEFINITIONS
from kdaudit.metrics._bias import (
    BiasAccumulator,
    BiasResult,
    bias_amplification,
    bias_section,
    demographic_parity_difference,
    equalized_odds_difference,
    group_metrics,
)
from kdaudit.metrics._calibration import DEFINITIONS as _CALIBRATION_DEFINITIONS
from kdaudit.metrics._calibration import (
    CalibrationAccumulator,
    CalibrationResult,
    apply_temperature,
    brier_score_loss,
    calibration_section,
    classwise_calibration_error,
    confidence_gap,
    expected_calibration_error,
    fit_temperature,
    maximum_calibration_error,
    nll_loss,
    reliability_diagram,
)
from kdaudit.metrics._common import SectionResult
from kdaudit.metrics._fingerprint import DEFINITIONS as _FINGERPRINT_DEFINITIONS
from kdaudit.metrics._fingerprint import (
    FingerprintAccumulator,
    FingerprintResult,
    confusion_similarity,
    error_consistency_score,
    error_overlap,
    fingerprint_section,
    same_wrong_label_rate,
)
from kdaudit.metrics._resampling import BlockStats, Bootstrap, block_of, poisson_weights
from kdaudit.metrics._sequence import (
    TokenAccumulator,
    generation_section,
    token_group_section,
    token_section,
)
from kdaudit.metrics._text import chrf_score, rouge_l_score

#: Definitions of every headline key, by family: ``{"agreement": {...}, "calibration": {...}, ...}``.
DEFINITIONS_BY_SECTION = {
    "agreement": _AGREEMENT_DEFINITIONS,
    "bias": _BIAS_DEFINITIONS,
    "calibration": _CALIBRATION_DEFINITIONS,
    "fingerprint": _FINGERPRINT_DEFINITIONS,
}


def _merge_definitions() -> dict:
    # Keys are unique across families (a test checks it); should two ever collide, the first family keeps its entry
    # rather than failing at import time.
    merged: dict = {}
    for defs in DEFINITIONS_BY_SECTION.values():
        for key, entry in defs.items():
            merged.setdefault(key, entry)
    return merged


#: Every headline key of every family -> {"label", "formula", "higher_is_better", "description"}.
DEFINITIONS = _merge_definitions()

__all__ = [
    "AgreementAccumulator",
    "AgreementResult",
    "BiasAccumulator",
    "BiasResult",
    "BlockStats",
    "Bootstrap",
    "CalibrationAccumulator",
    "CalibrationResult",
    "DEFINITIONS",
    "DEFINITIONS_BY_SECTION",
    "FingerprintAccumulator",
    "FingerprintResult",
    "McNemarResult",
    "SectionResult",
    "TokenAccumulator",
    "agreement_section",
    "apply_temperature",
    "bias_amplification",
    "bias_section",
    "block_of",
    "brier_score_loss",
    "calibration_section",
    "chrf_score",
    "classwise_calibration_error",
    "cohen_kappa_score",
    "conditional_agreement_score",
    "confidence_gap",
    "confusion_similarity",
    "demographic_parity_difference",
    "equalized_odds_difference",
    "error_consistency_score",
    "error_overlap",
    "expected_calibration_error",
    "fingerprint_section",
    "fit_temperature",
    "generation_section",
    "group_metrics",
    "js_divergence",
    "kl_divergence",
    "maximum_calibration_error",
    "mcnemar_test",
    "nll_loss",
    "per_class_agreement_score",
    "poisson_weights",
    "reliability_diagram",
    "retained_accuracy_score",
    "rouge_l_score",
    "same_wrong_label_rate",
    "token_group_section",
    "token_section",
    "top1_agreement_score",
    "top_k_overlap_score",
    "total_variation_distance",
]
