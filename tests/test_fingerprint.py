"""Error fingerprints: formulas against scikit-learn and brute force, and the chance model by simulation."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix, jaccard_score

from kdaudit import KDAuditError
from kdaudit.harness._outputs import ModelOutputs
from kdaudit.metrics import (
    Bootstrap,
    FingerprintAccumulator,
    confusion_similarity,
    error_consistency_score,
    error_overlap,
    fingerprint_section,
    same_wrong_label_rate,
)
from kdaudit.metrics._fingerprint import DEFINITIONS
from kdaudit.models._base import Access


def _labels(n=4000, c=6, seed=0, copy=0.6):
    """Teacher ~70% accurate; the student copies the teacher's label with probability ``copy``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    lt = np.where(rng.random(n) < 0.7, y, rng.integers(0, c, n))
    own = np.where(rng.random(n) < 0.65, y, rng.integers(0, c, n))
    ls = np.where(rng.random(n) < copy, lt, own)
    return y, lt, ls


def test_error_consistency_is_kappa_of_correctness():
    y, lt, ls = _labels()
    # Geirhos et al.'s error consistency is Cohen's kappa of the two binary correct/wrong vectors
    assert error_consistency_score(y, lt, ls) == pytest.approx(cohen_kappa_score(lt == y, ls == y), abs=1e-12)


def test_error_overlap_counts_and_jaccard():
    y, lt, ls = _labels(seed=1)
    tw, sw = lt != y, ls != y
    o = error_overlap(y, lt, ls)
    assert o["jaccard"] == pytest.approx(jaccard_score(tw, sw), abs=1e-12)
    assert o["student_wrong_given_teacher_wrong"] == pytest.approx(sw[tw].mean())
    assert (o["inherited"], o["new"], o["fixed"]) == ((tw & sw).sum(), (sw & ~tw).sum(), (tw & ~sw).sum())
    assert o["inherited_rate"] + o["new_rate"] == pytest.approx(sw.mean())


def test_same_wrong_label_chance_matches_a_permutation_null():
    y, lt, ls = _labels(seed=2, copy=0.3)
    res = same_wrong_label_rate(y, lt, ls, n_classes=6)
    both = (lt != y) & (ls != y)
    assert res["rate"] == pytest.approx(np.mean(lt[both] == ls[both]))
    # the null: within each true class, shuffle the student's wrong labels among rows both got wrong
    rng = np.random.default_rng(0)
    yb, tb, sb = y[both], lt[both], ls[both].copy()
    sims = []
    for _ in range(300):
        for c in range(6):
            m = np.flatnonzero(yb == c)
            sb[m] = sb[rng.permutation(m)]
        sims.append(np.mean(tb == sb))
    assert res["chance"] == pytest.approx(np.mean(sims), abs=3 * np.std(sims) / np.sqrt(300) + 1e-3)
    assert res["lift"] > 1.5  # the student copies a third of its labels, mistakes included


def test_confusion_similarity_matches_direct_computation():
    y, lt, ls = _labels(seed=3)
    ct = confusion_matrix(y, lt, labels=range(6), normalize="true")
    cs = confusion_matrix(y, ls, labels=range(6), normalize="true")
    off = ~np.eye(6, dtype=bool)
    a, b = ct[off], cs[off]
    res = confusion_similarity(y, lt, ls, n_classes=6)
    assert res["correlation"] == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert res["cosine"] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-12)


def test_accumulator_equals_functions_with_intervals():
    y, lt, ls = _labels(seed=4)
    r = FingerprintAccumulator(6, bootstrap=Bootstrap(200)).update(y, lt, ls, ids=np.arange(len(y))).compute()
    o = error_overlap(y, lt, ls)
    s = same_wrong_label_rate(y, lt, ls, n_classes=6)
    cm = confusion_similarity(y, lt, ls, n_classes=6)
    expect = {
        "error_consistency": error_consistency_score(y, lt, ls),
        "error_jaccard": o["jaccard"],
        "student_wrong_given_teacher_wrong": o["student_wrong_given_teacher_wrong"],
        "same_wrong_label_rate": s["rate"], "same_wrong_label_chance": s["chance"],
        "same_wrong_label_lift": s["lift"], "confusion_correlation": cm["correlation"],
        "confusion_cosine": cm["cosine"], "inherited_error_rate": o["inherited_rate"],
        "new_error_rate": o["new_rate"], "fixed_error_rate": o["fixed_rate"],
    }
    assert set(r.headline) == set(expect) == set(DEFINITIONS)
    for k, v in expect.items():
        assert r[k].value == pytest.approx(v, abs=1e-12), k
        assert r[k].has_interval, k
    d = r.to_dict()
    assert d["counts"]["inherited"] == o["inherited"] and d["counts"]["new"] == o["new"]
    assert "independent" in d["null_model"]


def test_copying_student_is_more_consistent_than_an_independent_one():
    y, lt, ls_copy = _labels(seed=5, copy=0.7)
    _, _, ls_ind = _labels(seed=5, copy=0.0)
    b = Bootstrap(200)
    hi = FingerprintAccumulator(6, bootstrap=b).update(y, lt, ls_copy, ids=np.arange(len(y))).compute()
    lo = FingerprintAccumulator(6, bootstrap=b).update(y, lt, ls_ind, ids=np.arange(len(y))).compute()
    assert hi["error_consistency"].low > lo["error_consistency"].high
    assert lo["same_wrong_label_lift"].contains(1.0)


def test_section_uses_labels_of_any_access_and_needs_y():
    y, lt, ls = _labels(n=500, seed=6)
    t = ModelOutputs("t", np.eye(6, dtype=np.float32)[lt], lt, access=Access.LABELS)
    s = ModelOutputs("s", np.eye(6, dtype=np.float32)[ls], ls, access=Access.LABELS)
    r = fingerprint_section(y, t, s, ids=np.arange(500), bootstrap=Bootstrap(50))
    assert r.available and r["error_consistency"].value == pytest.approx(error_consistency_score(y, lt, ls))
    assert not fingerprint_section(None, t, s, ids=np.arange(500)).available
    with pytest.raises(KDAuditError, match="y_true"):
        FingerprintAccumulator(6).update(None, lt, ls, ids=np.arange(500))


def test_weights_equal_repeated_rows():
    y, lt, ls = _labels(n=600, seed=7)
    reps = np.random.default_rng(3).integers(0, 4, len(y))
    yr, tr, sr = np.repeat(y, reps), np.repeat(lt, reps), np.repeat(ls, reps)
    assert error_consistency_score(y, lt, ls, sample_weight=reps) == pytest.approx(error_consistency_score(yr, tr, sr))
    for fn in (error_overlap, same_wrong_label_rate, confusion_similarity):
        weighted, repeated = fn(y, lt, ls, sample_weight=reps), fn(yr, tr, sr)
        for k in repeated:
            assert weighted[k] == pytest.approx(repeated[k], abs=1e-12), (fn.__name__, k)
    acc = FingerprintAccumulator(6, bootstrap=Bootstrap(0)).update(y, lt, ls, ids=np.arange(len(y)),
                                                                   sample_weight=reps).compute()
    assert acc["same_wrong_label_chance"].value == pytest.approx(same_wrong_label_rate(yr, tr, sr)["chance"])
