"""What a model reveals to the auditor: the vocabulary every layer shares (models declare it, the harness records
it, sections state the least they need). It lives at the bottom of the package so the statistics can use it without
importing the models."""

from __future__ import annotations

from enum import Enum

__all__ = ["Access", "OutputKind"]


class Access(str, Enum):
    """What a model lets the auditor see, from most to least."""

    PROBABILITIES = "probabilities"  # full probability vector (or logits)
    TOP_K = "top_k"  # the k most likely classes with their probabilities
    LABELS = "labels"  # the predicted label only

    def __str__(self) -> str:
        return self.value


class OutputKind(str, Enum):
    """What one model's outputs on an audit's inputs are, from richest to poorest per task family.

    Sections state which kinds they consume (:class:`kdaudit.sections.Needs`); the harness says which kind each
    model gave. Classifier access levels map onto the first three (:data:`kdaudit.sections.KIND_OF_ACCESS`).
    """

    CLASS_PROBS = "class_probs"  # (N, C) class probabilities
    TOP_K = "top_k"  # class probabilities zero outside each row's top k
    LABELS = "labels"  # one predicted class per row
    TOKEN_TOP_K = "token_top_k"  # per token position: top-k token ids and log-probs, and the actual token's log-prob
    TEXT = "text"  # generated continuations only

    def __str__(self) -> str:
        return self.value
