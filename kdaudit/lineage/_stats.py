"""The model-level test: leave-one-out z-scores, the combined statistic, exact and parametric p-values, Holm.

The unit of evidence is the model. For every pool member ``m`` (teacher first, then K references) each signature's
statistic is standardised against the *other* members (leave-one-out mean and standard deviation), and the z-scores
are averaged into one combined statistic ``C_m`` (Stouffer's equal-weight combination, without its independence
claim: only the ranking matters for the exact p-value), with fixed weights per signature. Because the same symmetric
procedure produces ``C_m`` for every member, under the null hypothesis that the teacher is exchangeable with the
references in its relation to the suspect, the teacher's rank among the ``K + 1`` values is uniform, and
``(1 + #{k: C_k >= C_T}) / (K + 1)`` is a valid p-value whatever the dependence between probes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from kdaudit._exceptions import invalid_argument

__all__ = [
    "adjust_for_typicality",
    "beyond_nearest",
    "calibrate_by_controls",
    "combined_statistic",
    "effect_size",
    "holm_adjust",
    "holm_parent",
    "joint_rank_p_value",
    "leave_one_out_z",
    "min_references",
    "nearest_controls",
    "nearer_half",
    "pair_similarity",
    "parametric_p_value",
    "peer_relative",
    "rank_p_value",
]


def leave_one_out_z(stats: np.ndarray) -> np.ndarray:
    """z-score of each member's statistic against the other members: (..., M, S) -> (..., M, S).

    A member whose peers all have the same value gets z = 0 (no evidence either way) rather than a division by 0.
    """
    M = stats.shape[-2]
    if M < 3:
        return np.zeros_like(stats)
    total = stats.sum(axis=-2, keepdims=True)
    sq = (stats**2).sum(axis=-2, keepdims=True)
    mean = (total - stats) / (M - 1)
    var = (sq - stats**2 - (M - 1) * mean**2) / (M - 2)
    sd = np.sqrt(np.maximum(var, 0.0))
    # relative floor: identical peers (up to rounding) carry no spread to standardise against
    floor = 1e-9 * np.maximum(np.abs(mean), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > floor, (stats - mean) / np.where(sd > floor, sd, 1.0), 0.0)


def adjust_for_typicality(stats: np.ndarray, typicality: np.ndarray) -> np.ndarray:
    """Remove from each member's statistic what its typicality predicts, fitted on the other members.

    ``typicality[m, s]`` is how strongly signature ``s`` relates member ``m`` to its own siblings (the other pool
    members playing the suspect). A member that resembles its siblings more than most resembles any suspect more,
    derived or not: without this step every suspect of a "central" teacher looks somewhat related to it (the
    p-values stay valid over the draw of the teacher, but are conditionally too small for that teacher). For member
    ``m`` a least-squares line ``stat ~ a + b * typicality`` is fitted on the *other* members and ``m``'s residual
    is returned, so a derived suspect's outlying teacher does not bend its own fit. The map is the same for every
    member, so the statistics stay permutation-equivariant and the rank p-value exact.

    Parameters
    ----------
    stats : ndarray of shape (..., M, S)
    typicality : ndarray of shape (M, S)
    """
    M = stats.shape[-2]
    if M < 4:
        return stats
    t = np.broadcast_to(typicality, stats.shape)
    n = M - 1
    T = t.sum(axis=-2, keepdims=True) - t
    Y = stats.sum(axis=-2, keepdims=True) - stats
    TT = (t * t).sum(axis=-2, keepdims=True) - t * t
    TY = (t * stats).sum(axis=-2, keepdims=True) - t * stats
    den = n * TT - T * T
    scale = np.maximum(np.abs(n * TT), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(den > 1e-12 * scale, (n * TY - T * Y) / np.where(den > 1e-12 * scale, den, 1.0), 0.0)
    a = (Y - b * T) / n
    return stats - a - b * t


def beyond_nearest(stats: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Each member's statistics minus its closeness to its nearest other member, signature by signature.

    ``stats[m, s]``: member ``m`` with the anchor (the teacher); ``pairs[i, m, s]``: member ``m`` with member ``i``
    in the anchor's place. A positive value says the anchor is closer to the member than any other member is: the
    anchor is its nearest neighbour. Signatures whose pairwise values are not finite are returned as they are. The
    map is the same for every member (a maximum over the others), so the rank p-value stays exact.
    """
    M = stats.shape[0]
    off = np.where(np.eye(M, dtype=bool)[:, :, None], -np.inf, pairs)
    nearest = off.max(axis=0)
    usable = np.all(np.isfinite(nearest), axis=0)
    return np.where(usable, stats - np.where(np.isfinite(nearest), nearest, 0.0), stats)


def pair_similarity(pairs: np.ndarray) -> np.ndarray:
    """(M, M) similarity of every two members from their (M, M, S) pairwise signatures.

    ``pairs[i, j, s]`` is signature ``s`` of member ``j`` with member ``i`` in the anchor's place (higher: closer).
    Each signature is standardised over the off-diagonal pairs, the standardised signatures are averaged (columns
    that are not finite everywhere off the diagonal are left out), and the result is made symmetric. The diagonal is
    ``-inf``: a member is never its own neighbour.
    """
    M, _, S = pairs.shape
    off = ~np.eye(M, dtype=bool)
    cols = []
    for s in range(S):
        v = pairs[:, :, s][off]
        if not np.all(np.isfinite(v)):
            continue
        sd = v.std()
        cols.append((pairs[:, :, s] - v.mean()) / sd if sd > 0 else np.zeros((M, M)))
    sim = np.mean(cols, axis=0) if cols else np.zeros((M, M))
    sim = (sim + sim.T) / 2
    sim[~off] = -np.inf
    return sim


def peer_relative(stats: np.ndarray, similarity: np.ndarray, k: int, *, tiebreak: np.ndarray | None = None
                  ) -> np.ndarray:
    """Each member's statistics minus the mean of its ``k`` peers' (its nearest other members by ``similarity``).

    Used where the ranked members are heterogeneous (the controls null: the suspect among baseline models of many
    kinds). A model's closeness to the teacher is mostly a property of its kind (its architecture, its data); the
    models most like it show how close its kind comes to the teacher, and a model derived from the teacher comes
    closer than its peers. The map is the same for every member, and ties in ``similarity`` are broken by
    ``tiebreak`` (a rank that does not depend on the order the members are listed in), so the statistics stay
    permutation-equivariant and the rank p-value exact.

    Parameters
    ----------
    stats : ndarray of shape (M, S)
    similarity : ndarray of shape (M, M), symmetric, ``-inf`` on the diagonal (see :func:`pair_similarity`)
    k : int, 1 <= k < M
    tiebreak : ndarray of shape (M,), optional
        Distinct ranks of the members in an order of their own (default: the listed order).
    """
    M = stats.shape[0]
    k = int(min(max(k, 1), M - 1))
    tb = np.arange(M) if tiebreak is None else np.asarray(tiebreak)
    out = np.empty_like(stats, dtype=np.float64)
    for m in range(M):
        peers = np.lexsort((tb, -similarity[m]))
        peers = peers[peers != m][:k]
        out[m] = stats[m] - stats[peers].mean(axis=0)
    return out


def calibrate_by_controls(stats: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """Standardise each member's statistics by their mean and standard deviation over negative controls.

    ``controls[j, m, s]`` is signature ``s`` of member ``m`` with control ``j`` (a model known not to be derived from
    any member) in the suspect's place. Members differ in how widely their statistics spread over unrelated models:
    a member with a wide spread tops the pool's ranking more often than its share, so its p-values are
    conditionally too small (on the benchmark zoo one teacher reached p <= 0.05 for a fifth of the unrelated
    suspects). Dividing by each member's own spread puts every member on its null scale. The controls are the same
    for every member and the map is applied member by member, so the statistics stay permutation-equivariant and
    the pool's rank p-value exact. A spread of (numerically) zero leaves the member centred but unscaled. The
    tests pass the controls most like the suspect (:func:`nearest_controls`), not all of them.

    Parameters
    ----------
    stats : ndarray of shape (..., M, S)
    controls : ndarray of shape (L, M, S), L >= 2
    """
    mean = controls.mean(axis=0)
    sd = controls.std(axis=0, ddof=1)
    floor = 1e-9 * np.maximum(np.abs(mean), 1.0)
    return (stats - mean) / np.where(sd > floor, sd, 1.0)


def nearest_controls(stats: np.ndarray, controls: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` controls whose statistics over the whole pool are most like the suspect's.

    ``stats`` (M, S) are the suspect's statistics with every member, ``controls`` (L, M, S) each control's in the
    suspect's place. The distance is the sum over members and signatures of the squared difference, each entry
    scaled by its spread over all the controls; ties go to the earlier control. A sum over members is the same
    whatever the members' order, so calibrating every member by the chosen controls
    (:func:`calibrate_by_controls`) keeps the statistics permutation-equivariant and the rank p-value exact.

    Why: a member can relate to a whole family of unrelated models more than its siblings do (on the benchmark
    zoo, one teacher to the students of another teacher). Calibrated against controls of every kind, that
    affinity survives for a suspect of that family; against the controls that look like the suspect, it is
    measured and removed.
    """
    stats = np.asarray(stats, dtype=np.float64)
    controls = np.asarray(controls, dtype=np.float64)
    if stats.ndim != 2 or controls.ndim != 3 or controls.shape[1:] != stats.shape:
        raise ValueError(f"stats (M, S) and controls (L, M, S) do not match: {stats.shape} and {controls.shape}")
    n = controls.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k = {k}: must be between 1 and the number of controls ({n})")
    flat = controls.reshape(n, -1)
    scale = flat.std(axis=0)
    scale = np.where(scale > 1e-12 * np.maximum(np.abs(flat).max(axis=0), 1.0), scale, 1.0)
    distance = (((flat - stats.reshape(-1)) / scale) ** 2).sum(axis=1)
    return np.argsort(distance, kind="stable")[:k]


#: a suspect's members are calibrated by the nearer half of the controls, but never by fewer than this many (a spread
#: from fewer is too noisy)
MIN_NEAREST_CONTROLS = 10


def nearer_half(stats: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """Indices of the nearer half of the controls (at least MIN_NEAREST_CONTROLS, at most all): the calibration rule
    of both lineage tests (:func:`nearest_controls`)."""
    n = len(controls)
    return nearest_controls(stats, controls, min(n, max(MIN_NEAREST_CONTROLS, n // 2)))


def combined_statistic(stats: np.ndarray, weights: np.ndarray | None = None, *,
                       two_sided: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean of the leave-one-out z-scores over signatures: (..., M, S) -> (..., M).

    ``weights`` (S,) are fixed in advance (never fitted to the data at hand), so the combination stays the same
    symmetric function for every pool member. Signatures flagged in ``two_sided`` (S,) enter as ``|z|``: a member
    that relates to the suspect unusually in either direction stands out (the same map for every member, so the
    rank p-value stays exact).
    """
    z = leave_one_out_z(stats)
    if two_sided is not None:
        z = np.where(np.asarray(two_sided, dtype=bool), np.abs(z), z)
    if weights is None:
        return z.mean(axis=-1)
    w = np.asarray(weights, dtype=np.float64)
    return (z * w).sum(axis=-1) / w.sum()


def effect_size(combined: np.ndarray) -> np.ndarray:
    """How many reference standard deviations the teacher's combined statistic lies above the references' mean."""
    teacher, refs = combined[..., 0], combined[..., 1:]
    sd = refs.std(axis=-1, ddof=1) if refs.shape[-1] > 1 else np.full(teacher.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (teacher - refs.mean(axis=-1)) / sd


def rank_p_value(teacher: float, references: np.ndarray) -> float:
    """Exact permutation p-value: ``(1 + #{k: C_k >= C_T}) / (K + 1)`` (ties count against the teacher)."""
    refs = np.asarray(references, dtype=np.float64)
    # a relative tolerance so that floating-point noise never breaks a tie in the teacher's favour
    tol = 1e-12 * max(1.0, abs(float(teacher)))
    return float((1 + np.sum(refs >= teacher - tol)) / (len(refs) + 1))


def _pool_statistics(test: object) -> np.ndarray:
    get = test.get if isinstance(test, dict) else lambda key: getattr(test, key, None)
    teacher, refs = get("statistic"), get("reference_statistics")
    if teacher is None or refs is None:
        raise invalid_argument("tests", type(test).__name__, "lineage results (statistic, reference_statistics)")
    v = np.asarray([teacher, *refs], dtype=np.float64)
    if not np.isfinite(v).all():
        raise invalid_argument("tests", "a non-finite statistic", "tests whose pool statistics are all finite")
    return v


def joint_rank_p_value(*tests: object) -> float:
    """One exact rank p-value from several tests of one suspect whose pools are paired member by member.

    The usual pair is the member test (the teacher and its references) and the test against their shadow students
    (:func:`~kdaudit.lineage.train_shadow_students`: shadow ``i`` made from member ``i``, the teacher's first). Each
    pool's combined statistics (the teacher's and its references', ``statistic`` and ``reference_statistics`` of
    a :class:`~kdaudit.lineage.LineageResult`) are centred and scaled over that pool, a function of the pool as a
    set, and summed member by member; the teacher's sum is ranked among the references' as in
    :func:`rank_p_value`. Under the null the tuples (member, its shadows) are exchangeable, so the p-value is exact.
    Unlike a Bonferroni combination it keeps the single test's resolution, ``1 / (K + 1)``: with 39 references,
    ``2 * min(p)`` can never go below 0.05 and ``3 * min(p)`` never reaches it.
    """
    if len(tests) < 2:
        raise invalid_argument("tests", f"{len(tests)} test(s)", "at least two tests of the same suspect")
    pools = [_pool_statistics(t) for t in tests]
    if len({len(v) for v in pools}) != 1:
        raise invalid_argument("tests", [len(v) - 1 for v in pools], "pools with as many references each")
    total = np.zeros_like(pools[0])
    for v in pools:
        sd = v.std(ddof=1)
        total += (v - v.mean()) / (sd if sd > 0 else 1.0)
    return rank_p_value(float(total[0]), total[1:])


def parametric_p_value(teacher: float, references: np.ndarray) -> float:
    """One-sided p-value from a Student-t prediction interval for one new draw from the references' distribution.

    ``t = (C_T - mean) / (sd * sqrt(1 + 1/K))`` follows ``t_{K-1}`` when the pool's combined statistics are i.i.d.
    normal under the null: an extra assumption beyond exchangeability, stated in the result.
    """
    refs = np.asarray(references, dtype=np.float64)
    K = len(refs)
    if K < 2:
        return float("nan")
    sd = refs.std(ddof=1)
    if not sd > 0:
        return float("nan")
    t = (teacher - refs.mean()) / (sd * np.sqrt(1 + 1 / K))
    return float(sps.t.sf(t, df=K - 1))


def min_references(alpha: float, n_tests: int = 1) -> int:
    """Fewest references K for which the exact p-value can reach ``alpha / n_tests``: ``ceil(n/alpha) - 1``."""
    return int(np.ceil(n_tests / alpha - 1e-9)) - 1


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def holm_parent(names: Sequence[str], p_values: Sequence[float], effects: Sequence[float], *, alpha: float,
                eligible: Sequence[bool] | None = None) -> tuple[str, np.ndarray]:
    """The attribution rule: Holm-adjust the candidates' p-values; among the (eligible) candidates significant at
    ``alpha``, the parent has the largest effect (ties: the smaller p-value); else "none". Returns the parent and
    the adjusted p-values."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = holm_adjust(p)
    ok = [True] * len(names) if eligible is None else list(eligible)
    significant = [i for i in range(len(names)) if ok[i] and math.isfinite(adjusted[i]) and adjusted[i] <= alpha]
    if not significant:
        return "none", adjusted
    return str(names[max(significant, key=lambda i: (effects[i], -p[i]))]), adjusted
