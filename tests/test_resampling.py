"""Block-Poisson bootstrap: determinism, additivity, interval formulas and coverage by simulation."""

import numpy as np
import pytest

from kdaudit import KDAuditError
from kdaudit.metrics import BlockStats, Bootstrap, CalibrationAccumulator, block_of, expected_calibration_error
from kdaudit.metrics import poisson_weights


def test_blocks_are_stable_and_uniform():
    ids = np.arange(100_000)
    b = block_of(ids, 64)
    assert b.dtype == np.int64 and b.min() >= 0 and b.max() < 64
    np.testing.assert_array_equal(b, block_of(ids.copy(), 64))
    counts = np.bincount(b, minlength=64)
    assert counts.min() > 0.9 * 100_000 / 64 and counts.max() < 1.1 * 100_000 / 64
    s = block_of(np.array(["a", "b", "a"]), 64)
    assert s[0] == s[2]


def test_poisson_weights_depend_only_on_seed_replicate_and_block():
    w = poisson_weights(400, 300, seed=7)
    np.testing.assert_array_equal(w[:, :100], poisson_weights(400, 100, seed=7))
    np.testing.assert_array_equal(w[:50], poisson_weights(50, 300, seed=7))
    assert not np.array_equal(w, poisson_weights(400, 300, seed=8))
    assert w.mean() == pytest.approx(1.0, abs=0.01) and w.var() == pytest.approx(1.0, abs=0.02)
    assert np.all(w == np.round(w)) and w.min() == 0


def test_blockstats_add_merge_and_replicates():
    rng = np.random.default_rng(0)
    n = 1000
    blocks, cells, vals = rng.integers(0, 16, n), rng.integers(0, 3, n), rng.normal(size=(n, 2))
    s = BlockStats(2, n_cells=3, n_blocks=16)
    s.add(blocks[:600], vals[:600], cells[:600])
    t = BlockStats(2, n_cells=3, n_blocks=16)
    t.add(blocks[600:], vals[600:], cells[600:])
    s.merge(t)
    for b in range(16):
        for c in range(3):
            m = (blocks == b) & (cells == c)
            np.testing.assert_allclose(s.sums[b, c], vals[m].sum(axis=0), atol=1e-12)
    w = poisson_weights(5, 16, 0)
    np.testing.assert_allclose(s.replicates(w), np.einsum("rb,bcv->rcv", w, s.sums), atol=1e-12)
    with pytest.raises(KDAuditError, match="other"):
        s.merge(BlockStats(2, n_cells=4, n_blocks=16))


def test_percentile_interval_is_the_replicate_quantiles_and_runs_are_reproducible():
    rng = np.random.default_rng(1)
    x = rng.normal(size=500)
    s = BlockStats(2)
    s.add(block_of(np.arange(500)), np.column_stack([np.ones(500), x]))

    def mean(t):
        return t[..., 0, 1] / t[..., 0, 0]

    b = Bootstrap(300, seed=4, interval="percentile")
    e = b.estimate(s, mean)
    assert "percentile" in e.method
    reps = mean(s.replicates(b.weights()))
    assert (e.low, e.high) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), abs=1e-12)
    assert e.value == pytest.approx(x.mean())
    assert Bootstrap(300, seed=4).estimate(s, mean) == Bootstrap(300, seed=4).estimate(s, mean)
    bca = Bootstrap(300, seed=4).estimate(s, mean)
    assert "BCa" in bca.method
    # for a mean the bias correction and acceleration are small: BCa stays close to the percentile interval
    assert bca.low == pytest.approx(e.low, abs=0.02) and bca.high == pytest.approx(e.high, abs=0.02)
    assert Bootstrap(0).estimate(s, mean).method == "point estimate only"
    with pytest.raises(KDAuditError, match="interval"):
        Bootstrap(interval="basic")


def _mean_type_coverage(interval, n, n_blocks, n_sim=1000):
    """Paired accuracy difference of two correlated classifiers; truth 0.70 - 0.74 = -0.04."""
    boot = Bootstrap(400, seed=11, interval=interval, n_blocks=n_blocks)
    blocks = block_of(np.arange(n), n_blocks)
    hits = 0
    for sim in range(n_sim):
        rng = np.random.default_rng(10_000 + sim)
        u = rng.random(n)
        t_ok = u < 0.70
        s_ok = np.where(rng.random(n) < 0.8, t_ok, rng.random(n) < 0.74)  # s accuracy = 0.8*0.7 + 0.2*0.74
        s = BlockStats(3, n_blocks=n_blocks)
        s.add(blocks, np.column_stack([np.ones(n), t_ok, s_ok]))
        e = boot.estimate(s, lambda t: (t[..., 0, 2] - t[..., 0, 1]) / t[..., 0, 0])
        hits += e.contains(0.8 * 0.70 + 0.2 * 0.74 - 0.70)
    return hits / n_sim


@pytest.mark.parametrize("interval", ["percentile", "bca"])
def test_coverage_of_a_paired_difference(interval):
    # fewer rows than blocks: the ordinary Poisson bootstrap of rows (1,000 simulated data sets)
    assert 0.93 <= _mean_type_coverage(interval, n=1000, n_blocks=1024) <= 0.97


def test_coverage_with_many_rows_per_block():
    # ~60 rows per block: resampling random clusters of i.i.d. rows
    assert 0.93 <= _mean_type_coverage("bca", n=3000, n_blocks=50, n_sim=600) <= 0.97


def _calibration_data(rng, n):
    """Teacher overconfident by 0.06 everywhere; the student noisier, more overconfident, sometimes disagreeing."""
    g = rng.uniform(0.3, 0.9, n)
    y = np.where(rng.random(n) < g, 0, rng.integers(1, 3, n))
    pt = np.empty((n, 3))
    ct = np.clip(g + 0.06, 0, 0.98)
    pt[:, 0], pt[:, 1], pt[:, 2] = ct, (1 - ct) / 2, (1 - ct) / 2
    cs = np.clip(g + 0.10 + rng.normal(0, 0.08, n), 0.34, 0.99)
    swap = rng.random(n) < 0.15
    ps = np.empty((n, 3))
    ps[:, 0] = np.where(swap, (1 - cs) / 2, cs)
    ps[:, 1] = np.where(swap, cs, (1 - cs) / 2)
    ps[:, 2] = (1 - cs) / 2
    return y, pt, ps


def test_coverage_of_the_ece_change():
    # the binned population ECE change, from 2 million rows of the same process
    y, pt, ps = _calibration_data(np.random.default_rng(123), 2_000_000)
    truth = expected_calibration_error(y, ps) - expected_calibration_error(y, pt)
    boot = Bootstrap(250, seed=5, n_blocks=128)  # the default BCa interval (percentile over-covers here, ~97.5%)
    n, n_sim, hits = 1500, 400, 0
    for sim in range(n_sim):
        y, pt, ps = _calibration_data(np.random.default_rng(20_000 + sim), n)
        acc = CalibrationAccumulator(3, bootstrap=boot, temperature=False)
        hits += acc.update(y, pt, ps, ids=np.arange(n)).compute()["ece_change"].contains(truth)
    assert 0.93 <= hits / n_sim <= 0.97
