"""Calibration metrics: cross-checks with torchmetrics, netcal and scikit-learn; accumulator and section behaviour."""

import warnings

import numpy as np
import pytest
import torch
from _arrays import softmax
from netcal.metrics import ECE as NetcalECE
from netcal.metrics import MCE as NetcalMCE
from sklearn.metrics import brier_score_loss as sk_brier
from sklearn.metrics import log_loss
from torchmetrics.classification import MulticlassCalibrationError

from kdaudit import KDAuditError
from kdaudit.harness._outputs import ModelOutputs
from kdaudit.metrics import (
    Bootstrap,
    CalibrationAccumulator,
    apply_temperature,
    brier_score_loss,
    calibration_section,
    classwise_calibration_error,
    confidence_gap,
    expected_calibration_error,
    fit_temperature,
    maximum_calibration_error,
    nll_loss,
    reliability_diagram,
)
from kdaudit.metrics._calibration import DEFINITIONS
from kdaudit.metrics._resampling import hash_ids
from kdaudit.models._base import Access


def _data(n=4000, c=7, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * scale
    p = softmax(z)
    # labels drawn from a tempered version of p: the model is miscalibrated by a known temperature
    q = softmax(z / 1.6)
    y = (q.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return y, p, z


def _tm(p, y, norm="l1", n_bins=15):
    metric = MulticlassCalibrationError(num_classes=p.shape[1], n_bins=n_bins, norm=norm)
    return float(metric(torch.from_numpy(p), torch.from_numpy(y)))


def _netcal(cls, p, y, bins=15, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cls(bins=bins, **kw).measure(p, y))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_ece_matches_torchmetrics(dtype, norm):
    y, p, _ = _data()
    p = p.astype(dtype)
    ours = expected_calibration_error(y, p, norm=norm, binning="torchmetrics")
    assert ours == pytest.approx(_tm(p, y, norm), abs=1e-6)


def test_debiased_and_max_match_torchmetrics():
    y, p, _ = _data(n=3000, seed=1)
    p = p.astype(np.float32)
    ours = expected_calibration_error(y, p, norm="l2", debiased=True, binning="torchmetrics")
    metric = MulticlassCalibrationError(num_classes=p.shape[1], n_bins=15, norm="l2")
    # torchmetrics exposes the debiased estimator in its functional core only
    from torchmetrics.functional.classification.calibration_error import _ce_compute

    tp = torch.from_numpy(p)
    conf, pred = tp.max(dim=1)
    ref = float(_ce_compute(conf.float(), pred.eq(torch.from_numpy(y)).float(), 15, norm="l2", debias=True))
    assert ours == pytest.approx(ref, abs=1e-6)
    assert ours < expected_calibration_error(y, p, norm="l2", binning="torchmetrics")
    assert metric is not None
    assert maximum_calibration_error(y, p, binning="torchmetrics") == pytest.approx(_tm(p, y, "max"), abs=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ece_and_mce_match_netcal(dtype):
    y, p, _ = _data(seed=2)
    p = p.astype(dtype)
    assert expected_calibration_error(y, p, binning="netcal") == pytest.approx(_netcal(NetcalECE, p, y), abs=1e-6)
    assert maximum_calibration_error(y, p, binning="netcal") == pytest.approx(_netcal(NetcalMCE, p, y), abs=1e-6)
    # netcal's equal_intervals=False takes numpy quantiles of the (clipped) confidences, first/last edge 0 and 1
    ours_q = expected_calibration_error(y, p, strategy="quantile", binning="netcal")
    assert ours_q == pytest.approx(_netcal(NetcalECE, p, y, equal_intervals=False), abs=1e-6)


def test_edge_and_saturated_confidences_follow_each_convention():
    rng = np.random.default_rng(3)
    # confidences exactly on float32 bin edges and saturated at 1.0: where implementations disagree
    conf = np.repeat(np.array([1.0, 0.6, 0.4, 0.8, 2 / 15, 1.0], dtype=np.float32), 50)
    p = np.zeros((len(conf), 3), dtype=np.float32)
    p[:, 0] = conf
    p[:, 1] = 1 - conf
    y = rng.integers(0, 3, len(conf))
    y[:5] = [0, 1, 2, 0, 1]
    tm = _tm(p, y)
    nc = _netcal(NetcalECE, p, y)
    assert expected_calibration_error(y, p, binning="torchmetrics") == pytest.approx(tm, abs=1e-6)
    assert expected_calibration_error(y, p, binning="netcal") == pytest.approx(nc, abs=1e-6)
    # the conventions really differ here (torchmetrics puts 1.0 in a bin of its own), so matching is not vacuous
    diag_tm = reliability_diagram(y, p, binning="torchmetrics")
    diag_default = reliability_diagram(y, p)
    assert len(diag_tm["count"]) == 16 and diag_tm["count"][-1] == 100
    assert len(diag_default["count"]) == 15 and diag_default["count"][-1] == 100


def test_reliability_diagram_and_gaps_are_consistent():
    y, p, _ = _data(seed=4)
    d = reliability_diagram(y, p, n_bins=10)
    assert d["count"].sum() == len(y)
    full = ~np.isnan(d["accuracy"])
    ece = np.sum(d["count"][full] / len(y) * np.abs(d["accuracy"][full] - d["confidence"][full]))
    assert ece == pytest.approx(expected_calibration_error(y, p, n_bins=10), abs=1e-12)
    g = confidence_gap(y, p, n_bins=10)
    assert g["overconfidence"] - g["underconfidence"] == pytest.approx(g["gap"], abs=1e-12)
    assert g["overconfidence"] + g["underconfidence"] == pytest.approx(ece, abs=1e-12)
    assert g["gap"] == pytest.approx(p.max(axis=1).mean() - (p.argmax(axis=1) == y).mean(), abs=1e-12)


def test_brier_and_nll_match_sklearn():
    y, p, _ = _data(seed=5)
    assert brier_score_loss(y, p) == pytest.approx(sk_brier(y, p), abs=1e-12)
    y2 = (y > 3).astype(int)
    p2 = np.column_stack([p[:, :4].sum(axis=1), p[:, 4:].sum(axis=1)])
    # two classes: the multiclass Brier score is twice the binary one
    assert brier_score_loss(y2, p2) == pytest.approx(2 * sk_brier(y2, p2[:, 1]), abs=1e-12)
    assert nll_loss(y, p) == pytest.approx(log_loss(y, p, labels=np.arange(p.shape[1])), abs=1e-10)
    w = np.random.default_rng(0).uniform(0.1, 2, len(y))
    assert nll_loss(y, p, sample_weight=w) == pytest.approx(log_loss(y, p, sample_weight=w), abs=1e-10)


def test_classwise_ece_matches_a_direct_computation():
    y, p, _ = _data(n=1500, c=4, seed=6)
    per_class = []
    for c in range(4):
        pc, hit = p[:, c], (y == c)
        b = np.minimum((pc * 15).astype(int), 14)
        e = sum(abs(hit[b == k].mean() - pc[b == k].mean()) * (b == k).mean() for k in range(15) if (b == k).any())
        per_class.append(e)
    assert classwise_calibration_error(y, p) == pytest.approx(np.mean(per_class), abs=1e-9)


def test_sample_weight_equals_repeating_rows():
    y, p, _ = _data(n=500, seed=7)
    reps = np.random.default_rng(1).integers(0, 4, len(y))
    yr, pr = np.repeat(y, reps), np.repeat(p, reps, axis=0)
    for fn in (expected_calibration_error, brier_score_loss, nll_loss, maximum_calibration_error):
        assert fn(y, p, sample_weight=reps) == pytest.approx(fn(yr, pr), abs=1e-12)


def test_temperature_fit_recovers_the_generating_temperature():
    rng = np.random.default_rng(8)
    z = rng.normal(size=(20000, 5)) * 3
    q = softmax(z / 2.0)  # labels come from softmax(z / 2): the best temperature is 2
    y = (q.cumsum(axis=1) > rng.random((len(z), 1))).argmax(axis=1)
    t = fit_temperature(y, z)
    assert t == pytest.approx(2.0, rel=0.05)
    # probabilities in, same answer (their logs are logits up to a constant per row)
    assert fit_temperature(y, softmax(z)) == pytest.approx(t, rel=1e-5)
    assert nll_loss(y, apply_temperature(z, t)) < nll_loss(y, softmax(z))
    assert expected_calibration_error(y, apply_temperature(z, t)) < expected_calibration_error(y, softmax(z))


def test_accumulator_matches_plain_functions_and_exact_temperature():
    y, p, z = _data(n=6000, seed=9)
    rng = np.random.default_rng(0)
    zs = z + rng.normal(size=z.shape)
    ps = softmax(zs)
    ids = np.arange(len(y))
    r = CalibrationAccumulator(7, bootstrap=Bootstrap(100)).update(
        y, p, ps, ids=ids, logits_teacher=z, logits_student=zs).compute()
    for who, pp in (("teacher", p), ("student", ps)):
        assert r[f"{who}_ece"].value == pytest.approx(expected_calibration_error(y, pp), abs=1e-12)
        assert r[f"{who}_mce"].value == pytest.approx(maximum_calibration_error(y, pp), abs=1e-12)
        assert r[f"{who}_classwise_ece"].value == pytest.approx(classwise_calibration_error(y, pp), abs=1e-12)
        assert r[f"{who}_brier"].value == pytest.approx(brier_score_loss(y, pp), abs=1e-12)
        assert r[f"{who}_nll"].value == pytest.approx(nll_loss(y, pp), abs=1e-12)
    assert r["ece_change"].value == pytest.approx(r["student_ece"].value - r["teacher_ece"].value, abs=1e-12)
    # streaming temperature: grid search + parabola on the fit rows vs the exact scipy fit on the same rows
    fit = (hash_ids(ids) >> np.uint64(63)).astype(bool)
    assert r["temperature_teacher"].value == pytest.approx(fit_temperature(y[fit], z[fit]), rel=0.01)
    assert r["temperature_student"].value == pytest.approx(fit_temperature(y[fit], zs[fit]), rel=0.01)
    assert r["teacher_ece_after_temperature"].value < r["teacher_ece"].value
    assert set(r.headline) <= set(DEFINITIONS)


def test_streaming_quantile_bins_approximate_exact_quantile_ece():
    for seed in range(3):
        y, p, _ = _data(n=5000, seed=10 + seed, scale=3.0)
        r = CalibrationAccumulator(7, bootstrap=Bootstrap(0), strategy="quantile", temperature=False).update(
            y, p, p, ids=np.arange(len(y))).compute()
        exact = expected_calibration_error(y, p, strategy="quantile")
        # each merged bin's mass is within one fine bin of 1/n_bins; the ECE moves by far less than its SE (~0.01)
        assert abs(r["teacher_ece"].value - exact) < 3e-3
        counts = np.array(r.detail["reliability"]["teacher"]["count"])
        assert np.all(np.abs(counts / len(y) - 1 / 15) < 0.02)


def test_section_needs_probabilities_and_labels():
    y, p, _ = _data(n=300, seed=11)
    t = ModelOutputs("t", p.astype(np.float32), p.argmax(axis=1))
    s = ModelOutputs("s", np.eye(7, dtype=np.float32)[p.argmax(axis=1)], p.argmax(axis=1), access=Access.LABELS)
    res = calibration_section(y, t, s, ids=np.arange(300))
    assert not res.available and "labels" in res.reason
    assert res.to_dict()["headline"] == {}
    assert not calibration_section(None, t, t, ids=np.arange(300)).available
    ok = calibration_section(y, t, t, ids=np.arange(300), bootstrap=Bootstrap(50)).to_dict()
    assert ok["available"] and ok["headline"]["ece_change"]["value"] == 0.0
    assert set(ok["reliability"]) == {"teacher", "student"}


def test_top_k_student_gets_top_label_metrics_only():
    y, p, _ = _data(n=1000, seed=13)
    top3 = np.where(p >= -np.sort(-p, axis=1)[:, [2]], p, 0).astype(np.float32)
    t = ModelOutputs("t", p.astype(np.float32), p.argmax(axis=1))
    s = ModelOutputs("s", top3, p.argmax(axis=1), access=Access.TOP_K, top_k=3)
    res = calibration_section(y, t, s, ids=np.arange(1000), bootstrap=Bootstrap(30))
    assert res.available
    assert res["student_ece"].value == pytest.approx(expected_calibration_error(y, p.astype(np.float32)), abs=1e-9)
    assert "student_brier" not in res.headline and "student_brier" in res.detail["unavailable"]
    assert "temperature_teacher" in res.detail["unavailable"]


@pytest.mark.parametrize("kwargs", [{"n_bins": 0}, {"strategy": "adaptive"}, {"norm": "l3"},
                                    {"norm": "l1", "debiased": True}, {"binning": "sklearn"}])
def test_bad_options_name_the_argument(kwargs):
    y, p, _ = _data(n=50)
    with pytest.raises(KDAuditError, match=list(kwargs)[-1]):
        expected_calibration_error(y, p, **kwargs)


def test_bad_probabilities_are_rejected():
    y, p, _ = _data(n=50)
    bad = p.copy()
    bad[3, 0] = np.nan
    with pytest.raises(KDAuditError, match="y_prob"):
        expected_calibration_error(y, bad)
    with pytest.raises(KDAuditError, match="y_prob"):
        expected_calibration_error(y, p * 1.5)
    with pytest.raises(KDAuditError, match="y_true"):
        expected_calibration_error(np.full(50, 9), p)


def test_weighted_accumulator_equals_weighted_functions():
    y, p, _ = _data(n=2000, seed=12)
    w = np.random.default_rng(2).uniform(0, 3, len(y))
    r = CalibrationAccumulator(7, bootstrap=Bootstrap(0), temperature=False).update(
        y, p, p, ids=np.arange(len(y)), sample_weight=w).compute()
    assert r["teacher_ece"].value == pytest.approx(expected_calibration_error(y, p, sample_weight=w), abs=1e-12)
    assert r["teacher_brier"].value == pytest.approx(brier_score_loss(y, p, sample_weight=w), abs=1e-12)
    assert r["teacher_nll"].value == pytest.approx(nll_loss(y, p, sample_weight=w), abs=1e-12)
    assert r["teacher_classwise_ece"].value == pytest.approx(
        classwise_calibration_error(y, p, sample_weight=w), abs=1e-12)
