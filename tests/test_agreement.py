"""Agreement and fidelity: cross-checks with scikit-learn and scipy; access levels; McNemar."""

import numpy as np
import pytest
from _arrays import softmax
from scipy.spatial.distance import jensenshannon
from scipy.stats import binomtest, entropy
from sklearn.metrics import accuracy_score
from sklearn.metrics import cohen_kappa_score as sk_kappa

from kdaudit import KDAuditError
from kdaudit.harness._outputs import ModelOutputs
from kdaudit.metrics import (
    DEFINITIONS,
    AgreementAccumulator,
    Bootstrap,
    agreement_section,
    cohen_kappa_score,
    conditional_agreement_score,
    js_divergence,
    kl_divergence,
    mcnemar_test,
    per_class_agreement_score,
    retained_accuracy_score,
    top1_agreement_score,
    top_k_overlap_score,
    total_variation_distance,
)
from kdaudit.models._base import Access


def _pair(n=3000, c=8, seed=0):
    rng = np.random.default_rng(seed)
    zt = rng.normal(size=(n, c)) * 2
    zs = zt + rng.normal(size=(n, c))
    pt, ps = softmax(zt), softmax(zs)
    y = (softmax(zt * 0.8).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return y, pt, ps


def test_label_metrics_match_sklearn():
    y, pt, ps = _pair()
    lt, ls = pt.argmax(axis=1), ps.argmax(axis=1)
    w = np.random.default_rng(1).uniform(0.2, 3, len(y))
    assert top1_agreement_score(pt, ps) == pytest.approx(accuracy_score(lt, ls), abs=1e-12)
    assert top1_agreement_score(lt, ls, sample_weight=w) == pytest.approx(accuracy_score(lt, ls, sample_weight=w))
    assert cohen_kappa_score(pt, ps) == pytest.approx(sk_kappa(lt, ls), abs=1e-12)
    assert cohen_kappa_score(lt, ls, sample_weight=w) == pytest.approx(sk_kappa(lt, ls, sample_weight=w), abs=1e-12)
    assert retained_accuracy_score(y, pt, ps) == pytest.approx(accuracy_score(y, ls) / accuracy_score(y, lt))


def test_divergences_match_scipy():
    _, pt, ps = _pair(n=500)
    kl_ref = np.mean([entropy(t, s) for t, s in zip(pt, ps)])
    js_ref = np.mean([jensenshannon(t, s) ** 2 for t, s in zip(pt, ps)])  # scipy returns the square root
    assert kl_divergence(pt, ps) == pytest.approx(kl_ref, abs=1e-10)
    assert js_divergence(pt, ps) == pytest.approx(js_ref, abs=1e-10)
    js2 = np.mean([jensenshannon(t, s, base=2) ** 2 for t, s in zip(pt, ps)])
    assert js_divergence(pt, ps) / np.log(2) == pytest.approx(js2, abs=1e-10)  # nats -> bits
    assert total_variation_distance(pt, ps) == pytest.approx(0.5 * np.abs(pt - ps).sum(axis=1).mean(), abs=1e-12)


def test_kl_clips_zero_student_probabilities():
    t = np.array([[0.5, 0.5, 0.0]])
    s = np.array([[1.0, 0.0, 0.0]])
    assert np.isfinite(kl_divergence(t, s))
    assert kl_divergence(t, s) == pytest.approx(0.5 * np.log(0.5 / 1.0) + 0.5 * np.log(0.5 / 1e-12))
    assert kl_divergence(s, t) == pytest.approx(np.log(2))  # zero teacher mass contributes nothing
    assert js_divergence(t, s) <= np.log(2)


def test_conditional_per_class_and_topk():
    y, pt, ps = _pair(seed=2)
    lt, ls = pt.argmax(axis=1), ps.argmax(axis=1)
    ca = conditional_agreement_score(y, pt, ps)
    right = lt == y
    assert ca["teacher_correct"] == pytest.approx(np.mean(ls[right] == lt[right]))
    assert ca["teacher_wrong"] == pytest.approx(np.mean(ls[~right] == lt[~right]))
    pc = per_class_agreement_score(y, pt, ps, n_classes=8)
    for c in range(8):
        assert pc[c] == pytest.approx(np.mean(lt[y == c] == ls[y == c]))
    k = 3
    ref = np.mean([len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k for a, b in zip(pt, ps)])
    assert top_k_overlap_score(pt, ps, k=k) == pytest.approx(ref, abs=1e-12)
    assert top_k_overlap_score(pt, ps, k=1) == pytest.approx(top1_agreement_score(pt, ps))


def test_mcnemar_matches_binomtest():
    y, pt, ps = _pair(n=800, seed=3)
    lt, ls = pt.argmax(axis=1), ps.argmax(axis=1)
    b = int(((lt == y) & (ls != y)).sum())
    c = int(((lt != y) & (ls == y)).sum())
    res = mcnemar_test(y, pt, ps)
    assert (res.b, res.c) == (b, c)
    assert res.p_value == pytest.approx(binomtest(c, b + c, 0.5).pvalue, rel=1e-12)
    same = mcnemar_test(y, pt, pt)
    assert (same.b, same.c, same.p_value) == (0, 0, 1.0)


def test_accumulator_equals_plain_functions_and_has_paired_intervals():
    y, pt, ps = _pair(seed=4)
    r = AgreementAccumulator(8, bootstrap=Bootstrap(200)).update(y, pt, ps, ids=np.arange(len(y))).compute()
    lt, ls = pt.argmax(axis=1), ps.argmax(axis=1)
    expect = {
        "top1_agreement": top1_agreement_score(pt, ps),
        "top_k_overlap": top_k_overlap_score(pt, ps),
        "kl_divergence": kl_divergence(pt, ps),
        "js_divergence": js_divergence(pt, ps),
        "total_variation": total_variation_distance(pt, ps),
        "cohen_kappa": cohen_kappa_score(pt, ps),
        "teacher_accuracy": accuracy_score(y, lt),
        "student_accuracy": accuracy_score(y, ls),
        "retained_accuracy": retained_accuracy_score(y, pt, ps),
        "accuracy_change": accuracy_score(y, ls) - accuracy_score(y, lt),
        "agreement_teacher_correct": conditional_agreement_score(y, pt, ps)["teacher_correct"],
        "agreement_teacher_wrong": conditional_agreement_score(y, pt, ps)["teacher_wrong"],
    }
    assert set(r.headline) == set(expect)
    for k, v in expect.items():
        assert r[k].value == pytest.approx(v, abs=1e-12), k
        assert r[k].low <= r[k].value <= r[k].high, k
        assert k in DEFINITIONS
    # pairing: the accuracy difference interval is much narrower than the two accuracies' intervals combined
    width = r["accuracy_change"].high - r["accuracy_change"].low
    unpaired = np.hypot(r["teacher_accuracy"].high - r["teacher_accuracy"].low,
                        r["student_accuracy"].high - r["student_accuracy"].low)
    assert width < 0.8 * unpaired
    d = r.to_dict()
    assert d["mcnemar"]["p_value"] == pytest.approx(mcnemar_test(y, pt, ps).p_value)
    assert len(d["per_class"]["by_true_class"]["agreement"]) == 8


def test_labels_only_and_top_k_models_get_what_is_possible():
    y, pt, ps = _pair(n=1000, seed=5)
    ids = np.arange(len(y))
    teacher = ModelOutputs("t", pt.astype(np.float32), pt.argmax(axis=1))
    lab = ps.argmax(axis=1)
    student = ModelOutputs("s", np.eye(8, dtype=np.float32)[lab], lab, access=Access.LABELS)
    r = agreement_section(y, teacher, student, ids=ids, bootstrap=Bootstrap(50))
    assert r.available
    assert {"kl_divergence", "js_divergence", "total_variation", "top_k_overlap"} <= set(r.detail["unavailable"])
    assert r["top1_agreement"].value == pytest.approx(top1_agreement_score(pt, ps))
    # top-5 access: probabilities zero outside each row's top 5
    top5 = np.where(ps >= -np.sort(-ps, axis=1)[:, [4]], ps, 0).astype(np.float32)
    student5 = ModelOutputs("s", top5, lab, access=Access.TOP_K, top_k=5)
    r5 = agreement_section(y, teacher, student5, ids=ids, bootstrap=Bootstrap(50), k=5)
    assert "top_k_overlap" in r5.headline and "kl_divergence" not in r5.headline
    assert r5["top_k_overlap"].value == pytest.approx(top_k_overlap_score(pt, ps, k=5), abs=1e-9)
    # no labels: fidelity only
    r0 = agreement_section(None, teacher, teacher, ids=ids, bootstrap=Bootstrap(0))
    assert "teacher_accuracy" not in r0.headline and r0["top1_agreement"].value == 1.0
    assert "mcnemar" not in r0.to_dict()


def test_bad_inputs_name_the_argument():
    y, pt, ps = _pair(n=20)
    with pytest.raises(KDAuditError, match="p_student"):
        kl_divergence(pt, ps[:, :5])
    with pytest.raises(KDAuditError, match="ids"):
        AgreementAccumulator(8).update(y, pt, ps, ids=None)
    with pytest.raises(KDAuditError, match="k"):
        top_k_overlap_score(pt, ps, k=0)
    acc = AgreementAccumulator(8, bootstrap=Bootstrap(0)).update(y, pt, ps, ids=np.arange(20))
    with pytest.raises(KDAuditError, match="y_true"):
        acc.update(None, pt, ps, ids=np.arange(20, 40))


def test_definitions_cover_every_family_without_collisions():
    from kdaudit.metrics import DEFINITIONS_BY_SECTION

    seen = {}
    for section, defs in DEFINITIONS_BY_SECTION.items():
        for key, entry in defs.items():
            assert key not in seen, f"{key!r} defined by both {seen.get(key)} and {section}"
            seen[key] = section
            assert set(entry) == {"label", "formula", "higher_is_better", "description"}, key
            assert entry["higher_is_better"] in (True, False, None)
            assert entry["label"] and entry["formula"] and entry["description"]
    assert set(DEFINITIONS) == set(seen)
    assert {"agreement", "bias", "calibration", "fingerprint"} == set(DEFINITIONS_BY_SECTION)
