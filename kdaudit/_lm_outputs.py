"""Output kinds of language models: per-token top-k log-probabilities and generated text.

They live at the bottom of the package (with :mod:`kdaudit._kinds`) because every layer shares them: the language-model
adapters produce them, the harness caches them, the metrics and sections consume them. ``kdaudit.harness._sequence``
re-exports them.

These are the contract between the sequence harness (which produces them from Hugging Face models, OpenAI-style
endpoints or precomputed files) and the sequence sections (which consume them). Arrays are flat over token positions
with per-text offsets, so a batch of texts of different lengths needs no padding in storage, and a chunk of texts
is a contiguous slice.

Only the top k (k <= 20, what OpenAI-style endpoints return at most) log-probabilities per position are stored,
never the full vocabulary: memory per position is ``k * 8 + 8`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit._kinds import OutputKind

__all__ = ["Generations", "MAX_TOP_K", "OutputKind", "TokenTopK"]

MAX_TOP_K = 20


@dataclass(frozen=True, eq=False)
class TokenTopK:
    """One model's teacher-forced next-token predictions over a set of texts, top k per position.

    Position ``j`` of text ``i`` (rows ``offsets[i]:offsets[i+1]``) is the prediction of token ``j + 1`` of the
    text from tokens ``0..j``; ``target_ids`` is that actual next token and ``target_logprob`` its log-probability
    under the model (exact even when the target is outside the top k). Log-probabilities are natural logs.

    Attributes
    ----------
    name : str
        The model's name in the audit.
    text_ids : ndarray of str or int, shape (n_texts,)
        Sample id of each text (the resampling unit of the bootstrap).
    offsets : ndarray of int64, shape (n_texts + 1,)
        ``offsets[0] == 0``, non-decreasing; ``offsets[-1]`` is the number of positions.
    top_ids : ndarray of int32, shape (n_positions, k)
        Token ids sorted by decreasing log-probability.
    top_logprobs : ndarray of float32, shape (n_positions, k)
    target_ids : ndarray of int32, shape (n_positions,)
    target_logprob : ndarray of float32, shape (n_positions,)
    tokenizer_sha256 : str
        Fingerprint of the tokenizer; per-token comparisons between two models need equal fingerprints.
    """

    name: str
    text_ids: np.ndarray
    offsets: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray
    target_ids: np.ndarray
    target_logprob: np.ndarray
    tokenizer_sha256: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_pos = int(self.offsets[-1]) if len(self.offsets) else 0
        if len(self.offsets) != len(self.text_ids) + 1 or (len(self.offsets) and int(self.offsets[0]) != 0):
            raise invalid_argument("offsets", f"{len(self.offsets)} offsets for {len(self.text_ids)} texts",
                                   "n_texts + 1 offsets starting at 0")
        if np.any(np.diff(self.offsets) < 0):
            raise invalid_argument("offsets", "decreasing offsets", "non-decreasing offsets")
        if self.top_ids.ndim != 2 or self.top_ids.shape != self.top_logprobs.shape or len(self.top_ids) != n_pos:
            raise invalid_argument("top_ids/top_logprobs", f"shapes {self.top_ids.shape}/{self.top_logprobs.shape}",
                                   f"equal shapes ({n_pos}, k)")
        if not 1 <= self.k <= MAX_TOP_K:
            raise invalid_argument("k", self.k, f"1 <= k <= {MAX_TOP_K}")
        if len(self.target_ids) != n_pos or len(self.target_logprob) != n_pos:
            raise invalid_argument("target_ids/target_logprob", f"{len(self.target_ids)}/{len(self.target_logprob)}",
                                   f"{n_pos} positions")

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1])

    @property
    def n_texts(self) -> int:
        return len(self.text_ids)

    @property
    def n_positions(self) -> int:
        return int(self.offsets[-1])

    def text_of_position(self) -> np.ndarray:
        """Index of the text each position belongs to, shape (n_positions,)."""
        return np.repeat(np.arange(self.n_texts), np.diff(self.offsets))


@dataclass(frozen=True, eq=False)
class Generations:
    """One model's generated continuations, one per prompt, in the prompt set's order.

    Attributes
    ----------
    name : str
    text_ids : ndarray, shape (n_prompts,)
        Sample id of each prompt.
    texts : tuple of str
        The continuation (without the prompt).
    settings : mapping
        How they were made: ``{"do_sample": bool, "max_new_tokens": int, "temperature": float, "seed": int}``.
    token_logprobs : tuple of ndarray or None
        Per generated token, the model's log-probability of it, when the model revealed it.
    """

    name: str
    text_ids: np.ndarray
    texts: tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    token_logprobs: tuple[np.ndarray, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.text_ids):
            raise invalid_argument("texts", f"{len(self.texts)} texts", f"{len(self.text_ids)} (one per prompt)")
        if self.token_logprobs is not None and len(self.token_logprobs) != len(self.texts):
            raise invalid_argument("token_logprobs", f"{len(self.token_logprobs)} arrays", "one per text")

    def __len__(self) -> int:
        return len(self.texts)
