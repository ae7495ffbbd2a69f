"""On-disk cache of model outputs: one file per (model, data, precision), plus resumable partial progress.

Layout under ``cache_dir``::

    <model sha[:20]>-<data sha[:20]>-<precision>-<output>.npz        finished outputs ("raw", "probs", "meta")
    <model sha[:20]>-<data sha[:20]>-<precision>-<output>.partial/   progress of an unfinished run
        rows-<start>-<stop>.npz                                 one chunk of raw outputs + queries so far

Every file is written atomically (temporary file + rename), so a run killed at any moment leaves either the
previous state or the new one, never a torn file. A chunk holds only its own rows, so checkpointing costs
O(rows) in total, not O(rows^2).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kdaudit._io import atomic_write_bytes

__all__ = ["OutputCache"]

_FORMAT = 1


class OutputCache:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(model_sha: str, data_sha: str, precision: str, output: str = "probabilities", *,
            device: str = "host") -> str:
        # the output kind is part of the key: one network wrapped as returning logits or probabilities gives
        # raw arrays that must not be read the other way; the device too: a CUDA run's outputs differ from a CPU
        # run's in the last bits, and a cache must not make one run's results depend on which ran first
        return f"{model_sha[:20]}-{data_sha[:20]}-{precision}-{device}-{output}"

    def final_path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def partial_dir(self, key: str) -> Path:
        return self.root / f"{key}.partial"

    def load_final(self, key: str, n_rows: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]] | None:
        """(raw outputs, probabilities computed from logits or None, metadata), or None if absent/unusable."""
        path = self.final_path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                raw = z["raw"]
                probs = z["probs"] if "probs" in z.files else None
                meta = json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError):  # unreadable cache entries are recomputed, not trusted
            return None
        if meta.get("format") != _FORMAT or len(raw) != n_rows:
            return None
        return raw, probs, meta

    def save_final(self, key: str, raw: np.ndarray, probs: np.ndarray | None, meta: dict[str, Any]) -> Path:
        buf = io.BytesIO()
        arrays = {"raw": raw} if probs is None else {"raw": raw, "probs": probs}
        np.savez(buf, **arrays, meta=np.array(json.dumps({**meta, "format": _FORMAT}, sort_keys=True)))
        path = atomic_write_bytes(self.final_path(key), buf.getvalue())
        shutil.rmtree(self.partial_dir(key), ignore_errors=True)
        return path

    def save_chunk(self, key: str, start: int, stop: int, raw: np.ndarray, probs: np.ndarray | None,
                   queries: int) -> None:
        buf = io.BytesIO()
        arrays = {"raw": raw} if probs is None else {"raw": raw, "probs": probs}
        np.savez(buf, **arrays, queries=np.int64(queries), format=np.int64(_FORMAT))
        atomic_write_bytes(self.partial_dir(key) / f"rows-{start:012d}-{stop:012d}.npz", buf.getvalue())

    def load_partial(self, key: str) -> tuple[list[tuple[int, int, np.ndarray, np.ndarray | None]], int] | None:
        """Chunks (start, stop, raw, probs) forming a contiguous prefix of rows, and the query count after the
        last of them."""
        folder = self.partial_dir(key)
        if not folder.is_dir():
            return None
        chunks: list[tuple[int, int, np.ndarray, np.ndarray | None]] = []
        queries = 0
        expect = 0
        for path in sorted(folder.glob("rows-*-*.npz")):
            start, stop = (int(v) for v in path.stem.split("-")[1:3])
            if start != expect:
                break
            try:
                with np.load(path, allow_pickle=False) as z:
                    if int(z["format"]) != _FORMAT or len(z["raw"]) != stop - start:
                        break
                    chunks.append((start, stop, z["raw"], z["probs"] if "probs" in z.files else None))
                    queries = int(z["queries"])
            except (OSError, ValueError, KeyError):
                break
            expect = stop
        return (chunks, queries) if chunks else None
