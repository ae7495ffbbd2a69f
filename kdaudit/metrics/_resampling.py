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

The interval is, by default, the BCa interval of the replicate statistics (bias-corrected and accelerated; the
acceleration comes from a jackknife that leaves out one block at a time, cheap and exact for additive block state).
Many statistics here are not means: a binned ECE is biased upward and its bootstrap distribution is shifted, which
the bias correction absorbs. In the simulations of ``tests/test_resampling.py`` the percentile interval covered a
paired accuracy difference 94.2% of the time and BCa 93.5% (1,000 rows, 400 replicates); for an ECE change the
percentile interval over-covered (97-98%) while BCa covered 94.7-95%. ``Bootstrap(interval="percentile")`` gives the
plain percentile interval.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import special

from kdaudit._estimate import Estimate
from kdaudit._exceptions import invalid_argument

__all__ = [
    "DEFAULT_N_BLOCKS",
    "BlockStats",
    "Bootstrap",
    "block_of",
    "hash_ids",
    "poisson_weights",
    "splitmix64",
]

DEFAULT_N_BLOCKS = 1024
_INTERVALS = ("bca", "percentile")
_SMALL_PRODUCT = 50_000_000  # multiply-adds below which a replicate product runs on one BLAS thread


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController  # installed with scikit-learn

    return ThreadpoolController()


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


def hash_ids(ids: Any) -> np.ndarray:
    """A well-mixed uint64 hash of each sample id, stable across runs, platforms and shards."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return splitmix64(ids.astype(np.uint64))
    return splitmix64(pd.util.hash_array(ids.astype(str).astype(object), hash_key=_HASH_KEY))


def block_of(ids: Any, n_blocks: int = DEFAULT_N_BLOCKS) -> np.ndarray:
    """Block index of each sample id (int64 in ``[0, n_blocks)``), stable across runs, platforms and shards."""
    return (hash_ids(ids) % np.uint64(n_blocks)).astype(np.int64)


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

    def add(self, blocks: np.ndarray, values: Any, cells: np.ndarray | None = None) -> None:
        """Add rows: ``values`` is (n, n_values), (n,) when n_values == 1, or a sequence of n_values 1-D columns
        (cheapest: no stacking; a scalar 0 stands for a column of zeros); ``cells`` is (n,) in [0, n_cells)."""
        flat = blocks if cells is None else blocks * self.n_cells + cells
        size = self.n_blocks * self.n_cells
        if isinstance(values, (list, tuple)):
            if len(values) != self.n_values:
                raise invalid_argument("values", f"{len(values)} columns", f"{self.n_values} columns")
            # One bincount per column over the same index; all-zero columns are skipped.
            for j, col in enumerate(values):
                if np.isscalar(col) and col == 0:
                    continue
                self.sums[:, :, j] += np.bincount(flat, weights=np.asarray(col, dtype=np.float64),
                                                  minlength=size).reshape(self.n_blocks, self.n_cells)
            return
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.shape[1] != self.n_values:
            raise invalid_argument("values", f"{values.shape[1]} columns", f"{self.n_values} columns")
        k = self.n_values
        # One bincount over (row, value) pairs: a single pass in memory order instead of k strided passes.
        idx = (flat[:, None] * k + np.arange(k)).ravel() if k > 1 else flat
        self.sums += np.bincount(idx, weights=values.ravel(), minlength=self.sums.size).reshape(self.sums.shape)

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
        if weights.shape[0] * flat.size < _SMALL_PRODUCT:
            # OpenBLAS threads cost far more than they save on small products (100x slower on a loaded machine).
            with _blas_controller().limit(limits=1, user_api="blas"):
                out = weights @ flat
        else:
            out = weights @ flat
        return out.reshape(weights.shape[0], self.n_cells, self.n_values)


@dataclass(frozen=True)
class Bootstrap:
    """Settings of the block-Poisson bootstrap. ``n_replicates=0`` computes point estimates only.

    ``interval`` is ``"bca"`` (default) or ``"percentile"`` (see the module docstring).
    """

    n_replicates: int = 1000
    seed: int = 0
    level: float = 0.95
    n_blocks: int = DEFAULT_N_BLOCKS
    interval: str = "bca"
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.n_replicates, (int, np.integer)) or self.n_replicates < 0:
            raise invalid_argument("n_replicates", self.n_replicates, "an integer >= 0")
        if not 0 < self.level < 1:
            raise invalid_argument("level", self.level, "a confidence level in (0, 1), e.g. 0.95")
        if not isinstance(self.n_blocks, (int, np.integer)) or self.n_blocks < 1:
            raise invalid_argument("n_blocks", self.n_blocks, "an integer >= 1")
        if self.interval not in _INTERVALS:
            raise invalid_argument("interval", self.interval, f"one of {_INTERVALS}")

    @property
    def method(self) -> str:
        return self._method(jackknife=True)

    def _method(self, *, jackknife: bool) -> str:
        if self.n_replicates == 0:
            return "point estimate only"
        if self.interval == "percentile":
            kind = f"percentile {self.level:.0%} interval"
        elif jackknife:
            kind = f"BCa {self.level:.0%} interval (acceleration from a leave-one-block-out jackknife)"
        else:
            kind = f"bias-corrected percentile {self.level:.0%} interval"
        return f"paired block-Poisson bootstrap, {self.n_replicates} replicates, seed {self.seed}, {kind}"

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
        """Like :meth:`estimate` for an ``fn`` returning an array per replicate: an object array of Estimates."""
        with np.errstate(divide="ignore", invalid="ignore"):
            point = np.asarray(fn(stats.total()), dtype=np.float64)
            if self.n_replicates == 0:
                out = np.empty(point.shape, dtype=object)
                for idx in np.ndindex(point.shape):
                    out[idx] = Estimate(point[idx])
                return out
            reps = np.asarray(fn(stats.replicates(self.weights())), dtype=np.float64)
            jack = None
            if self.interval == "bca":
                jack = np.asarray(fn(stats.total()[None] - stats.sums), dtype=np.float64)
                jack[~stats.sums.reshape(stats.n_blocks, -1).any(axis=1)] = np.nan  # empty blocks carry no rows
        return self.from_replicates(point, reps, jack)

    def from_replicates(self, point: np.ndarray, reps: np.ndarray, jackknife: np.ndarray | None = None) -> np.ndarray:
        """Intervals from replicate values (replicate axis first); NaN replicates are dropped.

        ``interval="bca"``: the bias-corrected and accelerated interval (Efron 1987). The bias correction
        ``z0 = Φ⁻¹(share of replicates below the estimate)`` matters for statistics whose bootstrap distribution is
        shifted from the estimate (ECE, maxima, spreads between groups); the acceleration comes from ``jackknife``,
        the statistic recomputed without each block (axis first, NaN for empty blocks); without it, ``a = 0`` (the
        bias-corrected percentile interval). ``interval="percentile"``: plain percentile interval.
        """
        point = np.asarray(point, dtype=np.float64)
        reps = np.asarray(reps, dtype=np.float64).reshape(reps.shape[0], *point.shape)
        alpha = (1 - self.level) / 2
        finite = np.isfinite(reps)
        k = finite.sum(axis=0)
        if self.interval == "percentile":
            q_lo = np.full(point.shape, alpha)
            q_hi = np.full(point.shape, 1 - alpha)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                below = ((reps < point) & finite).sum(axis=0) + 0.5 * ((reps == point) & finite).sum(axis=0)
                share = np.clip(below / np.maximum(k, 1), 0.5 / np.maximum(k, 1), 1 - 0.5 / np.maximum(k, 1))
                z0 = special.ndtri(share)
                a = np.zeros(point.shape)
                if jackknife is not None:
                    jk = np.asarray(jackknife, dtype=np.float64).reshape(jackknife.shape[0], *point.shape)
                    ok = np.isfinite(jk)
                    jk0 = np.where(ok, jk, 0.0)
                    d = np.where(ok, jk0.sum(axis=0) / np.maximum(ok.sum(axis=0), 1) - jk0, 0.0)
                    num = (d**3).sum(axis=0)
                    den = 6 * (d**2).sum(axis=0) ** 1.5
                    a = np.where(den > 0, num / den, 0.0)
                z = special.ndtri(np.array([alpha, 1 - alpha]))
                q_lo = special.ndtr(z0 + (z0 + z[0]) / (1 - a * (z0 + z[0])))
                q_hi = special.ndtr(z0 + (z0 + z[1]) / (1 - a * (z0 + z[1])))
                q_lo, q_hi = np.nan_to_num(q_lo, nan=alpha), np.nan_to_num(q_hi, nan=1 - alpha)
        lo, hi = _quantiles(reps, finite, k, q_lo), _quantiles(reps, finite, k, q_hi)
        out = np.empty(point.shape, dtype=object)
        method = self._method(jackknife=jackknife is not None)
        few = method + " (too few finite replicates)"
        outside = method + (" (the estimate lies outside the bulk of its bootstrap distribution: a strongly biased "
                            "statistic, e.g. a maximum or a binned |gap| near 0; treat the interval as unreliable)")
        need = max(10, self.n_replicates // 2)
        for idx in np.ndindex(point.shape):
            if np.isnan(point[idx]) or k[idx] < need:
                out[idx] = Estimate(point[idx], method=few)
            elif not lo[idx] <= point[idx] <= hi[idx]:
                out[idx] = Estimate(point[idx], lo[idx], hi[idx], outside, self.level)
            else:
                out[idx] = Estimate(point[idx], lo[idx], hi[idx], method, self.level)
        return out


def _quantiles(reps: np.ndarray, finite: np.ndarray, k: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-element quantile ``q`` (linear interpolation, as ``numpy.quantile``) of the finite replicates."""
    srt = np.sort(np.where(finite, reps, np.inf), axis=0)  # non-finite values sort last and are never reached
    pos = q * np.maximum(k - 1, 0)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, np.maximum(k - 1, 0))
    frac = pos - i0
    v0 = np.take_along_axis(srt, i0[None], axis=0)[0]
    v1 = np.take_along_axis(srt, i1[None], axis=0)[0]
    with np.errstate(invalid="ignore"):
        return np.where(frac > 0, v0 + frac * (v1 - v0), v0)
