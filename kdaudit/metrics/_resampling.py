"""Streaming, mergeable, paired bootstrap.

Every metric family keeps *additive* sufficient statistics per "block" of rows. A row's block is a hash of its sample
id, so the same row lands in the same block whichever shard or chunk it arrives in. Bootstrap replicate ``r`` weights
block ``b`` by a Poisson(1) draw derived from a hash of ``(seed, r, b)``. Hence:

* state is fixed-size, ``(n_blocks, *cell_shape)``, whatever the number of rows;
* shards merge exactly by adding their states;
* teacher and student statistics of a row share its block, so every interval is paired;
* when there are fewer rows than blocks, almost every block holds one row and this is the ordinary Poisson
  bootstrap of rows; with many rows, blocks are random clusters of i.i.d. rows, and resampling random clusters gives
  the same variance for the smooth (ratio-of-sums) statistics computed here.

The interval is the percentile interval of the replicate statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from kdaudit._estimate import Estimate
from kdaudit._exceptions import invalid_argument

__all__ = [
    "DEFAULT_N_BLOCKS",
    "BlockStats",
    "Bootstrap",
    "block_of",
    "poisson_weights",
    "splitmix64",
]

DEFAULT_N_BLOCKS = 1024
_HASH_KEY = "kdaudit-blocks-1"  # 16 bytes; changing it changes every interval, so it is versioned


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on a uint64 array (wrapping arithmetic): a fast, well-mixed counter hash."""
    z = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def block_of(ids: Any, n_blocks: int = DEFAULT_N_BLOCKS) -> np.ndarray:
    """Block index of each sample id (int64 in ``[0, n_blocks)``), stable across runs, platforms and shards."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        h = splitmix64(ids.astype(np.uint64))
    else:
        h = pd.util.hash_array(ids.astype(str).astype(object), hash_key=_HASH_KEY)
        h = splitmix64(h)
    return (h % np.uint64(n_blocks)).astype(np.int64)


# Poisson(1) cumulative distribution, P(K <= k) for k = 0..19; beyond that the tail is below 1e-18.
_POISSON1_CDF = np.cumsum([np.exp(-1.0) / np.prod(np.arange(1, k + 1, dtype=np.float64)) for k in range(20)])


def poisson_weights(n_replicates: int, n_blocks: int, seed: int) -> np.ndarray:
    """(n_replicates, n_blocks) Poisson(1) weights; entry (r, b) depends only on (seed, r, b)."""
    r = np.arange(n_replicates, dtype=np.uint64)[:, None]
    b = np.arange(n_blocks, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        counter = splitmix64(np.uint64(seed) * np.uint64(0x632BE59BD9B4E019) + r) ^ b
    u = (splitmix64(counter) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return np.searchsorted(_POISSON1_CDF, u, side="right").astype(np.float64)


class BlockStats:
    """Additive per-block sums of per-row statistics, optionally split into cells (bins, groups, classes).

    ``sums`` has shape ``(n_blocks, n_cells, n_values)``. :meth:`add` bins rows with ``np.bincount``; :meth:`merge`
    adds; :meth:`total` and :meth:`replicates` collapse the block axis without or with bootstrap weights.
    """

    def __init__(self, n_values: int, *, n_cells: int = 1, n_blocks: int = DEFAULT_N_BLOCKS) -> None:
        self.n_blocks, self.n_cells, self.n_values = n_blocks, n_cells, n_values
        self.sums = np.zeros((n_blocks, n_cells, n_values), dtype=np.float64)

    def add(self, blocks: np.ndarray, values: np.ndarray, cells: np.ndarray | None = None) -> None:
        """Add rows: ``values`` is (n, n_values) (or (n,) when n_values == 1); ``cells`` is (n,) in [0, n_cells)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        flat = blocks if cells is None else blocks * self.n_cells + cells
        size = self.n_blocks * self.n_cells
        for j in range(self.n_values):
            self.sums[:, :, j] += np.bincount(flat, weights=values[:, j], minlength=size).reshape(
                self.n_blocks, self.n_cells
            )

    def merge(self, other: BlockStats) -> BlockStats:
        if self.sums.shape != other.sums.shape:
            raise invalid_argument("other", f"state of shape {other.sums.shape}", f"state of shape {self.sums.shape}")
        self.sums += other.sums
        return self

    def total(self) -> np.ndarray:
        """(n_cells, n_values) sums over all rows."""
        return self.sums.sum(axis=0)

    def replicates(self, weights: np.ndarray) -> np.ndarray:
        """(n_replicates, n_cells, n_values) bootstrap-weighted sums."""
        flat = self.sums.reshape(self.n_blocks, -1)
        return (weights @ flat).reshape(weights.shape[0], self.n_cells, self.n_values)


@dataclass(frozen=True)
class Bootstrap:
    """Settings of the block-Poisson bootstrap. ``n_replicates=0`` computes point estimates only."""

    n_replicates: int = 1000
    seed: int = 0
    level: float = 0.95
    n_blocks: int = DEFAULT_N_BLOCKS
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.n_replicates, (int, np.integer)) or self.n_replicates < 0:
            raise invalid_argument("n_replicates", self.n_replicates, "an integer >= 0")
        if not 0 < self.level < 1:
            raise invalid_argument("level", self.level, "a confidence level in (0, 1), e.g. 0.95")
        if not isinstance(self.n_blocks, (int, np.integer)) or self.n_blocks < 1:
            raise invalid_argument("n_blocks", self.n_blocks, "an integer >= 1")

    @property
    def method(self) -> str:
        if self.n_replicates == 0:
            return "point estimate only"
        return (f"paired block-Poisson bootstrap, {self.n_replicates} replicates, seed {self.seed}, "
                f"percentile {self.level:.0%} interval")

    def weights(self) -> np.ndarray:
        if "w" not in self._cache:
            self._cache["w"] = poisson_weights(self.n_replicates, self.n_blocks, self.seed)
        return self._cache["w"]

    def estimate(self, stats: BlockStats, fn: Callable[[np.ndarray], np.ndarray]) -> Estimate | np.ndarray:
        """Apply ``fn`` to the totals and to every replicate's totals; return an Estimate.

        ``fn`` maps an array of shape (..., n_cells, n_values) to shape (...) (vectorised over leading axes).
        When ``fn`` returns more than a scalar per replicate, use :meth:`estimates`.
        """
        return self.estimates(stats, fn)[()]

    def estimates(self, stats: BlockStats, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Like :meth:`estimate` for an ``fn`` returning an array per replicate: returns an object array of Estimates."""
        with np.errstate(divide="ignore", invalid="ignore"):
            point = np.asarray(fn(stats.total()), dtype=np.float64)
            if self.n_replicates == 0:
                out = np.empty(point.shape, dtype=object)
                for idx in np.ndindex(point.shape):
                    out[idx] = Estimate(point[idx])
                return out
            reps = np.asarray(fn(stats.replicates(self.weights())), dtype=np.float64)
        return self.from_replicates(point, reps)

    def from_replicates(self, point: np.ndarray, reps: np.ndarray) -> np.ndarray:
        """Percentile intervals from replicate values (replicate axis first); NaN replicates are dropped."""
        point = np.asarray(point, dtype=np.float64)
        alpha = (1 - self.level) / 2
        out = np.empty(point.shape, dtype=object)
        for idx in np.ndindex(point.shape):
            r = reps[(slice(None), *idx)]
            r = r[np.isfinite(r)]
            if np.isnan(point[idx]) or len(r) < max(10, self.n_replicates // 2):
                out[idx] = Estimate(point[idx], method=self.method + " (too few finite replicates)")
                continue
            lo, hi = np.quantile(r, [alpha, 1 - alpha])
            out[idx] = Estimate(point[idx], lo, hi, self.method, self.level)
        return out
