"""Lineage signatures of language models: how closely one model (the *anchor*) follows each of a set of *members*
beyond what the members share, per token (top-k access) or per continuation (text access).

Every function returns an (M, S) array: one row per member, one column per signature, computed by the same
symmetric procedure for every member, so that ranking the members by them gives an exact permutation p-value when
the members are exchangeable under the null. The two nulls of :mod:`kdaudit.lineage._lm` use them both ways:

* sibling references: the anchor is the suspect, the members are the teacher and its references;
* unrelated baselines: the anchor is the teacher, the members are the suspect and the controls.

Higher is always "closer to the anchor".
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

__all__ = ["LM_SIGNATURES", "SAMPLED_SIGNATURES", "TEXT_SIGNATURES", "TOKEN_SIGNATURES", "forced_agreement_pooled",
           "forced_agreement_weighted", "text_statistics", "token_statistics", "words"]

TOKEN_SIGNATURES = ("residual_logprob", "top1_where_members_differ", "anchor_cross_entropy")
TEXT_SIGNATURES = ("loglik_of_anchor_text", "forced_top1_agreement", "word_agreement", "idiosyncratic_ngrams")
#: text access with sampled continuations, every member able to score (null "references")
SAMPLED_SIGNATURES = ("loglik_of_anchor_samples", "forced_top1_agreement", "word_agreement", "idiosyncratic_ngrams")

LM_SIGNATURES: dict[str, str] = {
    "residual_logprob": "correlation, over token positions, of the anchor's and the member's log-probability of the "
                        "actual next token after subtracting the members' mean (what they all find likely)",
    "top1_where_members_differ": "share of positions where the members' top-1 tokens are not unanimous at which "
                                 "the anchor's top-1 token is the member's",
    "anchor_cross_entropy": "minus the cross-entropy of the member's log-probabilities under the anchor's "
                            "(renormalised) top-k distribution; a token outside the member's top k gets the "
                            "member's k-th log-probability (an upper bound)",
    "loglik_of_anchor_text": "per-token log-likelihood the member gives the anchor's continuations, minus the "
                             "member's mean per-token log-likelihood of the other members' continuations "
                             "(who finds the text least surprising relative to its own habits); text access",
    "loglik_of_anchor_samples": "log-likelihood the member gives the anchor's continuations sampled at temperature "
                                "1, in nats per character (tokenizer-free): a sample of the anchor's own "
                                "distribution, so the member whose distribution the anchor's is closest to (the "
                                "smallest cross-entropy) scores highest; text access, null 'references'",
    "forced_top1_agreement": "teacher-forced on the anchor's continuations: the share of token positions at which "
                             "the scorer's top-1 token is the token the anchor wrote (a greedy anchor's own top-1), "
                             "over the positions where the scoring members' top-1 tokens are not unanimous (null "
                             "'references': each member scores the suspect's text) or weighted by the scorer's "
                             "uncertainty (null 'controls': the teacher scores each member's text); text access",
    "word_agreement": "share of word positions where the anchor's and the member's greedy continuations use the "
                      "same word; text access",
    "idiosyncratic_ngrams": "word unigrams and bigrams of the anchor's continuation that the member's continuation "
                            "of the same prompt shares, each weighted by log(M / number of members using it): "
                            "choices common to all members count 0, a member's own choices count most",
    "loglik_ratio_to_scorers": "the teacher's log-likelihood of the candidate's continuations sampled at "
                               "temperature 1, minus the scorers' mean log-likelihood of them, in nats per character "
                               "(how much more the teacher expects this text than the scorers do: the sampler's "
                               "own sharpness cancels); text access, null 'controls' with scorers",
}

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def words(text: str, limit: int | None = None) -> list[str]:
    """Words and punctuation marks of ``text`` (tokenizer-free, so models with other tokenizers compare)."""
    out = _WORD.findall(text)
    return out if limit is None else out[:limit]


# --------------------------------------------------------------------------------------------------- top-k access
def _positions(tk: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(tk.top_ids, dtype=np.int64), np.asarray(tk.top_logprobs, dtype=np.float64),
            np.asarray(tk.target_logprob, dtype=np.float64))


def _cross(anchor_ids: np.ndarray, anchor_lp: np.ndarray, member_ids: np.ndarray, member_lp: np.ndarray
           ) -> float:
    """Mean over positions of sum_v q_anchor(v) log p_member(v) over the anchor's top k (q renormalised)."""
    n, k = anchor_ids.shape
    if n == 0:
        return 0.0
    q = np.exp(anchor_lp - anchor_lp.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    # look each (position, token) of the anchor up among the member's by one sorted key
    V = int(max(anchor_ids.max(), member_ids.max())) + 1
    rows = np.arange(n, dtype=np.int64)[:, None] * V
    mkey = (rows + member_ids).ravel()
    order = np.argsort(mkey, kind="stable")
    sk, sl = mkey[order], member_lp.ravel()[order]
    akey = (rows + anchor_ids).ravel()
    pos = np.minimum(np.searchsorted(sk, akey), len(sk) - 1)
    found = sk[pos] == akey
    floor = np.repeat(member_lp[:, -1], k)
    lp = np.where(found, sl[pos], floor).reshape(n, k)
    return float((q * lp).sum() / n)


def token_statistics(anchor: Any, members: Sequence[Any]) -> np.ndarray:
    """(M, 3) token signatures (:data:`TOKEN_SIGNATURES`) of each member relative to the anchor.

    All inputs are :class:`~kdaudit.harness.TokenTopK` of the same texts with the same tokenizer (same positions).
    """
    a_ids, a_lp, a_t = _positions(anchor)
    m = [_positions(x) for x in members]
    targets = np.stack([x[2] for x in m])  # (M, n)
    consensus = targets.mean(axis=0)
    ra = a_t - consensus
    top1 = np.stack([x[0][:, 0] for x in m])  # (M, n)
    differ = ~(top1 == top1[0]).all(axis=0)
    a_top1 = a_ids[:, 0]
    out = np.zeros((len(members), len(TOKEN_SIGNATURES)))
    for j, (ids, lp, t) in enumerate(m):
        rm = t - consensus
        sa, sm = ra.std(), rm.std()
        out[j, 0] = float(np.mean((ra - ra.mean()) * (rm - rm.mean())) / (sa * sm)) if sa > 0 and sm > 0 else 0.0
        out[j, 1] = float(np.mean(a_top1[differ] == ids[differ, 0])) if differ.any() else 0.0
        out[j, 2] = _cross(a_ids, a_lp, ids, lp)
    return out


# ---------------------------------------------------------------------------------------------------- text access
def _ngrams(ws: list[str]) -> set[tuple[str, ...]]:
    return {(w,) for w in ws} | {tuple(ws[i:i + 2]) for i in range(len(ws) - 1)}


def text_statistics(anchor_texts: Sequence[str], member_texts: Sequence[Sequence[str]],
                    loglik: np.ndarray | None, forced: np.ndarray | None = None, *, max_words: int = 64
                    ) -> np.ndarray:
    """(M, 4) text signatures (:data:`TEXT_SIGNATURES`) of each member relative to the anchor.

    Parameters
    ----------
    anchor_texts : sequence of str
        The anchor's continuation of each prompt.
    member_texts : sequence (M) of sequence of str
        Each member's continuation of the same prompts.
    loglik : ndarray of shape (M,), optional
        The ``loglik_of_anchor_text`` column, computed by the caller (it needs the members' scores); NaN column
        when None (text-only members).
    forced : ndarray of shape (M,), optional
        The ``forced_top1_agreement`` column (:func:`forced_agreement_pooled` or :func:`forced_agreement_weighted`),
        computed by the caller; NaN when None.
    """
    M, n = len(member_texts), len(anchor_texts)
    aw = [words(t, max_words) for t in anchor_texts]
    mw = [[words(t, max_words) for t in texts] for texts in member_texts]
    agree = np.zeros(M)
    idio = np.zeros(M)
    for p in range(n):
        grams = [_ngrams(mw[j][p]) for j in range(M)]
        df: dict[tuple[str, ...], int] = {}
        for g in grams:
            for b in g:
                df[b] = df.get(b, 0) + 1
        a_grams = _ngrams(aw[p])
        size = max(len(a_grams), 1)
        for j in range(M):
            x, y = aw[p], mw[j][p]
            width = max(len(x), len(y), 1)
            agree[j] += sum(1 for u, v in zip(x, y) if u == v) / width
            idio[j] += sum(np.log(M / df[b]) for b in a_grams & grams[j]) / size
    ll = np.full(M, np.nan) if loglik is None else np.asarray(loglik, dtype=np.float64)
    fa = np.full(M, np.nan) if forced is None else np.asarray(forced, dtype=np.float64)
    return np.stack([ll, fa, agree / max(n, 1), idio / max(n, 1)], axis=1)


def forced_agreement_pooled(top1: np.ndarray, written: np.ndarray) -> np.ndarray:
    """``forced_top1_agreement`` of M scorers of one text (null "references": the members score the suspect's
    continuations, teacher-forced).

    ``top1`` (M, n): each scorer's top-1 token at the n continuation positions; ``written`` (n,): the token the
    text's author wrote there. A greedy author's written token *is* its own top-1 at every position of its
    continuation, so teacher forcing recovers from text alone the author's top-1 along its own trajectory (free
    continuations diverge after their first difference and say little beyond it). Per scorer: the share of the
    positions where the scorers' top-1 tokens are not unanimous at which its top-1 is the written token (where all
    agree, no scorer stands out); 0 where they never differ.
    """
    top1 = np.asarray(top1)
    differ = ~(top1 == top1[:1]).all(axis=0)
    if not differ.any():
        return np.zeros(top1.shape[0])
    return (top1[:, differ] == np.asarray(written)[differ]).mean(axis=1)


def forced_agreement_weighted(scored: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """``forced_top1_agreement`` of one scorer over M texts (null "controls": the teacher scores each member's
    continuations, teacher-forced).

    ``scored[m]`` is ``(top1, top1_logprob, written)`` over member m's continuation positions: the scorer's top-1
    token, its log-probability and the token member m wrote. Per member: the share of positions at which the
    scorer's top-1 is the written token, weighted by the scorer's uncertainty ``1 - p(top-1)`` (where the scorer is
    sure, every fluent model writes the same token).
    """
    out = np.zeros(len(scored))
    for m, (top1, lp, written) in enumerate(scored):
        w = 1.0 - np.exp(np.asarray(lp, dtype=np.float64))
        if w.sum() > 0:
            out[m] = float((w * (np.asarray(top1) == np.asarray(written))).sum() / w.sum())
    return out
