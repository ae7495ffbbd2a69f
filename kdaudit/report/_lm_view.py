"""What the report shows first for a language-model audit: the scorecard, which comparisons were possible, the
prompt sets and examples of diverging generations. Read from results.json and run_info only; computes no metric."""

from __future__ import annotations

from typing import Any, Mapping

from kdaudit.report._format import fmt_interval, fmt_number

__all__ = ["lm_context"]


def _est(sec: Any, key: str) -> Mapping[str, Any] | None:
    if not isinstance(sec, Mapping) or not sec.get("available", False):
        return None
    e = (sec.get("headline") or {}).get(key)
    return e if isinstance(e, Mapping) and e.get("value") is not None else None


def _cell(e: Mapping[str, Any] | None, kind: str, what: str) -> dict[str, str]:
    if e is None:
        return {"text": "n/a", "ci": "", "what": what}
    return {"text": fmt_number(e.get("value"), kind), "ci": fmt_interval(e, kind), "what": what}


def _quality(comp: Mapping[str, Any]) -> dict[str, str]:
    """Share of the teacher's quality kept: retained multiple-choice accuracy when there is a task with right
    answers, else retained next-token accuracy."""
    task = _est(comp.get("lm_task"), "retained_accuracy")
    if task is not None:
        return _cell(task, "percent", "of the teacher's multiple-choice accuracy")
    return _cell(_est(comp.get("lm_tokens"), "retained_next_token_accuracy"), "percent",
                 "of the teacher's next-token accuracy")


def lm_context(results: Mapping[str, Any], run_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``lm`` entry of the report context (see ``templates/lm.html.j2``)."""
    run_info = run_info or {}
    speed = (run_info.get("speed") or {}).get("speedup") or {}
    scorecard, access, examples = [], [], []
    for comp in results.get("comparisons") or []:
        student = str(comp.get("student"))
        cost = comp.get("cost")
        params = _est(cost, "parameter_ratio")
        sp = speed.get(student)
        scorecard.append({
            "student": student,
            "quality": _quality(comp),
            "perplexity": _cell(_est(comp.get("lm_tokens"), "perplexity_ratio"), "decimal",
                                "student perplexity / teacher perplexity"),
            "size": {"text": "n/a" if params is None else fmt_number(params["value"], "percent"),
                     "ci": "exact" if params is not None else "", "what": "of the teacher's parameters"},
            "speed": {"text": "n/a" if not sp else f"{sp['value']:.2f}×",
                      "ci": "" if not sp else f"{sp['low']:.2f}–{sp['high']:.2f}×",
                      "what": "teacher's scoring speed"},
        })
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
    return {"scorecard": scorecard, "access": access, "examples": examples, "prompt_sets": sets,
            "top_k": settings.get("top_k"), "max_new_tokens": settings.get("max_new_tokens"),
            "length_normalize": settings.get("length_normalize")}
