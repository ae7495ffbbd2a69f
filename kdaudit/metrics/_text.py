"""Text-level similarity of two generations: exact match, ROUGE-L and chrF, one number per prompt.

These compare what two language models *generate* for the same prompt, so they need nothing but text: they work
across tokenizers and through text-only APIs. Each function returns one score per pair (the prompt is the resampling
unit of the audit's bootstrap, see :mod:`kdaudit.metrics._sequence`).

Definitions (checked in ``tests/test_lm_metrics.py`` against the reference packages on the same inputs):

``rouge_l``
    ROUGE-L F1 (Lin 2004) with the tokenisation of Google's ``rouge-score`` package (``RougeScorer(["rougeL"])``,
    no stemming): lower-case, every run of characters outside ``[a-z0-9]`` is a separator, empty tokens dropped.
    ``P = LCS / len(candidate)``, ``R = LCS / len(reference)``, ``F = 2PR / (P + R)`` (0 when either side has no
    token). Symmetric in its two arguments.
``chrf``
    Sentence-level chrF (Popović 2015) as ``sacrebleu.sentence_chrf`` with its defaults (character n-grams of orders
    1..6, whitespace removed, beta = 2, no word n-grams, no epsilon smoothing): per order, precision and recall of
    clipped n-gram matches; precision and recall averaged over the orders where both texts have n-grams; then
    ``F_beta``; on a 0-100 scale divided by 100 here (so every score lies in [0, 1]). Recall-weighted, so not
    symmetric: the candidate is the student's text, the reference the teacher's.
``exact_match``
    1 when the two strings are identical (no normalisation), else 0.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

from kdaudit._exceptions import invalid_argument

__all__ = ["chrf_score", "exact_match", "lcs_length", "rouge_l_score", "text_pair_scores"]

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
CHRF_ORDER = 6
CHRF_BETA = 2.0


def _rouge_tokens(text: str) -> list[str]:
    return [t for t in _NON_ALNUM.sub(" ", text.lower()).split() if t]


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence of two sequences (dynamic programming, O(len(a) * len(b)) time,
    O(min) memory)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else (prev[j + 1] if prev[j + 1] > cur[j] else cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_score(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of ``candidate`` against ``reference`` (``rouge-score``'s tokenisation; see module docstring)."""
    c, r = _rouge_tokens(candidate), _rouge_tokens(reference)
    if not c or not r:
        return 0.0
    lcs = lcs_length(c, r)
    p, rec = lcs / len(c), lcs / len(r)
    return 0.0 if p + rec == 0 else 2 * p * rec / (p + rec)


def _char_ngrams(text: str, n: int) -> Counter:
    return Counter(text[i:i + n] for i in range(len(text) - n + 1))


def chrf_score(candidate: str, reference: str) -> float:
    """Sentence chrF in [0, 1] of ``candidate`` against ``reference`` (``sacrebleu.sentence_chrf`` / 100)."""
    hyp, ref = "".join(candidate.split()), "".join(reference.split())
    eff, sum_p, sum_r = 0, 0.0, 0.0
    for n in range(1, CHRF_ORDER + 1):
        h, r = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        n_hyp = sum(h.values()) if r else 0  # sacrebleu counts hypothesis n-grams only when the reference has some
        n_ref = sum(r.values())
        if n_hyp > 0 and n_ref > 0:
            match = sum(min(c, r[g]) for g, c in h.items() if g in r)
            sum_p += match / n_hyp
            sum_r += match / n_ref
            eff += 1
    if eff == 0:
        return 0.0
    p, rec = sum_p / eff, sum_r / eff
    b2 = CHRF_BETA**2
    return 0.0 if p + rec == 0 else (1 + b2) * p * rec / (b2 * p + rec)


def exact_match(candidate: str, reference: str) -> float:
    return float(candidate == reference)


def text_pair_scores(candidates: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per pair: ``exact_match``, ``rouge_l`` and ``chrf`` (float64 arrays of the pairs' length)."""
    if len(candidates) != len(references):
        raise invalid_argument("candidates", f"{len(candidates)} texts", f"{len(references)}, one per reference")
    for name, seq in (("candidates", candidates), ("references", references)):
        if not all(isinstance(t, str) for t in seq):
            raise invalid_argument(name, "non-string entries", "a sequence of str")
    return {
        "exact_match": np.array([exact_match(c, r) for c, r in zip(candidates, references)], dtype=np.float64),
        "rouge_l": np.array([rouge_l_score(c, r) for c, r in zip(candidates, references)], dtype=np.float64),
        "chrf": np.array([chrf_score(c, r) for c, r in zip(candidates, references)], dtype=np.float64),
    }
