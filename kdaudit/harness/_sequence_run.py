"""The sequence harness: several language models over one :class:`~kdaudit.data.PromptSet`, in identical order.

:func:`score_all` gives each model's teacher-forced top-k log-probabilities (:class:`TokenTopK`) of the same
texts; :func:`generate_all` gives each model's continuations (:class:`Generations`) of the same prompts. Both run
prompts in chunks and, with ``cache_dir``, store every finished chunk on disk (atomically) under a key made of the
model's fingerprint, the tokenizer's, the prompt set's hash and the settings: a resumed run asks no model again for
a chunk it has. Endpoints also journal each query (:class:`~kdaudit.models.QueryJournal`), so even a chunk cut short
by a crash costs at most the queries in flight.

:func:`comparison_level` says whether per-token distributions can be compared (every model's tokenizer known and
identical) or only text-level comparisons (generations, whole-text log-likelihoods) are possible.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from kdaudit._exceptions import KDAuditError, invalid_argument
from kdaudit._io import atomic_write_bytes
from kdaudit.harness._sequence import MAX_TOP_K, Generations, TokenTopK

__all__ = ["ComparisonLevel", "SequenceRunResult", "comparison_level", "generate_all", "score_all"]

_FORMAT = 1


@dataclass(frozen=True)
class ComparisonLevel:
    """Which comparisons between language models are possible.

    Attributes
    ----------
    per_token : bool
        True when every model's tokenizer is known and identical: per-token distributions (KL, top-1 agreement,
        top-k overlap) are compared position by position.
    reason : str
        In plain words, for the report.
    tokenizers : mapping of model name -> tokenizer sha256 (None when unknown)
    """

    per_token: bool
    reason: str
    tokenizers: Mapping[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"per_token": self.per_token, "reason": self.reason, "tokenizers": dict(self.tokenizers)}


def comparison_level(models: Sequence[Any]) -> ComparisonLevel:
    """Whether per-token comparisons are possible between ``models`` (language models or their
    :class:`TokenTopK` outputs), and why not when they are not.

    Examples
    --------
    >>> import numpy as np
    >>> from kdaudit.harness import TokenTopK
    >>> def out(name, tok):
    ...     return TokenTopK(name, np.array([0]), np.array([0, 1]), np.zeros((1, 1), np.int32),
    ...                      np.zeros((1, 1), np.float32), np.zeros(1, np.int32), np.zeros(1, np.float32), tok)
    >>> comparison_level([out("teacher", "aa"), out("student", "aa")]).per_token
    True
    >>> print(comparison_level([out("teacher", "aa"), out("student", "bb")]).reason)  # doctest: +ELLIPSIS
    different tokenizers (teacher: aa..., student: bb...): only text-level comparisons ...
    """
    tokenizers: dict[str, str | None] = {}
    for m in models:
        if isinstance(m, TokenTopK):
            tokenizers[m.name] = m.tokenizer_sha256 or None
        else:
            tokenizers[getattr(m, "name", repr(m))] = m.tokenizer_fingerprint()
    unknown = [n for n, t in tokenizers.items() if not t]
    text_level = ("only text-level comparisons (generations compared as text, each model's log-likelihood of the "
                  "same texts) are possible")
    if unknown:
        return ComparisonLevel(False, f"tokenizer unknown for {', '.join(unknown)}: {text_level}", tokenizers)
    distinct = sorted(set(tokenizers.values()))  # type: ignore[type-var]
    if len(distinct) > 1:
        listing = ", ".join(f"{n}: {str(t)[:12]}..." for n, t in tokenizers.items())
        return ComparisonLevel(False, f"different tokenizers ({listing}): {text_level}", tokenizers)
    return ComparisonLevel(True, "all models share one tokenizer: per-token distributions are compared at identical "
                                 "token positions", tokenizers)


@dataclass(frozen=True, eq=False)
class SequenceRunResult:
    """Outputs of every model that ran, by name, in the order given, and the run's provenance.

    ``provenance`` holds the prompt set's hash, each model's fingerprint, tokenizer fingerprint, kind, access,
    queries and tokens spent in this run, chunks read from the cache and computed, the settings, library versions
    and the comparison level. ``skipped`` names models that could not take part, with the reason.
    """

    outputs: dict[str, Any]
    provenance: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]

    @property
    def comparison(self) -> ComparisonLevel:
        c = self.provenance["comparison"]
        return ComparisonLevel(c["per_token"], c["reason"], c["tokenizers"])


def score_all(models: Sequence[Any], prompts: Any, *, top_k: int = 5, cache_dir: str | os.PathLike[str] | None = None,
              chunk_size: int = 64, progress: bool = False) -> SequenceRunResult:
    """Teacher-forced top-k log-probabilities of every prompt's text under every model, in identical order.

    Parameters
    ----------
    models : sequence of LanguageModel
        Unique names. Models that reveal text only are skipped (``result.skipped`` says so).
    prompts : PromptSet
        Each ``prompts.prompts[i]`` is scored as a whole text (build a PromptSet of prompt + reference to score
        references).
    top_k : int
        Log-probabilities kept per position (1 to 20); never the full vocabulary.
    cache_dir : path, optional
        Chunks are stored and reused here.
    chunk_size : int
        Prompts per chunk (the unit of caching and resume).
    progress : bool
        Show a progress bar.
    """
    if not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= MAX_TOP_K:
        raise invalid_argument("top_k", top_k, f"an integer in [1, {MAX_TOP_K}]")
    from kdaudit.models._lm_base import LMAccess

    def usable(m: Any) -> str | None:
        if m.access is not LMAccess.LOGPROBS:
            return "reveals generated text only; teacher-forced scoring needs per-token log-probabilities"
        if top_k > m.max_top_k:
            return f"reveals at most {m.max_top_k} log-probabilities per position (top_k={top_k} was asked)"
        return None

    settings = {"task": "score", "top_k": int(top_k)}
    return _run(models, prompts, settings, usable, lambda m, ps: m.score(list(ps.prompts), list(ps.ids),
                                                                       top_k=int(top_k)),
                _save_topk, _load_topk, _concat_topk, cache_dir=cache_dir, chunk_size=chunk_size,
                progress=progress)


def generate_all(models: Sequence[Any], prompts: Any, *, max_new_tokens: int, do_sample: bool = False,
                 temperature: float = 1.0, seed: int = 0, cache_dir: str | os.PathLike[str] | None = None,
                 chunk_size: int = 64, progress: bool = False) -> SequenceRunResult:
    """Every model's continuation of every prompt, in identical order: greedy, or sampled at ``temperature`` with
    ``seed`` (local models draw one seeded stream per prompt, so a chunk's draws do not depend on the chunking).

    Parameters are those of :func:`score_all`, plus the generation settings (part of the cache key).
    """
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise invalid_argument("max_new_tokens", max_new_tokens, "an integer >= 1")
    if do_sample and not (isinstance(temperature, (int, float)) and temperature > 0):
        raise invalid_argument("temperature", temperature, "a number > 0 when sampling")
    settings = {"task": "generate", "max_new_tokens": int(max_new_tokens), "do_sample": bool(do_sample),
                "temperature": float(temperature) if do_sample else 0.0, "seed": int(seed)}

    def call(m: Any, ps: Any) -> Generations:
        kwargs = dict(max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample), temperature=float(temperature),
                      seed=int(seed))
        if ps.messages is not None and getattr(m, "api", None) == "chat":
            kwargs["messages"] = ps.messages
        return m.generate(list(ps.prompts), list(ps.ids), **kwargs)

    return _run(models, prompts, settings, lambda m: None, call, _save_gen, _load_gen, _concat_gen,
                cache_dir=cache_dir, chunk_size=chunk_size, progress=progress)


# ---------------------------------------------------------------------------------------------------------------


def _run(models: Sequence[Any], prompts: Any, settings: dict[str, Any], usable: Callable[[Any], str | None],
         call: Callable[[Any, Any], Any], save: Callable[[Any], bytes], load: Callable[[Any, Any, Any], Any],
         concat: Callable[[Any, list[Any], Any], Any], *, cache_dir: Any, chunk_size: int,
         progress: bool) -> SequenceRunResult:
    from kdaudit.data._prompts import PromptSet
    from kdaudit.harness._run import library_versions
    from kdaudit.models._lm_base import LanguageModel

    if not isinstance(prompts, PromptSet):
        raise invalid_argument("prompts", type(prompts).__name__, "a kdaudit.data.PromptSet")
    models = list(models)
    if not models:
        raise invalid_argument("models", models, "at least one language model")
    for m in models:
        if not isinstance(m, LanguageModel):
            raise invalid_argument("models", type(m).__name__, "kdaudit.models.LanguageModel instances "
                                                               "(HFCausalLM, OpenAIEndpointModel, ...)")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise invalid_argument("models", names, "models with unique names")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise invalid_argument("chunk_size", chunk_size, "an integer >= 1")
    n = len(prompts)
    bounds = [(a, min(a + int(chunk_size), n)) for a in range(0, n, int(chunk_size))]
    prompts_sha = prompts.sha256()
    root = Path(cache_dir) if cache_dir is not None else None
    outputs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    records = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(bounds) * len(models), unit="chunk", desc=f"kdaudit: {settings['task']}",
               disable=not progress, leave=False)
    try:
        for m in models:
            why = usable(m)
            if why is not None:
                skipped[m.name] = why
                bar.update(len(bounds))
                continue
            sha, tok_sha = m.fingerprint(), m.tokenizer_fingerprint()
            run_settings = {**settings, **_model_settings(m)}
            folder = None
            if root is not None:
                key = hashlib.sha256(json.dumps({"model": sha, "tokenizer": tok_sha, "prompts": prompts_sha,
                                                 "settings": run_settings, "chunk_size": int(chunk_size),
                                                 "format": _FORMAT}, sort_keys=True).encode()).hexdigest()
                folder = root / f"{sha[:16]}-{prompts_sha[:16]}-{key[:16]}"
            q0, t0 = m.query_count, m.token_count
            parts, cached = [], 0
            for a, b in bounds:
                sub = prompts.subset(np.arange(a, b))
                path = folder / f"chunk-{a:09d}-{b:09d}.npz" if folder is not None else None
                part = _read_chunk(path, load, m, sub) if path is not None else None
                if part is None:
                    part = call(m, sub)
                    if path is not None:
                        atomic_write_bytes(path, save(part))
                else:
                    cached += 1
                parts.append(part)
                bar.update(1)
            outputs[m.name] = concat(m, parts, prompts)
            records.append({"name": m.name, "kind": m.kind, "access": str(m.access), "sha256": sha,
                            "tokenizer_sha256": tok_sha, "file_sha256": m.file_sha256,
                            "queries": int(m.query_count - q0), "tokens": int(m.token_count - t0),
                            "chunks_cached": cached, "chunks_computed": len(bounds) - cached,
                            "settings": run_settings})
    finally:
        bar.close()
    ran = [m for m in models if m.name in outputs]
    level = comparison_level(ran) if ran else ComparisonLevel(False, "no model ran", {})
    provenance = {"prompts": {"name": prompts.name, "source": prompts.source, "n": n, "sha256": prompts_sha},
                  "settings": settings, "chunk_size": int(chunk_size), "models": records, "skipped": skipped,
                  "comparison": level.to_dict(), "versions": library_versions()}
    return SequenceRunResult(outputs=outputs, provenance=provenance, skipped=skipped)


def _model_settings(m: Any) -> dict[str, Any]:
    """What else changes a model's outputs: precision and device for local models."""
    out: dict[str, Any] = {}
    if getattr(m, "precision", None) is not None:
        out["precision"] = str(m.precision)
    device = getattr(m, "device", None)
    if device is not None:
        out["device"] = getattr(device, "type", str(device))
    return out


def _read_chunk(path: Path, load: Callable[[Any, Any, Any], Any], m: Any, sub: Any) -> Any:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return load({k: z[k] for k in z.files}, m, sub)
    except (OSError, ValueError, KeyError, KDAuditError):
        return None  # a damaged chunk is recomputed, never trusted


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _save_topk(part: TokenTopK) -> bytes:
    return _npz(text_ids=np.asarray(part.text_ids).astype(str), offsets=part.offsets, top_ids=part.top_ids,
                top_logprobs=part.top_logprobs, target_ids=part.target_ids, target_logprob=part.target_logprob,
                tokenizer=np.array(part.tokenizer_sha256), meta=np.array(json.dumps(dict(part.meta),
                                                                                    sort_keys=True)))


def _load_topk(z: dict[str, np.ndarray], m: Any, sub: Any) -> TokenTopK:
    if z["text_ids"].tolist() != [str(i) for i in sub.ids]:
        raise KDAuditError("chunk ids do not match")
    return TokenTopK(name=m.name, text_ids=sub.ids, offsets=z["offsets"], top_ids=z["top_ids"],
                     top_logprobs=z["top_logprobs"], target_ids=z["target_ids"], target_logprob=z["target_logprob"],
                     tokenizer_sha256=str(z["tokenizer"]), meta=json.loads(str(z["meta"])))


def _concat_topk(m: Any, parts: list[TokenTopK], prompts: Any) -> TokenTopK:
    offsets = [np.zeros(1, np.int64)]
    base = 0
    for p in parts:
        offsets.append(p.offsets[1:] + base)
        base += p.n_positions
    first = parts[0]
    return TokenTopK(name=m.name, text_ids=prompts.ids, offsets=np.concatenate(offsets).astype(np.int64),
                     top_ids=np.concatenate([p.top_ids for p in parts]),
                     top_logprobs=np.concatenate([p.top_logprobs for p in parts]),
                     target_ids=np.concatenate([p.target_ids for p in parts]),
                     target_logprob=np.concatenate([p.target_logprob for p in parts]),
                     tokenizer_sha256=first.tokenizer_sha256, meta=dict(first.meta))


def _save_gen(part: Generations) -> bytes:
    lps = part.token_logprobs
    arrays = {"text_ids": np.asarray(part.text_ids).astype(str), "texts": np.array(list(part.texts), dtype=str),
              "settings": np.array(json.dumps(dict(part.settings), sort_keys=True))}
    if lps is not None:
        arrays["lp_lengths"] = np.array([len(x) for x in lps], dtype=np.int64)
        arrays["lp_values"] = np.concatenate([np.asarray(x, np.float32) for x in lps]) if lps else \
            np.zeros(0, np.float32)
    return _npz(**arrays)


def _load_gen(z: dict[str, np.ndarray], m: Any, sub: Any) -> Generations:
    if z["text_ids"].tolist() != [str(i) for i in sub.ids]:
        raise KDAuditError("chunk ids do not match")
    lps = None
    if "lp_lengths" in z:
        ends = np.cumsum(z["lp_lengths"])
        lps = tuple(np.split(z["lp_values"], ends[:-1])) if len(ends) else ()
    texts = tuple(str(t) for t in z["texts"]) if z["texts"].shape else ()
    return Generations(name=m.name, text_ids=sub.ids, texts=texts, settings=json.loads(str(z["settings"])),
                       token_logprobs=lps)


def _concat_gen(m: Any, parts: list[Generations], prompts: Any) -> Generations:
    have = all(p.token_logprobs is not None for p in parts)
    return Generations(name=m.name, text_ids=prompts.ids, texts=tuple(t for p in parts for t in p.texts),
                       settings=dict(parts[0].settings),
                       token_logprobs=tuple(x for p in parts for x in p.token_logprobs) if have else None)
