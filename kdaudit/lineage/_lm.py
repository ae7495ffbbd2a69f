"""Lineage of language models: was this suspect LM distilled from our teacher? An exact rank test under one of two
stated nulls, through top-k log-probabilities or text only.

**Null "references"** (the owner can train small models of its recipe with other seeds): the teacher is
exchangeable with K reference models in its relation to the suspect. Each pool member (teacher first) gets the same
signatures of how closely the suspect follows it beyond what the pool shares (:mod:`kdaudit.lineage._lm_signatures`),
corrected for the member's typicality, standardised leave-one-out and averaged; the p-value is the teacher's rank,
``(1 + #{k: C_k >= C_T}) / (K + 1)``, exact whatever the dependence between prompts and tokens.

**Null "controls"** (at the scale of real LLMs, where siblings cannot be trained): unrelated baseline models (other
public models, or models the owner trained on its data without the teacher) stand for what an underived suspect
looks like. Under H0 the suspect is exchangeable with the controls in its relation to the teacher; the same
signatures, with the teacher as anchor, rank the suspect among the controls: ``(1 + #{controls scoring at least as
high}) / (L + 1)``. Several candidate teachers are tested with Holm's correction (:func:`lm_attribute`).

Prompts are chosen by a function symmetric in the models being ranked: where the teacher and its references
disagree (never by the teacher alone), or, under the controls null, where the teacher (the fixed anchor) is least
certain (a selection by the controls would single the suspect out). The suspect is asked only the chosen
prompts, through a budget in prompts and tokens and, optionally, a write-ahead journal (cached and resumable).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdaudit._exceptions import QueryBudgetExceededError, invalid_argument
from kdaudit.lineage._lm_signatures import (
    LM_SIGNATURES,
    SAMPLED_SIGNATURES,
    TEXT_SIGNATURES,
    TOKEN_SIGNATURES,
    forced_agreement_pooled,
    forced_agreement_weighted,
    text_statistics,
    token_statistics,
    words,
)
from kdaudit.lineage._probes import select_probes
from kdaudit.lineage._stats import (
    adjust_for_typicality,
    beyond_nearest,
    calibrate_by_controls,
    combined_statistic,
    effect_size,
    leave_one_out_z,
    min_references,
    nearer_half,
    pair_similarity,
    peer_relative,
    rank_p_value,
)

__all__ = ["LMAttributionResult", "LMLineageResult", "LM_NULLS", "lm_attribute", "lm_lineage_test"]

LM_NULLS: dict[str, str] = {
    "references": ("H0: the suspect is not derived from the teacher. Operationally: the teacher is exchangeable "
                   "with K reference models (the teacher's recipe and data, other seeds) in its relation to the "
                   "suspect, so the teacher's rank among the pool's lineage scores is uniform."),
    "controls": ("H0: the suspect is not derived from the teacher. Operationally: the suspect is exchangeable with "
                 "L unrelated baseline models (controls, known not to be derived from the teacher) in its relation "
                 "to the teacher, so the suspect's rank among the controls' lineage scores is uniform."),
}
_PLAIN = {
    "references": ("The owner trained {K} reference models exactly like the teacher but with other random seeds. "
                   "If the suspect was not made from the teacher, nothing singles the teacher out among its "
                   "siblings from the suspect's point of view, so the teacher should rank anywhere among them; the "
                   "p-value is the chance of it ranking as high as it did."),
    "controls": ("No siblings of the teacher were trained. Instead {L} baseline models known not to be derived from "
                 "the teacher (other models of similar data and size) show how close an unrelated model comes to "
                 "the teacher, also when compared with the models most like it. If the suspect was not made from "
                 "the teacher, it should rank anywhere among them; the p-value is the chance of it ranking as high "
                 "as it did."),
}
DEFAULT_N_PROMPTS = 500
#: fewest controls by whose spread the references null calibrates its members (as the classifier test does)
MIN_CALIBRATION_CONTROLS = 19
#: the access modes in which the references null calibrates each member against the controls most like the suspect
#: (the nearer half of them; see nearer_half); against all of them in the others. Top-k: a member's affinity to the
#: suspect's whole kind is measured on that kind (the benchmark's teacher was drawn to the other teacher's students:
#: 10 of 60 underived suspects accused against all 20 controls, 1 of 60 against the nearest 10). Text: sampled text
#: is calibrated by all, because there the calibration also removes each member's general fit to text and the nearest
#: half lost every sequence-level student (6 of 6 over two seed sets); greedy text with references was not measured
#: with it. benchmarks/lm_calibration.py, benchmarks/results/lm_lineage_calibration_cpu.txt
NEAREST_CALIBRATION = ("top_k",)
DEFAULT_PROMPT_BUDGET = 1000
#: how text access asks for continuations. Default per null (measured in benchmarks/lm_lineage.py): "sample" under
#: the references null (each member's likelihood of the suspect's own samples ranks its distance to the suspect's
#: distribution, and the siblings share every confound of entropy and quality), "greedy" under the controls null
#: (the teacher's likelihood of a sample mostly measures how sharp the sampling model is, which differs between a
#: suspect and unrelated controls; greedy paths expose each model's modes instead), "sample" under the controls null
#: with scorers (the scorers' likelihood of the same samples cancels the sharpness: _scorer_statistics)
DECODINGS = ("sample", "greedy")
_WEIGHTS = 1.0  # every signature weighs the same, fixed in advance
#: null "controls": each signature of a candidate (the suspect or a control) with the teacher is read three ways.
#: As it is (closer to the teacher than the other candidates: a good imitation, or controls all of one kind);
#: "beyond nearest": minus its closeness to its nearest other candidate (the teacher is its nearest neighbour: a
#: student that imitates the teacher, however weakly); "beyond peers": minus the mean of its CONTROL_PEERS most
#: similar candidates' (closer to the teacher than models of its own kind: a student of another architecture, or one
#: fine-tuned after distillation, whose kind is far from the teacher's). Benchmarked in benchmarks/lm_lineage.py.
_CONTROLS_FAMILIES = ("", ":beyond_nearest", ":beyond_peers")
#: peers per candidate under the controls null: few, so that they stay within the candidate's own kind when the
#: owner has only a few controls of each kind
CONTROL_PEERS = 2
#: null "controls" with scorers: each candidate's likelihood ratio is read beyond its nearest other candidate's (by
#: how the scorers score their samples), pre-registered on benchmarks/lm_lineage.py's zoo before its held-out seeds
SCORER_PEERS = 1


# ---------------------------------------------------------------------------------------------------------- results
def _num(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


@dataclass(frozen=True)
class LMLineageResult:
    """Outcome of :func:`lm_lineage_test` (see :meth:`to_dict` for the record).

    ``verdict`` is "derived" (H0 rejected at ``alpha``), "not derived" (no evidence at ``alpha``: not a proof of
    independence) or "inconclusive" (too few exchangeable models for the p-value to reach ``alpha``).
    """

    verdict: str
    reason: str
    p_value: float
    alpha: float
    null: str
    access: str
    statistic: float
    member_statistics: tuple[float, ...]
    members: tuple[str, ...]
    effect: float
    signatures: Mapping[str, Any]
    raw_similarity: Mapping[str, float]
    teacher: str
    suspect: str
    n_prompts: int
    n_candidates: int
    prompts: Mapping[str, Any]
    queries: Mapping[str, Any]
    models: Mapping[str, Any]
    settings: Mapping[str, Any]
    assumptions: tuple[str, ...] = ()
    methodology: str = ""
    explanation: str = ""
    null_hypothesis: str = ""

    @property
    def derived(self) -> bool:
        return self.verdict == "derived"

    @property
    def queries_used(self) -> int:
        return int(self.queries.get("prompts_sent", 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": True, "kind": "language_model", "verdict": self.verdict, "reason": self.reason,
            "p_value": _num(self.p_value), "p_value_method": f"exact rank ({self.null})", "alpha": self.alpha,
            "null": self.null, "null_hypothesis": self.null_hypothesis, "null_explained": self.explanation,
            "access": self.access, "statistic": _num(self.statistic),
            "member_statistics": [_num(x) for x in self.member_statistics], "members": list(self.members),
            "effect": _num(self.effect), "signatures": {k: dict(v) for k, v in self.signatures.items()},
            "raw_similarity": {k: _num(v) for k, v in self.raw_similarity.items()},
            "teacher": self.teacher, "suspect": self.suspect, "n_prompts": self.n_prompts,
            "n_candidates": self.n_candidates, "prompts": dict(self.prompts), "queries": dict(self.queries),
            "models": dict(self.models), "settings": dict(self.settings), "assumptions": list(self.assumptions),
            "methodology": self.methodology,
        }


@dataclass(frozen=True)
class LMAttributionResult:
    """Outcome of :func:`lm_attribute`: one test per candidate teacher, Holm-Bonferroni across them."""

    parent: str
    alpha: float
    results: Mapping[str, LMLineageResult]
    adjusted_p_values: Mapping[str, float]
    reason: str = ""
    correction: str = "Holm-Bonferroni (family-wise error rate <= alpha across candidates)"

    def to_dict(self) -> dict[str, Any]:
        return {"parent": self.parent, "alpha": self.alpha, "correction": self.correction, "reason": self.reason,
                "adjusted_p_values": {k: _num(v) for k, v in self.adjusted_p_values.items()},
                "candidates": {k: r.to_dict() for k, r in self.results.items()}}


# ------------------------------------------------------------------------------------------------- the suspect side
def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class _Suspect:
    """The suspect's answers, each prompt paid for once: an in-memory cache, a budget in prompts and tokens, and an
    optional write-ahead :class:`~kdaudit.models.QueryJournal` (a resumed run re-buys nothing answered).

    Tokens are charged before sending at an upper bound (the text's UTF-8 bytes, which bound a byte-level
    tokenizer's tokens, plus ``max_new_tokens`` for a generation), so the token budget is never overrun.
    """

    def __init__(self, model: Any, *, prompt_budget: int | None, token_budget: int | None, journal: Any) -> None:
        self.model = model
        self.prompt_budget = prompt_budget
        self.token_budget = token_budget
        self.cache: dict[str, Any] = {}
        self.prompts_sent = 0
        self.tokens_sent = 0
        self.from_journal = 0
        self.journal = None
        if journal is not None:
            from kdaudit.models._journal import QueryJournal

            self.journal = journal if isinstance(journal, QueryJournal) else QueryJournal(
                journal, unit="prompts", identity=f"lineage-suspect:{model.fingerprint()}")

    def _ask(self, kind: str, items: list[str], settings: dict[str, Any], bound: list[int],
             call: Any) -> list[Any]:
        keys = [_key(kind, t, settings) for t in items]
        out: dict[str, Any] = {}
        new: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k in self.cache:
                out[k] = self.cache[k]
            elif self.journal is not None and k in self.journal:
                out[k] = self.cache[k] = self.journal.get(k)
                self.from_journal += 1
            elif k not in new:
                new[k] = i
        if new:
            n, tokens = len(new), sum(bound[i] for i in new.values())
            if self.prompt_budget is not None and self.prompts_sent + n > self.prompt_budget:
                raise QueryBudgetExceededError(
                    f"lineage test: {n} new suspect prompts would make {self.prompts_sent + n}, over the "
                    f"query_budget of {self.prompt_budget} prompts; lower n_prompts or raise query_budget",
                    used=self.prompts_sent, budget=self.prompt_budget)
            if self.token_budget is not None and self.tokens_sent + tokens > self.token_budget:
                raise QueryBudgetExceededError(
                    f"lineage test: {n} new suspect prompts may use up to {tokens} tokens, making "
                    f"{self.tokens_sent + tokens}, over the token_budget of {self.token_budget}; lower n_prompts or "
                    "max_new_tokens, or raise token_budget", used=self.tokens_sent, budget=self.token_budget)
            if self.journal is not None:
                for k in new:
                    self.journal.reserve(k, 1)
            answers = call(list(new.values()))
            for k, a in zip(new, answers):
                out[k] = self.cache[k] = a
                if self.journal is not None:
                    self.journal.complete(k, a)
            self.prompts_sent += n
            self.tokens_sent += tokens
        return [out[k] for k in keys]

    def generate(self, prompts: list[str], ids: list[Any], *, max_new_tokens: int, seed: int,
                 sample: bool = False) -> list[str]:
        settings = {"max_new_tokens": max_new_tokens, "do_sample": sample, "seed": seed}
        if sample:
            settings["temperature"] = 1.0
        bound = [len(p.encode()) + max_new_tokens for p in prompts]

        def call(rows: list[int]) -> list[str]:
            g = self.model.generate([prompts[i] for i in rows], [ids[i] for i in rows],
                                    max_new_tokens=max_new_tokens, do_sample=sample, temperature=1.0, seed=seed)
            return list(g.texts)

        return self._ask("generate", prompts, settings, bound, call)

    def score(self, texts: list[str], ids: list[Any], *, top_k: int) -> Any:
        bound = [len(t.encode()) for t in texts]

        def call(rows: list[int]) -> list[dict[str, Any]]:
            return _split(self.model.score([texts[i] for i in rows], [ids[i] for i in rows], top_k=top_k))

        parts = self._ask("score", texts, {"top_k": top_k}, bound, call)
        return _join(parts, name=str(getattr(self.model, "name", "suspect")),
                     tokenizer=self.model.tokenizer_fingerprint() or "")

    def record(self) -> dict[str, Any]:
        return {"prompts_sent": self.prompts_sent, "tokens_sent_bound": self.tokens_sent,
                "prompts_from_journal": self.from_journal, "prompt_budget": self.prompt_budget,
                "token_budget": self.token_budget,
                "journal": None if self.journal is None else {"file": self.journal.path.name,
                                                              "spent_prompts": self.journal.spent}}


def _split(tk: Any) -> list[dict[str, Any]]:
    """A TokenTopK as one journal-able record per text."""
    out = []
    for i in range(tk.n_texts):
        a, b = int(tk.offsets[i]), int(tk.offsets[i + 1])
        out.append({"top_ids": np.asarray(tk.top_ids[a:b]), "top_logprobs": np.asarray(tk.top_logprobs[a:b]),
                    "target_ids": np.asarray(tk.target_ids[a:b]),
                    "target_logprob": np.asarray(tk.target_logprob[a:b])})
    return out


def _join(parts: list[dict[str, Any]], *, name: str, tokenizer: str) -> Any:
    from kdaudit.harness._sequence import TokenTopK

    lengths = [len(p["target_ids"]) for p in parts]
    k = next((np.asarray(p["top_ids"]).shape[1] for p in parts if len(p["target_ids"])), 1)
    cat = lambda key, shape, dtype: (np.concatenate([np.asarray(p[key], dtype=dtype).reshape(-1, *shape)  # noqa: E731
                                                      for p in parts]) if parts else np.zeros((0, *shape), dtype))
    return TokenTopK(name=name, text_ids=np.arange(len(parts)),
                     offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                     top_ids=cat("top_ids", (k,), np.int32), top_logprobs=cat("top_logprobs", (k,), np.float32),
                     target_ids=cat("target_ids", (), np.int32), target_logprob=cat("target_logprob", (), np.float32),
                     tokenizer_sha256=tokenizer)


# --------------------------------------------------------------------------------------------------- the owner side
# Owner models' outputs depend only on the model, the texts and the settings: a benchmark testing many suspects
# against one pool (or a lineage test followed by an attribution) computes them once per memo. The memo belongs to the
# caller (``memo=`` of lm_lineage_test and lm_attribute; a fresh one per call by default), never to the module, so no
# result outlives the calls that share it.
_MEMO: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("kdaudit_lm_lineage_memo", default=None)


def _cached(model: Any, kind: str, texts: Sequence[str], settings: Mapping[str, Any], compute: Any) -> Any:
    memo = _MEMO.get()
    if memo is None:
        return compute()
    key = _key(model.fingerprint(), kind, hashlib.sha256("\x00".join(texts).encode()).hexdigest(), dict(settings))
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _generate(model: Any, prompts: Sequence[str], ids: Sequence[Any], *, max_new_tokens: int, seed: int,
              sample: bool = False) -> list[str]:
    """Greedy continuations, or (``sample``) continuations sampled at temperature 1 with ``seed``."""
    # ids reach the model (precomputed outputs are looked up by id) and so are part of the key
    return _cached(model, "generate", prompts, {"max_new_tokens": max_new_tokens, "seed": seed, "sample": sample,
                                                "ids": _key([str(i) for i in ids])},
                   lambda: list(model.generate(list(prompts), list(ids), max_new_tokens=max_new_tokens,
                                               do_sample=sample, temperature=1.0, seed=seed).texts))


def _score(model: Any, texts: Sequence[str], ids: Sequence[Any] | None = None, *, top_k: int) -> Any:
    ids = list(range(len(texts))) if ids is None else list(ids)
    return _cached(model, "score", texts, {"top_k": top_k, "ids": _key([str(i) for i in ids])},
                   lambda: model.score(list(texts), ids, top_k=top_k))


def _continuation_loglik(model: Any, prompts: Sequence[str], continuations: Sequence[str]) -> tuple[float, int]:
    """The model's total log-likelihood of the continuations given their prompts, and their token count."""
    from kdaudit.metrics._sequence import continuation_loglik

    def compute() -> tuple[float, int]:
        full = _score(model, [p + c for p, c in zip(prompts, continuations)], top_k=1)
        ll, n = continuation_loglik(full, _score(model, prompts, top_k=1))
        return float(ll.sum()), int(n.sum())

    return _cached(model, "loglik", [p + "\x01" + c for p, c in zip(prompts, continuations)], {}, compute)


def _loglik(model: Any, prompts: Sequence[str], continuations: Sequence[str]) -> float:
    """The model's mean per-token log-likelihood of the continuations given their prompts."""
    total, n = _continuation_loglik(model, prompts, continuations)
    return total / max(n, 1)


def _loglik_per_char(model: Any, prompts: Sequence[str], continuations: Sequence[str]) -> float:
    """The model's log-likelihood of the continuations given their prompts, in nats per character of continuation:
    a unit every tokenizer shares, so members with different tokenizers compare on the same text."""
    total, _ = _continuation_loglik(model, prompts, continuations)
    return total / max(sum(len(c) for c in continuations), 1)


def _forced(model: Any, prompts: Sequence[str], continuations: Sequence[str]) -> tuple[np.ndarray, ...]:
    """The model's teacher-forced top-1 token and its log-probability at every continuation position of
    ``prompt + continuation``, and the token written there (the scores :func:`_loglik` uses, so no extra pass)."""
    full = _score(model, [p + c for p, c in zip(prompts, continuations)], top_k=1)
    pre = _score(model, prompts, top_k=1)
    n_cont = np.maximum(np.diff(full.offsets) - np.diff(pre.offsets), 0)
    rows = np.concatenate([np.arange(full.offsets[i + 1] - n_cont[i], full.offsets[i + 1])
                           for i in range(len(n_cont))]).astype(np.int64) if len(n_cont) else np.zeros(0, np.int64)
    return (np.asarray(full.top_ids[rows, 0]), np.asarray(full.top_logprobs[rows, 0]),
            np.asarray(full.target_ids[rows]))


def _subset_topk(tk: Any, idx: np.ndarray) -> Any:
    """The texts at ``idx`` of a TokenTopK (positions kept in order), cached per (object, idx)."""
    key = (id(tk), hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest())
    hit = _SUBSETS.get(key)
    if hit is not None and hit[0] is tk:
        return hit[1]
    from kdaudit.harness._sequence import TokenTopK

    rows = np.concatenate([np.arange(tk.offsets[i], tk.offsets[i + 1]) for i in idx]).astype(np.int64) \
        if len(idx) else np.zeros(0, np.int64)
    lengths = np.diff(tk.offsets)[idx]
    out = TokenTopK(name=tk.name, text_ids=np.asarray(tk.text_ids)[idx],
                    offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), top_ids=tk.top_ids[rows],
                    top_logprobs=tk.top_logprobs[rows], target_ids=tk.target_ids[rows],
                    target_logprob=tk.target_logprob[rows], tokenizer_sha256=tk.tokenizer_sha256, meta=tk.meta)
    if len(_SUBSETS) >= 256:
        _SUBSETS.pop(next(iter(_SUBSETS)))
    _SUBSETS[key] = (tk, out)
    return out


_SUBSETS: dict[Any, Any] = {}


# ------------------------------------------------------------------------------------------------------- selection
def _word_agreement(a: list[str], b: list[str]) -> float:
    return sum(1 for u, v in zip(a, b) if u == v) / max(len(a), len(b), 1)


def _disagreement(models: Sequence[Any], ps: Any, *, access: str, top_k: int, max_new_tokens: int,
                  seed: int) -> np.ndarray:
    """Per candidate prompt: how much the owner's selection models disagree there (symmetric in the models)."""
    from scipy.stats import rankdata

    prompts = list(ps.prompts)
    # a canonical order (by weights' hash) and rounding make the scores independent of which model plays which
    # role: float noise from summing in another order must not reorder tied prompts
    models = sorted(models, key=lambda m: m.fingerprint())
    if access == "text":
        gens = [[words(t) for t in _generate(m, prompts, list(ps.ids), max_new_tokens=max_new_tokens, seed=seed)]
                for m in models]
        M = len(gens)
        out = np.zeros(len(prompts))
        for p in range(len(prompts)):
            pairs = [_word_agreement(gens[i][p], gens[j][p]) for i in range(M) for j in range(i + 1, M)]
            out[p] = 1.0 - (float(np.mean(pairs)) if pairs else 1.0)
        return np.round(out, 9)
    texts = ps.scored_texts()
    scores = [_score(m, texts, list(ps.ids), top_k=top_k) for m in models]
    offsets = scores[0].offsets
    top1 = np.stack([s.top_ids[:, 0] for s in scores])
    lp = np.stack([s.target_logprob for s in scores]).astype(np.float64)
    differ = (~(top1 == top1[0]).all(axis=0)).astype(np.float64)
    spread = lp.std(axis=0)
    counts = np.maximum(np.diff(offsets), 1)
    per_text = lambda v: np.add.reduceat(np.append(v, 0.0), offsets[:-1]) / counts  # noqa: E731
    a, b = per_text(differ), per_text(spread)
    a[np.diff(offsets) == 0] = 0.0
    b[np.diff(offsets) == 0] = 0.0
    return (rankdata(np.round(a, 9)) + rankdata(np.round(b, 9))) / (2 * len(a))


def _uncertainty(teachers: Sequence[Any], ps: Any, *, seed: int) -> np.ndarray:
    """Per candidate prompt: the teachers' mean uncertainty on its text (1 - probability of the top-1 token, over
    positions); a seeded random order when no teacher reveals log-probabilities."""
    scorable = sorted((t for t in teachers if _access_of(t) == "top_k"), key=lambda m: m.fingerprint())
    if not scorable:
        return np.random.default_rng(seed).random(len(ps))
    texts = ps.scored_texts()  # the data layer's rule (the audit's too)
    total = np.zeros(len(ps))
    for t in scorable:
        tk = _score(t, texts, list(ps.ids), top_k=1)
        counts = np.diff(tk.offsets)
        u = 1.0 - np.exp(np.asarray(tk.top_logprobs[:, 0], dtype=np.float64))
        per = np.add.reduceat(np.append(u, 0.0), tk.offsets[:-1]) / np.maximum(counts, 1)
        total += np.where(counts > 0, per, 0.0)
    return np.round(total / len(scorable), 9)


# ------------------------------------------------------------------------------------------------------ statistics
def _statistics(anchor: Any, members: Sequence[Any], *, access: str, prompts: list[str], texts: list[str] | None,
                anchor_out: Any, member_outs: Sequence[Any], ll_scorers: Sequence[Any] | None,
                max_words: int, sample: bool = False) -> np.ndarray:
    """(M, S) signatures of each member relative to the anchor.

    Text access, log-likelihood column: with ``ll_scorers`` (the members themselves, null "references") member m's
    log-likelihood of the anchor's samples in nats per character (``sample``), or its per-token log-likelihood of
    the anchor's greedy text minus its mean over the other members' texts; with a single
    scorer (the anchor, null "controls") the anchor's log-likelihood of each member's text.
    """
    if access == "top_k":
        return token_statistics(anchor_out, member_outs)
    ll = forced = None
    if ll_scorers is not None:
        if len(ll_scorers) == len(members):  # the members score the anchor's text (references null)
            if sample:  # a sample of the anchor's distribution: its likelihood as it is
                ll = np.array([_loglik_per_char(m, prompts, anchor_out) for m in ll_scorers])
            else:  # greedy text: relative to the member's likelihood of the other members' greedy text
                ll = np.array([_loglik(m, prompts, anchor_out) - np.mean(
                    [_loglik(m, prompts, member_outs[j]) for j in range(len(members)) if j != i])
                    for i, m in enumerate(ll_scorers)])
            scored = [_forced(m, prompts, anchor_out) for m in ll_scorers]
            # positions are comparable only when every member split the text alike (one tokenizer)
            if all(np.array_equal(x[2], scored[0][2]) for x in scored):
                forced = forced_agreement_pooled(np.stack([x[0] for x in scored]), scored[0][2])
        else:  # the anchor scores every member's text (controls null)
            ll = np.array([_loglik(ll_scorers[0], prompts, out) for out in member_outs])
            forced = forced_agreement_weighted([_forced(ll_scorers[0], prompts, out) for out in member_outs])
    return text_statistics(anchor_out, member_outs, ll, forced, max_words=max_words)


def _out_hash(out: Any, access: str) -> str:
    """sha256 of a model's outputs (top-k scores or continuations): they depend on the settings too."""
    h = hashlib.sha256()
    if access == "top_k":
        h.update(np.ascontiguousarray(out.top_ids).tobytes())
        h.update(np.ascontiguousarray(out.top_logprobs).tobytes())
        h.update(np.ascontiguousarray(out.target_logprob).tobytes())
    else:
        h.update("\x00".join(out).encode())
    return h.hexdigest()


def _canonical(members: Sequence[Any], hashes: Sequence[str]) -> list[int]:
    """A canonical order of the members (by weights, then outputs): statistics computed in it do not depend on the
    order the caller lists the members in, and a memo keyed by it serves every rotation of one pool."""
    return sorted(range(len(members)), key=lambda i: (members[i].fingerprint(), hashes[i]))


def _pool_statistics(anchor: Any, anchor_out: Any, members: Sequence[Any], member_outs: Sequence[Any], *,
                     access: str, prompts: list[str], texts: list[str] | None, scorable: bool, max_words: int,
                     owner: bool, sample: bool = False) -> np.ndarray:
    """:func:`_statistics` of an anchor against the pool (null "references": each member scores the anchor's text),
    computed in the pool's canonical order and returned in the caller's. ``owner``: the anchor is an owner model (a
    control calibrating the pool), whose statistics are memoised for every suspect and rotation of this pool."""
    hashes = [_out_hash(out, access) for out in member_outs]
    order = _canonical(members, hashes)
    memo = _MEMO.get()
    key = None
    if owner and memo is not None:
        key = "pool-statistics:" + _key(anchor.fingerprint(), _out_hash(anchor_out, access),
                                        [[members[i].fingerprint(), hashes[i]] for i in order], access,
                                        hashlib.sha256("\x00".join(prompts).encode()).hexdigest(), max_words,
                                        scorable, sample)
        if key in memo:
            hit = memo[key]
            out = np.empty_like(hit)
            out[order] = hit
            return out
    ms = [members[i] for i in order]
    stats = _statistics(anchor, ms, access=access, prompts=prompts, texts=texts, anchor_out=anchor_out,
                        member_outs=[member_outs[i] for i in order], ll_scorers=ms if scorable else None,
                        max_words=max_words, sample=sample)
    if key is not None:
        memo[key] = stats
    out = np.empty_like(stats)
    out[order] = stats
    return out


def _pairwise(members: Sequence[Any], member_outs: Sequence[Any], *, access: str, prompts: list[str],
              scorable: bool, max_words: int, sample: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(M, M, S) signatures of every member with every other in the anchor's place (``[i, j]``: member j with
    anchor i), in the caller's order, and each member's rank in the pool's canonical order (a tie-break that does
    not depend on the caller's order)."""
    hashes = [_out_hash(out, access) for out in member_outs]
    # computed in the canonical order and handed back in the caller's: the same pool with another member in the
    # first place (a rotation of the teacher) reuses it
    order = _canonical(members, hashes)
    key = "pairwise:" + _key([[members[i].fingerprint(), hashes[i]] for i in order], access,
                             hashlib.sha256("\x00".join(prompts).encode()).hexdigest(), max_words, scorable, sample)
    memo = _MEMO.get()
    memo = {} if memo is None else memo  # the caller's memo (see _cached)
    if key not in memo:
        ms, outs = [members[i] for i in order], [member_outs[i] for i in order]
        memo[key] = np.stack([_statistics(ms[i], ms, access=access, prompts=prompts, texts=None, anchor_out=outs[i],
                                          member_outs=outs, ll_scorers=list(ms) if scorable else None,
                                          max_words=max_words, sample=sample)
                              for i in range(len(ms))])
    G = np.empty_like(memo[key])
    G[np.ix_(order, order)] = memo[key]
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return G, rank


def _typicality(members: Sequence[Any], member_outs: Sequence[Any], *, access: str, prompts: list[str],
                scorable: bool, max_words: int, sample: bool = False) -> np.ndarray:
    """(M, S): each member's signatures with its siblings in the anchor's place (see ``adjust_for_typicality``)."""
    G, rank = _pairwise(members, member_outs, access=access, prompts=prompts, scorable=scorable,
                        max_words=max_words, sample=sample)
    order = np.argsort(rank)
    G = G[np.ix_(order, order)]  # summed in the canonical order: the same sums for every order of the caller's
    M = G.shape[0]
    typ = (G.sum(axis=0) - G[np.arange(M), np.arange(M)]) / max(M - 1, 1)
    # rounded: a column that is constant in exact arithmetic (the likelihood signature's, which is centred on
    # each member's own mean) must not keep float noise, or the line fitted to it would be fitted to noise
    out = np.empty_like(typ)
    out[order] = np.round(np.nan_to_num(typ, nan=0.0), 10)
    return out


# ------------------------------------------------------------------------------------------------------ validation
def _check_scorers(scorers: list[Any], *, null: str, access: str, decoding: str | None, others: list[Any]) -> None:
    """Scorers serve the controls null with sampled text only; each must give log-likelihoods and be none of the
    ranked or tested models (a scorer that is also a candidate would score its own samples)."""
    if null != "controls" or access != "text" or decoding != "sample":
        raise invalid_argument("scorers", f"{len(scorers)} models", 'scorers with null="controls", access="text" and '
                                                                    'decoding="sample" (they score the samples)')
    if len(scorers) < 2:
        raise invalid_argument("scorers", f"{len(scorers)} model", "at least 2 models")
    for sc in scorers:
        if _access_of(sc) != "top_k":
            raise invalid_argument("scorers", sc.name, "models that give log-likelihoods (local models, or endpoints "
                                                       "with log-probabilities)")
    taken = {m.fingerprint() for m in others}
    prints = [sc.fingerprint() for sc in scorers]
    if len(set(prints)) != len(prints) or taken & set(prints):
        raise invalid_argument("scorers", "a model given twice, or also as the teacher, the suspect or a control",
                               "models outside the test")


def _scorer_statistics(teacher: Any, scorers: Sequence[Any], members: Sequence[Any], member_outs: Sequence[Any], *,
                       prompts: list[str]) -> tuple[np.ndarray, list[str]]:
    """(M, 1) statistics of the candidates (the suspect and the controls) under the controls null with scorers.

    Each candidate's samples get the teacher's log-likelihood minus the scorers' mean, in nats per character: how
    much more the teacher expects this text than the scorers do (the sampler's own sharpness, which moves every
    scorer's likelihood alike, cancels). A candidate's kind moves that ratio too, so it is read beyond the
    ratio of its nearest other candidate: the one whose samples the scorers score most alike (mean squared
    difference of their per-character log-likelihoods; ties by the candidates' canonical order). The scorers are
    fixed and none is a candidate, so the map is the same for every candidate and the rank is exact.
    """
    teacher_ll = np.array([_loglik_per_char(teacher, prompts, out) for out in member_outs])
    profile = np.array([[_loglik_per_char(sc, prompts, out) for out in member_outs] for sc in scorers])
    ratio = teacher_ll - profile.mean(axis=0)
    distance = ((profile[:, :, None] - profile[:, None, :]) ** 2).mean(axis=0)
    # each candidate's rank in the canonical order (the inverse of the order): ties never depend on the listing
    rank = np.argsort(_canonical(members, [_out_hash(out, "text") for out in member_outs]))
    reading = peer_relative(ratio[:, None], -distance, SCORER_PEERS, tiebreak=rank)
    return reading, ["loglik_ratio_to_scorers:beyond_nearest_peer"]


def _as_lm(obj: Any, what: str) -> Any:
    from kdaudit.models._lm_base import LanguageModel

    if not isinstance(obj, LanguageModel):
        raise invalid_argument(what, type(obj).__name__, "a kdaudit LanguageModel (HFCausalLM, an endpoint or "
                                                         "precomputed LM)")
    return obj


def _as_prompts(prompts: Any) -> Any:
    from kdaudit.data._prompts import PromptSet

    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, str) for p in prompts):
        return PromptSet(prompts=tuple(prompts), name="prompts")
    if isinstance(prompts, str) or hasattr(prompts, "__fspath__"):
        from kdaudit.data import load_prompts

        return load_prompts(prompts)
    raise invalid_argument("prompts", type(prompts).__name__, "a PromptSet, a list of str or a prompt file")


def _access_of(model: Any) -> str:
    return "top_k" if str(getattr(model, "access", "logprobs")) == "logprobs" else "text"


def _check(alpha: Any, n_prompts: Any, query_budget: Any, token_budget: Any, top_k: Any, max_new_tokens: Any,
           access: Any, null: Any, decoding: Any = None) -> None:
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise invalid_argument("alpha", alpha, "a significance level in (0, 1), e.g. 0.05")
    for name, v, lo in (("n_prompts", n_prompts, 5), ("query_budget", query_budget, 1),
                        ("token_budget", token_budget, 1)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo):
            raise invalid_argument(name, v, f"None or an integer >= {lo}")
    from kdaudit.harness._sequence import MAX_TOP_K

    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= MAX_TOP_K:
        raise invalid_argument("top_k", top_k, f"an integer in [1, {MAX_TOP_K}]")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise invalid_argument("max_new_tokens", max_new_tokens, "an integer >= 1")
    if access not in (None, "top_k", "text"):
        raise invalid_argument("access", access, 'None, "top_k" (per-token top-k log-probabilities) or "text"')
    if null not in (None, *LM_NULLS):
        raise invalid_argument("null", null, 'None, "references" or "controls"')
    if decoding not in (None, *DECODINGS):
        raise invalid_argument("decoding", decoding, 'None, "sample" (temperature 1, seeded) or "greedy"')


def _describe(m: Any) -> dict[str, Any]:
    return {"name": str(m.name), "sha256": m.fingerprint(), "tokenizer_sha256": m.tokenizer_fingerprint(),
            "kind": str(getattr(m, "kind", "lm")), "access": str(getattr(m, "access", ""))}


# ------------------------------------------------------------------------------------------------------ the tests
def _run(*args: Any, memo: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    token = _MEMO.set({} if memo is None else memo)
    try:
        return _run_tests(*args, **kwargs)
    finally:
        _MEMO.reset(token)


def _run_tests(candidates: Mapping[str, tuple[Any, list[Any]]], suspect: Any, prompts: Any, *, controls: list[Any],
         null: str | None, access: str | None, top_k: int, max_new_tokens: int, n_prompts: int | None,
         query_budget: int | None, token_budget: int | None, journal: Any, alpha: float, seed: int,
         max_words: int, decoding: str | None = None, scorers: list[Any] | None = None) -> dict[str, LMLineageResult]:
    _check(alpha, n_prompts, query_budget, token_budget, top_k, max_new_tokens, access, null, decoding)
    ps = _as_prompts(prompts)
    suspect = _as_lm(suspect, "suspect")
    controls = [_as_lm(c, "controls") for c in controls]
    scorers = [_as_lm(c, "scorers") for c in scorers or []]
    for name, (t, refs) in candidates.items():
        _as_lm(t, "teacher")
        for r in refs:
            _as_lm(r, "references")
    if null is None:
        null = "references" if all(refs for _, refs in candidates.values()) else "controls"
    if null == "references" and not all(refs for _, refs in candidates.values()):
        raise invalid_argument("references", "none", 'reference models for null="references" (or null="controls" '
                                                     "with controls)")
    if null == "controls" and len(controls) < 1:
        raise invalid_argument("controls", "none", 'baseline models for null="controls" (or null="references" '
                                                   "with references)")
    revealed = _access_of(suspect)
    access = access or revealed
    if access == "top_k" and revealed != "top_k":
        raise invalid_argument("access", "top_k", f"at most what the suspect reveals ({revealed})")
    if access == "text":
        decoding = decoding or ("sample" if null == "references" or scorers else "greedy")
    elif decoding is not None:
        raise invalid_argument("decoding", decoding, 'None with access="top_k" (decoding applies to text access)')
    sample = decoding == "sample"
    if scorers:
        _check_scorers(scorers, null=null, access=access, decoding=decoding,
                       others=[suspect, *controls, *(t for t, _ in candidates.values())])
    ranked_owner = [m for _, refs in candidates.values() for m in refs] if null == "references" else controls
    owners = [t for t, _ in candidates.values()] + ranked_owner
    seen: dict[str, Any] = {}
    for m in owners:
        seen.setdefault(m.fingerprint(), m)
    owners = list(seen.values())
    if access == "top_k":
        if null == "controls" and any(_access_of(c) != "top_k" for c in controls):
            raise invalid_argument("access", "top_k", '"text" (a control reveals text only)')
        toks = {m.tokenizer_fingerprint() for m in owners + [suspect]}
        if len(toks) != 1 or None in toks:
            raise invalid_argument("access", "top_k", '"text": per-token signatures need one tokenizer for every '
                                                      "model (the suspect's differs or is unknown)")
    n_want = DEFAULT_N_PROMPTS if n_prompts is None else int(n_prompts)
    n_sel = min(n_want, len(ps), query_budget if query_budget is not None else len(ps))
    if n_sel < 5:
        raise invalid_argument("query_budget", query_budget, "room for at least 5 suspect prompts")
    # selection: a function symmetric in the exchangeable models. References null: where the pool (teacher and
    # references) disagrees. Controls null: the exchangeable models are the suspect and the controls; a selection
    # by the controls alone would single the suspect out, so prompts are chosen where the teacher (the fixed
    # anchor, not one of the ranked models) is least certain, which treats suspect and controls alike
    if null == "references":
        scores = _disagreement(owners, ps, access=access, top_k=top_k, max_new_tokens=max_new_tokens, seed=seed)
    else:
        scores = _uncertainty([t for t, _ in candidates.values()], ps, seed=seed)
    idx = select_probes(scores, n_sel, seed=seed)
    chosen = ps.subset(idx)
    prompts_l = list(chosen.prompts)
    texts = chosen.scored_texts()
    oracle = _Suspect(suspect, prompt_budget=query_budget, token_budget=token_budget, journal=journal)
    # owner models' outputs on the chosen prompts are cut from their outputs on every candidate (computed for the
    # selection), never recomputed
    all_ids = list(ps.ids)
    if access == "top_k":
        s_out = oracle.score(texts, list(chosen.ids), top_k=top_k)
        all_texts = ps.scored_texts()
        out_of = lambda m: _subset_topk(_score(m, all_texts, all_ids, top_k=top_k), idx)  # noqa: E731
    else:
        s_out = oracle.generate(prompts_l, list(chosen.ids), max_new_tokens=max_new_tokens, seed=seed,
                                sample=sample)
        all_prompts = list(ps.prompts)
        out_of = lambda m: [_generate(m, all_prompts, all_ids, max_new_tokens=max_new_tokens,  # noqa: E731
                                      seed=seed, sample=sample)[i] for i in idx]
    # the controls answer exactly what the suspect was asked (the chosen prompts, in the same calls and batches), so
    # under the controls null nothing but the models tells them apart from the suspect
    asked = lambda c: (_score(c, texts, list(chosen.ids), top_k=top_k) if access == "top_k" else  # noqa: E731
                       _generate(c, prompts_l, list(chosen.ids), max_new_tokens=max_new_tokens, seed=seed,
                                 sample=sample))
    if access == "top_k":
        ref_ids = np.asarray(out_of(owners[0]).target_ids)
        if not np.array_equal(np.asarray(s_out.target_ids), ref_ids):
            raise invalid_argument("suspect", suspect.name, "top-k scores of the same token positions as the "
                                                            "teacher's (same tokenizer)")
    results = {}
    for cname, (teacher, refs) in candidates.items():
        calibrated: list[str] = []  # the controls that calibrated the members (none: not calibrated)
        sig_names = list(TOKEN_SIGNATURES if access == "top_k" else TEXT_SIGNATURES)
        family = np.zeros(len(sig_names), dtype=np.int64)  # which reading each column is (one under "references")
        typicality_corrected = null == "references"
        if null == "references":
            members = [teacher, *refs]
            anchor_out, member_outs = s_out, [out_of(m) for m in members]
            scorable = access == "text" and all(_access_of(m) == "top_k" for m in members)
            pool_kw = dict(access=access, prompts=prompts_l, texts=texts, scorable=scorable, max_words=max_words,
                           sample=sample)
            stats = _pool_statistics(suspect, anchor_out, members, member_outs, owner=False, **pool_kw)
            if sample and len(controls) >= MIN_CALIBRATION_CONTROLS:
                # sampled text on the controls' null scale alone: a member's likelihood of samples is mostly its
                # general fit to text, which the controls measure member by member; a line fitted on the
                # siblings' samples as well removed most of a derived suspect's signal on the benchmark zoo
                typ = None
                typicality_corrected = False
            else:
                typ = _typicality(members, member_outs, access=access,
                                  prompts=texts if access == "top_k" else prompts_l, scorable=scorable,
                                  max_words=max_words, sample=sample)
                stats = adjust_for_typicality(stats, typ)
            if len(controls) >= MIN_CALIBRATION_CONTROLS:
                # each member on its own null scale: its mean and spread over the controls in the suspect's place
                # (the same controls for every member, so the rank stays exact; see calibrate_by_controls)
                cal = np.stack([_pool_statistics(c, asked(c), members, member_outs, owner=True, **pool_kw)
                                for c in controls])
                cal = cal if typ is None else adjust_for_typicality(cal, typ)
                # against the controls most like the suspect (chosen over every member at once, so the same
                # controls serve every member) or all of them (see NEAREST_CALIBRATION)
                near = nearer_half(stats, cal) if access in NEAREST_CALIBRATION else np.arange(len(cal))
                stats = calibrate_by_controls(stats, cal[near])
                calibrated = [str(controls[j].name) for j in sorted(near)]
            if sample and scorable:
                sig_names = list(SAMPLED_SIGNATURES)
            names = [str(teacher.name)] + [str(r.name) for r in refs]
        else:
            members = [suspect, *controls]
            member_outs = [s_out] + [asked(c) for c in controls]
            anchor_out = out_of(teacher)
            scorable = access == "text" and _access_of(teacher) == "top_k"
            names = [str(suspect.name)] + [str(c.name) for c in controls]
            if scorers:
                # fixed scorers outside the ranked candidates measure how expected each candidate's samples are in
                # general; the teacher's excess over them, read beyond the nearest other candidate's (see
                # _scorer_statistics): the same map for every candidate, so the rank stays exact
                stats, sig_names = _scorer_statistics(teacher, scorers, members, member_outs, prompts=prompts_l)
                family = np.zeros(len(sig_names), dtype=np.int64)
            else:
                stats = _statistics(teacher, members, access=access, prompts=prompts_l, texts=texts,
                                    anchor_out=anchor_out, member_outs=member_outs,
                                    ll_scorers=[teacher] if scorable else None, max_words=max_words)
                # the candidates may be models of many kinds, and a model's closeness to the teacher is mostly its
                # kind's: each candidate's closeness is read as it is and against the other candidates two ways
                # (see _CONTROLS_FAMILIES); the combined statistic is the largest of the three families' (the same
                # maps for every candidate; the likelihood column, which would need every candidate to score the
                # others, enters each family as it is)
                G, canon = _pairwise(members, member_outs, access=access,
                                     prompts=texts if access == "top_k" else prompts_l, scorable=False,
                                     max_words=max_words)
                stats = np.concatenate([stats, beyond_nearest(stats, G),
                                        peer_relative(stats, pair_similarity(G), CONTROL_PEERS, tiebreak=canon)],
                                       axis=1)
                family = np.repeat(np.arange(len(_CONTROLS_FAMILIES)), len(sig_names))
                sig_names = [f"{n}{suffix}" for suffix in _CONTROLS_FAMILIES for n in sig_names]
        keep = [j for j in range(stats.shape[1]) if np.all(np.isfinite(stats[:, j]))]
        stats = stats[:, keep]
        sig_names = [sig_names[j] for j in keep]
        family = family[keep]
        # the largest of the readings' combined statistics (a single reading under the references null)
        combined = np.max([combined_statistic(stats[:, family == f], np.full(int(np.sum(family == f)), _WEIGHTS))
                           for f in np.unique(family)], axis=0)
        z = leave_one_out_z(stats)
        n_others = len(members) - 1
        p = rank_p_value(combined[0], combined[1:])
        need = min_references(alpha, len(candidates))
        rank = int(1 + np.sum(combined[1:] > combined[0]))
        who = "teacher" if null == "references" else "suspect"
        others = "references" if null == "references" else "controls"
        where = f"the {who} ranks {rank} of {len(members)} on the combined statistic"
        if n_others < min_references(alpha):
            verdict = "inconclusive"
            reason = (f"{n_others} {others} cannot give a p-value below {alpha:g} (the smallest possible is "
                      f"1/{len(members)}); give at least {min_references(alpha)}; {where}")
        else:
            verdict = "derived" if p <= alpha else "not derived"
            reason = f"{where}; exact p = {p:.3g} {'<=' if p <= alpha else '>'} {alpha:g}"
            if len(candidates) > 1 and n_others < need:
                reason += f" (Holm over {len(candidates)} candidates needs >= {need} {others} to reach alpha)"
        signatures = {s: {"description": _describe_signature(s), "values": [float(v) for v in stats[:, j]],
                          "z_first": float(z[0, j]), "rank_p_value": rank_p_value(stats[0, j], stats[1:, j])}
                      for j, s in enumerate(sig_names)}
        raw = _raw_similarity(teacher, suspect, access=access, prompts=prompts_l, texts=texts, s_out=s_out,
                              t_out=out_of(teacher))
        models = {"teacher": _describe(teacher), "suspect": _describe(suspect),
                  "references": [_describe(r) for r in refs] if null == "references" else [],
                  "controls": [_describe(c) for c in controls],
                  **({"scorers": [_describe(c) for c in scorers]} if scorers else {})}
        results[cname] = LMLineageResult(
            verdict=verdict, reason=reason, p_value=p, alpha=float(alpha), null=null,
            access=access if access == "text" else f"top_k:{top_k}", statistic=float(combined[0]),
            member_statistics=tuple(float(x) for x in combined), members=tuple(names),
            effect=float(effect_size(combined)) if len(members) >= 3 else math.nan,
            signatures=signatures, raw_similarity=raw, teacher=str(teacher.name), suspect=str(suspect.name),
            n_prompts=len(idx), n_candidates=len(ps),
            prompts={"candidates_sha256": ps.sha256(), "selected_sha256": chosen.sha256(),
                     "selected_ids": [str(i) for i in chosen.ids],
                     "selected_text_sha256": [hashlib.sha256(t.encode()).hexdigest() for t in
                                              (texts if access == "top_k" else prompts_l)],
                     "selection": ("disagreement of teacher and references" if null == "references" else
                                   "the teacher's uncertainty (symmetric in suspect and controls)") + ", 20% random",
                     "seed": seed},
            queries=oracle.record(), models=models,
            settings={"top_k": top_k, "max_new_tokens": max_new_tokens, "decoding": decoding, "seed": seed,
                      "max_words": max_words, "n_prompts_requested": n_want,
                      "calibrated_by_controls": bool(calibrated), "calibration_controls": calibrated},
            assumptions=_assumptions(null, access, bool(calibrated), decoding,
                                     nearest=0 < len(calibrated) < len(controls), scorers=len(scorers)),
            methodology=_methodology(null, access, sig_names, len(idx), decoding, typicality_corrected,
                                     scorers=len(scorers)),
            explanation=_PLAIN[null].format(K=len(refs), L=len(controls)) + (
                f" Closeness here is how much more the teacher expects a model's sampled text than {len(scorers)} "
                "other models (the scorers, outside the test) do." if scorers else ""),
            null_hypothesis=LM_NULLS[null])
    return results


def _raw_similarity(teacher: Any, suspect: Any, *, access: str, prompts: list[str], texts: list[str], s_out: Any,
                    t_out: Any) -> dict[str, float]:
    """Single statistics of teacher-suspect similarity (the baselines a lineage test must beat)."""
    if access == "top_k":
        return {"top1_agreement": float(np.mean(np.asarray(s_out.top_ids[:, 0]) == np.asarray(t_out.top_ids[:, 0]))),
                "teacher_logprob_corr": float(np.corrcoef(s_out.target_logprob, t_out.target_logprob)[0, 1])}
    from kdaudit.metrics._text import text_pair_scores

    pair = text_pair_scores(list(s_out), list(t_out))
    out = {"rouge_l": float(np.mean(pair["rouge_l"])), "exact_match": float(np.mean(pair["exact_match"])),
           "word_agreement": float(np.mean([_word_agreement(words(a), words(b)) for a, b in zip(s_out, t_out)]))}
    if _access_of(teacher) == "top_k":
        out["teacher_loglik"] = _loglik(teacher, prompts, s_out)
    return out


def _describe_signature(name: str) -> str:
    base, _, family = name.partition(":")
    text = LM_SIGNATURES[base]
    if family == "beyond_nearest":
        return text + ", minus the candidate's closeness to its nearest other candidate"
    if family == "beyond_peers":
        return text + f", minus the mean of its {CONTROL_PEERS} most similar other candidates'"
    if family == "beyond_nearest_peer":
        return text + (", minus the same of the candidate whose samples the scorers score most alike (its nearest "
                       "other candidate)")
    return text


def _assumptions(null: str, access: str, calibrated: bool = False, decoding: str | None = None, *,
                 nearest: bool = False, scorers: int = 0) -> tuple[str, ...]:
    common = (("Prompts were selected where the teacher and references disagree, a function symmetric in the "
               "exchangeable models (never by the teacher alone)" if null == "references" else
               "Prompts were selected where the teacher (the fixed anchor, not one of the ranked models) is least "
               "certain, which treats the suspect and the controls alike (a selection by the controls would not)")
              + "; prompts and tokens are not assumed independent.",
              "The suspect's answers to a prompt do not depend on which prompts were asked before.")
    if null == "references":
        own = ("Under H0 the teacher and the references are exchangeable with respect to the suspect: the "
               "references were trained by the teacher's recipe and data with other seeds, and not selected with "
               "the suspect in view.",
               "The p-value is exact over the draw of the teacher from its recipe, for this suspect; it does not "
               "bound how often this particular teacher accuses unrelated models of a family close to it (measured "
               "on the classifier zoos: a few teachers accused whole families). Controls of the suspect's family "
               "measure that.")
    else:
        own = ("Under H0 the suspect is exchangeable with the controls in its relation to the teacher: the controls "
               "are not derived from the teacher and are drawn from the population an underived suspect comes from "
               "(similar data, size and training). Each candidate is measured against the candidates most like it, "
               "which makes the test less sensitive to the mix of control kinds, but a suspect of a kind no control "
               "shares (the teacher's own recipe and data, say, with no such control) is outside the guarantee.",)
    if scorers:
        own += (f"The {scorers} scorers are fixed models outside the test (neither the teacher, the suspect nor a "
                "control); they score every candidate's samples alike, so the statistic is the same function for "
                "the suspect and each control and the rank stays exact. A scorer may be any model; the test is "
                "most sensitive when the scorers are like the teacher and unlike the suspect.",)
    if calibrated:
        which = ("the controls most like the suspect (the nearer half, by their statistics with the whole pool; "
                 "listed in settings)" if nearest else "the controls")
        own += (f"Each member's signatures were measured against their own mean and spread over {which} in the "
                "suspect's place; the controls are not derived from any member and the same ones serve every "
                "member, so the rank stays exact.",)
    if access == "top_k":
        tok = ("Every model shares the teacher's tokenizer (per-token top-k log-probabilities at the same "
               "positions).",)
    elif decoding == "sample":
        tok = ("Continuations were asked for at temperature 1 with a fixed seed; likelihoods are compared in nats "
               "per character, so tokenizers may differ. The p-value's validity does not depend on how the suspect "
               "really decoded (the statistic treats every member alike); its power does.",)
    else:
        tok = ("Continuations are greedy; words are compared, so tokenizers may differ.",)
    return own + common + tok


def _methodology(null: str, access: str, sigs: Sequence[str], n: int, decoding: str | None = "greedy",
                 typicality: bool = True, *, scorers: int = 0) -> str:
    ranked = "teacher and each reference" if null == "references" else "suspect and each control"
    anchor = "the suspect" if null == "references" else "the teacher"
    revealed = ("per-token top-k log-probabilities of prompt and reference text" if access == "top_k"
                else "continuations sampled at temperature 1" if decoding == "sample" else "greedy continuations")
    if null == "controls" and scorers:
        return (f"On {n} prompts ({revealed}), the teacher and {scorers} scorers (fixed models outside the test) "
                f"scored the continuations of the {ranked}. Each candidate's statistic is the teacher's "
                "log-likelihood of its continuations minus the scorers' mean, in nats per character (how much more "
                "the teacher expects this text than the scorers do), minus the same statistic of its nearest "
                "other candidate (the one whose continuations the scorers score most alike), so that a kind of model "
                "close to the teacher does not count as derivation. The p-value is the suspect's rank among all "
                "candidates, exact under exchangeability.")
    if null == "controls":
        bases = list(dict.fromkeys(s.split(":")[0] for s in sigs))
        listed = "; ".join(f"{s} ({LM_SIGNATURES[s]})" for s in bases)
        return (f"On {n} prompts ({revealed}), the same signatures relate the teacher to the {ranked}: {listed}. "
                f"Each candidate's signatures are read as they are and against the other candidates two ways: "
                f"beyond its closeness to its nearest other candidate (positive when the teacher is its nearest "
                f"neighbour), and beyond the mean of its {CONTROL_PEERS} most similar candidates' (positive when it "
                f"comes closer to the teacher than models of its own kind do). Each of the three families is "
                f"standardised against the other candidates (leave-one-out) and averaged with equal weights fixed in "
                f"advance; the combined statistic is the largest of the three and the p-value is the suspect's rank "
                f"among all candidates, exact under exchangeability.")
    listed = "; ".join(f"{s} ({LM_SIGNATURES[s]})" for s in sigs)
    return (f"On {n} prompts ({revealed}), "
            f"the same signatures relate {anchor} to the {ranked}: {listed}. "
            + ("Each is corrected for how strongly the member relates to its own siblings (a line fitted on the "
               "other members), " if typicality else "")
            + "standardised against the other members (leave-one-out) and averaged with equal weights fixed in "
              "advance; the p-value is the first member's rank among all, exact under exchangeability.")


def _split_pool(teacher: Any, references: Any) -> tuple[Any, list[Any]]:
    refs = list(references or [])
    if len({id(m) for m in [teacher, *refs]}) != len(refs) + 1:
        raise invalid_argument("references", "the same model twice (or the teacher among them)", "distinct models")
    return teacher, refs


def lm_lineage_test(teacher: Any, suspect: Any, prompts: Any, *, references: Sequence[Any] | None = None,
                    controls: Sequence[Any] | None = None, null: str | None = None, access: str | None = None,
                    top_k: int = 20, max_new_tokens: int = 24, n_prompts: int | None = None,
                    query_budget: int | None = DEFAULT_PROMPT_BUDGET, token_budget: int | None = None,
                    journal: Any = None, alpha: float = 0.05, seed: int = 0, max_words: int = 64,
                    decoding: str | None = None, memo: dict[str, Any] | None = None,
                    scorers: Sequence[Any] | None = None) -> LMLineageResult:
    """Test whether the language model ``suspect`` was derived (distilled, extracted) from ``teacher``.

    Parameters
    ----------
    teacher, suspect : LanguageModel
        :class:`~kdaudit.models.HFCausalLM`, an OpenAI-compatible endpoint, or precomputed outputs.
    prompts : PromptSet, list of str, or a prompt file
        Candidate prompts; the test sends the suspect the ``n_prompts`` where the owner's models disagree most
        (plus a random 20%). Top-k access scores ``prompt + reference`` when references are given.
    references : sequence of LanguageModel, optional
        The teacher's recipe and data with other seeds (null "references"; 19 for an exact verdict at 0.05).
    controls : sequence of LanguageModel, optional
        Baseline models known not to be derived from the teacher (null "controls"; 19 for 0.05).
    null : {"references", "controls"}, optional
        Default "references" when references are given, else "controls". See :data:`LM_NULLS`.
    access : {"top_k", "text"}, optional
        Default: what the suspect reveals. "text" uses the suspect's continuations only.
    top_k, max_new_tokens : int
    n_prompts : int, optional
        Prompts sent to the suspect (default 500, capped by ``query_budget`` and the candidates).
    query_budget, token_budget : int, optional
        Most suspect prompts (default 1,000) and tokens (an upper bound charged before sending) this test may use.
    journal : path or QueryJournal, optional
        Write-ahead record of the suspect's answers: a rerun or a resumed run pays for nothing answered before.
    alpha : float
    seed : int
        Selection's random share and sampling seeds.
    max_words : int
        Words of each continuation compared by the text signatures.
    decoding : {"sample", "greedy"}, optional
        How text access asks for continuations (every model alike). Default "sample" (temperature 1, seeded)
        under the references null, where each member's likelihood of the suspect's samples ranks how close the
        suspect's distribution is to the member's; "greedy" under the controls null, "sample" with ``scorers``.
        See :data:`DECODINGS`.
    memo : dict, optional
        The owner models' outputs, shared between calls that test several suspects against one pool (pass the same
        dict); by default each call computes its own.
    scorers : sequence of LanguageModel, optional
        Null "controls" with sampled text (the default decoding then): at least 2 models that give log-likelihoods,
        none of them the teacher, the suspect or a control. The statistic is then the teacher's log-likelihood of
        each candidate's samples minus the scorers' mean, read beyond the nearest other candidate's (see
        ``benchmarks/lm_lineage.py --scorers``); without scorers, the text signatures read three ways. Power depends
        on them, validity does not: choose models like the teacher (its data, its family) and unlike the suspect's
        likely data and architecture, which would expect the suspect's text as much as the teacher does.

    Returns
    -------
    LMLineageResult
        Byte-identical ``to_dict()`` for the same models, prompts and options.
    """
    pool = _split_pool(teacher, references)
    res = _run({"teacher": pool}, suspect, prompts, controls=list(controls or []), null=null, access=access,
               top_k=top_k, max_new_tokens=max_new_tokens, n_prompts=n_prompts, query_budget=query_budget,
               token_budget=token_budget, journal=journal, alpha=alpha, seed=seed, max_words=max_words,
               decoding=decoding, memo=memo, scorers=list(scorers or []))
    return res["teacher"]


def lm_attribute(suspect: Any, candidates: Mapping[str, Any], prompts: Any, *, controls: Sequence[Any] | None = None,
                 null: str | None = None, access: str | None = None, top_k: int = 20, max_new_tokens: int = 24,
                 n_prompts: int | None = None, query_budget: int | None = DEFAULT_PROMPT_BUDGET,
                 token_budget: int | None = None, journal: Any = None, alpha: float = 0.05, seed: int = 0,
                 max_words: int = 64, decoding: str | None = None, memo: dict[str, Any] | None = None,
                 scorers: Sequence[Any] | None = None) -> LMAttributionResult:
    """Which candidate teacher, if any, is the suspect LM's parent? One test per candidate on one shared prompt
    selection (the suspect is asked once), Holm-Bonferroni across candidates.

    ``candidates`` maps name -> teacher (null "controls": every candidate is tested against the same controls) or
    name -> (teacher, references) (null "references"). The parent is the significant candidate (Holm-adjusted
    p <= alpha) with the largest effect, else "none". The other options are :func:`lm_lineage_test`'s.
    """
    from kdaudit.lineage._stats import holm_parent

    if not isinstance(candidates, Mapping) or not candidates:
        raise invalid_argument("candidates", candidates, "a non-empty dict name -> teacher or (teacher, references)")
    pools = {str(k): _split_pool(*(v if isinstance(v, (tuple, list)) else (v, []))) for k, v in candidates.items()}
    res = _run(pools, suspect, prompts, controls=list(controls or []), null=null, access=access, top_k=top_k,
               max_new_tokens=max_new_tokens, n_prompts=n_prompts, query_budget=query_budget,
               token_budget=token_budget, journal=journal, alpha=alpha, seed=seed, max_words=max_words,
               decoding=decoding, memo=memo, scorers=list(scorers or []))
    names = list(res)
    parent, adjusted = holm_parent(names, [res[n].p_value for n in names], [res[n].effect for n in names],
                                   alpha=alpha, eligible=[res[n].verdict != "inconclusive" for n in names])
    reason = (f"{parent} has the largest effect among the candidates significant after Holm correction"
              if parent != "none" else "no candidate is significant after Holm correction")
    return LMAttributionResult(parent=parent, alpha=float(alpha), results=res,
                               adjusted_p_values={n: float(a) for n, a in zip(names, adjusted)}, reason=reason)


def is_language_model(obj: Any) -> bool:
    """True for a kdaudit LanguageModel (``lineage_test`` dispatches on it)."""
    from kdaudit.models._lm_base import LanguageModel

    return isinstance(obj, LanguageModel)

