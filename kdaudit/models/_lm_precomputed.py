"""A language model known only by its outputs, read from a file: per-token top-k log-probabilities of given texts,
generations, or both, in JSON Lines or parquet.

One record per text or prompt (JSON Lines: one object a line; parquet: one row, list columns)::

    {"id": "p1",
     "text": "the scored text (optional; checked against the text asked for)",
     "target_ids": [..], "target_logprobs": [..],           # per position: the actual next token, its log-prob
     "top_ids": [[..], ..], "top_logprobs": [[..], ..],     # per position: the top k, k <= 20
     "generation": "the continuation", "generation_logprobs": [..]}   # optional per-token log-probs

Reads are bounded (file size, k <= 20) and every malformed record raises :class:`KDAuditError` naming the file,
the line or row and the field. :func:`save_lm_outputs` writes the format from harness outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kdaudit._exceptions import KDAuditError, invalid_argument
from kdaudit._io import recorded_path
from kdaudit.models._hashing import sha256_file
from kdaudit.models._lm_base import LanguageModel, LMAccess

__all__ = ["PrecomputedLM", "save_lm_outputs"]

_MAX_BYTES = 4 << 30
_SCORE_FIELDS = ("target_ids", "target_logprobs", "top_ids", "top_logprobs")
_LOGPROB_SLACK = 1e-4  # float32 log-softmax can round a near-certain token's log-prob a hair above 0


class PrecomputedLM(LanguageModel):
    """Per-token top-k log-probabilities and/or generations of a model, read from a JSON Lines or parquet file.

    Parameters
    ----------
    path : str or Path
        ``.jsonl`` or ``.parquet``.
    name : str, optional
        Default: the file's stem.
    tokenizer_sha256 : str, optional
        The tokenizer the token ids belong to (per-token comparisons with other models need it).
    sha256 : str, optional
        The model's identity; default: the file's sha256.

    ``access`` is ``"logprobs"`` when the file holds scores, else ``"text"``. :meth:`score` and :meth:`generate`
    look records up by id; every id asked for must be in the file.
    """

    kind = "precomputed"

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None, tokenizer_sha256: str | None = None,
                 sha256: str | None = None) -> None:
        p = Path(path)
        if p.suffix.lower() not in (".jsonl", ".ndjson", ".parquet"):
            raise invalid_argument("path", str(path), "a .jsonl or .parquet file of precomputed LM outputs")
        if not p.is_file():
            raise invalid_argument("path", str(path), "an existing file")
        if p.stat().st_size > _MAX_BYTES:
            raise invalid_argument("path", f"{str(path)!r} of {p.stat().st_size} bytes", f"at most {_MAX_BYTES} bytes")
        self.path = p
        self.name = name or p.stem
        self._tok = tokenizer_sha256
        self.file_sha256 = sha256_file(p)
        self._sha = sha256 or self.file_sha256
        rows = _read_jsonl(p) if p.suffix.lower() != ".parquet" else _read_parquet(p)
        if not rows:
            raise KDAuditError(f"precomputed LM file {str(p)!r} holds no records")
        self._scores: dict[str, tuple[np.ndarray, ...]] = {}
        self._texts: dict[str, str] = {}
        self._gens: dict[str, tuple[str, np.ndarray | None]] = {}
        self._k: int | None = None
        where = "row" if p.suffix.lower() == ".parquet" else "line"
        for number, rec in rows:
            self._add(rec, number, where)
        k = self._k or 1
        for key, (ti, tl, gi, gl) in self._scores.items():  # texts with no position: shape (0, k) like the rest
            if len(gi) == 0:
                self._scores[key] = (np.zeros((0, k), np.int32), np.zeros((0, k), np.float32), gi, gl)
        self.access = LMAccess.LOGPROBS if self._scores else LMAccess.TEXT
        self.max_top_k = self._k or 0
        self.query_count = 0
        self.token_count = 0

    def __repr__(self) -> str:
        return f"PrecomputedLM(path={str(self.path)!r}, name={self.name!r}, access={str(self.access)!r})"

    def _add(self, rec: Any, number: int, where: str) -> None:
        def fail(field_name: str, problem: str) -> KDAuditError:
            return KDAuditError(f"precomputed LM file {str(self.path)!r}, {where} {number}: field {field_name!r} "
                                f"{problem}")

        if not isinstance(rec, dict):
            raise KDAuditError(f"precomputed LM file {str(self.path)!r}, {where} {number}: expected an object")
        if rec.get("id") is None:
            raise fail("id", "is missing")
        key = str(rec["id"])
        if key in self._scores or key in self._gens:
            raise fail("id", f"repeats id {key!r}")
        given = [f for f in _SCORE_FIELDS if rec.get(f) is not None]
        if given:
            if len(given) != len(_SCORE_FIELDS):
                missing = [f for f in _SCORE_FIELDS if f not in given]
                raise fail(missing[0], "is missing (scores need target_ids, target_logprobs, top_ids and "
                                       "top_logprobs)")
            try:
                target_ids = np.asarray(list(rec["target_ids"]), dtype=np.int64).reshape(-1)
                target_lp = np.asarray(list(rec["target_logprobs"]), dtype=np.float64).reshape(-1)
                top_ids = _matrix(rec["top_ids"], np.int64)
                top_lp = _matrix(rec["top_logprobs"], np.float64)
            except (TypeError, ValueError) as exc:
                raise fail("top_ids/top_logprobs", f"is not numeric lists of one shape ({exc})") from None
            n = len(target_ids)
            if len(target_lp) != n:
                raise fail("target_logprobs", f"has {len(target_lp)} values for {n} target_ids")
            if top_ids.shape != top_lp.shape or top_ids.shape[0] != n:
                raise fail("top_ids", f"has shape {top_ids.shape} (top_logprobs {top_lp.shape}); expected ({n}, k)")
            k = top_ids.shape[1] if n else (self._k or 1)
            if not 1 <= k <= 20:
                raise fail("top_ids", f"holds k={k} log-probabilities per position; expected 1 <= k <= 20")
            if self._k is not None and n and k != self._k:
                raise fail("top_ids", f"holds k={k} per position; earlier records hold {self._k}")
            if n:
                self._k = k
            for fname, arr in (("target_logprobs", target_lp), ("top_logprobs", top_lp)):
                if not np.all(np.isfinite(arr) | (arr == -np.inf)) or np.any(arr > _LOGPROB_SLACK):
                    raise fail(fname, "must hold log-probabilities (<= 0, no NaN)")
            if np.any(np.diff(top_lp, axis=1) > _LOGPROB_SLACK):
                raise fail("top_logprobs", "must be sorted from most to least likely within each position")
            if (np.abs(target_ids) > 2**31 - 1).any() or (np.abs(top_ids) > 2**31 - 1).any():
                raise fail("target_ids", "holds ids beyond int32")
            self._scores[key] = (top_ids.astype(np.int32), np.minimum(top_lp, 0).astype(np.float32),
                                 target_ids.astype(np.int32), np.minimum(target_lp, 0).astype(np.float32))
            if rec.get("text") is not None:
                if not isinstance(rec["text"], str):
                    raise fail("text", "must be a string")
                self._texts[key] = rec["text"]
        if rec.get("generation") is not None:
            if not isinstance(rec["generation"], str):
                raise fail("generation", "must be a string")
            lps = rec.get("generation_logprobs")
            arr = None
            if lps is not None:
                try:
                    arr = np.asarray(list(lps), dtype=np.float32).reshape(-1)
                except (TypeError, ValueError):
                    raise fail("generation_logprobs", "must be a list of numbers") from None
            self._gens[key] = (rec["generation"], arr)
        if not given and rec.get("generation") is None:
            raise KDAuditError(f"precomputed LM file {str(self.path)!r}, {where} {number}: the record holds neither "
                               "scores (target_ids, target_logprobs, top_ids, top_logprobs) nor a generation")

    def fingerprint(self) -> str:
        return self._sha

    def tokenizer_fingerprint(self) -> str | None:
        return self._tok

    def _lookup(self, table: dict[str, Any], ids: Sequence[Any], what: str) -> list[Any]:
        missing = [i for i in ids if str(i) not in table]
        if missing:
            raise KDAuditError(f"precomputed LM {self.name!r} ({str(self.path)!r}) has no {what} for id "
                               f"{missing[0]!r} ({len(missing)} of {len(ids)} ids missing)")
        return [table[str(i)] for i in ids]

    def score(self, texts: Sequence[str], ids: Sequence[Any], *, top_k: int) -> Any:
        from kdaudit._lm_outputs import TokenTopK

        if self.access is not LMAccess.LOGPROBS:
            raise invalid_argument("access", "text", "a file with per-token scores to score texts")
        if not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= self.max_top_k:
            raise invalid_argument("top_k", top_k, f"an integer in [1, {self.max_top_k}] (the file's k)")
        ids = list(ids)
        if len(ids) != len(texts):
            raise invalid_argument("ids", f"{len(ids)} ids", f"{len(texts)} (one per text)")
        parts = self._lookup(self._scores, ids, "scores")
        for i, text in zip(ids, texts):
            stored = self._texts.get(str(i))
            if stored is not None and stored != text:
                raise KDAuditError(f"precomputed LM {self.name!r}: the text scored for id {i!r} differs from the "
                                   "text asked for; the file belongs to another prompt set")
        lengths = np.array([len(p[2]) for p in parts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        k = int(top_k)
        cat = lambda j, shape, dtype: np.concatenate([p[j] for p in parts]) if parts else np.zeros(shape, dtype)  # noqa
        top_ids = cat(0, (0, self.max_top_k), np.int32)[:, :k]
        top_lp = cat(1, (0, self.max_top_k), np.float32)[:, :k]
        self.query_count += len(ids)
        self.token_count += int(lengths.sum())
        return TokenTopK(name=self.name, text_ids=np.asarray(ids), offsets=offsets,
                         top_ids=np.ascontiguousarray(top_ids), top_logprobs=np.ascontiguousarray(top_lp),
                         target_ids=cat(2, (0,), np.int32), target_logprob=cat(3, (0,), np.float32),
                         tokenizer_sha256=self._tok or "", meta={"top_k": k, "source": recorded_path(self.path)})

    def generate(self, prompts: Sequence[str], ids: Sequence[Any], *, max_new_tokens: int, do_sample: bool = False,
                 temperature: float = 1.0, seed: int = 0) -> Any:
        """The stored generations (the settings asked for are recorded; the file's own cannot be checked)."""
        from kdaudit._lm_outputs import Generations

        ids = list(ids)
        if len(ids) != len(prompts):
            raise invalid_argument("ids", f"{len(ids)} ids", f"{len(prompts)} (one per prompt)")
        parts = self._lookup(self._gens, ids, "generation")
        have = all(lp is not None for _, lp in parts)
        self.query_count += len(ids)
        return Generations(name=self.name, text_ids=np.asarray(ids), texts=tuple(t for t, _ in parts),
                           settings={"do_sample": bool(do_sample), "max_new_tokens": int(max_new_tokens),
                                     "temperature": float(temperature) if do_sample else 0.0, "seed": int(seed),
                                     "precomputed": True},
                           token_logprobs=tuple(lp for _, lp in parts) if have else None)


def _matrix(value: Any, dtype: Any) -> np.ndarray:
    rows = [list(r) for r in value]
    if not rows:
        return np.zeros((0, 0), dtype=dtype)
    arr = np.asarray(rows, dtype=dtype)
    if arr.ndim != 2:
        raise ValueError("rows of different lengths")
    return arr


def _read_jsonl(p: Path) -> list[tuple[int, Any]]:
    out = []
    with open(p, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                out.append((number, json.loads(raw)))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise KDAuditError(f"precomputed LM file {str(p)!r}, line {number}: not valid JSON ({exc})") from None
    return out


def _read_parquet(p: Path) -> list[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise KDAuditError("reading parquet needs pyarrow: pip install 'kdaudit[parquet]'") from None
    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises several types for a malformed file
        raise KDAuditError(f"precomputed LM file {str(p)!r} could not be read as parquet: {exc}") from None
    return [(i + 1, rec) for i, rec in enumerate(table.to_pylist())]


def save_lm_outputs(path: str | os.PathLike[str], *, scores: Any = None, generations: Any = None,
                    texts: Sequence[str] | None = None) -> Path:
    """Write a model's :class:`TokenTopK` and/or :class:`Generations` in the format :class:`PrecomputedLM` reads
    (``.jsonl`` or ``.parquet``, atomically). ``texts`` (the scored texts) are stored for checking when given."""
    from kdaudit._io import atomic_write_bytes

    if scores is None and generations is None:
        raise invalid_argument("scores/generations", None, "at least one of them")
    ids = [str(i) for i in (scores.text_ids if scores is not None else generations.text_ids)]
    if scores is not None and generations is not None and \
            [str(i) for i in generations.text_ids] != ids:
        raise invalid_argument("generations", "other ids than scores", "outputs over the same ids")
    if texts is not None and len(texts) != len(ids):
        raise invalid_argument("texts", f"{len(texts)} texts", f"{len(ids)} (one per id)")
    records = []
    for r, i in enumerate(ids):
        rec: dict[str, Any] = {"id": i}
        if scores is not None:
            a, b = int(scores.offsets[r]), int(scores.offsets[r + 1])
            rec.update(target_ids=scores.target_ids[a:b].tolist(),
                       target_logprobs=scores.target_logprob[a:b].astype(float).tolist(),
                       top_ids=scores.top_ids[a:b].tolist(), top_logprobs=scores.top_logprobs[a:b].astype(float).tolist())
            if texts is not None:
                rec["text"] = texts[r]
        if generations is not None:
            rec["generation"] = generations.texts[r]
            if generations.token_logprobs is not None:
                rec["generation_logprobs"] = np.asarray(generations.token_logprobs[r]).astype(float).tolist()
        records.append(rec)
    p = Path(path)
    if p.suffix.lower() == ".parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records), buf)
        return atomic_write_bytes(p, buf.getvalue())
    if p.suffix.lower() not in (".jsonl", ".ndjson"):
        raise invalid_argument("path", str(path), "a .jsonl or .parquet path")
    return atomic_write_bytes(p, "".join(json.dumps(rec) + "\n" for rec in records).encode())
