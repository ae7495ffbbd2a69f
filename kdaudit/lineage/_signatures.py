"""Lineage signatures: how strongly a suspect's outputs follow each member of a pool of candidate parents.

The pool is ``{teacher, reference_1, ..., reference_K}``. Every signature is computed for every member by the same
function of ``(suspect, member, pool)`` that is symmetric in the pool, so relabelling the pool members permutes the
statistics and nothing else. That symmetry is what keeps the rank p-value of :mod:`kdaudit.lineage._test` exact.

Each signature is a smooth function of per-probe *additive* sums (sums over probes of per-probe values), so a probe
bootstrap (:class:`kdaudit.metrics._resampling.Bootstrap`) recomputes every statistic, the z-scores and the
effect size by reweighting those sums, without touching a model again.

Signatures (member ``m``, pool mean ``bar``, suspect ``S``; entries are probes x classes):

``logit_residual``
    Pearson correlation, over the entries the suspect reveals, of ``clr(log p_m) - bar(clr log p)`` with
    ``clr(log p_S) - bar(clr log p)``, where ``clr`` centres log-probabilities over the revealed classes of each probe.
    Subtracting the pool's consensus removes what every model trained on the data knows; what remains is a model's
    idiosyncrasy, mostly in the small probabilities of non-top classes (the "dark knowledge" distillation copies).
``prob_residual``
    The same on the probability scale, with the suspect's view (full probabilities; top-k with the unrevealed mass
    spread evenly over the other classes; one-hot labels). Available in every access mode.
``nontop_rank``
    Mean over probes of Spearman's rank correlation between the suspect's and the member's probabilities on the
    classes other than the pool's consensus top class (full probabilities only).
``topk_overlap``
    Mean over probes of ``|top-k(S) & top-k(m)| / k`` (top-k access).
``label_idiosyncrasy``
    Mean over probes of ``1[label_S = label_m] - share of the pool predicting label_m``: agreement with the member
    beyond what the pool's consensus explains, which counts most where the pool disagrees (labels suffice).
``shared_errors``
    Rate of probes with a known true label where the suspect makes the member's wrong prediction (only when the
    probes carry true labels).
``pool_regression``
    The member's coefficient in a ridge regression of the suspect's deviation from the pool consensus on *all*
    members' deviations jointly (probability scale, the suspect's view). A marginal correlation credits every
    member whose deviation happens to resemble the teacher's (on a binary task the members' deviations live in a
    few directions, so they resemble each other often): that is what widens the references' spread under the
    alternative. The joint fit gives the explained part to the member that explains it, and the references' spread
    shrinks. Ridge with the same penalty for every member is permutation-equivariant, so the rank p-value stays
    exact.
``member_loglik``
    Mean over probes of ``sum_c q_S(c) log p_m(c)``: the member's log-likelihood of the suspect's own answers, with
    the suspect's view ``q_S`` as for ``prob_residual`` and ``p_m`` floored as for ``logit_residual``. A proper
    scoring rule: it ranks the members by the cross-entropy from the suspect's distribution to theirs, the distance a
    distillation loss minimises. Not corrected by a typicality line (``NO_TYPICALITY_LINE``): on the language-model
    test a line fitted on the siblings removed most of its signal. Opt-in (``OPTIONAL``): computed only where a
    weight table gives it weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from kdaudit.lineage._probes import _LOG_FLOOR

__all__ = ["CALIBRATED_WEIGHTS", "JOINT", "NO_TYPICALITY_LINE", "OPTIONAL", "SIGNATURES", "SIGNATURE_WEIGHTS",
           "TWO_SIDED", "SignatureSums", "available_signatures", "compute_sums", "statistics_from_totals"]

#: Signature name -> one-line description (used in reports and the methodology text).
SIGNATURES: dict[str, str] = {
    "logit_residual": "correlation of the suspect's and the model's deviations from the pool consensus, on the "
                      "log-probability scale (non-top class structure)",
    "prob_residual": "correlation of the suspect's and the model's deviations from the pool consensus, on the "
                     "probability scale",
    "nontop_rank": "rank correlation of the non-top classes",
    "topk_overlap": "overlap of the top-k class sets",
    "label_idiosyncrasy": "agreement on labels beyond the pool's consensus (counts where the pool disagrees)",
    "shared_errors": "rate of shared wrong labels on probes with a known true label",
    "pool_regression": "the model's weight when the suspect's deviations from the pool consensus are regressed on "
                       "all models' deviations jointly (credit goes to the model that explains them)",
    "member_loglik": "the model's mean log-likelihood of the suspect's answers (cross-entropy from the suspect's "
                     "distribution to the model's)",
}

#: Ridge penalty of ``pool_regression``, relative to the mean squared norm of the members' deviations. The members'
#: deviations sum to zero, so some penalty is needed; a small one keeps the fit close to least squares.
RIDGE = 1e-2
#: Relative penalty of the nuisance regressors of ``pool_regression`` (see :func:`compute_sums`): only enough to keep
#: the system solvable when a nuisance row is (nearly) a combination of members' deviations.
NUISANCE_RIDGE = 1e-6

#: Weight of each signature's z-score in the combined statistic. ``prob_residual`` dominates: it is the one
#: signature that sees both the top-class decisions and the non-top structure on the scale where distillation losses
#: act, in every access mode, and alone it separated the development zoo best. ``label_idiosyncrasy`` is the
#: boundary evidence (the only signature that follows a label-only extraction); ``shared_errors`` and
#: ``topk_overlap`` are partial views of the same copying. The log-scale signatures (``logit_residual``,
#: ``nontop_rank``) count little: students trained on hard labels (label-only extraction, KD at T = 1) have their own
#: tiny probabilities, so on that scale the true teacher often looks *less* related than its siblings: these two
#: enter two-sided (``TWO_SIDED``). Chosen on a development zoo (seed 0 of each kind of
#: ``benchmarks/lineage.py``); the benchmark reports the held-out seeds separately. Any fixed weights keep the
#: p-value exact: weights only move power between kinds of derivation.
SIGNATURE_WEIGHTS: dict[str, float] = {
    "prob_residual": 3.0,
    "label_idiosyncrasy": 1.0,
    "shared_errors": 0.5,
    "topk_overlap": 0.5,
    "logit_residual": 0.5,
    "nontop_rank": 0.5,
    # reported in the plain test, weighted in the calibrated one (CALIBRATED_WEIGHTS)
    "pool_regression": 0.0,
    # opt-in (OPTIONAL): computed only where a weight table gives it weight
    "member_loglik": 0.0,
}

#: Weights of the test calibrated by negative controls: the joint fit counts as much as ``prob_residual``. The joint
#: fit is what stays powerful where members' deviations from the consensus share a few directions (binary outputs),
#: and a marginal correlation credits every member aligned with the suspect's own departure from the recipe. In the
#: plain test its own member offsets make an over-attractive teacher's conditional false-positive rate worse (MNIST
#: teacher B: 0.17 -> 0.28 over 47 unrelated suspects) and it missed the demo's distilled student (p 0.05 -> 0.15),
#: so there it weighs 0; calibrated by controls (each member's offsets removed, the controls' mean a nuisance
#: regressor of the fit) it raised the TPR in every benchmark mode measured with 39 references (Adult probabilities
#: 0.63 -> 0.70, labels 0.57 -> 0.60; MNIST probabilities 0.73 -> 0.77, labels 0.93 -> 0.93-0.97; array-level
#: runs, benchmarks/results/lineage_power_diagnosis_cpu.txt), with B's conditional rate at 0.06.
CALIBRATED_WEIGHTS: dict[str, float] = {**SIGNATURE_WEIGHTS, "pool_regression": 3.0}

#: Signatures whose z-score enters the combination as ``|z|``. On the log scale a derived suspect need not follow its
#: teacher's small probabilities: students trained on hard labels (label-only extraction, KD at T = 1) sharpen
#: exactly where their teacher is sure, and on the development zoo their true teacher stood out as *less* aligned on
#: these signatures than any sibling (z near -2), while for soft-label students it stands out as more aligned. Under
#: the null the teacher is exchangeable with its siblings whatever the sign, so an unusual value either way is
#: evidence, and counting it keeps the test exact.
TWO_SIDED: frozenset[str] = frozenset({"logit_residual", "nontop_rank"})

#: Signatures fitted on all members jointly: their value for a member already excludes what its siblings explain,
#: so they are not corrected for typicality (``kdaudit.lineage._test._typicality``).
JOINT: frozenset[str] = frozenset({"pool_regression"})

#: Signatures whose typicality adjustment is a plain centring (each member's value minus its siblings' mean, no line
#: fitted on the siblings): the joint ones (``JOINT``), and the likelihood, whose typicality (a member's likelihood of
#: its siblings' answers, mostly how sharp the member is) is what the controls' calibration removes member by member;
#: on the language-model test a line fitted on it removed most of the signal.
NO_TYPICALITY_LINE: frozenset[str] = JOINT | {"member_loglik"}

#: Signatures computed only where ``SIGNATURE_WEIGHTS`` or ``CALIBRATED_WEIGHTS`` gives them a nonzero weight, so an
#: experimental signature changes no default result (the reported signatures stay as they were).
OPTIONAL: frozenset[str] = frozenset({"member_loglik"})



def available_signatures(access: str, *, has_truth: bool) -> tuple[str, ...]:
    """Signatures computable from a suspect with this access level (the pool is at least as informative)."""
    if access == "probabilities":
        names = ["logit_residual", "prob_residual", "nontop_rank", "label_idiosyncrasy"]
    elif access == "top_k":
        names = ["logit_residual", "prob_residual", "topk_overlap", "label_idiosyncrasy"]
    elif access == "labels":
        names = ["prob_residual", "label_idiosyncrasy"]
    else:  # pragma: no cover - validated at the public boundary
        raise ValueError(access)
    if has_truth:
        names.append("shared_errors")
    names.append("pool_regression")
    names += [name for name in sorted(OPTIONAL) if SIGNATURE_WEIGHTS.get(name) or CALIBRATED_WEIGHTS.get(name)]
    return tuple(names)


@dataclass(frozen=True)
class SignatureSums:
    """Per-probe additive values and the layout needed to turn their totals into statistics.

    ``values`` is (n_probes, n_values). Correlation signatures store 3 member values (sum x, sum xy, sum x^2) per
    member and 3 shared suspect values (sum y, sum y^2, count); mean signatures store 1 value per member and a count;
    the regression signature stores the upper triangle of the Gram matrix of the members' and the suspect's
    deviations.
    """

    values: np.ndarray
    signatures: tuple[str, ...]
    n_members: int
    layout: tuple[tuple[str, int, int], ...]  # (kind, start, stop) per signature; kind "corr", "mean" or "gram"
    n_nuisance: int = 0  # nuisance regressors in the "gram" block (between the members and the suspect)


def _clr(logp: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Centre log-probabilities over the revealed classes of each probe (zero elsewhere)."""
    n = mask.sum(axis=-1, keepdims=True)
    mean = (logp * mask).sum(axis=-1, keepdims=True) / np.maximum(n, 1)
    return (logp - mean) * mask


def _corr_values(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-probe sums for a correlation: member part (N, 3*M) then shared part (N, 3)."""
    # x: (M, N, C) zero where masked; y: (N, C) zero where masked
    sx = x.sum(axis=-1)
    sxy = (x * y[None]).sum(axis=-1)
    sxx = (x * x).sum(axis=-1)
    member = np.stack([sx, sxy, sxx], axis=-1)  # (M, N, 3)
    member = member.transpose(1, 0, 2).reshape(x.shape[1], -1)
    shared = np.stack([y.sum(axis=-1), (y * y).sum(axis=-1), mask.sum(axis=-1)], axis=-1)
    return np.concatenate([member, shared], axis=1)


def _prob_view(S: np.ndarray, access: str) -> np.ndarray:
    """The suspect's answers as probabilities: as given; for top-k the unrevealed mass spread evenly over the other
    classes (the least informative completion); one-hot labels as given."""
    if access != "top_k":
        return S
    rest = np.clip(1.0 - S.sum(axis=1, keepdims=True), 0.0, 1.0)
    hidden = S <= 0
    return np.where(hidden, rest / np.maximum(hidden.sum(axis=1, keepdims=True), 1), S)


def _gram_values(D: np.ndarray) -> np.ndarray:
    """Per-probe upper triangle of the Gram matrix of the rows of ``D`` (R, N, C), summed over classes: (N, R(R+1)/2)."""
    iu = np.triu_indices(D.shape[0])
    G = np.einsum("anc,bnc->nab", D, D)
    return G[:, iu[0], iu[1]]


def _ridge_weights(G: np.ndarray, M: int, n_nuisance: int = 0) -> np.ndarray:
    """Ridge coefficients (..., M) of the members, from the Gram matrix (..., R+1, R+1) of the rows of ``D``: the M
    members' deviations, ``n_nuisance`` nuisance deviations, then the suspect's (regressed on the R = M + n_nuisance
    rows before it). The members are penalised alike; the nuisance rows almost not (their coefficients are not
    compared, they only absorb what they explain)."""
    R = M + n_nuisance
    X = G[..., :R, :R]
    y = G[..., :R, R]
    scale = np.trace(X[..., :M, :M], axis1=-2, axis2=-1)[..., None, None] / M
    penalty = np.r_[np.full(M, RIDGE), np.full(n_nuisance, NUISANCE_RIDGE)]
    A = X + np.where(scale > 0, scale, 1.0) * np.diag(penalty)
    return np.linalg.solve(A, y[..., None])[..., 0][..., :M]


def compute_sums(pool: np.ndarray, suspect_probs: np.ndarray, suspect_labels: np.ndarray, *, access: str,
                 top_k: int | None = None, y_true: np.ndarray | None = None,
                 nuisance: np.ndarray | None = None) -> SignatureSums:
    """Per-probe additive values of every available signature for every pool member.

    Parameters
    ----------
    pool : ndarray of shape (n_members, n_probes, n_classes)
        Probabilities of the pool members (teacher first), full vectors.
    suspect_probs : ndarray of shape (n_probes, n_classes)
        The suspect's view: probabilities; zero outside the top k; or one-hot labels.
    suspect_labels : ndarray of shape (n_probes,)
    access : {"probabilities", "top_k", "labels"}
    top_k : int, optional
        k for ``access="top_k"``.
    y_true : ndarray of shape (n_probes,), optional
        True labels, ``-1`` where unknown (e.g. mixup blends).
    nuisance : ndarray of shape (n_nuisance, n_probes, n_classes), optional
        Outputs, in the suspect's view, of models that stand for what an *underived* suspect of the feared kind
        does (the mean of the negative controls): their deviations from the pool consensus enter ``pool_regression``
        as extra regressors, so the part of the suspect's deviation they explain (a family's systematic departure
        from the teacher's recipe) is not credited to whichever member happens to point the same way. The same rows
        for every member keep the statistic permutation-equivariant.
    """
    M, N, C = pool.shape
    pool = pool.astype(np.float64)
    S = suspect_probs.astype(np.float64)
    has_truth = y_true is not None and bool((y_true >= 0).any())
    names = available_signatures(access, has_truth=has_truth)
    member_labels = pool.argmax(axis=-1)  # (M, N)
    blocks: list[np.ndarray] = []
    layout: list[tuple[str, int, int]] = []
    start = 0

    def push(kind: str, vals: np.ndarray) -> None:
        nonlocal start
        blocks.append(vals)
        layout.append((kind, start, start + vals.shape[1]))
        start += vals.shape[1]

    for name in names:
        if name == "logit_residual":
            mask = np.ones((N, C)) if access == "probabilities" else (S > 0).astype(np.float64)
            lp = _clr(np.log(np.maximum(pool, _LOG_FLOOR)), mask[None])
            ls = _clr(np.log(np.maximum(S, _LOG_FLOOR)), mask)
            bar = lp.mean(axis=0)
            push("corr", _corr_values(lp - bar[None], (ls - bar) * mask, mask))
        elif name == "prob_residual":
            bar = pool.mean(axis=0)
            push("corr", _corr_values(pool - bar[None], _prob_view(S, access) - bar, np.ones((N, C))))
        elif name == "pool_regression":
            bar = pool.mean(axis=0)
            rows = [pool - bar[None]]
            if nuisance is not None:
                rows.append(np.asarray(nuisance, dtype=np.float64) - bar[None])
            rows.append((_prob_view(S, access) - bar)[None])
            push("gram", _gram_values(np.concatenate(rows)))
        elif name == "nontop_rank":
            top = pool.mean(axis=0).argmax(axis=1)  # the pool's consensus top class: symmetric in the members
            keep = np.ones((N, C), dtype=bool)
            keep[np.arange(N), top] = False
            rs = rankdata(S[keep].reshape(N, C - 1), axis=-1)
            rp = rankdata(pool[:, keep].reshape(M, N, C - 1), axis=-1)
            rs = rs - rs.mean(axis=-1, keepdims=True)
            rp = rp - rp.mean(axis=-1, keepdims=True)
            den = np.sqrt((rp**2).sum(-1) * (rs**2).sum(-1)[None])
            rho = np.where(den > 0, (rp * rs[None]).sum(-1) / np.where(den > 0, den, 1), 0.0)  # (M, N)
            push("mean", np.concatenate([rho.T, np.ones((N, 1))], axis=1))
        elif name == "topk_overlap":
            k = int(top_k)
            top_s = S > 0
            order = np.argsort(-pool, axis=-1, kind="stable")[..., :k]
            top_p = np.zeros((M, N, C), dtype=bool)
            np.put_along_axis(top_p, order, True, axis=-1)
            overlap = (top_p & top_s[None]).sum(-1) / k
            push("mean", np.concatenate([overlap.T, np.ones((N, 1))], axis=1))
        elif name == "label_idiosyncrasy":
            share = np.stack([(member_labels == c).mean(axis=0) for c in range(C)], axis=1)  # (N, C)
            agree = (member_labels == suspect_labels[None]).astype(np.float64)
            expected = np.take_along_axis(share[None].repeat(M, 0), member_labels[..., None], axis=-1)[..., 0]
            push("mean", np.concatenate([(agree - expected).T, np.ones((N, 1))], axis=1))
        elif name == "member_loglik":
            ll = np.einsum("nc,mnc->nm", _prob_view(S, access), np.log(np.maximum(pool, _LOG_FLOOR)))
            push("mean", np.concatenate([ll, np.ones((N, 1))], axis=1))
        elif name == "shared_errors":
            known = (y_true >= 0)
            shared = (member_labels != y_true[None]) & (member_labels == suspect_labels[None]) & known[None]
            push("mean", np.concatenate([shared.T.astype(np.float64), known[:, None].astype(np.float64)], axis=1))
    return SignatureSums(np.concatenate(blocks, axis=1), names, M, tuple(layout),
                         n_nuisance=0 if nuisance is None else len(nuisance))


def statistics_from_totals(totals: np.ndarray, sums: SignatureSums) -> np.ndarray:
    """Signature statistics (..., n_members, n_signatures) from summed values (..., n_values).

    Vectorised over leading axes, so bootstrap replicates go through the same code as the point estimate.
    """
    M = sums.n_members
    out = []
    for kind, a, b in sums.layout:
        t = totals[..., a:b]
        if kind == "gram":
            R = M + sums.n_nuisance + 1
            iu = np.triu_indices(R)
            G = np.zeros(t.shape[:-1] + (R, R))
            G[..., iu[0], iu[1]] = t
            G[..., iu[1], iu[0]] = t
            r = _ridge_weights(G, M, sums.n_nuisance)
        elif kind == "corr":
            member = t[..., : 3 * M].reshape(*t.shape[:-1], M, 3)
            sy, syy, n = (t[..., 3 * M + j][..., None] for j in range(3))
            sx, sxy, sxx = member[..., 0], member[..., 1], member[..., 2]
            cov = n * sxy - sx * sy
            var = (n * sxx - sx**2) * (n * syy - sy**2)
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(var > 0, cov / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
        else:
            n = t[..., M][..., None]
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(n > 0, t[..., :M] / np.where(n > 0, n, 1.0), 0.0)
        out.append(r)
    return np.stack(out, axis=-1)
