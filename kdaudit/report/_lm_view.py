"""What a language-model report adds after its summary and scorecard: quality kept on the texts, which comparisons
were possible, the prompt sets and the generations that diverge most. Read from results.json only; computes no
metric."""

from __future__ import annotations

import math
from typing import Any, Mapping

from kdaudit.report._common import row_of
from kdaudit.report._format import fmt_interval, fmt_number

__all__ = ["lm_context"]


def _est(comp: Mapping[str, Any], section: str, metric: str) -> Mapping[str, Any] | None:
    """The whole-data tidy row ``metric`` of a section as an estimate dict, None where it was not computed."""
    row = row_of(comp.get(section), section, metric)
    return None if row is None or math.isnan(row.estimate.value) else row.estimate.to_dict()


#: The quality a language-model student keeps, one column each: (section, metric, how shown, what it is).
QUALITY_COLUMNS = (("next_token", "lm_tokens", "retained_next_token_accuracy", "percent", "next-token accuracy kept"),
                   ("perplexity", "lm_tokens", "perplexity_ratio", "decimal", "on the scored texts"),
                   ("reference", "lm_tokens", "reference_perplexity_ratio", "decimal", "on the references"),
                   ("task", "lm_task", "retained_accuracy", "percent", "task accuracy kept"))


def _cell(e: Mapping[str, Any] | None, kind: str, what: str) -> dict[str, str]:
    if e is None:
        return {"text": "n/a", "ci": "", "what": what}
    return {"text": fmt_number(e.get("value"), kind), "ci": fmt_interval(e, kind), "what": what}


def lm_context(results: Mapping[str, Any], run_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``lm`` entry of the report context (see ``templates/lm.html.j2``)."""
    quality, access, examples = [], [], []
    for comp in results.get("comparisons") or []:
        student = str(comp.get("student"))
        quality.append({"student": student, **{col: _cell(_est(comp, sec, metric), kind, what)
                                               for col, sec, metric, kind, what in QUALITY_COLUMNS}})
        possible = (results.get("comparisons_possible") or {}).get(student) or {}
        access.append({
            "student": student,
            "per_token": bool(possible.get("per_token")),
            "per_token_reason": possible.get("per_token_reason") or "",
            "text_level": bool(possible.get("text_level")),
            "teacher_loglik": bool(possible.get("teacher_loglik")),
            "multiple_choice": bool(possible.get("multiple_choice")),
        })
        gen = comp.get("lm_generation")
        if isinstance(gen, Mapping) and gen.get("available"):
            for ex in gen.get("examples") or []:
                examples.append({"student": student, "id": str(ex.get("id")), "teacher": str(ex.get("teacher")),
                                 "student_text": str(ex.get("student")),
                                 "chrf": fmt_number(ex.get("chrf"), "decimal")})
    sets = []
    for ps in (results.get("data") or {}).get("prompt_sets") or []:
        sets.append({"role": "multiple-choice task" if ps.get("role") == "multiple_choice" else "texts and prompts",
                     "name": str(ps.get("name")), "source": str(ps.get("source") or "—"),
                     "n": fmt_number(ps.get("n_prompts"), "int"), "sha256": str(ps.get("sha256") or ""),
                     "references": "yes" if ps.get("references") else "no",
                     "groups": ", ".join(ps.get("groups") or []) or "none"})
    settings = results.get("settings") or {}
    gen = ((settings.get("section_options") or {}).get("lm_generation") or {})
    decoding = "Greedy continuations"
    if gen.get("do_sample") is True:  # sampled: one seeded stream per prompt
        temperature = gen.get("temperature", 1.0)  # a setting, shown as given (not a measured number)
        decoding = "Continuations sampled at temperature " + (f"{temperature:g}" if isinstance(
            temperature, (int, float)) and not isinstance(temperature, bool) else "n/a")
    return {"quality": quality, "access": access, "examples": examples, "prompt_sets": sets,
            "top_k": settings.get("top_k"), "max_new_tokens": settings.get("max_new_tokens"),
            "length_normalize": settings.get("length_normalize"), "decoding": decoding}
