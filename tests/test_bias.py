"""Bias transfer: values against fairlearn, streaming, small groups, interval coverage and test calibration."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as flm
from sklearn.metrics import accuracy_score

from kdaudit._exceptions import KDAuditError
from kdaudit._io import canonical_json
from kdaudit.harness._outputs import ModelOutputs
from kdaudit.metrics._bias import (
    DEFINITIONS,
    BiasAccumulator,
    bias_amplification,
    bias_section,
    demographic_parity_difference,
    equalized_odds_difference,
    group_metrics,
)
from kdaudit.metrics._calibration import expected_calibration_error
from kdaudit.metrics._resampling import Bootstrap
from kdaudit.models._base import Access

POINT = Bootstrap(n_replicates=0)
LOOSE = {"min_group_size": 1, "min_class_count": 1}  # fairlearn keeps every group; so do these comparisons


def _data(n=3000, seed=0, n_classes=2):
    """Labels, two prediction vectors, probabilities and sensitive features with group-dependent rates."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(np.array(["F", "M"]), n, p=[0.4, 0.6])
    race = rng.choice(np.array(["a", "b", "c", "d"]), n, p=[0.5, 0.25, 0.15, 0.1])
    y = rng.integers(0, n_classes, n)
    shift = (sex == "F") * 0.6 + (race == "c") * 0.4
    logits_t = rng.normal(size=(n, n_classes)) * 1.2
    logits_t[np.arange(n), y] += 1.5
    logits_t[:, -1] += shift
    logits_s = logits_t + rng.normal(size=(n, n_classes)) * 0.9
    logits_s[:, -1] += 0.3 * shift
    p_t = np.exp(logits_t) / np.exp(logits_t).sum(1, keepdims=True)
    p_s = np.exp(logits_s) / np.exp(logits_s).sum(1, keepdims=True)
    sens = pd.DataFrame({"sex": sex, "race": race})
    return y, p_t, p_s, sens, rng.random(n) * 2


def _frame(y, pred, sf, w=None, pos=1):
    fns = {
        "accuracy": accuracy_score,
        "selection_rate": lambda a, b, sample_weight=None: flm.selection_rate(a, b, pos_label=pos,
                                                                              sample_weight=sample_weight),
        "tpr": flm.true_positive_rate,
        "fpr": flm.false_positive_rate,
    }
    params = None if w is None else {k: {"sample_weight": w} for k in fns}
    return flm.MetricFrame(metrics=fns, y_true=y, y_pred=pred, sensitive_features=sf, sample_params=params)


@pytest.mark.parametrize("weighted", [False, True])
def test_group_metrics_equal_metricframe(weighted):
    y, p_t, _, sens, w = _data()
    pred = p_t.argmax(1)
    sw = w if weighted else None
    for sf in (sens["race"], sens):  # one feature, and the intersection of two (MultiIndex)
        mf = _frame(y, pred, sf, sw)
        ours = group_metrics(y, pred, sensitive_features=sf, sample_weight=sw)
        ref = mf.by_group
        assert list(ours.index) == list(ref.index)
        for col in ("accuracy", "selection_rate", "tpr", "fpr"):
            np.testing.assert_allclose(ours[col].to_numpy(), ref[col].to_numpy(dtype=float), rtol=1e-12)
        diff = mf.difference(method="between_groups")
        for col in ("accuracy", "selection_rate", "tpr", "fpr"):
            assert ours[col].max() - ours[col].min() == pytest.approx(diff[col], abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_disparity_functions_equal_fairlearn(weighted):
    y, p_t, p_s, sens, w = _data(seed=1)
    sw = w if weighted else None
    for pred in (p_t.argmax(1), p_s.argmax(1)):
        for sf in (sens["sex"], sens["race"], sens):
            assert demographic_parity_difference(y, pred, sensitive_features=sf, sample_weight=sw) == pytest.approx(
                flm.demographic_parity_difference(y, pred, sensitive_features=sf, sample_weight=sw), abs=1e-12)
            assert equalized_odds_difference(y, pred, sensitive_features=sf, sample_weight=sw) == pytest.approx(
                flm.equalized_odds_difference(y, pred, sensitive_features=sf, sample_weight=sw), abs=1e-12)
    amp = bias_amplification(y, p_t.argmax(1), p_s.argmax(1), sensitive_features=sens["race"], sample_weight=sw,
                             metric="equalized_odds")
    ref = (flm.equalized_odds_difference(y, p_s.argmax(1), sensitive_features=sens["race"], sample_weight=sw)
           - flm.equalized_odds_difference(y, p_t.argmax(1), sensitive_features=sens["race"], sample_weight=sw))
    assert amp == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_section_equals_fairlearn_per_feature_and_intersection(weighted):
    y, p_t, p_s, sens, w = _data(seed=2)
    sw = w if weighted else None
    res = bias_section(y, p_t, p_s, ids=np.arange(len(y)), sensitive=sens, bootstrap=POINT, sample_weight=sw,
                       n_permutations=0, **LOOSE)
    assert set(res.features) == {"sex", "race", "sex x race"}
    for fname, sf in (("sex", sens["sex"]), ("race", sens["race"]), ("sex x race", sens)):
        feat = res.features[fname]
        for model, p in (("teacher", p_t), ("student", p_s)):
            pred = p.argmax(1)
            ref = _frame(y, pred, sf, sw).by_group
            for g, row in zip(feat["groups"], ref.itertuples()):
                key = row.Index if isinstance(row.Index, tuple) else (row.Index,)
                assert g["group"] == ", ".join(key)
                assert g["n"] == int(np.all(np.column_stack([np.asarray(sf)]).reshape(len(y), -1) == key,
                                            axis=1).sum())
                for ours, theirs in (("group_accuracy", row.accuracy), ("group_selection_rate", row.selection_rate),
                                     ("group_tpr", row.tpr), ("group_fpr", row.fpr)):
                    assert g[model][ours].value == pytest.approx(theirs, rel=1e-12)
            disp = feat["disparities"]
            assert disp["dp_difference"][model].value == pytest.approx(
                flm.demographic_parity_difference(y, pred, sensitive_features=sf, sample_weight=sw), abs=1e-12)
            assert disp["eo_difference"][model].value == pytest.approx(
                flm.equalized_odds_difference(y, pred, sensitive_features=sf, sample_weight=sw), abs=1e-12)
            assert disp["dp_ratio"][model].value == pytest.approx(
                flm.demographic_parity_ratio(y, pred, sensitive_features=sf, sample_weight=sw), abs=1e-12)
        for key in ("dp_difference", "eo_difference"):
            d = feat["disparities"][key]
            assert d["amplification"].value == pytest.approx(d["student"].value - d["teacher"].value, abs=1e-15)
        for g in feat["groups"]:  # agreement with the teacher, per group
            mask = np.ones(len(y), bool)
            for col, v in g["values"].items():
                mask &= sens[col].to_numpy() == v
            wm = np.ones(len(y)) if sw is None else sw
            agree = np.average(p_t.argmax(1)[mask] == p_s.argmax(1)[mask], weights=wm[mask])
            assert g["group_agreement"].value == pytest.approx(agree, rel=1e-12)
    # the headline is the worst case over features and intersections
    h = res.headline
    worst = max(res.features[f]["disparities"]["dp_difference"]["student"].value for f in res.features)
    assert h["dp_difference_student"].value == pytest.approx(worst)
    assert h["dp_amplification"].value == pytest.approx(h["dp_difference_student"].value
                                                        - h["dp_difference_teacher"].value)


def test_multiclass_pos_label_is_one_vs_rest():
    y, p_t, p_s, sens, _ = _data(seed=3, n_classes=4)
    res = bias_section(y, p_t, p_s, ids=np.arange(len(y)), sensitive=sens[["race"]], bootstrap=POINT, pos_label=2,
                       n_permutations=0, **LOOSE)
    assert res.settings["pos_label"] == 2
    pred = p_s.argmax(1)
    yb, pb = (y == 2).astype(int), (pred == 2).astype(int)
    ref = _frame(yb, pb, sens["race"]).by_group
    acc_ref = flm.MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=sens["race"]).by_group
    for g, (tpr, fpr, sr, acc) in zip(res.features["race"]["groups"],
                                      zip(ref["tpr"], ref["fpr"], ref["selection_rate"], acc_ref)):
        assert g["student"]["group_tpr"].value == pytest.approx(tpr)
        assert g["student"]["group_fpr"].value == pytest.approx(fpr)
        assert g["student"]["group_selection_rate"].value == pytest.approx(sr)
        assert g["student"]["group_accuracy"].value == pytest.approx(acc)  # accuracy stays multiclass
    # default positive class is the last one
    assert BiasAccumulator(4, sensitive_names=["race"]).pos_label == 3


def test_group_ece_equals_calibration_family_and_torchmetrics():
    torch = pytest.importorskip("torch")
    from torchmetrics.classification import MulticlassCalibrationError

    y, p_t, p_s, sens, _ = _data(n=2000, seed=4, n_classes=3)
    res = bias_section(y, p_t, p_s, ids=np.arange(len(y)), sensitive=sens[["race"]], bootstrap=POINT,
                       n_permutations=0, **LOOSE)
    assert float(np.max(p_t)) < 1.0  # no saturated confidences, where the two binning conventions differ
    for g in res.features["race"]["groups"]:
        m = sens["race"].to_numpy() == g["group"]
        ours = g["teacher"]["group_ece"].value
        assert ours == pytest.approx(expected_calibration_error(y[m], p_t[m], n_bins=15), abs=1e-12)
        tm = MulticlassCalibrationError(num_classes=3, n_bins=15, norm="l1")
        ref = float(tm(torch.tensor(p_t[m], dtype=torch.float32), torch.tensor(y[m])))
        assert ours == pytest.approx(ref, abs=1e-6)


def test_small_groups_flagged_and_excluded():
    rng = np.random.default_rng(5)
    n = 1000
    g = np.array(["big1"] * 480 + ["big2"] * 480 + ["tiny"] * 12 + ["rare_pos"] * 28)
    y = rng.integers(0, 2, n)
    y[-28:] = 0
    y[-28:-25] = 1  # rare_pos: 28 rows (enough at min_group_size=25) but only 3 positives
    pred_t = rng.integers(0, 2, n)
    pred_s = pred_t.copy()
    pred_s[-40:] = 1 - pred_s[-40:]  # tiny and rare_pos differ a lot, which must not drive the disparities
    sens = pd.DataFrame({"g": g})
    res = bias_section(y, pred_t, pred_s, ids=np.arange(n), sensitive=sens, bootstrap=POINT, min_group_size=25,
                       min_class_count=10, n_permutations=0, intersections=False)
    groups = {r["group"]: r for r in res.features["g"]["groups"]}
    assert "small_group" in groups["tiny"]["flags"]
    assert not groups["tiny"]["reliable"]
    assert "few_positives" in groups["rare_pos"]["flags"] and "small_group" not in groups["rare_pos"]["flags"]
    assert groups["big1"]["reliable"] and groups["big1"]["flags"] == []
    assert groups["rare_pos"]["in_disparities"] == {"dp_difference": True, "tpr_difference": False,
                                                     "fpr_difference": True, "accuracy_difference": True}
    assert not any(groups["tiny"]["in_disparities"].values())
    excluded = res.features["g"]["excluded"]
    assert excluded["all"] == ["tiny"]
    assert set(excluded["tpr"]) == {"tiny", "rare_pos"} and excluded["fpr"] == ["tiny"]
    assert res.features["g"]["notes"]
    # the disparities use exactly the groups that can support them
    keep = np.isin(g, ["big1", "big2", "rare_pos"])
    dp = flm.demographic_parity_difference(y[keep], pred_s[keep], sensitive_features=g[keep])
    assert res.features["g"]["disparities"]["dp_difference"]["student"].value == pytest.approx(dp)
    keep_tpr = np.isin(g, ["big1", "big2"])
    tpr = flm.MetricFrame(metrics=flm.true_positive_rate, y_true=y[keep_tpr], y_pred=pred_s[keep_tpr],
                          sensitive_features=g[keep_tpr]).difference()
    fpr = flm.MetricFrame(metrics=flm.false_positive_rate, y_true=y[keep], y_pred=pred_s[keep],
                          sensitive_features=g[keep]).difference()
    assert res.features["g"]["disparities"]["eo_difference"]["student"].value == pytest.approx(max(tpr, fpr))
    # a feature with a single reliable group has no disparity, said in a note
    res1 = bias_section(y[:492], pred_t[:492], pred_s[:492], ids=np.arange(492), sensitive=sens.iloc[:492],
                        bootstrap=POINT, min_group_size=25, n_permutations=0)
    assert math.isnan(res1.features["g"]["disparities"]["dp_difference"]["student"].value)
    assert any("fewer than two" in s for s in res1.features["g"]["notes"])


def _assert_close(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, z) in enumerate(zip(a, b)):
            _assert_close(x, z, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


def test_streaming_ten_shards_merge_equals_whole():
    y, p_t, p_s, sens, w = _data(n=4000, seed=6)
    # sort so that some groups first appear in late shards, then shuffle the shard order
    order = np.argsort(sens["race"].to_numpy(), kind="stable")
    y, p_t, p_s, w = y[order], p_t[order], p_s[order], w[order]
    sens = sens.iloc[order].reset_index(drop=True)
    ids = np.arange(len(y)) * 7 + 3
    bs = Bootstrap(n_replicates=50, seed=3)
    opts = dict(sensitive_names=["sex", "race"], bootstrap=bs, n_permutations=99, min_group_size=30)
    whole = BiasAccumulator(2, **opts).update(y, p_t, p_s, ids=ids, sensitive=sens, sample_weight=w).compute()
    shards = []
    for idx in np.array_split(np.arange(len(y)), 10):
        shards.append(BiasAccumulator(2, **opts).update(y[idx], p_t[idx], p_s[idx], ids=ids[idx],
                                                         sensitive=sens.iloc[idx], sample_weight=w[idx]))
    merged = BiasAccumulator(2, **opts)
    for k in (3, 9, 0, 5, 1, 8, 2, 7, 4, 6):
        merged.merge(shards[k])
    _assert_close(whole.to_dict(), merged.compute().to_dict())
    # one accumulator fed chunk by chunk is the same too
    chunked = BiasAccumulator(2, **opts)
    for idx in np.array_split(np.arange(len(y)), 10):
        chunked.update(y[idx], p_t[idx], p_s[idx], ids=ids[idx], sensitive=sens.iloc[idx], sample_weight=w[idx])
    _assert_close(whole.to_dict(), chunked.compute().to_dict())
    # and the section function equals the accumulator
    section = bias_section(y, p_t, p_s, ids=ids, sensitive=sens, bootstrap=bs, sample_weight=w, n_permutations=99,
                           chunk_size=1500)
    _assert_close(whole.to_dict(), section.to_dict())


def test_result_is_deterministic_json_with_definitions():
    y, p_t, p_s, sens, _ = _data(n=1500, seed=7)
    kw = dict(ids=np.arange(len(y)), sensitive=sens, bootstrap=Bootstrap(n_replicates=40), n_permutations=49)
    a, b = bias_section(y, p_t, p_s, **kw).to_dict(), bias_section(y, p_t, p_s, **kw).to_dict()
    assert canonical_json(a) == canonical_json(b)
    json.loads(canonical_json(a))
    assert a["available"] and a["reason"] is None
    for key in a["headline"]:
        assert key in DEFINITIONS and set(DEFINITIONS[key]) == {"label", "formula", "higher_is_better",
                                                                "description"}
    for feat in a["features"].values():
        for key in feat["disparities"]:
            assert key in DEFINITIONS
        for key in feat["groups"][0]["teacher"]:
            assert key in DEFINITIONS
    assert {"dp_difference_teacher", "dp_difference_student", "dp_amplification", "dp_amplification_p_value",
            "eo_difference_teacher", "eo_difference_student", "eo_amplification", "eo_amplification_p_value",
            "worst_group_agreement", "max_group_accuracy_drop"} <= set(a["headline"])
    for key in ("dp_difference_teacher", "eo_difference_student", "worst_group_agreement"):
        e = a["headline"][key]
        assert 0.0 <= e["low"] <= e["value"] <= e["high"] <= 1.0
    for feat in a["features"].values():
        for d in feat["disparities"].values():
            assert 0.0 <= d["student"]["low"] <= d["student"]["value"] <= d["student"]["high"] <= 1.0


def test_amplification_test_calibrated_when_exchangeable_and_has_power():
    """Teacher and student are two independent draws of the same predictor: p <= 0.05 in about 5% of runs."""
    rng = np.random.default_rng(8)
    n, n_sims = 1500, 500
    bs = Bootstrap(n_replicates=0, n_blocks=256)
    effect = np.array([0.1, -0.05, 0.0])

    def run(student_extra):
        g = rng.choice(3, n, p=[0.5, 0.3, 0.2])
        y = rng.integers(0, 2, n)
        base = 0.3 + 0.4 * y + effect[g]
        pt = (rng.random(n) < base).astype(int)
        ps = (rng.random(n) < base + student_extra * (g == 0)).astype(int)
        acc = BiasAccumulator(2, sensitive_names=["g"], bootstrap=bs, n_permutations=99)
        h = acc.update(y, pt, ps, ids=np.arange(n), sensitive={"g": g}).compute().headline
        return h["dp_amplification_p_value"].value, h["eo_amplification_p_value"].value

    null = np.array([run(0.0) for _ in range(n_sims)])
    rate = (null <= 0.05).mean(axis=0)
    assert 0.02 <= rate[0] <= 0.085 and 0.02 <= rate[1] <= 0.085, rate
    alt = np.array([run(0.15) for _ in range(40)])
    assert (alt[:, 0] <= 0.05).mean() >= 0.8


@pytest.mark.parametrize("effects, lo", [((0.0, 0.05, 0.1), 0.92), ((0.0, 0.0, 0.0), 0.86)])
def test_disparity_interval_coverage(effects, lo):
    """Nominal 95% intervals of the disparities and of amplification cover the truth in a simulation.

    The all-equal case is where a percentile interval of max - min never covers the true 0.
    """
    rng = np.random.default_rng(9)
    n, n_sims = 2500, 150
    bs = Bootstrap(n_replicates=200, seed=1)
    truth = max(effects) - min(effects)
    hits = {"dp_difference_teacher": 0, "dp_difference_student": 0, "dp_amplification": 0}
    for _ in range(n_sims):
        g = rng.choice(np.array([0, 1, 2]), n, p=[0.5, 0.3, 0.2])
        y = rng.integers(0, 2, n)
        rate = 0.3 + 0.3 * y + np.asarray(effects)[g]
        pt = (rng.random(n) < rate).astype(int)
        ps = (rng.random(n) < rate).astype(int)
        acc = BiasAccumulator(2, sensitive_names=["g"], bootstrap=bs, n_permutations=0)
        h = acc.update(y, pt, ps, ids=rng.integers(0, 2**40, n), sensitive={"g": g}).compute().headline
        hits["dp_difference_teacher"] += h["dp_difference_teacher"].contains(truth)
        hits["dp_difference_student"] += h["dp_difference_student"].contains(truth)
        hits["dp_amplification"] += h["dp_amplification"].contains(0.0)
    cover = {k: v / n_sims for k, v in hits.items()}
    assert all(lo <= c <= 1.0 for c in cover.values()), cover
    if truth > 0:
        assert all(c <= 0.995 for c in cover.values()), cover


def test_labels_only_and_unlabelled_inputs():
    y, p_t, p_s, sens, _ = _data(n=1200, seed=10)
    onehot = np.eye(2, dtype=np.float32)[p_s.argmax(1)]
    student = ModelOutputs("s", onehot, p_s.argmax(1), access=Access.LABELS)
    teacher = ModelOutputs("t", p_t.astype(np.float32), p_t.argmax(1))
    res = bias_section(y, teacher, student, ids=np.arange(len(y)), sensitive=sens, bootstrap=POINT, n_permutations=0)
    g = res.features["sex"]["groups"][0]
    assert math.isnan(g["student"]["group_ece"].value) and not math.isnan(g["teacher"]["group_ece"].value)
    assert any("labels only" in s for s in res.notes)
    # without y_true: demographic parity and agreement only
    res = bias_section(None, teacher, student, ids=np.arange(len(y)), sensitive=sens, bootstrap=POINT,
                       n_permutations=0)
    h = res.headline
    assert h["dp_difference_student"].value == pytest.approx(
        flm.demographic_parity_difference(y, p_s.argmax(1), sensitive_features=sens))
    assert math.isnan(h["eo_difference_student"].value) and not math.isnan(h["worst_group_agreement"].value)
    assert res.features["sex"]["groups"][0]["flags"] == [] and any("no true labels" in s for s in res.notes)
    # no sensitive features: the section is unavailable, with the reason
    off = bias_section(y, teacher, student, ids=np.arange(len(y)), sensitive=None).to_dict()
    assert off["available"] is False and "sensitive" in off["reason"]


def test_group_order_does_not_depend_on_arrival():
    y, p_t, p_s, sens, _ = _data(n=800, seed=11)
    rev = np.arange(len(y))[::-1]
    a = bias_section(y, p_t, p_s, ids=np.arange(len(y)), sensitive=sens, bootstrap=POINT, n_permutations=0)
    b = bias_section(y[rev], p_t[rev], p_s[rev], ids=np.arange(len(y))[rev], sensitive=sens.iloc[rev],
                     bootstrap=POINT, n_permutations=0)
    _assert_close(a.to_dict(), b.to_dict())
    assert [r["group"] for r in a.features["race"]["groups"]] == ["a", "b", "c", "d"]


def test_bad_inputs_raise_naming_the_argument():
    y, p_t, p_s, sens, _ = _data(n=300, seed=12)
    ids = np.arange(300)
    with pytest.raises(KDAuditError, match="sensitive"):
        bias_section(y, p_t, p_s, ids=ids, sensitive=sens.iloc[:299], bootstrap=POINT)
    bad = sens.copy()
    bad.loc[17, "race"] = None
    with pytest.raises(KDAuditError, match="missing value in column 'race' at row 17"):
        bias_section(y, p_t, p_s, ids=ids, sensitive=bad, bootstrap=POINT)
    with pytest.raises(KDAuditError, match="sensitive_features"):
        demographic_parity_difference(y, p_t.argmax(1), sensitive_features=np.r_[sens["sex"].to_numpy(), ["F"]])
    with pytest.raises(KDAuditError, match="sensitive_features"):
        group_metrics(y, p_t.argmax(1), sensitive_features=pd.Series([np.nan] * 300))
    with pytest.raises(KDAuditError, match="ids"):
        bias_section(y, p_t, p_s, ids=ids[:10], sensitive=sens, bootstrap=POINT)
    with pytest.raises(KDAuditError, match="pos_label"):
        BiasAccumulator(2, sensitive_names=["sex"], pos_label=2)
    with pytest.raises(KDAuditError, match="min_group_size"):
        BiasAccumulator(2, sensitive_names=["sex"], min_group_size=-1)
    with pytest.raises(KDAuditError, match="intersections"):
        BiasAccumulator(2, sensitive_names=["sex"], intersections=[("sex", "age")])
    acc = BiasAccumulator(2, sensitive_names=["sex", "race"])
    with pytest.raises(KDAuditError, match="sensitive"):
        acc.update(y, p_t, p_s, ids=ids, sensitive=sens[["sex"]])
    with pytest.raises(KDAuditError, match="p_student"):
        acc.update(y, p_t, p_s[:, :1], ids=ids, sensitive=sens)
    with pytest.raises(KDAuditError, match="other"):
        acc.merge(BiasAccumulator(2, sensitive_names=["sex", "race"], pos_label=0))
    # a rejected chunk leaves the accumulator as it was
    acc = BiasAccumulator(2, sensitive_names=["sex", "race"], bootstrap=POINT, n_permutations=0)
    with pytest.raises(KDAuditError, match="race"):
        acc.update(y, p_t, p_s, ids=ids, sensitive=bad)
    acc.update(y, p_t, p_s, ids=ids, sensitive=sens)
    fresh = BiasAccumulator(2, sensitive_names=["sex", "race"], bootstrap=POINT, n_permutations=0)
    _assert_close(acc.compute().to_dict(), fresh.update(y, p_t, p_s, ids=ids, sensitive=sens).compute().to_dict())
    with pytest.raises(KDAuditError, match="y_true"):
        acc.update(None, p_t, p_s, ids=ids, sensitive=sens)
    with pytest.raises(KDAuditError, match="metric"):
        bias_amplification(y, y, y, sensitive_features=sens["sex"], metric="parity")
