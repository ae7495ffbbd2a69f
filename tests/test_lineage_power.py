"""Lineage power (issue 16): the joint-regression signature against scikit-learn's ridge, its place in the
member-symmetric pipeline, and the reference-pool helper."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _arrays import softmax

from kdaudit import KDAuditError
from kdaudit.lineage import train_references
from kdaudit.lineage._signatures import RIDGE, compute_sums, statistics_from_totals


def _pool(rng, M=8, N=120, C=3):
    base = rng.normal(0, 1, (N, C))
    pool = np.stack([softmax(base + rng.normal(0, 0.4, (N, C))) for _ in range(M)])
    suspect = softmax(base + 0.8 * (np.log(pool[2]) - np.log(pool).mean(0)) + rng.normal(0, 0.2, (N, C)))
    return pool, suspect


@pytest.mark.parametrize("access", ["probabilities", "labels"])
def test_pool_regression_matches_sklearn_ridge(access):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    pool, suspect = _pool(rng)
    M, N, C = pool.shape
    view = suspect if access == "probabilities" else np.eye(C)[suspect.argmax(1)]
    sums = compute_sums(pool, view, view.argmax(1), access=access)
    stats = statistics_from_totals(sums.values.sum(axis=0), sums)
    ours = stats[:, sums.signatures.index("pool_regression")]
    bar = pool.mean(axis=0)
    X = (pool - bar).reshape(M, -1).T
    y = (view - bar).reshape(-1)
    penalty = RIDGE * np.trace(X.T @ X) / M
    ref = Ridge(alpha=penalty, fit_intercept=False, solver="cholesky").fit(X, y).coef_
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-10)


def test_pool_regression_credits_the_parent_and_is_permutation_equivariant():
    rng = np.random.default_rng(1)
    pool, suspect = _pool(rng)
    sums = compute_sums(pool, suspect, suspect.argmax(1), access="probabilities")
    j = sums.signatures.index("pool_regression")
    stats = statistics_from_totals(sums.values.sum(axis=0), sums)[:, j]
    assert int(np.argmax(stats)) == 2  # the member whose deviation the suspect inherited
    perm = rng.permutation(len(pool))
    sums_p = compute_sums(pool[perm], suspect, suspect.argmax(1), access="probabilities")
    stats_p = statistics_from_totals(sums_p.values.sum(axis=0), sums_p)[:, j]
    np.testing.assert_allclose(stats_p, stats[perm], rtol=1e-9, atol=1e-12)


def test_pool_regression_is_bootstrap_ready():
    """Reweighting the per-probe values (what the probe bootstrap does) equals the statistic on reweighted probes."""
    rng = np.random.default_rng(2)
    pool, suspect = _pool(rng)
    sums = compute_sums(pool, suspect, suspect.argmax(1), access="probabilities")
    j = sums.signatures.index("pool_regression")
    w = rng.poisson(1.0, pool.shape[1]).astype(np.float64)
    via_sums = statistics_from_totals((sums.values * w[:, None]).sum(axis=0), sums)[:, j]
    keep = np.repeat(np.arange(pool.shape[1]), w.astype(int))
    # the consensus is per probe, so repeating probes reproduces the weighted sums exactly
    direct_sums = compute_sums(pool[:, keep], suspect[keep], suspect[keep].argmax(1), access="probabilities")
    direct = statistics_from_totals(direct_sums.values.sum(axis=0), direct_sums)[:, j]
    np.testing.assert_allclose(via_sums, direct, rtol=1e-9)


def _recipe(seed: int):
    # a tiny "training run" whose only randomness is the seed
    return np.random.default_rng(seed).normal(size=3)


def test_train_references_sequential_and_parallel_agree():
    seq = train_references(_recipe, [100, 101, 102])
    with ThreadPoolExecutor(max_workers=2) as ex:
        par = train_references(_recipe, [100, 101, 102], executor=ex)
    assert len(seq) == 3
    for a, b in zip(seq, par):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(seq[0], seq[1])


def test_train_references_builds_torch_references():
    torch = pytest.importorskip("torch")
    from kdaudit.data import AuditData
    from kdaudit.distill import mlp, train_control

    rng = np.random.default_rng(0)
    data = AuditData(X=rng.normal(size=(64, 5)).astype(np.float32), y_true=rng.integers(0, 2, 64))
    refs = train_references(lambda s: train_control(mlp(5, 2, hidden=(8,), seed=s), data, epochs=1, seed=s),
                            [1, 2])
    assert all(isinstance(m, torch.nn.Module) for m in refs)
    w0, w1 = (next(m.parameters()) for m in refs)
    assert not torch.equal(w0, w1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(recipe=None, seeds=[1]), "recipe"),
    (dict(recipe=_recipe, seeds=[]), "seeds"),
    (dict(recipe=_recipe, seeds=[1, 1]), "distinct"),
    (dict(recipe=_recipe, seeds=[1, "2"]), "seeds"),
    (dict(recipe=_recipe, seeds=[0, 1], exclude=[0]), "teacher"),
    (dict(recipe=_recipe, seeds=[1], executor=object()), "executor"),
])
def test_train_references_rejects_bad_input(kwargs, match):
    with pytest.raises(KDAuditError, match=match):
        train_references(**kwargs)
