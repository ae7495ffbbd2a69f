"""``kdaudit lineage --prompts FILE``: the lineage test for language models (wired in by :mod:`._cli`).

Models are local Hugging Face directories (safetensors only, no custom code, offline), OpenAI-compatible endpoint
URLs (``http(s)://host/v1`` with ``--suspect-model NAME``; the API key from ``OPENAI_API_KEY``), or precomputed outputs
(``.jsonl``/``.parquet``). Prompts: ``.jsonl``/``.csv``/``.parquet`` (fields
``prompt``, optional ``id`` and ``reference``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from kdaudit._exceptions import invalid_argument

__all__ = ["add_lm_arguments", "run_lm_lineage"]


def add_lm_arguments(parser: argparse.ArgumentParser) -> None:
    """The language-model options of ``kdaudit lineage``."""
    g = parser.add_argument_group(
        "language models (with --prompts: --teacher, --suspect, --reference, --control, --candidate are model "
        "directories, endpoint URLs or precomputed output files)")
    g.add_argument("--prompts", metavar="FILE", help="prompt file (.jsonl, .csv, .parquet: prompt, optional id and "
                                                     "reference); switches the test to language models")
    g.add_argument("--null", choices=("references", "controls"), default=None,
                   help="references: the teacher is ranked among its siblings (--reference); controls: the suspect is "
                        "ranked among unrelated baselines (--control). Default: references if given, else controls")
    g.add_argument("--top-k", type=int, default=20, help="log-probabilities per token (top-k access, <= 20)")
    g.add_argument("--max-new-tokens", type=int, default=24, help="tokens per continuation (text access)")
    g.add_argument("--decoding", choices=("sample", "greedy"), default=None,
                   help="text access: continuations sampled at temperature 1 (default under the references null) "
                        "or greedy (default under the controls null without --scorer)")
    g.add_argument("--scorer", metavar="PATH", action="append", default=[],
                   help="controls null, text access: a model that scores every candidate's sampled continuations "
                        "(repeatable, at least 2; not the teacher, the suspect or a control). With scorers the "
                        "statistic is the teacher's likelihood of each candidate's samples relative to theirs; "
                        "choose models like the teacher, unlike the suspect (README, 'Lineage of language models')")
    g.add_argument("--token-budget", type=int, default=None, help="most suspect tokens (charged at an upper bound)")
    g.add_argument("--journal", metavar="FILE", default=None,
                   help="write-ahead journal of the suspect's answers: a rerun pays for nothing answered before")
    g.add_argument("--suspect-model", metavar="NAME", default=None, help="model name at the suspect's endpoint")
    g.add_argument("--teacher-model", metavar="NAME", default=None, help="model name at the teacher's endpoint")
    g.add_argument("--api", choices=("completions", "chat"), default="completions",
                   help="endpoint route for URL models (default completions)")


def _is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def _load_lm(spec: str, args: argparse.Namespace, role: str, model_name: str | None = None,
             tokenizer: Any = None) -> Any:
    if _is_url(spec):
        from kdaudit.models import OpenAIEndpointModel
        if not model_name:
            raise invalid_argument(f"--{role}-model", None, f"the model name served at {spec}")
        text_only = str(getattr(args, "suspect_access", "") or "").lower() == "text"
        # per-token comparison needs the endpoint's token ids: the teacher's tokenizer, which the caller asserts
        # the endpoint shares by asking for top-k access (text access needs none)
        return OpenAIEndpointModel(spec, model_name, name=model_name, api=args.api,
                                   access="text" if text_only else "logprobs",
                                   tokenizer=None if text_only else tokenizer, max_prompts=args.query_budget,
                                   max_tokens=args.token_budget)
    path = Path(spec)
    if path.is_dir():
        from kdaudit.models._hf import HFCausalLM

        return HFCausalLM.from_pretrained(path, batch_size=32, truncation=True)
    if path.suffix.lower() in (".jsonl", ".parquet") and path.is_file():
        from kdaudit.models import PrecomputedLM

        return PrecomputedLM(path)
    raise invalid_argument(f"--{role}", spec, "a Hugging Face model directory, an http(s) endpoint URL, or "
                                              "precomputed outputs (.jsonl/.parquet)")


def _load_prompts(path: str) -> Any:
    from kdaudit.data import load_prompts

    return load_prompts(path)


def run_lm_lineage(args: argparse.Namespace) -> int:
    """Run the language-model lineage test from parsed arguments; return the exit code."""
    from kdaudit._io import atomic_write_text, canonical_json
    from kdaudit.lineage._files import EXIT_DERIVED, EXIT_OK, candidate_pools
    from kdaudit.lineage._files import expand_patterns as _expand
    from kdaudit.lineage._lm import lm_attribute, lm_lineage_test

    for opt in ("teacher", "suspect"):
        if not getattr(args, opt, None):
            raise invalid_argument(f"--{opt}", None, "a model directory, endpoint URL or precomputed outputs")
    access, top_k = None, args.top_k
    if args.suspect_access:
        text = str(args.suspect_access).lower().replace("-", "_")
        if text == "text":
            access = "text"
        elif text.startswith("top_k") and (text == "top_k" or text[6:].isdigit()):
            access, top_k = "top_k", int(text[6:]) if text[6:] else top_k
        else:
            raise invalid_argument("--suspect-access", args.suspect_access, "text or top-k:K for language models")
    prompts = _load_prompts(args.prompts)
    teacher = _load_lm(args.teacher, args, "teacher", args.teacher_model)
    suspect = _load_lm(args.suspect, args, "suspect", args.suspect_model, getattr(teacher, "tokenizer", None))
    refs = [_load_lm(f, args, "reference") for f in _expand(args.reference, "--reference")]
    controls = [_load_lm(f, args, "control") for f in _expand(args.control, "--control")]
    for spec in args.scorer:
        if _is_url(spec):
            raise invalid_argument("--scorer", spec, "a local model directory or output file (an endpoint URL needs "
                                                     "the API: lm_lineage_test(..., scorers=[...]))")
    scorers = [_load_lm(f, args, "scorer") for f in _expand(args.scorer, "--scorer")] if args.scorer else []
    options = {"controls": controls, "scorers": scorers, "null": args.null, "access": access, "top_k": top_k,
               "max_new_tokens": args.max_new_tokens, "decoding": args.decoding, "n_prompts": args.n_probes,
               "query_budget": args.query_budget, "token_budget": args.token_budget, "journal": args.journal,
               "alpha": args.alpha, "seed": args.seed}
    if args.candidate:
        candidates = candidate_pools(args.candidate, teacher, refs, lambda f: _load_lm(f, args, "candidate"))
        result = lm_attribute(suspect, candidates, prompts, **options)
        print(f"attribution: parent = {result.parent}  ({result.reason}; {result.correction})")
        for name, r in result.results.items():
            print(f"  {name:<24} p {_fmt(r.p_value)}  Holm-adjusted {_fmt(result.adjusted_p_values[name])}  "
                  f"effect {_fmt(r.effect)}  (null: {r.null})")
        derived = result.parent != "none"
        record = result.to_dict()
    else:
        r = lm_lineage_test(teacher, suspect, prompts, references=refs, **options)
        print(lm_result_text(r))
        derived = r.derived
        record = r.to_dict()
    if args.json:
        atomic_write_text(args.json, canonical_json(record))
    return EXIT_DERIVED if derived and getattr(args, "fail_on_derived", False) else EXIT_OK


def _fmt(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3g}"


def lm_result_text(r: Any) -> str:
    """The terminal summary of an :class:`~kdaudit.lineage.LMLineageResult`."""
    q = r.queries
    lines = [f"lineage (language model): is {r.suspect!r} derived from {r.teacher!r}?  verdict: {r.verdict.upper()}",
             f"  p-value {_fmt(r.p_value)} (exact rank, null: {r.null}), alpha {r.alpha}, effect {_fmt(r.effect)}",
             f"  null: {r.explanation}",
             f"  {r.reason}",
             f"  access {r.access}; {r.n_prompts} prompts of {r.n_candidates}; suspect: {q['prompts_sent']} prompts "
             f"sent, <= {q['tokens_sent_bound']} tokens, {q['prompts_from_journal']} from the journal",
             "  signatures (z of the " + ("teacher among the references" if r.null == "references" else
                                          "suspect among the controls") + "):"]
    width = max((len(name) for name in r.signatures), default=0)
    lines += [f"    {name:<{width}}  z = {_fmt(s['z_first'])}  (rank p {_fmt(s['rank_p_value'])})"
              for name, s in r.signatures.items()]
    cal = (r.settings or {}).get("calibration_controls") or []
    if cal:
        n_controls = len((r.models or {}).get("controls") or [])
        if len(cal) >= n_controls:
            lines.append(f"  members calibrated by all {len(cal)} controls")
        else:
            lines.append(f"  members calibrated by the {len(cal)} controls most like the suspect: "
                         + ", ".join(repr(str(c)) for c in cal))  # repr: no control character reaches the terminal
    scorers = (r.models or {}).get("scorers") or []
    if scorers:
        lines.append(f"  samples scored by {len(scorers)} scorers: "
                     + ", ".join(repr(str(m.get("name"))) for m in scorers))  # repr: no control character passes
    lines.append("  raw similarity (not evidence alone): " + ", ".join(
        f"{k} {_fmt(v)}" for k, v in r.raw_similarity.items()))
    return "\n".join(lines)
