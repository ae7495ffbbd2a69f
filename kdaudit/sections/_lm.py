"""The language-model sections: declared to the registry like every other section (name, order, options, needs,
definitions, tidy rows) and computed from one teacher/student pair of sequence-harness outputs.

What each needs (:class:`~kdaudit.sections.Needs`, judged by the one skip rule, :meth:`Section.skip_reason`):

============== ============================================ ===================================================
section        output kind (both models)                    data
============== ============================================ ===================================================
lm_tokens      per-token top-k log-probabilities             a prompt set of texts
lm_generation  generated text (a model that scores texts     a prompt set of texts
               also generates: the richer kind serves it)
lm_task        per-token top-k log-probabilities             a multiple-choice prompt set
lm_bias        per-token top-k log-probabilities             texts and/or choices with group columns
============== ============================================ ===================================================

So a text-only endpoint gets ``lm_generation`` (and ``cost``), and every other section reports why it was skipped.
Conditions of a pair rather than of a kind stay with the section: per-token comparisons also need one tokenizer
(:func:`~kdaudit.metrics._sequence.check_token_pair`), reported as the section's reason.

The statistics live in :mod:`kdaudit.metrics._sequence` and :mod:`kdaudit.metrics._text` (and, for the multiple-choice
task, the classifier families); the sections only choose what to compute from what the audit collected
(:class:`LMOutputs`). The audit (:mod:`kdaudit._audit_lm`) runs the models; the options that shape what it asks of
them (``lm_tokens.top_k``; ``lm_generation.max_new_tokens``, ``do_sample`` and ``temperature``;
``lm_task.length_normalize``) are declared here, so the API's ``section_options``, a config's ``section_options:``
and the CLI's ``--option`` check them with one schema.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

from kdaudit._kinds import OutputKind
from kdaudit.sections._base import Needs, Option, Section, SectionInputs

__all__ = ["LMOutputs", "LMPair", "LM_BUILTIN_SECTIONS", "LMSection", "lm_kind"]

_LOGPROBS = frozenset({OutputKind.TOKEN_TOP_K})


def lm_kind(model: Any) -> OutputKind:
    """The output kind a language model gives: per-token top-k log-probabilities when it reveals them, else text."""
    return OutputKind.TOKEN_TOP_K if str(getattr(model, "access", "logprobs")) == "logprobs" else OutputKind.TEXT


@dataclass
class LMOutputs:
    """What the audit collected from one language model (None where it could not, or was not asked)."""

    tokens: Any = None  # TokenTopK on the scored texts
    reference: Any = None  # (loglik, n_tokens) of each reference continuation given its prompt
    generations: Any = None  # Generations of the prompts
    loglik_of_gen: Any = None  # (loglik, n_tokens) the teacher gives this model's continuations
    choices: Any = None  # (n, max_choices) log-likelihood per choice


@dataclass(frozen=True)
class LMPair:
    """One teacher/student comparison of a language-model audit: their outputs, the prompt sets, the bootstrap and
    what the skip rule judges (``inputs``)."""

    teacher: LMOutputs
    student: LMOutputs
    texts: Any  # the PromptSet without choices, or None
    choices: Any  # the multiple-choice PromptSet, or None
    inputs: SectionInputs
    bootstrap: Any
    names: tuple[str, str] = ("teacher", "student")  # the two models' names

    def token_reason(self) -> str | None:
        """Why the two models cannot be compared token by token (the ``lm_tokens`` section's skip reason, else a
        tokenizer or alignment mismatch), or None when they can."""
        why = LMTokensSection().skip_reason(self.inputs)
        if why is None:
            from kdaudit.metrics._sequence import check_token_pair

            why = check_token_pair(self.teacher.tokens, self.student.tokens)
        return why

    def task_outputs(self) -> tuple[Any, Any] | None:
        """The multiple-choice answers of both models as classifier outputs, or None without them."""
        if self.choices is None or self.teacher.choices is None or self.student.choices is None:
            return None
        return (_choice_outputs(self.names[0], self.teacher.choices),
                _choice_outputs(self.names[1], self.student.choices))


def _choice_outputs(name: str, loglik: Any) -> Any:
    """The multiple-choice answers as classifier outputs: softmax of the choices' log-likelihoods."""
    import numpy as np

    from kdaudit.harness._outputs import ModelOutputs

    z = loglik - loglik.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return ModelOutputs(name=name, probs=p.astype(np.float32), labels=loglik.argmax(axis=1))


def _unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason, "headline": {}}


def _jsonable(x: Any) -> Any:
    from kdaudit._io import to_jsonable

    return to_jsonable(x)


class LMSection(Section):
    """A section of a language-model audit: computed by :meth:`compute_lm` from an :class:`LMPair`.

    A plugin section may subclass it (and declare ``needs`` on the ``TOKEN_TOP_K``/``TEXT`` kinds) to run in
    language-model audits; ``default = True`` makes it run when a language-model audit names no sections.
    """

    stream = False  # computed from the sequence harness's outputs, not by the classifier engine's accumulators
    default = True  # by default in language-model audits (a classifier audit's default takes classifier kinds)
    tables: tuple[tuple[str, str], ...] = ()  # (module, attribute) of its definition tables

    def definitions(self) -> Mapping[str, Mapping[str, Any]]:
        out: dict[str, Mapping[str, Any]] = {}
        for module, attr in self.tables:
            out.update(getattr(importlib.import_module(module), attr))
        return out

    def compute_lm(self, pair: LMPair, options: Mapping[str, Any]) -> dict[str, Any]:
        """The section's JSON-able result for one pair (``options``: every option of the section, defaults filled)."""
        raise NotImplementedError(f"section {self.name!r} does not compute from language models")

    def effective_options(self, checked: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every option's value: the checked ones given, the defaults for the rest."""
        return {o.name: (checked or {}).get(o.name, o.default) for o in self.options}


class LMTokensSection(LMSection):
    name, order, title = "lm_tokens", 46, "Next-token agreement"
    description = ("Per-token agreement and divergences of teacher-forced next-token predictions, next-token "
                   "accuracy, perplexity and their ratios, and next-token calibration.")
    needs = Needs(kinds=_LOGPROBS, least_access=None, data=frozenset({"texts"}))
    options = (Option("top_k", int, 20, "log-probabilities kept per position (at most what each model reveals)",
                      minimum=1, maximum=20),)
    summary_keys = ("top1_agreement", "retained_next_token_accuracy", "perplexity_ratio", "kl_forward")
    tables = (("kdaudit.metrics._sequence", "TOKEN_DEFINITIONS"),)

    def compute_lm(self, pair: LMPair, options: Mapping[str, Any]) -> dict[str, Any]:
        from kdaudit.metrics._sequence import token_section

        why = pair.token_reason()
        if why is not None:
            return _unavailable(why)
        t, s = pair.teacher, pair.student
        return _jsonable(token_section(t.tokens, s.tokens, bootstrap=pair.bootstrap,
                                       reference=None if t.reference is None else (t.reference, s.reference)))


class LMGenerationSection(LMSection):
    name, order, title = "lm_generation", 47, "Generations"
    description = ("What the two models generate for the same prompts: exact match, ROUGE-L and chrF of their "
                   "continuations (greedy, or sampled with a seed per prompt), and the teacher's log-likelihood of "
                   "the student's continuations.")
    needs = Needs(kinds=frozenset({OutputKind.TEXT}), least_access=None, data=frozenset({"texts"}))
    options = (Option("max_new_tokens", int, 32, "length of the continuations", minimum=1, maximum=1 << 16),
               Option("do_sample", bool, False, "sample the continuations (seeded per prompt) instead of greedy "
                      "decoding"),
               Option("temperature", float, 1.0, "sampling temperature (with do_sample)", minimum=1e-3,
                      maximum=100.0))
    summary_keys = ("chrf", "rouge_l", "exact_match", "teacher_loglik_gap")
    tables = (("kdaudit.metrics._sequence", "GENERATION_DEFINITIONS"),)

    def compute_lm(self, pair: LMPair, options: Mapping[str, Any]) -> dict[str, Any]:
        from kdaudit.metrics._sequence import generation_section

        t, s = pair.teacher, pair.student
        ll = (s.loglik_of_gen, t.loglik_of_gen) if t.loglik_of_gen is not None else (None, None)
        return _jsonable(generation_section(t.generations, s.generations, bootstrap=pair.bootstrap,
                                            teacher_loglik_student=ll[0], teacher_loglik_teacher=ll[1]))


#: the classifier families the multiple-choice task is audited with, in the order their definitions merge
_TASK_FAMILIES = ("agreement", "calibration", "fingerprint")


class LMTaskSection(LMSection):
    name, order, title = "lm_task", 48, "Task with right answers"
    description = ("Multiple-choice accuracy scored by log-likelihood, with the classifier families' agreement "
                   "(McNemar), calibration and error fingerprints on the answers.")
    needs = Needs(kinds=_LOGPROBS, least_access=None, data=frozenset({"choices"}))
    options = (Option("length_normalize", str, "none", "choice scores: the sum of token log-probabilities (none) or "
                      "that sum per character (chars)", choices=("none", "chars")),)
    summary_keys = ("retained_accuracy", "top1_agreement", "teacher_accuracy", "student_accuracy")

    def definitions(self) -> Mapping[str, Mapping[str, Any]]:
        from kdaudit.metrics import DEFINITIONS_BY_SECTION

        out: dict[str, Mapping[str, Any]] = {}
        for family in _TASK_FAMILIES:  # the classifier families' labels, said to be about the task
            for key, d in DEFINITIONS_BY_SECTION[family].items():
                out[key] = dict(d, label=f"{d['label']} (task)")
        return out

    def compute_lm(self, pair: LMPair, options: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        from kdaudit.metrics import agreement_section, calibration_section, fingerprint_section

        task_out = pair.task_outputs()
        if task_out is None:  # both reveal log-probabilities (the skip rule) but one was not asked: not expected
            return _unavailable("multiple choice is scored by log-likelihood; a model's choices were not scored")
        y, ids, boot = pair.choices.answers, np.asarray(pair.choices.ids), pair.bootstrap
        parts = {family: fn(y, *task_out, ids=ids, bootstrap=boot) for family, fn in
                 zip(_TASK_FAMILIES, (agreement_section, calibration_section, fingerprint_section))}
        headline: dict[str, Any] = {}
        out: dict[str, Any] = {"available": True, "reason": None}
        for family, res in parts.items():  # one section from the families' results (their headline keys differ)
            d = _jsonable(res)
            if d.get("available"):
                headline.update(d.get("headline") or {})
            out[family] = {k: v for k, v in d.items() if k != "headline"}
        out["headline"] = headline
        out["length_normalize"] = options["length_normalize"]
        return out


#: the task's bias-transfer numbers the lm_bias headline repeats (prefixed ``task_``)
_TASK_BIAS_KEYS = ("worst_group_agreement", "max_group_accuracy_drop")


class LMBiasSection(LMSection):
    name, order, title = "lm_bias", 49, "Bias transfer (prompts)"
    description = ("Per prompt-level group column, token-level accuracy and agreement with their disparities and "
                   "amplification, and the multiple-choice task's bias transfer on the same columns.")
    needs = Needs(kinds=_LOGPROBS, least_access=None)
    options = (Option("min_group_size", int, 20, "groups with fewer prompts are shown but left out of disparities",
                      minimum=1, maximum=1 << 30),)
    summary_keys = ("accuracy_amplification", "worst_group_agreement", "task_worst_group_agreement")
    tables = (("kdaudit.metrics._sequence", "TOKEN_GROUP_DEFINITIONS"),)

    def definitions(self) -> Mapping[str, Mapping[str, Any]]:
        from kdaudit.metrics import DEFINITIONS_BY_SECTION

        out = dict(LMSection.definitions(self))
        for key in _TASK_BIAS_KEYS:
            d = DEFINITIONS_BY_SECTION["bias"].get(key)
            if d is not None:
                out[f"task_{key}"] = dict(d, label="Task: " + d["label"])
        return out

    def compute_lm(self, pair: LMPair, options: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        from kdaudit.metrics import bias_section
        from kdaudit.metrics._sequence import token_group_section

        text_set, choice_set, boot = pair.texts, pair.choices, pair.bootstrap
        why_tokens = pair.token_reason()
        task_out = pair.task_outputs()
        reasons = []
        sec: dict[str, Any] = {"available": False, "reason": None, "headline": {}}
        if text_set is not None and text_set.groups is not None and why_tokens is None:
            tok = _jsonable(token_group_section(pair.teacher.tokens, pair.student.tokens, text_set.groups,
                                                bootstrap=boot, min_group_size=options["min_group_size"]))
            if tok.get("available"):
                sec.update({k: v for k, v in tok.items() if k not in ("available", "reason")})
                sec["available"] = True
            else:  # the group tables stay visible, out of the rules' reach (there is no disparity to judge)
                sec["token_groups"] = {k: v for k, v in tok.items() if k not in ("available", "reason", "headline")}
            if tok.get("reason"):
                reasons.append("token level: " + tok["reason"])
        elif text_set is not None:
            reasons.append("token level: " + (why_tokens or "the prompt set has no group columns"))
        if choice_set is not None and choice_set.groups is not None and task_out is not None:
            task = _jsonable(bias_section(choice_set.answers, *task_out, ids=np.asarray(choice_set.ids),
                                          sensitive=choice_set.groups, bootstrap=boot,
                                          min_group_size=options["min_group_size"]))
            sec["task"] = task
            if task.get("available"):
                sec["available"] = True
                for key in _TASK_BIAS_KEYS:
                    if key in (task.get("headline") or {}):
                        sec["headline"][f"task_{key}"] = task["headline"][key]
        elif choice_set is not None:
            reasons.append("task: " + ("the task has no group columns" if choice_set.groups is None
                                       else "a model's choices were not scored"))
        sec["reason"] = "; ".join(reasons) or None
        if not sec["available"] and not sec["reason"]:
            sec["reason"] = "no prompt-level group columns"
        return sec


#: kdaudit's language-model sections, in results order (after the classifier families, before cost)
LM_BUILTIN_SECTIONS: tuple[Section, ...] = (LMTokensSection(), LMGenerationSection(), LMTaskSection(),
                                            LMBiasSection())
