"""``PromptSet``: the texts or prompts a language-model audit runs on, aligned with their ids, references and groups.

The sequence counterpart of ``AuditData``: every model sees the same prompts in the same order. Loaders from
JSONL, CSV and parquet, and the bundled offline corpus, build one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from kdaudit._exceptions import KDAuditError, invalid_argument
from kdaudit._io import recorded_path

__all__ = ["PromptSet", "load_prompts"]


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

    def scored_texts(self) -> list[str]:
        """The texts models score teacher-forced: ``prompt + reference``, or the prompt alone."""
        if self.references is None:
            return list(self.prompts)
        return [p + r for p, r in zip(self.prompts, self.references)]

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


# ---------------------------------------------------------------------------------------------------------------
# loading prompt sets from files

_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_MAX_BYTES = 1 << 30  # a prompt file of more than 1 GiB is not a prompt set; refuse before reading it


def load_prompts(path: str | os.PathLike[str], *, id_field: str = "id", prompt_field: str = "prompt",
                 messages_field: str = "messages", reference_field: str = "reference", choices_field: str = "choices",
                 answer_field: str = "answer", groups: Sequence[str] | None = None, max_rows: int | None = None,
                 name: str | None = None) -> PromptSet:
    """Read a prompt set from JSON Lines, CSV or parquet (chosen by the file's suffix).

    Each record holds a prompt (``prompt``, a string) or a chat (``messages``, a list of ``{"role", "content"}``),
    and optionally an ``id`` (default: the row number), a ``reference`` continuation or answer, ``choices`` (a list
    of strings; in CSV a JSON list) with the right ``answer`` (the index of a choice, or its text), and the group
    columns named in ``groups`` (bias transfer).

    Parameters
    ----------
    path : str or Path
        ``.jsonl``/``.ndjson``, ``.csv`` or ``.parquet``.
    id_field, prompt_field, messages_field, reference_field, choices_field, answer_field : str
        The names of those fields in the file.
    groups : sequence of str, optional
        Group columns to keep (each must be present in every record).
    max_rows : int, optional
        Refuse files with more rows (a bound on what is read into memory).
    name : str, optional
        The prompt set's name (default: the file's stem).

    Raises
    ------
    KDAuditError
        Naming the file, the line (JSON Lines) or row (CSV, parquet) and the field that is missing or malformed.
    """
    p = Path(path)
    fmt = _FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise invalid_argument("path", str(path), "a .jsonl, .csv or .parquet file of prompts")
    if not p.is_file():
        raise invalid_argument("path", str(path), "an existing prompt file")
    if p.stat().st_size > _MAX_BYTES:
        raise invalid_argument("path", f"{str(path)!r} of {p.stat().st_size} bytes", f"at most {_MAX_BYTES} bytes")
    if max_rows is not None and (not isinstance(max_rows, (int, np.integer)) or max_rows < 1):
        raise invalid_argument("max_rows", max_rows, "None or an integer >= 1")
    fields = _Fields(id_field, prompt_field, messages_field, reference_field, choices_field, answer_field,
                     tuple(groups or ()))
    where = "line" if fmt == "jsonl" else "row"
    records = _read_jsonl(p, max_rows) if fmt == "jsonl" else _read_table(p, fmt, max_rows)
    if not records:
        raise KDAuditError(f"prompt file {str(p)!r} holds no prompts")
    parsed = [_parse_record(rec, number, fields, p, where) for number, rec in records]
    has = lambda key: any(r[key] is not None for r in parsed)  # noqa: E731
    for key in ("reference", "choices"):
        if has(key) and not all(r[key] is not None for r in parsed):
            missing = next(number for (number, _), r in zip(records, parsed) if r[key] is None)
            raise KDAuditError(f"prompt file {str(p)!r}, {where} {missing}: field "
                               f"{getattr(fields, key)!r} is missing; it must be on every record or on none")
    ids = [r["id"] if r["id"] is not None else i for i, r in enumerate(parsed)]
    if len(set(map(str, ids))) != len(ids):
        seen: set[str] = set()
        for (number, _), i in zip(records, ids):
            if str(i) in seen:
                raise KDAuditError(f"prompt file {str(p)!r}, {where} {number}: id {i!r} appears twice; ids must "
                                   "be unique")
            seen.add(str(i))
    return PromptSet(
        prompts=[r["prompt"] for r in parsed], ids=np.array([str(i) for i in ids]),
        references=[r["reference"] for r in parsed] if has("reference") else None,
        choices=[r["choices"] for r in parsed] if has("choices") else None,
        answers=np.array([r["answer"] for r in parsed], dtype=np.int64) if has("choices") else None,
        messages=[r["messages"] for r in parsed] if has("messages") and all(r["messages"] for r in parsed) else None,
        groups=pd.DataFrame({g: [r["groups"][g] for r in parsed] for g in fields.groups}) if fields.groups else None,
        name=name or p.stem, source=recorded_path(p))


@dataclass(frozen=True)
class _Fields:
    id: str
    prompt: str
    messages: str
    reference: str
    choices: str
    answer: str
    groups: tuple[str, ...]


def _bounded(p: Path, max_rows: int | None) -> int:
    """The caller's max_rows, never above the global read limits (KDAUDIT_MAX_ROWS / KDAUDIT_MAX_BYTES)."""
    from kdaudit._io import READ_LIMITS

    READ_LIMITS.check(p, nbytes=p.stat().st_size, what="prompt file")
    return READ_LIMITS.max_rows if max_rows is None else min(max_rows, READ_LIMITS.max_rows)


def _read_jsonl(p: Path, max_rows: int | None) -> list[tuple[int, Any]]:
    max_rows = _bounded(p, max_rows)
    out = []
    with open(p, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if max_rows is not None and len(out) >= max_rows:
                raise KDAuditError(f"prompt file {str(p)!r} has more than max_rows={max_rows} records")
            try:
                out.append((number, json.loads(raw)))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise KDAuditError(f"prompt file {str(p)!r}, line {number}: not valid JSON ({exc})") from None
    return out


def _read_table(p: Path, fmt: str, max_rows: int | None) -> list[tuple[int, Any]]:
    max_rows = _bounded(p, max_rows)
    try:
        if fmt == "csv":
            frame = pd.read_csv(p, dtype=str, keep_default_na=False, nrows=None if max_rows is None
                                else max_rows + 1)
        else:
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(p).metadata
            if max_rows is not None and meta.num_rows > max_rows:
                raise KDAuditError(f"prompt file {str(p)!r} has more than max_rows={max_rows} records")
            frame = pd.read_parquet(p)
    except KDAuditError:
        raise
    except ImportError:
        raise KDAuditError("reading parquet needs pyarrow: pip install 'kdaudit[parquet]'") from None
    except Exception as exc:  # pandas and pyarrow raise many types for a malformed file
        raise KDAuditError(f"prompt file {str(p)!r} could not be read as {fmt}: {exc}") from None
    if max_rows is not None and len(frame) > max_rows:
        raise KDAuditError(f"prompt file {str(p)!r} has more than max_rows={max_rows} records")
    # rows numbered from 1 as a spreadsheet shows them under the header
    return [(i + 1, rec) for i, rec in enumerate(frame.to_dict(orient="records"))]


def _parse_record(rec: Any, number: int, f: _Fields, p: Path, where: str) -> dict[str, Any]:
    def fail(field_name: str, problem: str) -> KDAuditError:
        return KDAuditError(f"prompt file {str(p)!r}, {where} {number}: field {field_name!r} {problem}")

    if not isinstance(rec, dict):
        raise KDAuditError(f"prompt file {str(p)!r}, {where} {number}: expected an object, got "
                           f"{type(rec).__name__}")

    def present(key: str) -> bool:
        value = rec.get(key)
        if isinstance(value, (list, tuple, np.ndarray)):  # parquet list columns
            return True
        return value is not None and not (isinstance(value, float) and np.isnan(value)) and value != ""

    messages = None
    if present(f.messages):
        value = rec[f.messages]
        if isinstance(value, str):  # CSV cells hold JSON
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise fail(f.messages, "is not a JSON list of {role, content} objects") from None
        value = list(value) if isinstance(value, (list, tuple, np.ndarray)) else value
        if not isinstance(value, list) or not value or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in value):
            raise fail(f.messages, "must be a non-empty list of {\"role\": str, \"content\": str} objects")
        messages = tuple({"role": m["role"], "content": m["content"]} for m in value)
    if present(f.prompt):
        prompt = rec[f.prompt]
        if not isinstance(prompt, str):
            raise fail(f.prompt, f"must be a string, got {type(prompt).__name__}")
    elif messages is not None:
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    else:
        raise fail(f.prompt, f"is missing (give {f.prompt!r} or {f.messages!r})")
    reference = None
    if present(f.reference):
        reference = rec[f.reference]
        if not isinstance(reference, str):
            raise fail(f.reference, f"must be a string, got {type(reference).__name__}")
    choices = answer = None
    if present(f.choices):
        value = rec[f.choices]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise fail(f.choices, "is not a JSON list of strings") from None
        value = list(value) if isinstance(value, (list, tuple, np.ndarray)) else value
        if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) for c in value):
            raise fail(f.choices, "must be a list of at least two strings")
        choices = tuple(value)
        if not present(f.answer):
            raise fail(f.answer, "is missing (records with choices need the right answer)")
        raw = rec[f.answer]
        if isinstance(raw, str) and raw in choices:
            answer = choices.index(raw)
        else:
            try:
                answer = int(raw)
                if isinstance(raw, float) and raw != answer:
                    raise ValueError
            except (TypeError, ValueError):
                raise fail(f.answer, f"got {raw!r}; expected the index of a choice or a choice's text") from None
            if not 0 <= answer < len(choices):
                raise fail(f.answer, f"got {answer}; expected an index in [0, {len(choices) - 1}]")
    elif present(f.answer):
        raise fail(f.choices, "is missing (an answer needs its choices)")
    group_values = {}
    for g in f.groups:
        if not present(g):
            raise fail(g, "is missing (a group column must be on every record)")
        group_values[g] = str(rec[g])
    ident = rec.get(f.id) if present(f.id) else None
    if ident is not None and not isinstance(ident, (str, int, np.integer)):
        raise fail(f.id, f"must be a string or an integer, got {type(ident).__name__}")
    return {"id": ident, "prompt": prompt, "messages": messages, "reference": reference, "choices": choices,
            "answer": answer, "groups": group_values}
