"""``PromptSet``: the texts or prompts a language-model audit runs on, aligned with their ids, references and groups.

The sequence counterpart of ``AuditData``: every model sees the same prompts in the same order. Loaders from
JSONL, CSV and parquet, and the bundled offline corpus, build one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from kdaudit._exceptions import invalid_argument

__all__ = ["PromptSet"]


@dataclass(frozen=True, eq=False)
class PromptSet:
    """Prompts (or whole texts to score), aligned row by row with optional references, choices and groups.

    Parameters
    ----------
    prompts : sequence of str
        The prompt (for generation) or the whole text (for teacher-forced scoring). For chat models, ``messages``
        holds the structured form and ``prompts`` its flattened text.
    ids : sequence of str or int, optional
        Unique ids (default ``0..n-1``); the bootstrap resamples by id, so the prompt is the resampling unit.
    references : sequence of str, optional
        Reference continuation or answer per prompt (quality: perplexity, ROUGE-L / chrF against it).
    choices : sequence of sequence of str, optional
        Multiple-choice options per prompt; ``answers`` is then the index of the right one.
    answers : sequence of int, optional
    messages : sequence of list of {"role", "content"} dicts, optional
    groups : pandas.DataFrame, optional
        Prompt-level group columns (bias transfer), one row per prompt.
    name : str
    source : str
        Where the prompts came from (a file path or a corpus name), for the report.
    """

    prompts: tuple[str, ...]
    ids: np.ndarray | None = None
    references: tuple[str, ...] | None = None
    choices: tuple[tuple[str, ...], ...] | None = None
    answers: np.ndarray | None = None
    messages: tuple[tuple[Mapping[str, str], ...], ...] | None = None
    groups: pd.DataFrame | None = None
    name: str = "prompts"
    source: str = ""
    _hash: list[str] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        prompts = tuple(self.prompts)
        n = len(prompts)
        if n == 0:
            raise invalid_argument("prompts", "an empty prompt set", "at least one prompt")
        if not all(isinstance(p, str) for p in prompts):
            raise invalid_argument("prompts", "non-string entries", "a sequence of str")
        object.__setattr__(self, "prompts", prompts)
        ids = np.arange(n) if self.ids is None else np.asarray(self.ids)
        if ids.shape != (n,):
            raise invalid_argument("ids", f"shape {ids.shape}", f"shape ({n},)")
        if len(pd.unique(ids)) != n:
            raise invalid_argument("ids", "duplicate ids", "unique ids")
        object.__setattr__(self, "ids", ids)
        for name in ("references", "choices", "messages"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(tuple(v) if name != "references" else v for v in value)
                if len(value) != n:
                    raise invalid_argument(name, f"{len(value)} entries", f"{n} (one per prompt)")
                object.__setattr__(self, name, value)
        if self.answers is not None:
            answers = np.asarray(self.answers)
            if answers.shape != (n,):
                raise invalid_argument("answers", f"shape {answers.shape}", f"shape ({n},)")
            if self.choices is None:
                raise invalid_argument("answers", "answers without choices", "choices together with answers")
            if not np.issubdtype(answers.dtype, np.integer) or np.any(answers < 0) or any(
                    int(a) >= len(c) for a, c in zip(answers, self.choices)):
                raise invalid_argument("answers", "an out-of-range answer", "the index of one of its choices")
            object.__setattr__(self, "answers", answers.astype(np.int64))
        if self.groups is not None:
            groups = pd.DataFrame(self.groups).reset_index(drop=True)
            if len(groups) != n:
                raise invalid_argument("groups", f"{len(groups)} rows", f"{n} (one per prompt)")
            object.__setattr__(self, "groups", groups.astype(str))

    def __len__(self) -> int:
        return len(self.prompts)

    def sha256(self) -> str:
        """Content hash of everything the audit reads (prompts, ids, references, choices, answers, groups)."""
        if not self._hash:
            h = hashlib.sha256()
            payload: dict[str, Any] = {
                "prompts": list(self.prompts),
                "ids": [str(i) for i in self.ids],  # type: ignore[union-attr]
                "references": None if self.references is None else list(self.references),
                "choices": None if self.choices is None else [list(c) for c in self.choices],
                "answers": None if self.answers is None else self.answers.tolist(),
                "messages": None if self.messages is None else [[dict(m) for m in ms] for ms in self.messages],
                "groups": None if self.groups is None else {c: self.groups[c].tolist() for c in self.groups},
            }
            h.update(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode())
            self._hash.append(h.hexdigest())
        return self._hash[0]

    def subset(self, index: Sequence[int] | np.ndarray) -> "PromptSet":
        """The prompts at ``index`` (positions), with everything aligned to them."""
        idx = np.asarray(index, dtype=np.int64)
        pick = lambda seq: None if seq is None else tuple(seq[i] for i in idx)  # noqa: E731
        return PromptSet(
            prompts=pick(self.prompts), ids=self.ids[idx],  # type: ignore[index]
            references=pick(self.references), choices=pick(self.choices),
            answers=None if self.answers is None else self.answers[idx], messages=pick(self.messages),
            groups=None if self.groups is None else self.groups.iloc[idx].reset_index(drop=True),
            name=self.name, source=self.source)
