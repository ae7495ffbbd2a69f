"""``kdaudit.audit`` for language models: a teacher LM, its students and controls, on prompt sets.

``kdaudit.audit(teacher_lm, {"student": lm, "control": lm2}, prompt_set)`` lands here (the dispatch in
:func:`kdaudit._audit.audit` sends a :class:`~kdaudit.data.PromptSet` or a
:class:`~kdaudit.models.LanguageModel` teacher to :func:`audit_lm`). It returns the usual
:class:`~kdaudit.AuditResult` (``results.json`` byte-reproducible, ``to_frame``, ``save``, the policy's verdict).

What runs on what
    ``data`` is one :class:`PromptSet` or a list of them: a set **without** choices gives texts (``prompt +
    reference`` when it has references, else the prompt) that every model scores teacher-forced (per-token
    sections) and prompts every model continues (greedily by default; generation section); a set **with** choices is a
    multiple-choice task scored by log-likelihood (task section). At most one of each.

Sections (each ``available`` or not, with the reason)
    The registry's sections (:mod:`kdaudit.sections._lm`: ``lm_tokens``, ``lm_generation``, ``lm_task``,
    ``lm_bias``; then ``cost``, computed from the models by its ``compute_models`` through the classifier
    audit's one loop, :func:`kdaudit._result._model_sections`), selected, their options checked and their skips
    decided exactly as in a classifier audit: ``section_options`` by each section's one schema, and the one skip
    rule on what each needs (per-token top-k log-probabilities or generated text from both models; a prompt set of
    texts or a multiple-choice set). ``lm_tokens`` also needs one tokenizer (else unavailable, and the report says
    only text-level comparisons were possible). A text-only model gets ``lm_generation`` (and ``cost``). Any other
    registered section may be named; one the models cannot feed is reported unavailable with the rule's reason.
    ``cost``: parameter and size ratios (exact); measured scoring speed goes to ``run_info`` (it varies by run).

The prompt (text) is the resampling unit of every interval.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence


from kdaudit._result import (
    SCHEMA,
    AuditResult,
    _command_line,
    _judge,
    _make_bootstrap,
    _model_sections,
    _progress,
    _renamed,
    _student_items,
    _unavailable,
)
from kdaudit._exceptions import invalid_argument
from kdaudit._io import to_jsonable
from kdaudit._kinds import OutputKind
from kdaudit.sections._lm import LMOutputs, lm_kind

__all__ = ["LMAuditResult", "audit_lm"]

#: the output kinds language models give (a section that consumes one of them can run in a language-model audit)
_LM_KINDS = frozenset({OutputKind.TOKEN_TOP_K, OutputKind.TEXT})
#: the options results.json's ``settings`` holds by name, defaults included (as it always has); any other option
#: given goes to ``settings.section_options``, as in a classifier audit
_SETTINGS_OPTIONS = {"lm_tokens": ("top_k",), "lm_generation": ("max_new_tokens",), "lm_task": ("length_normalize",),
                     "lm_bias": ("min_group_size",)}


@dataclass(frozen=True, eq=False)
class LMAuditResult(AuditResult):
    """An :class:`~kdaudit.AuditResult` of a language-model audit (its sections are the registry's, in its order;
    ``to_frame`` reads each section's tidy rows, lm_bias's per-group numbers included)."""

    @property
    def teacher(self) -> str:
        return str(self.results["teacher"])


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
        out.append(_renamed(s, name))
    names = [teacher.name] + [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise invalid_argument("students", f"the name {dup[0]!r} used twice",
                               "distinct model names (pass a dict name -> model)")
    return teacher, out


def _apply_device_precision(teacher: Any, students: list[Any], *, device: Any, precision: str | None
                            ) -> tuple[Any, list[Any], dict[str, Any] | None]:
    """The audit's one device and precision applied to every model that runs here (each on a copy when it
    changes: the caller's adapters and weights stay as they were); (teacher, students, what results.json's
    settings record: None for the defaults, whose results.json stays as it always was)."""
    from kdaudit.models._torch import normalize_precision

    if precision is not None:
        normalize_precision(precision)  # a bad value is named before any model is touched
    if device is not None and not isinstance(device, str):
        raise invalid_argument("device", device, '"cpu", "cuda", "cuda:N", "auto" or None')
    placed, not_applied = [], []
    for m in (teacher, *students):
        c = m.configured(device=device, precision=precision)
        if c is None:
            not_applied.append({"name": m.name, "kind": m.kind})
        placed.append(m if c is None else c)
    record = None
    if device != "cpu" or precision is not None:
        record = {"device": device, "precision": None if precision is None else normalize_precision(precision),
                  # endpoints and precomputed outputs run (or ran) elsewhere, at their own settings
                  "not_applied": not_applied}
    return placed[0], placed[1:], record


def scored_texts(ps: Any) -> list[str]:
    """The texts a prompt set's models score teacher-forced (:meth:`PromptSet.scored_texts`)."""
    return ps.scored_texts()


# ---------------------------------------------------------------------------------------------- model outputs
def _collect(models: list[Any], teacher: Any, text_set: Any, choice_set: Any, *, top_k: int, max_new_tokens: int,
             do_sample: bool, temperature: float, length_normalize: str, seed: int, progress: bool,
             cache_dir: Any) -> dict[str, LMOutputs]:
    """Every model's outputs through the sequence harness (identical order; chunks cached with ``cache_dir``)."""
    from kdaudit.data._prompts import PromptSet
    from kdaudit.harness import generate_all, score_all
    from kdaudit.metrics._sequence import choice_loglik, continuation_loglik

    def score(m: Any, texts: Any, k: int = 1) -> Any:
        ps = texts if isinstance(texts, PromptSet) else PromptSet(prompts=texts[1], ids=texts[0], name=texts[2])
        return score_all([m], ps, top_k=k, cache_dir=cache_dir, progress=progress)[m.name]

    out = {m.name: LMOutputs() for m in models}
    if text_set is not None:
        ids = text_set.ids
        scored = (ids, scored_texts(text_set), f"{text_set.name}: prompt + reference")
        prefix: dict[str, Any] = {}  # scores of the prompts alone (the base of continuation log-likelihoods)
        for m in models:
            if lm_kind(m) == OutputKind.TOKEN_TOP_K:
                k = min(top_k, m.max_top_k)
                _progress(progress, f"scoring {len(text_set)} texts with {m.name} (top {k})")
                out[m.name].tokens = score(m, scored, k)
                if text_set.references is not None or m is teacher:
                    prefix[m.name] = score(m, text_set)
                if text_set.references is not None:
                    out[m.name].reference = continuation_loglik(out[m.name].tokens, prefix[m.name])
        how = f"sampled at temperature {temperature:g}" if do_sample else "greedy"
        _progress(progress, f"generating {len(text_set)} continuations ({how}) with {len(models)} models")
        gens = generate_all(models, text_set, max_new_tokens=max_new_tokens, do_sample=do_sample,
                            temperature=temperature, seed=seed, cache_dir=cache_dir, progress=progress)
        for m in models:
            out[m.name].generations = gens[m.name]
        if lm_kind(teacher) == OutputKind.TOKEN_TOP_K:
            for m in models:
                texts = [p + g for p, g in zip(text_set.prompts, gens[m.name].texts)]
                full = score(teacher, (ids, texts, f"{text_set.name}: prompt + {m.name}'s continuation"))
                out[m.name].loglik_of_gen = continuation_loglik(full, prefix[teacher.name])
    if choice_set is not None:
        width = max(len(c) for c in choice_set.choices)
        for m in models:
            if not lm_kind(m) == OutputKind.TOKEN_TOP_K:
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


def _resolve_sections(sections: Any, reg: Mapping[str, Any]) -> tuple[str, ...]:
    """The sections to run, in results order: by default every default section that consumes a language model's
    output kinds; any registered section when named (one the models cannot feed is reported unavailable, with the
    skip rule's reason, as a language-model section asked of classifiers is)."""
    from kdaudit.sections import get_section

    if sections is None:
        return tuple(n for n, s in reg.items() if s.default and s.needs.kinds & _LM_KINDS)
    sections = (sections,) if isinstance(sections, str) else tuple(sections)
    for name in sections:
        if get_section(name, reg).needs.references:
            raise invalid_argument("sections", name, "sections without reference models in a language-model audit "
                                                     "(the lineage of language models is tested by "
                                                     "kdaudit.lineage_test)")
    return tuple(n for n in reg if n in sections)


def _pair_inputs(teacher: Any, student: Any, text_set: Any, choice_set: Any) -> Any:
    """What the one skip rule judges for a language-model pair: each model's output kind, the prompt sets given."""
    from kdaudit.sections import SectionInputs

    parts = frozenset(({"texts"} if text_set is not None else set()) |
                      ({"choices"} if choice_set is not None else set()))
    return SectionInputs(kinds=(lm_kind(teacher), lm_kind(student)), access=(None, None),
                         has_labels=choice_set is not None,
                         has_sensitive=any(ps is not None and ps.groups is not None for ps in (text_set, choice_set)),
                         names=(f"teacher {teacher.name!r}", f"student {student.name!r}"), data=parts)


# --------------------------------------------------------------------------------------------------------- audit
def audit_lm(teacher: Any, students: Any, data: Any, *, sections: Sequence[str] | None = None,
             section_options: Mapping[str, Mapping[str, Any]] | None = None, bootstrap: Any = None,
             n_replicates: int | None = None, policy: Any = None, seed: int = 0, progress: bool = True,
             measure_cost: bool = True, config: Mapping[str, Any] | None = None,
             roles: Mapping[str, str] | None = None, cache_dir: str | os.PathLike[str] | None = None,
             device: Any = "cpu", precision: str | None = None) -> LMAuditResult:
    """Audit distilled language models against their teacher (see the module docstring for what runs on what).

    Parameters
    ----------
    teacher : LanguageModel
    students : LanguageModel, list, or dict name -> LanguageModel
        Students and controls (a control is audited like a student; name it so).
    data : PromptSet or list of PromptSet
        At most one set of texts/prompts and one multiple-choice set.
    sections : sequence of str, optional
        Section names of the registry (default: every default section that consumes language models' outputs:
        ``lm_tokens, lm_generation, lm_task, lm_bias, cost``, and a plugin's that opts in).
    section_options : mapping, optional
        ``section -> {option: value}``, checked by each section's schema (:mod:`kdaudit.sections._lm`):
        ``lm_tokens.top_k`` (log-probabilities kept per position, at most 20 and at most what each model reveals),
        ``lm_generation.max_new_tokens`` (length of the continuations), ``lm_generation.do_sample`` and
        ``temperature`` (sampled continuations, one seeded stream per prompt; default greedy),
        ``lm_task.length_normalize``
        (``"none"``: the sum of a choice's token log-probabilities, lm-evaluation-harness ``acc``; ``"chars"``:
        that sum per character, ``acc_norm``), ``lm_bias.min_group_size`` (groups with fewer prompts are shown
        but left out of disparities).
    bootstrap, n_replicates, seed
        Interval settings, as for classifier audits; the prompt is the resampling unit.
    policy : path, mapping, Policy or None
        None: :data:`kdaudit.policy.DEFAULT_LM_POLICY`, restricted to the sections run.
    progress, measure_cost, config
        As for classifier audits; measured speed goes to ``run_info`` only.
    cache_dir : path, optional
        The sequence harness stores every model's outputs here in chunks; a rerun or a resumed run asks no model
        again for what it has (:func:`kdaudit.harness.score_all`).
    roles : mapping, optional
        ``name -> "student" | "control"``: a control (trained without the teacher) is reported beside the students
        but not judged by the policy, as in classifier audits.
    device, precision
        One policy for every model that runs in this process (teacher, students, controls): each is run at this
        device (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``; None keeps each model's own) and precision (None
        keeps each model's own, ``"fp32"``, ``"bf16"``, ``"fp16"``) on a converted copy when it differs, so the
        caller's objects are left as they were (:meth:`~kdaudit.models.LanguageModel.configured`). They cannot
        apply to an endpoint or to precomputed outputs; those models are named in ``settings.device_precision``
        (``not_applied``). Any value other than the defaults (``"cpu"``, None) is recorded in results.json's
        ``settings.device_precision``.

    Returns
    -------
    LMAuditResult
    """
    from kdaudit._result import _roles
    from kdaudit._version import __version__
    from kdaudit.harness._run import library_versions
    from kdaudit.policy import DEFAULT_LM_POLICY, Policy, load_policy
    from kdaudit.sections import check_section_options, definitions_of, registry
    from kdaudit.sections._lm import LM_BUILTIN_SECTIONS, LMPair, LMSection

    t_start = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise invalid_argument("seed", seed, "an integer >= 0")
    reg = registry()
    checked = check_section_options(section_options, reg)
    # every option of kdaudit's language-model sections, defaults filled: they shape what the models are asked
    options = {s.name: s.effective_options(checked.get(s.name)) for s in LM_BUILTIN_SECTIONS}
    text_set, choice_set = _split_prompt_sets(data)
    teacher_m, student_ms = _as_lms(teacher, students)
    role_of = _roles(roles, [s.name for s in student_ms])
    teacher_m, student_ms, placement = _apply_device_precision(teacher_m, student_ms, device=device,
                                                               precision=precision)
    chosen = _resolve_sections(sections, reg)
    boot = _make_bootstrap(bootstrap, n_replicates, seed)
    pol = load_policy(DEFAULT_LM_POLICY if policy is None else policy, sections=reg)
    if policy is None:
        pol = Policy(rules=tuple(r for r in pol.rules if r.section in chosen), name=pol.name,
                     description=pol.description)
    top_k = options["lm_tokens"]["top_k"]
    models = [teacher_m, *student_ms]
    # what this audit asked of each model (adapters count over their lifetime; the speed rounds are not counted)
    counts0 = {m.name: (int(m.query_count), int(m.token_count)) for m in models}
    t0 = time.perf_counter()
    outs = _collect(models, teacher_m, text_set, choice_set, top_k=top_k,
                    max_new_tokens=options["lm_generation"]["max_new_tokens"],
                    do_sample=options["lm_generation"]["do_sample"],
                    temperature=options["lm_generation"]["temperature"],
                    length_normalize=options["lm_task"]["length_normalize"], seed=seed, progress=progress,
                    cache_dir=cache_dir)
    timings: dict[str, Any] = {"models_s": time.perf_counter() - t0, "sections_s": {}}
    asked = {m.name: (int(m.query_count) - counts0[m.name][0], int(m.token_count) - counts0[m.name][1])
             for m in models}

    # the sections computed from the models themselves (cost; kdaudit's language-model sections, not streamed,
    # compute from the outputs collected above)
    model_sections = tuple(n for n in chosen if not reg[n].stream and not isinstance(reg[n], LMSection))
    comparisons = []
    possible: dict[str, Any] = {}
    for student in student_ms:
        _progress(progress, f"sections: {teacher_m.name} vs {student.name}")
        t0 = time.perf_counter()
        pair = LMPair(teacher=outs[teacher_m.name], student=outs[student.name], texts=text_set, choices=choice_set,
                      inputs=_pair_inputs(teacher_m, student, text_set, choice_set), bootstrap=boot,
                      names=(teacher_m.name, student.name))
        comp: dict[str, Any] = {"student": student.name, "role": role_of[student.name]}
        for name in chosen:
            section = reg[name]
            if name in model_sections:  # computed from the models below (cost), through the one loop
                continue
            why = section.skip_reason(pair.inputs)  # one rule for every section
            if why is not None:
                comp[name] = _unavailable(why)
            elif isinstance(section, LMSection):
                comp[name] = to_jsonable(section.compute_lm(pair, section.effective_options(checked.get(name))))
            else:
                comp[name] = _unavailable(f"the {name} section does not compute from language models' outputs")
        why_tokens = pair.token_reason()
        possible[student.name] = {
            "per_token": why_tokens is None,
            "per_token_reason": why_tokens,
            "text_level": text_set is not None,
            "teacher_loglik": pair.teacher.loglik_of_gen is not None,
            "multiple_choice": pair.task_outputs() is not None,
        }
        timings["sections_s"][student.name] = time.perf_counter() - t0
        comparisons.append(comp)

    # the sections computed from the models themselves (cost), through the classifier audit's one loop
    model_results, model_run_info = _model_sections(
        teacher_m, student_ms, text_set, inputs_of=lambda st: _pair_inputs(teacher_m, st, text_set, choice_set),
        chosen=model_sections, reg=reg, comparisons=comparisons, section_objs={st.name: {} for st in student_ms},
        timings=timings, boot=boot,
        # cost times teacher-forced scoring at the audit's top_k (lm_tokens' option; the cost section has none)
        section_options={n: dict(checked.get(n, {})) for n in model_sections} | {"cost": {"top_k": top_k}},
        lineage_options=None, seed=seed, batch_size=8, device=device,
        precision=precision, cache_dir=cache_dir, references=(), controls=(), probes=None, outputs=None,
        measure_cost=measure_cost, progress=progress)
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
        # the options the first language-model audits recorded here, by name, with their defaults filled in
        **{k: options[section][k] for section, keys in _SETTINGS_OPTIONS.items() for k in keys},
    }
    if placement is not None:  # a device or precision other than the defaults: what ran where
        settings["device_precision"] = placement
    other = {section: {k: v for k, v in opts.items() if k not in _SETTINGS_OPTIONS.get(section, ())}
             for section, opts in checked.items()}
    other = {section: opts for section, opts in other.items() if opts}
    if other:  # every other option given (sampling, a plugin's), as the classifier audit records them
        settings["section_options"] = to_jsonable(other)
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
        "cost": model_results.pop("cost", {}),  # the cost section's per-model table ({} without it)
        "provenance": {"data_sha256": {d["role"]: d["sha256"] for d in data_desc},
                       "models": {m["name"]: m["sha256"] for m in models_desc},
                       "versions": library_versions(), "seed": seed},
        "settings": settings,
        "config": to_jsonable(dict(config)) if config is not None else None,
        "definitions": to_jsonable(definitions_of(chosen, reg)),
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
        "cost": model_run_info.get("cost", {}),
        "cost_conditions": {"task": "teacher-forced scoring", "unit": "tokens", "torch_threads": _threads()},
        # what this audit asked of each model: 0 for what the cache already held, so it lives here, not in
        # results.json (which a cached rerun must reproduce byte for byte)
        "models": [{"name": m.name, "queries": asked[m.name][0], "tokens": asked[m.name][1]} for m in models],
    }
    _progress(progress, f"verdict {verdict.upper()} in {timings['total_s']:.1f} s")
    sections_by_student = {c["student"]: {k: v for k, v in c.items() if k in chosen} for c in
                           results["comparisons"]}
    return LMAuditResult(results=results, verdict=verdict, findings=findings, sections=sections_by_student,
                         run_info=run_info, outputs=outs)


def dispatch_lm(teacher: Any, students: Any, data: Any, *, unsupported: Mapping[str, Any], **kwargs: Any
                ) -> LMAuditResult | None:
    """The audit of language models when ``data`` is a PromptSet (or a list of them) or ``teacher`` a
    LanguageModel; None otherwise (a classifier audit). ``kwargs`` are :func:`audit_lm`'s (``section_options``
    carry the language-model sections' options, checked by the registry's one schema)."""
    from kdaudit.data._prompts import PromptSet
    from kdaudit.models._lm_base import LanguageModel

    is_ps = isinstance(data, PromptSet) or (isinstance(data, (list, tuple)) and len(data) > 0
                                             and all(isinstance(d, PromptSet) for d in data))
    if not (is_ps or isinstance(teacher, LanguageModel)):
        return None
    for name, value in unsupported.items():
        if value is not None:
            why = ("it runs in this process, on the sequence harness" if name in ("executor", "block_rows") else
                   "the lineage of language models is tested by kdaudit.lineage_test")
            raise invalid_argument(name, "a value", f"None in a language-model audit ({why})")
    return audit_lm(teacher, students, data, **kwargs)


def _threads() -> int | None:
    import sys

    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())
