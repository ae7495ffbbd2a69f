"""Definitions of the lineage section's headline numbers (the report's methodology section and the policy use them)."""

from __future__ import annotations

from typing import Any

__all__ = ["DEFINITIONS"]

DEFINITIONS: dict[str, dict[str, Any]] = {
    "p_value": {
        "label": "Lineage p-value",
        "formula": "(1 + #{references k: C_k >= C_teacher}) / (K + 1)",
        # evidence, not a quality: neither direction is "better" (a policy states which outcome it requires)
        "higher_is_better": None,
        "description": "Probability, if the suspect was not derived from the teacher (the teacher being "
                       "interchangeable with K reference models of its recipe trained with other seeds), of the "
                       "teacher ranking at least this high among the pool's combined lineage scores C. Small values "
                       "are evidence that the suspect was derived from the teacher. Exact under exchangeability; "
                       "probes are not assumed independent.",
    },
    "effect": {
        "label": "Lineage effect size",
        "formula": "(C_teacher - mean_k C_k) / sd_k C_k",
        "higher_is_better": None,
        "description": "How many reference standard deviations the suspect's closeness to the teacher exceeds its "
                       "closeness to reference models, where closeness C averages standardised signatures "
                       "(deviations from the pool consensus shared with the suspect, the member's weight when the "
                       "suspect's deviations are regressed on all members' jointly, non-top class ranks, label "
                       "idiosyncrasies). Interval: bootstrap over probes.",
    },
    "top1_agreement": {
        "label": "Top-1 agreement with the teacher (on lineage probes)",
        "formula": "mean(argmax teacher == argmax suspect)",
        "higher_is_better": None,
        "description": "Raw similarity on the lineage probes. Not evidence of lineage by itself: models trained on "
                       "the same data agree without any distillation.",
    },
}
