"""The sections kdaudit ships: agreement, calibration, bias, fingerprint (computed from the harness's outputs), cost
and lineage (computed from the models). The statistics live in :mod:`kdaudit.metrics` and :mod:`kdaudit.lineage`;
these classes only declare them to the registry, and import them on first use."""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from kdaudit._kinds import Access, OutputKind
from kdaudit.sections._base import ModelContext, ModelResults, Needs, Option, Section

__all__ = ["BUILTIN_SECTIONS"]

_CLASS_KINDS = frozenset({OutputKind.CLASS_PROBS, OutputKind.TOP_K, OutputKind.LABELS})


class _MetricSection(Section):
    """A section whose statistics are a metric family's section function over the two models' outputs.

    The family configures its accumulator in one place, ``<family>_accumulator``: :meth:`accumulator` is that
    function and ``<family>_fold`` (what the engine runs through :meth:`fold`) builds its accumulator with it, so
    the shard-merge tests over :meth:`accumulator` test what the engine merges.
    """

    module: str = ""
    function: str = ""  # the module's fold function (``<family>_fold``)
    factory: str = ""  # the module's accumulator factory (``<family>_accumulator``)
    default = True

    def _module(self) -> Any:
        return importlib.import_module(self.module)

    def definitions(self) -> Mapping[str, Mapping[str, Any]]:
        return dict(getattr(self._module(), "DEFINITIONS", {}))

    def accumulator(self, *, n_classes: int, teacher: Any, student: Any, bootstrap: Any,
                    options: Mapping[str, Any]) -> Any:
        # chunk_size is how the fold feeds rows, not a setting of the accumulator
        kwargs = {k: v for k, v in options.items() if k != "chunk_size"}
        return getattr(self._module(), self.factory)(n_classes, teacher, student, bootstrap=bootstrap, **kwargs)

    def fold(self, *, y_true: Any, teacher: Any, student: Any, ids: Any, sensitive: Any, bootstrap: Any,
             options: Mapping[str, Any]) -> Any:
        # the metric family's fold: what its section function computes, minus the final compute(), so a one-unit
        # audit gives exactly the section function's numbers
        fn = getattr(self._module(), self.function)
        kwargs = dict(options)
        if self.needs.sensitive:
            kwargs["sensitive"] = sensitive
        return fn(y_true, teacher, student, ids=ids, bootstrap=bootstrap, **kwargs)


class AgreementSection(_MetricSection):
    name, order, title = "agreement", 10, "Agreement and fidelity"
    description = "How often and how closely the student reproduces the teacher's predictions."
    module, function, factory = "kdaudit.metrics._agreement", "agreement_fold", "agreement_accumulator"
    needs = Needs(kinds=_CLASS_KINDS, least_access=Access.LABELS)
    options = (Option("k", int, 5, "k of the top-k overlap", minimum=1),
               Option("chunk_size", int, None, "rows per chunk", minimum=1))
    summary_keys = ("top1_agreement", "retained_accuracy", "teacher_accuracy", "student_accuracy")


class CalibrationSection(_MetricSection):
    name, order, title = "calibration", 20, "Calibration"
    description = "Whether each model's confidence matches its accuracy, and how distillation changed that."
    module, function, factory = "kdaudit.metrics._calibration", "calibration_fold", "calibration_accumulator"
    # confidences are needed: a labels-only model makes the section unavailable by the one skip rule, on the
    # in-memory and the streaming path alike
    needs = Needs(kinds=_CLASS_KINDS, least_access=Access.TOP_K)
    options = (Option("n_bins", int, 15, "confidence bins", minimum=1),
               Option("strategy", str, "uniform", "bin edges", choices=("uniform", "quantile")),
               Option("norm", str, "l1", "norm of the calibration error", choices=("l1", "l2")),
               Option("debiased", bool, False, "debiased ECE estimator"),
               Option("binning", str, "default", "bin-edge convention",
                      choices=("default", "torchmetrics", "netcal")),
               Option("chunk_size", int, None, "rows per chunk", minimum=1))
    summary_keys = ("teacher_ece", "student_ece", "ece_change")


class BiasSection(_MetricSection):
    name, order, title = "bias", 30, "Bias transfer"
    description = "Per sensitive group, what the student inherits from the teacher and what it amplifies."
    module, function, factory = "kdaudit.metrics._bias", "bias_fold", "bias_accumulator"
    # the section function reports missing sensitive features itself
    needs = Needs(kinds=_CLASS_KINDS, least_access=None, sensitive=True)
    options = (Option("pos_label", int, None, "the positive class of selection rate, TPR and FPR", minimum=0),
               Option("min_group_size", int, 30, "rows below which a group is flagged too small", minimum=1),
               Option("min_class_count", int, 10, "positives/negatives below which TPR/FPR are flagged", minimum=1),
               Option("intersections", bool, True, "also every pair of sensitive features"),
               Option("n_bins", int, 15, "bins of the per-group ECE", minimum=1),
               Option("n_permutations", int, 999, "permutations of the amplification test", minimum=0),
               Option("chunk_size", int, 1 << 20, "rows per chunk", minimum=1))
    summary_keys = ("dp_amplification", "eo_amplification", "worst_group_agreement")

    def skip_reason(self, inputs: Any) -> str | None:
        # without sensitive features the section function's own result says so (and keeps its wording)
        return Section.skip_reason(self, type(inputs)(**{**inputs.__dict__, "has_sensitive": True}))


class FingerprintSection(_MetricSection):
    name, order, title = "fingerprint", 40, "Error fingerprints"
    description = "Whether the student makes the teacher's mistakes, beyond what chance explains."
    module, function, factory = "kdaudit.metrics._fingerprint", "fingerprint_fold", "fingerprint_accumulator"
    needs = Needs(kinds=_CLASS_KINDS, least_access=Access.LABELS)
    options = (Option("chunk_size", int, None, "rows per chunk", minimum=1),)
    summary_keys = ("error_consistency", "inherited_error_rate", "same_wrong_label_lift")


COST_DEFINITIONS: dict[str, dict[str, Any]] = {
    "parameter_ratio": {
        "label": "Parameter ratio",
        "formula": "parameters(student) / parameters(teacher)",
        "higher_is_better": False,
        "description": "Fraction of the teacher's parameters the student keeps (an ensemble teacher counts all its "
                       "members). Exact count; no interval.",
    },
    "size_ratio": {
        "label": "Size ratio",
        "formula": "size_bytes(student) / size_bytes(teacher)",
        "higher_is_better": False,
        "description": "Fraction of the teacher's size in memory or on disk that the student needs. Exact; no "
                       "interval.",
    },
}


class CostSection(Section):
    """Parameters, size, latency and throughput: computed from the models (the audit times them), not from rows."""

    name, order, title = "cost", 50, "Cost"
    description = "What distillation bought: parameters, size on disk, latency and throughput."
    needs = Needs(kinds=frozenset(OutputKind), least_access=None)
    summary_keys = ("parameter_ratio", "size_ratio")
    default, stream = True, False

    def definitions(self) -> Mapping[str, Mapping[str, Any]]:
        return COST_DEFINITIONS

    def compute_models(self, context: ModelContext) -> ModelResults:
        from kdaudit.sections._cost import compute_cost

        return compute_cost(context)


class LineageSection(Section):
    """Was the student distilled from the teacher? Computed from the models and the references (and controls)."""

    name, order, title = "lineage", 60, "Teacher lineage"
    description = "A calibrated test of whether each student was derived from the teacher."
    needs = Needs(kinds=_CLASS_KINDS, least_access=Access.LABELS, references=True)
    options = (Option("alpha", float, 0.05, "significance level", minimum=0.0, maximum=1.0),
               Option("query_budget", int, None, "most rows a black-box suspect may be asked", minimum=0),
               Option("suspect_access", str, None, "what the suspect reveals (probabilities, top-k:K, labels)"),
               Option("n_probes", int, None, "probes the test selects", minimum=1),
               Option("p_value_method", str, "exact", "how the p-value is computed",
                      choices=("exact", "parametric")),
               Option("controls_mode", str, None, "what the negative controls do",
                      choices=("check", "calibrate", "require")))
    summary_keys = ("p_value", "effect")
    default, stream = True, False

    def definitions(self) -> Mapping[str, Mapping[str, Any]]:
        from kdaudit.lineage._definitions import DEFINITIONS

        return {k.split(".", 1)[1] if k.startswith("lineage.") else k: v for k, v in DEFINITIONS.items()}

    def compute_models(self, context: ModelContext) -> ModelResults:
        from kdaudit.sections._lineage import compute_lineage

        return compute_lineage(context)


# the language-model sections live in sections/_lm.py (the registry joins both tuples)
BUILTIN_SECTIONS: tuple[Section, ...] = (AgreementSection(), CalibrationSection(), BiasSection(),
                                         FingerprintSection(), CostSection(), LineageSection())
