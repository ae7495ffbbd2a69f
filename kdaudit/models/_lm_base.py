"""The protocol every language-model adapter implements (Hugging Face, OpenAI-style endpoint, precomputed)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, Sequence

__all__ = ["LMAccess", "LanguageModel"]


class LMAccess(str, Enum):
    """What a language model lets the auditor see, from most to least."""

    LOGPROBS = "logprobs"  # per-token top-k log-probabilities of any given text (teacher-forced scoring)
    TEXT = "text"  # generated text only

    def __str__(self) -> str:
        return self.value


class LanguageModel(ABC):
    """One language model seen through a uniform interface.

    Attributes
    ----------
    name : str
    kind : str
        "huggingface", "endpoint", "precomputed", ...
    access : LMAccess
    max_top_k : int
        The most log-probabilities per position the model reveals (20 for OpenAI-style endpoints).
    query_count : int
        Prompts sent (what an API owner would bill); ``token_count``: tokens generated or scored.
    """

    name: str
    kind: str = "lm"
    access: LMAccess = LMAccess.LOGPROBS
    max_top_k: int = 20
    query_count: int = 0
    token_count: int = 0
    file_sha256: str | None = None

    @abstractmethod
    def fingerprint(self) -> str:
        """sha256 of the weights (or of the endpoint's identity: base URL and model name)."""

    @abstractmethod
    def tokenizer_fingerprint(self) -> str | None:
        """sha256 of the tokenizer's vocabulary and rules, or None when unknown (text-only endpoints)."""

    def score(self, texts: Sequence[str], ids: Sequence[Any], *, top_k: int) -> Any:
        """Teacher-forced next-token top-k log-probabilities of ``texts``: a :class:`kdaudit.harness.TokenTopK`.

        Raises ``KDAuditError`` when ``access`` is ``TEXT``.
        """
        raise NotImplementedError

    @abstractmethod
    def generate(self, prompts: Sequence[str], ids: Sequence[Any], *, max_new_tokens: int, do_sample: bool = False,
                 temperature: float = 1.0, seed: int = 0) -> Any:
        """Continuations of ``prompts``: a :class:`kdaudit.harness.Generations` (seeded when sampling)."""

    def configured(self, *, device: Any, precision: str | None) -> "LanguageModel | None":
        """This model at ``device`` and ``precision`` (an audit's one policy), without changing this object; None
        when they cannot apply because the model does not run here (an endpoint, precomputed outputs)."""
        return None

    def n_parameters(self) -> int | None:
        return None

    def size_bytes(self) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "access": str(self.access),
            "sha256": self.fingerprint(),
            "tokenizer_sha256": self.tokenizer_fingerprint(),
            "n_parameters": self.n_parameters(),
            "size_bytes": self.size_bytes(),
            **({"file_sha256": self.file_sha256} if self.file_sha256 else {}),
        }
