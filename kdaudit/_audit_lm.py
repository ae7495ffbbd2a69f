"""``kdaudit.audit`` for language models: a teacher LM, its students and controls, on prompt sets.

``kdaudit.audit(teacher_lm, {"student": lm, "control": lm2}, prompt_set)`` lands here (the dispatch in
:func:`kdaudit._audit.audit` sends a :class:`~kdaudit.data.PromptSet` or a
:class:`~kdaudit.models.LanguageModel` teacher to :func:`audit_lm`). It returns the usual
:class:`~kdaudit.AuditResult` (``results.json`` byte-reproducible, ``to_frame``, ``save``, the policy's verdict).

What runs on what
    ``data`` is one :class:`PromptSet` or a list of them: a set **without** choices gives texts (``prompt +
    reference`` when it has references, else the prompt) that every model scores teacher-forced (per-token
    sections) and prompts every model continues greedily (generation section); a set **with** choices is a
    multiple-choice task scored by log-likelihood (task section). At most one of each.

Sections (each ``available`` or not, with the reason)
    ``lm_tokens``: per-token agreement (divergence lower bounds on the revealed top-k partition, top-1 agreement,
    top-k overlap), next-token accuracy and perplexity of each model and their ratios, next-token calibration;
    needs log-probabilities from both models *and the same tokenizer* (else unavailable: positions do not
    correspond, and the report says only text-level comparisons were possible).
    ``lm_generation``: exact match, ROUGE-L and chrF of greedy continuations, and the teacher's log-likelihood of
    the student's continuations against its own (text only from the student suffices).
    ``lm_task``: the multiple-choice task as a classification problem whose class probabilities are the softmax
    of the choices' log-likelihoods: the classifier families' agreement (accuracy, retained accuracy, McNemar),
    calibration (ECE of the answer probabilities) and error fingerprints (inherited, new, fixed errors, shared
    wrong answers against chance), with the same definitions and intervals as for classifiers.
    ``lm_bias``: per prompt-level group column, token-level group accuracy and agreement with their disparities
    and amplification, and the task's bias-transfer section (classifier family) on the same columns.
    ``cost``: parameter and size ratios (exact); measured scoring speed goes to ``run_info`` (it varies by run).

The prompt (text) is the resampling unit of every interval.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from kdaudit._result import (
    SCHEMA,
    AuditResult,
    _command_line,
    _judge,
    _make_bootstrap,
    _progress,
    _ratio,
    _student_items,
)
from kdaudit._exceptions import invalid_argument
from kdaudit._io import to_jsonable

__all__ = ["LM_SECTIONS", "LMAuditResult", "audit_lm"]

#: Sections of a language-model audit, in results.json order.
LM_SECTIONS = ("lm_tokens", "lm_generation", "lm_task", "lm_bias", "cost")
_SPEED_ROUNDS = 5


@dataclass(frozen=True, eq=False)
class LMAuditResult(AuditResult):
    """An :class:`~kdaudit.AuditResult` of a language-model audit (its sections are :data:`LM_SECTIONS`)."""

    section_names: ClassVar[tuple[str, ...]] = LM_SECTIONS

    @property
    def teacher(self) -> str:
        return str(self.results["teacher"])
    # to_frame: AuditResult's, from each section's rows (lm_bias's per-group ``by_group`` numbers included)


# ---------------------------------------------------------------------------------------------------- inputs
def _split_prompt_sets(data: Any) -> tuple[Any, Any]:
    """(the set of texts and prompts, the multiple-choice set); either may be None, not both."""
    from kdaudit.data._prompts import PromptSet

    sets = list(data) if isinstance(data, (list, tuple)) else [data]
    if not sets or not all(isinstance(s, PromptSet) for s in sets):
        raise invalid_argument("data", type(data).__name__, "a PromptSet or a list of PromptSets")
    texts = [s for s in sets if s.choices is None]
    choice = [s for s in sets if s.choices is not None]
    if len(texts) > 1 or len(choice) > 1:
        raise invalid_argument("data", f"{len(texts)} text sets and {len(choice)} multiple-choice sets",
                               "at most one prompt set without choices and one with choices")
    return (texts[0] if texts else None), (choice[0] if choice else None)


def _as_lms(teacher: Any, students: Any) -> tuple[Any, list[Any]]:
    from kdaudit.models._lm_base import LanguageModel

    if not isinstance(teacher, LanguageModel):
        raise invalid_argument("teacher", type(teacher).__name__, "a kdaudit LanguageModel (e.g. HFCausalLM)")
    items = _student_items(students, accepted="a language model")
    out = []
    for name, s in items:
        if not isinstance(s, LanguageModel):
            raise invalid_argument("students", type(s).__name__, "kdaudit LanguageModels (e.g. HFCausalLM)")
        if name is not None and s.name != name:
            s.name = name
        out.append(s)
    names = [teacher.name] + [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise invalid_argument("students", f"the name {dup[0]!r} used twice",
                               "distinct model names (pass a dict name -> model)")
    return teacher, out


def _has_logprobs(m: Any) -> bool:
    return str(getattr(m, "access", "logprobs")) == "logprobs"


def scored_texts(ps: Any) -> list[str]:
    """The texts a prompt set's models score teacher-forced (:meth:`PromptSet.scored_texts`)."""
    return ps.scored_texts()


# ---------------------------------------------------------------------------------------------- model outputs
@dataclass
class _LMOutputs:
    tokens: Any = None  # TokenTopK on the scored texts
    reference: Any = None  # (loglik, n_tokens) of each reference continuation given its prompt
    generations: Any = None  # Generations of the prompts
    loglik_of_gen: Any = None  # (loglik, n_tokens) the teacher gives this model's continuations
    choices: Any = None  # (n, max_choices) log-likelihood per choice


def _collect(models: list[Any], teacher: Any, text_set: Any, choice_set: Any, *, top_k: int, max_new_tokens: int,
             length_normalize: str, seed: int, progress: bool, cache_dir: Any) -> dict[str, _LMOutputs]:
    """Every model's outputs through the sequence harness (identical order; chunks cached with ``cache_dir``)."""
    from kdaudit.data._prompts import PromptSet
    from kdaudit.harness import generate_all, score_all
    from kdaudit.metrics._sequence import choice_loglik, continuation_loglik

    def score(m: Any, texts: Any, k: int = 1) -> Any:
        ps = texts if isinstance(texts, PromptSet) else PromptSet(prompts=texts[1], ids=texts[0], name=texts[2])
        return score_all([m], ps, top_k=k, cache_dir=cache_dir, progress=progress)[m.name]

    out = {m.name: _LMOutputs() for m in models}
    if text_set is not None:
        ids = text_set.ids
        scored = (ids, scored_texts(text_set), f"{text_set.name}: prompt + reference")
        prefix: dict[str, Any] = {}  # scores of the prompts alone (the base of continuation log-likelihoods)
        for m in models:
            if _has_logprobs(m):
                k = min(top_k, m.max_top_k)
                _progress(progress, f"scoring {len(text_set)} texts with {m.name} (top {k})")
                out[m.name].tokens = score(m, scored, k)
                if text_set.references is not None or m is teacher:
                    prefix[m.name] = score(m, text_set)
                if text_set.references is not None:
                    out[m.name].reference = continuation_loglik(out[m.name].tokens, prefix[m.name])
        _progress(progress, f"generating {len(text_set)} continuations with {len(models)} models")
        gens = generate_all(models, text_set, max_new_tokens=max_new_tokens, do_sample=False, seed=seed,
                            cache_dir=cache_dir, progress=progress)
        for m in models:
            out[m.name].generations = gens[m.name]
        if _has_logprobs(teacher):
            for m in models:
                texts = [p + g for p, g in zip(text_set.prompts, gens[m.name].texts)]
                full = score(teacher, (ids, texts, f"{text_set.name}: prompt + {m.name}'s continuation"))
                out[m.name].loglik_of_gen = continuation_loglik(full, prefix[teacher.name])
    if choice_set is not None:
        width = max(len(c) for c in choice_set.choices)
        for m in models:
            if not _has_logprobs(m):
                continue
            _progress(progress, f"scoring {len(choice_set)} x {width} choices with {m.name}")
            base = score(m, choice_set)
            per_choice = []
            for j in range(width):
                texts = [p + (c[j] if j < len(c) else "") for p, c in zip(choice_set.prompts, choice_set.choices)]
                per_choice.append(continuation_loglik(score(m, (choice_set.ids, texts, f"{choice_set.name}: "
                                                                                       f"choice {j + 1}")), base))
            out[m.name].choices = choice_loglik(per_choice, choice_set.choices, length_normalize=length_normalize)
    return out


def _choice_outputs(name: str, loglik: np.ndarray) -> Any:
    """The multiple-choice answers as classifier outputs: softmax of the choices' log-likelihoods."""
    from kdaudit.harness._outputs import ModelOutputs

    z = loglik - loglik.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return ModelOutputs(name=name, probs=p.astype(np.float32), labels=loglik.argmax(axis=1))


# ---------------------------------------------------------------------------------------------------- sections
def _unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason, "headline": {}}


def _merge_task(parts: Mapping[str, Any]) -> dict[str, Any]:
    """One ``lm_task`` section from the classifier families' results (their headline keys are distinct)."""
    headline: dict[str, Any] = {}
    out: dict[str, Any] = {"available": True, "reason": None}
    for family, res in parts.items():
        d = to_jsonable(res)
        if d.get("available"):
            headline.update(d.get("headline") or {})
        out[family] = {k: v for k, v in d.items() if k != "headline"}
    out["headline"] = headline
    return out


def _sections_for(teacher: Any, student: Any, outs: Mapping[str, _LMOutputs], text_set: Any, choice_set: Any,
                  chosen: Sequence[str], boot: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    from kdaudit.metrics import agreement_section, calibration_section, fingerprint_section
    from kdaudit.metrics._sequence import check_token_pair, generation_section, token_section

    t, s = outs[teacher.name], outs[student.name]
    comp: dict[str, Any] = {"student": student.name}
    why_tokens = None
    if text_set is None:
        why_tokens = "no prompt set of texts was given"
    elif t.tokens is None or s.tokens is None:
        who = teacher.name if t.tokens is None else student.name
        why_tokens = f"{who!r} reveals generated text only (no log-probabilities)"
    else:
        why_tokens = check_token_pair(t.tokens, s.tokens)
    possible = {
        "per_token": why_tokens is None,
        "per_token_reason": why_tokens,
        "text_level": text_set is not None,
        "teacher_loglik": t.loglik_of_gen is not None,
        "multiple_choice": choice_set is not None and t.choices is not None and s.choices is not None,
    }
    comp["comparisons_possible"] = possible  # moved to results["comparisons_possible"] by audit_lm
    if "lm_tokens" in chosen:
        comp["lm_tokens"] = _unavailable(why_tokens) if why_tokens else to_jsonable(
            token_section(t.tokens, s.tokens, bootstrap=boot,
                          reference=None if t.reference is None else (t.reference, s.reference)))
    if "lm_generation" in chosen:
        if text_set is None:
            comp["lm_generation"] = _unavailable("no prompt set of texts was given")
        else:
            ll = (s.loglik_of_gen, t.loglik_of_gen) if t.loglik_of_gen is not None else (None, None)
            comp["lm_generation"] = to_jsonable(generation_section(
                t.generations, s.generations, bootstrap=boot, teacher_loglik_student=ll[0],
                teacher_loglik_teacher=ll[1]))
    task_out = None
    if possible["multiple_choice"]:
        task_out = (_choice_outputs(teacher.name, t.choices), _choice_outputs(student.name, s.choices))
    if "lm_task" in chosen:
        if choice_set is None:
            comp["lm_task"] = _unavailable("no multiple-choice prompt set was given")
        elif task_out is None:
            comp["lm_task"] = _unavailable("multiple choice is scored by log-likelihood; a model reveals text only")
        else:
            y, ids = choice_set.answers, np.asarray(choice_set.ids)
            parts = {
                "agreement": agreement_section(y, *task_out, ids=ids, bootstrap=boot),
                "calibration": calibration_section(y, *task_out, ids=ids, bootstrap=boot),
                "fingerprint": fingerprint_section(y, *task_out, ids=ids, bootstrap=boot),
            }
            comp["lm_task"] = _merge_task(parts)
            comp["lm_task"]["length_normalize"] = options["length_normalize"]
    if "lm_bias" in chosen:
        comp["lm_bias"] = _bias(t, s, text_set, choice_set, task_out, why_tokens, boot, options)
    return comp


def _bias(t: _LMOutputs, s: _LMOutputs, text_set: Any, choice_set: Any, task_out: Any, why_tokens: str | None,
          boot: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    from kdaudit.metrics import bias_section
    from kdaudit.metrics._sequence import token_group_section

    reasons = []
    sec: dict[str, Any] = {"available": False, "reason": None, "headline": {}}
    if text_set is not None and text_set.groups is not None and why_tokens is None:
        tok = to_jsonable(token_group_section(t.tokens, s.tokens, text_set.groups, bootstrap=boot,
                                              min_group_size=options["min_group_size"]))
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
        task = to_jsonable(bias_section(choice_set.answers, *task_out, ids=np.asarray(choice_set.ids),
                                        sensitive=choice_set.groups, bootstrap=boot,
                                        min_group_size=options["min_group_size"]))
        sec["task"] = task
        if task.get("available"):
            sec["available"] = True
            for key in ("worst_group_agreement", "max_group_accuracy_drop"):
                if key in (task.get("headline") or {}):
                    sec["headline"][f"task_{key}"] = task["headline"][key]
    elif choice_set is not None:
        reasons.append("task: " + ("the task has no group columns" if choice_set.groups is None
                                   else "a model reveals text only"))
    sec["reason"] = "; ".join(reasons) or None
    if not sec["available"] and not sec["reason"]:
        sec["reason"] = "no prompt-level group columns"
    return sec


def _definitions(chosen: Sequence[str]) -> dict[str, Any]:
    from kdaudit._result import COST_DEFINITIONS
    from kdaudit.metrics import DEFINITIONS_BY_SECTION
    from kdaudit.metrics._sequence import GENERATION_DEFINITIONS, TOKEN_DEFINITIONS, TOKEN_GROUP_DEFINITIONS

    out: dict[str, Any] = {}
    tables: dict[str, list[Mapping[str, Any]]] = {
        "lm_tokens": [TOKEN_DEFINITIONS], "lm_generation": [GENERATION_DEFINITIONS],
        "lm_task": [DEFINITIONS_BY_SECTION[f] for f in ("agreement", "calibration", "fingerprint")],
        "lm_bias": [TOKEN_GROUP_DEFINITIONS],
    }
    for section in chosen:
        for table in tables.get(section, []):
            for key, d in table.items():
                # the classifier families' labels, said to be about the multiple-choice task
                out[f"{section}.{key}"] = dict(d, label=f"{d['label']} (task)") if section == "lm_task" else dict(d)
    if "lm_bias" in chosen:
        for key in ("worst_group_agreement", "max_group_accuracy_drop"):
            d = DEFINITIONS_BY_SECTION["bias"].get(key)
            if d is not None:
                out[f"lm_bias.task_{key}"] = dict(d, label="Task: " + d["label"])
    if "cost" in chosen:
        out.update(COST_DEFINITIONS)
    return out


def _resolve_sections(sections: Any) -> tuple[str, ...]:
    if sections is None:
        return LM_SECTIONS
    sections = (sections,) if isinstance(sections, str) else tuple(sections)
    for s in sections:
        if s not in LM_SECTIONS:
            raise invalid_argument("sections", s, f"language-model sections among {', '.join(LM_SECTIONS)}")
    return tuple(s for s in LM_SECTIONS if s in sections)


def _measure_speed(models: list[Any], texts: list[str], ids: list[Any], top_k: int, *, batch: int = 8,
                   rounds: int = _SPEED_ROUNDS) -> dict[str, dict[str, Any]]:
    """Each model's scoring time per batch of ``batch`` texts, over interleaved rounds (a burst of load on a
    shared machine hits every model alike), and its tokens scored per second (median over batches)."""
    ms: dict[str, list[float]] = {m.name: [] for m in models}
    tokens: dict[str, list[int]] = {m.name: [] for m in models}
    for _ in range(rounds):
        for m in models:
            for a in range(0, len(texts), batch):
                t0 = time.perf_counter()
                res = m.score(texts[a:a + batch], ids[a:a + batch], top_k=min(top_k, m.max_top_k))
                ms[m.name].append(1000 * (time.perf_counter() - t0))
                tokens[m.name].append(int(res.n_positions))
    out = {}
    for name in ms:
        rate = [1000 * n / max(t, 1e-9) for n, t in zip(tokens[name], ms[name])]
        out[name] = {"batch_ms": ms[name], "throughput_tokens_per_s": statistics.median(rate),
                     "batch_texts": batch, "rounds": rounds}
    return out


# --------------------------------------------------------------------------------------------------------- audit
def audit_lm(teacher: Any, students: Any, data: Any, *, sections: Sequence[str] | None = None, bootstrap: Any = None,
             n_replicates: int | None = None, policy: Any = None, seed: int = 0, top_k: int = 20,
             max_new_tokens: int = 32, length_normalize: str = "none", min_group_size: int = 20,
             progress: bool = True, measure_cost: bool = True, config: Mapping[str, Any] | None = None,
             roles: Mapping[str, str] | None = None, cache_dir: str | os.PathLike[str] | None = None
             ) -> LMAuditResult:
    """Audit distilled language models against their teacher (see the module docstring for what runs on what).

    Parameters
    ----------
    teacher : LanguageModel
    students : LanguageModel, list, or dict name -> LanguageModel
        Students and controls (a control is audited like a student; name it so).
    data : PromptSet or list of PromptSet
        At most one set of texts/prompts and one multiple-choice set.
    sections : sequence of str, optional
        Among :data:`LM_SECTIONS` (default all).
    bootstrap, n_replicates, seed
        Interval settings, as for classifier audits; the prompt is the resampling unit.
    policy : path, mapping, Policy or None
        None: :data:`kdaudit.policy.DEFAULT_LM_POLICY`, restricted to the sections run.
    top_k : int
        Log-probabilities kept per position (at most 20, and at most what each model reveals).
    max_new_tokens : int
        Length of the greedy continuations.
    length_normalize : {"none", "chars"}
        Multiple-choice scoring: the sum of the choice's token log-probabilities (lm-evaluation-harness ``acc``),
        or that sum divided by the choice's length in characters (``acc_norm``).
    min_group_size : int
        Groups with fewer prompts are shown but left out of disparities.
    progress, measure_cost, config
        As for classifier audits; measured speed goes to ``run_info`` only.
    cache_dir : path, optional
        The sequence harness stores every model's outputs here in chunks; a rerun or a resumed run asks no model
        again for what it has (:func:`kdaudit.harness.score_all`).
    roles : mapping, optional
        ``name -> "student" | "control"``: a control (trained without the teacher) is reported beside the students
        but not judged by the policy, as in classifier audits.

    Returns
    -------
    LMAuditResult
    """
    from kdaudit._result import _roles
    from kdaudit._version import __version__
    from kdaudit.harness._run import library_versions
    from kdaudit.policy import DEFAULT_LM_POLICY, Policy, load_policy

    t_start = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise invalid_argument("seed", seed, "an integer >= 0")
    for name, v, lo, hi in (("top_k", top_k, 1, 20), ("max_new_tokens", max_new_tokens, 1, 1 << 16),
                            ("min_group_size", min_group_size, 1, 1 << 30)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
            raise invalid_argument(name, v, f"an integer in [{lo}, {hi}]")
    if length_normalize not in ("none", "chars"):
        raise invalid_argument("length_normalize", length_normalize, "'none' or 'chars'")
    text_set, choice_set = _split_prompt_sets(data)
    teacher_m, student_ms = _as_lms(teacher, students)
    role_of = _roles(roles, [s.name for s in student_ms])
    chosen = _resolve_sections(sections)
    boot = _make_bootstrap(bootstrap, n_replicates, seed)
    pol = load_policy(DEFAULT_LM_POLICY if policy is None else policy)
    if policy is None:
        pol = Policy(rules=tuple(r for r in pol.rules if r.section in chosen), name=pol.name,
                     description=pol.description)
    options = {"top_k": int(top_k), "max_new_tokens": int(max_new_tokens), "length_normalize": length_normalize,
               "min_group_size": int(min_group_size)}
    models = [teacher_m, *student_ms]
    # what this audit asked of each model (adapters count over their lifetime; the speed rounds are not counted)
    counts0 = {m.name: (int(m.query_count), int(m.token_count)) for m in models}
    t0 = time.perf_counter()
    outs = _collect(models, teacher_m, text_set, choice_set, top_k=top_k, max_new_tokens=max_new_tokens,
                    length_normalize=length_normalize, seed=seed, progress=progress, cache_dir=cache_dir)
    timings: dict[str, Any] = {"models_s": time.perf_counter() - t0, "sections_s": {}}
    asked = {m.name: (int(m.query_count) - counts0[m.name][0], int(m.token_count) - counts0[m.name][1])
             for m in models}

    comparisons = []
    possible: dict[str, Any] = {}
    for student in student_ms:
        _progress(progress, f"sections: {teacher_m.name} vs {student.name}")
        t0 = time.perf_counter()
        comp = _sections_for(teacher_m, student, outs, text_set, choice_set, chosen, boot, options)
        comp["role"] = role_of[student.name]
        possible[student.name] = comp.pop("comparisons_possible")
        timings["sections_s"][student.name] = time.perf_counter() - t0
        comparisons.append(comp)

    cost_models: dict[str, Any] = {}
    run_speed: dict[str, Any] = {}
    if "cost" in chosen:
        for m in models:
            cost_models[m.name] = {"n_parameters": m.n_parameters(), "size_bytes": m.size_bytes()}
        for comp in comparisons:
            t_c, s_c = cost_models[teacher_m.name], cost_models[comp["student"]]
            comp["cost"] = to_jsonable({"available": True, "reason": None, "headline": {
                "parameter_ratio": _ratio(s_c["n_parameters"], t_c["n_parameters"]),
                "size_ratio": _ratio(s_c["size_bytes"], t_c["size_bytes"])}, "teacher": t_c, "student": s_c})
        if measure_cost and text_set is not None and all(_has_logprobs(m) for m in models):
            from kdaudit.harness._cost import speed_ratio

            n = min(len(text_set), 64)
            _progress(progress, f"cost: timing {len(models)} models, {_SPEED_ROUNDS} interleaved rounds")
            run_speed = _measure_speed(models, scored_texts(text_set)[:n], list(text_set.ids[:n]), top_k)
            for c in comparisons:
                run_speed[c["student"]]["throughput_ratio"] = speed_ratio(
                    run_speed[teacher_m.name]["batch_ms"], run_speed[c["student"]]["batch_ms"], seed=seed)

    data_desc = []
    for role, ps in (("texts", text_set), ("multiple_choice", choice_set)):
        if ps is not None:
            data_desc.append({"role": role, "name": ps.name, "source": ps.source, "n_prompts": len(ps),
                              "sha256": ps.sha256(), "references": ps.references is not None,
                              "choices": ps.choices is not None,
                              "groups": [] if ps.groups is None else [str(c) for c in ps.groups.columns]})
    models_desc = [dict(to_jsonable(teacher_m.describe()), role="teacher")]
    models_desc += [dict(to_jsonable(s.describe()), role=role_of[s.name]) for s in student_ms]
    settings = {
        "sections": list(chosen), "seed": seed,
        "bootstrap": {"n_replicates": boot.n_replicates, "seed": boot.seed, "level": boot.level,
                      "n_blocks": boot.n_blocks, "method": boot.method, "unit": "prompt"},
        **options,
    }
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "kdaudit_version": __version__,
        "task": "lm",
        "data": {"name": " + ".join(d["name"] for d in data_desc), "n_rows": sum(d["n_prompts"] for d in data_desc),
                 "prompt_sets": data_desc},
        "models": models_desc,
        "teacher": teacher_m.name,
        "comparisons": comparisons,
        "comparisons_possible": possible,
        "cost": {"models": to_jsonable(cost_models)} if "cost" in chosen else {},
        "provenance": {"data_sha256": {d["role"]: d["sha256"] for d in data_desc},
                       "models": {m["name"]: m["sha256"] for m in models_desc},
                       "versions": library_versions(), "seed": seed},
        "settings": settings,
        "config": to_jsonable(dict(config)) if config is not None else None,
        "definitions": to_jsonable(_definitions(chosen)),
        "policy": pol.to_dict(),
        # the share of the teacher's quality kept that the report's scorecard quotes: the task's retained accuracy
        # when there is a task with right answers, else the retained next-token accuracy
        "scorecard": {"quality": ["lm_task.retained_accuracy", "lm_tokens.retained_next_token_accuracy"]},
    }
    results, findings = _judge(results, pol)
    verdict = results["verdict"]
    timings["total_s"] = time.perf_counter() - t_start
    run_info = {
        "generated_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": " ".join(_command_line()),
        "host": {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()},
        "wall_time_s": to_jsonable(timings),
        # measured scoring speed (varies by run; the report's scorecard reads the throughput ratio from here)
        "cost": to_jsonable(run_speed),
        "cost_conditions": {"task": "teacher-forced scoring", "unit": "tokens", "torch_threads": _threads()},
        # what this audit asked of each model: 0 for what the cache already held, so it lives here, not in
        # results.json (which a cached rerun must reproduce byte for byte)
        "models": [{"name": m.name, "queries": asked[m.name][0], "tokens": asked[m.name][1]} for m in models],
    }
    _progress(progress, f"verdict {verdict.upper()} in {timings['total_s']:.1f} s")
    sections_by_student = {c["student"]: {k: v for k, v in c.items() if k in LM_SECTIONS} for c in
                           results["comparisons"]}
    return LMAuditResult(results=results, verdict=verdict, findings=findings, sections=sections_by_student,
                         run_info=run_info, outputs=outs)



_LM_OPTIONS = {"lm_tokens": ("top_k",), "lm_generation": ("max_new_tokens",), "lm_task": ("length_normalize",),
               "lm_bias": ("min_group_size",)}


def dispatch_lm(teacher: Any, students: Any, data: Any, *, section_options: Mapping[str, Any] | None,
                unsupported: Mapping[str, Any], **kwargs: Any) -> LMAuditResult | None:
    """The audit of language models when ``data`` is a PromptSet (or a list of them) or ``teacher`` a
    LanguageModel; None otherwise (a classifier audit). ``section_options`` carry the LM options:
    ``{"lm_tokens": {"top_k": 20}, "lm_generation": {"max_new_tokens": 32}, "lm_task": {"length_normalize":
    "none"}, "lm_bias": {"min_group_size": 20}}``."""
    from kdaudit.data._prompts import PromptSet
    from kdaudit.models._lm_base import LanguageModel

    is_ps = isinstance(data, PromptSet) or (isinstance(data, (list, tuple)) and len(data) > 0
                                             and all(isinstance(d, PromptSet) for d in data))
    if not (is_ps or isinstance(teacher, LanguageModel)):
        return None
    for name, value in unsupported.items():
        if value is not None:
            raise invalid_argument(name, "a value", "None in a language-model audit (the lineage of language "
                                                    "models is tested by kdaudit.lineage_test)")
    options: dict[str, Any] = {}
    for section, opts in (section_options or {}).items():
        if section not in _LM_OPTIONS:
            raise invalid_argument("section_options", section,
                                   f"language-model sections with options: {', '.join(_LM_OPTIONS)}")
        for key, value in dict(opts).items():
            if key not in _LM_OPTIONS[section]:
                raise invalid_argument(f"section_options[{section!r}]", key,
                                       f"one of {', '.join(_LM_OPTIONS[section])}")
            options[key] = value
    return audit_lm(teacher, students, data, **kwargs, **options)


def _threads() -> int | None:
    import sys

    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())
