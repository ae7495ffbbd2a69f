"""Teacher lineage: was a suspect model derived from our teacher, and which candidate teacher is its parent?

:func:`lineage_test` returns a p-value whose validity rests on one stated assumption (the teacher is exchangeable
with reference models of its own recipe under the null), never on treating probes as independent. :func:`attribute`
tests several candidate teachers with Holm-Bonferroni correction. :func:`write_manifest` / :func:`verify_manifest`
record and check a documented distillation. Language models: :func:`lm_lineage_test` (also reached through
:func:`lineage_test`) and :func:`lm_attribute`, under a sibling-references or an unrelated-controls null, through
top-k log-probabilities or text only.
"""

from kdaudit.lineage._definitions import DEFINITIONS
from kdaudit.lineage._files import load_probes
from kdaudit.lineage._lm import LM_NULLS, LMAttributionResult, LMLineageResult, lm_attribute, lm_lineage_test
from kdaudit.lineage._lm_signatures import LM_SIGNATURES
from kdaudit.lineage._manifest import (
    MANIFEST_SCHEMA,
    VerifyResult,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from kdaudit.lineage._probes import disagreement_scores, mixup_blends, select_probes
from kdaudit.lineage._references import train_references, train_shadow_students, train_student_controls
from kdaudit.lineage._signatures import SIGNATURES
from kdaudit.lineage._stats import (
    holm_adjust,
    joint_rank_p_value,
    min_references,
    parametric_p_value,
    rank_p_value,
)
from kdaudit.lineage._test import (
    CONTROLS_MODES,
    MIN_CALIBRATION_CONTROLS,
    NULL_HYPOTHESIS,
    AttributionResult,
    LineageResult,
    attribute,
    lineage_test,
    parse_access,
)

__all__ = [
    "CONTROLS_MODES",
    "DEFINITIONS",
    "LM_NULLS",
    "LM_SIGNATURES",
    "MANIFEST_SCHEMA",
    "MIN_CALIBRATION_CONTROLS",
    "NULL_HYPOTHESIS",
    "SIGNATURES",
    "AttributionResult",
    "LMAttributionResult",
    "LMLineageResult",
    "LineageResult",
    "VerifyResult",
    "attribute",
    "disagreement_scores",
    "holm_adjust",
    "joint_rank_p_value",
    "lineage_test",
    "lm_attribute",
    "lm_lineage_test",
    "load_probes",
    "min_references",
    "mixup_blends",
    "parametric_p_value",
    "parse_access",
    "rank_p_value",
    "read_manifest",
    "select_probes",
    "train_references",
    "train_shadow_students",
    "train_student_controls",
    "verify_manifest",
    "write_manifest",
]
