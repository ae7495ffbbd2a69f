"""kdaudit.audit end to end on small data: results shape, numbers against plain numpy, frame, repr, save."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from kdaudit import AuditData, KDAuditError
from kdaudit._audit import AuditResult, audit

EVIL = '<script>alert(1)</script>'


def make_data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    logits = X @ rng.normal(size=(5, 3))
    y = (logits + rng.gumbel(size=logits.shape)).argmax(1)
    sens = pd.DataFrame({"grp": np.where(rng.random(n) < 0.4, "a", "b")})
    return AuditData(X, y_true=y, sensitive=sens, classes=("x", "y", "z"), name="synthetic")


class TwoFeatures:
    """A student that sees only the first two features, behind a scikit-learn-like interface."""

    def __init__(self, estimator):
        self.estimator = estimator
        self.classes_ = estimator.classes_

    def predict_proba(self, X):
        return self.estimator.predict_proba(np.asarray(X)[:, :2])


@pytest.fixture(scope="module")
def setup():
    data = make_data()
    teacher = LogisticRegression(max_iter=500).fit(data.X, data.y_true)
    weak = TwoFeatures(LogisticRegression(C=0.01, max_iter=500).fit(data.X[:, :2], data.y_true))
    close = LogisticRegression(C=0.05, max_iter=500).fit(data.X, data.y_true)
    result = audit(teacher, {"close": close, EVIL: weak}, data, n_replicates=50, seed=1, progress=False)
    return data, teacher, close, result


def test_results_shape_and_roles(setup):
    data, _, _, result = setup
    r = result.to_dict()
    assert r["schema"] == "kdaudit.results/1" and r["data"]["n_rows"] == len(data)
    assert [m["role"] for m in r["models"]] == ["teacher", "student", "student"]
    assert [c["student"] for c in r["comparisons"]] == ["close", EVIL] == result.students
    for c in r["comparisons"]:
        for section in ("agreement", "calibration", "bias", "fingerprint", "cost"):
            assert c[section]["available"], (section, c[section].get("reason"))
    assert r["verdict"] in ("pass", "warn", "fail") and r["verdict"] == result.verdict
    assert r["findings"] and all(f["student"] in result.students for f in r["findings"])
    # the methodology renders from results alone: every headline metric has a definition
    for c in r["comparisons"]:
        for section in ("agreement", "calibration", "bias", "fingerprint", "cost"):
            for key in c[section]["headline"]:
                assert f"{section}.{key}" in r["definitions"], f"{section}.{key}"
    # no wall time leaks into the deterministic part
    text = result.to_json()
    for word in ("wall_time", "latency", "throughput", "generated_at"):
        assert word not in text


def test_numbers_match_plain_numpy(setup):
    data, teacher, close, result = setup
    pt, ps = teacher.predict_proba(data.X), close.predict_proba(data.X)
    head = result.to_dict()["comparisons"][0]["agreement"]["headline"]
    agree = np.mean(pt.argmax(1) == ps.argmax(1))
    assert head["top1_agreement"]["value"] == pytest.approx(agree, abs=1e-9)
    assert head["top1_agreement"]["low"] <= agree <= head["top1_agreement"]["high"]
    cost = result.to_dict()["comparisons"][0]["cost"]["headline"]
    assert cost["parameter_ratio"]["value"] == pytest.approx(1.0)  # same architecture


def test_section_objects_and_getitem(setup):
    _, _, _, result = setup
    assert result["close"]["agreement"].available
    with pytest.raises(KDAuditError, match="student"):
        result["nobody"]


def test_to_frame_is_tidy_and_matches_headline(setup):
    _, _, _, result = setup
    df = result.to_frame()
    assert list(df.columns) == ["student", "section", "metric", "group", "value", "low", "high", "method", "level"]
    assert not df.duplicated(["student", "section", "metric", "group"]).any()
    row = df[(df.student == "close") & (df.section == "agreement") & (df.metric == "top1_agreement")]
    assert len(row) == 1 and row.group.iloc[0] == ""
    head = result.to_dict()["comparisons"][0]["agreement"]["headline"]["top1_agreement"]
    assert row.value.iloc[0] == head["value"] and row.low.iloc[0] == head["low"]
    groups = df[(df.section == "bias") & (df.group.str.startswith("grp="))]
    assert set(groups.group) == {"grp=a", "grp=b"}


def test_findings_and_frame_read_the_same_rows(setup):
    """The policy judges exactly the numbers to_frame shows: one reader of results.json's sections."""
    _, _, _, result = setup
    df = result.to_frame().fillna({"low": -1.0, "high": -1.0})
    frame = {(r.student, r.section, r.metric, r.group): (r.value, r.low, r.high) for r in df.itertuples()}
    judged = [f for f in result.findings if f.value is not None]
    assert judged and any(f.group for f in judged)  # the default policy's per-feature bias rules included
    for f in judged:
        section, metric = f.metric.split(".", 1)
        low = -1.0 if f.low is None else f.low
        high = -1.0 if f.high is None else f.high
        assert frame[(f.student, section, metric, f.group or "")] == (f.value, low, high), f


def test_the_cost_section_never_queries_a_black_box():
    """Cost and lineage compute from the models through the section protocol; the cost section times white-box
    models but reports a black box from what it already answered, without one further query."""
    from kdaudit.models import BlackBoxModel

    data = make_data(n=200)
    teacher = LogisticRegression(max_iter=500).fit(data.X, data.y_true)
    asked = []

    def api(X):
        asked.append(len(X))
        return teacher.predict_proba(np.asarray(X))

    box = BlackBoxModel(api, n_classes=3, access="probabilities", name="api")
    result = audit(teacher, box, data, sections=["agreement", "cost"], n_replicates=0, progress=False,
                   measure_cost=True)
    assert sum(asked) == len(data)  # the harness's one pass; the three timing rounds asked nothing
    comp = result.to_dict()["comparisons"][0]
    assert comp["cost"]["available"] and set(comp["cost"]["headline"]) == {"parameter_ratio", "size_ratio"}
    assert "api" in result.to_dict()["cost"]["models"] and result.run_info["cost_conditions"]


def test_repr_html_escapes_user_strings(setup):
    _, _, _, result = setup
    page = result._repr_html_()
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert result.verdict.upper() in page and "top1_agreement" in page
    assert "AuditResult(verdict=" in repr(result)


def test_save_writes_three_files_and_hash(setup, tmp_path):
    _, _, _, result = setup
    paths = result.save(tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == ["report.html", "results.json", "run.json"]
    raw = (tmp_path / "out" / "results.json").read_bytes()
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["results_sha256"] == hashlib.sha256(raw).hexdigest()
    assert json.loads(raw) == result.to_dict()
    html_text = (tmp_path / "out" / "report.html").read_text()
    assert EVIL not in html_text and "<html" in html_text.lower()


def test_ensemble_teacher_sections_subset_and_policy(setup):
    data, teacher, close, _ = setup
    other = LogisticRegression(C=0.5, max_iter=500).fit(data.X[::-1], data.y_true[::-1])
    policy = {"rules": [{"metric": "agreement.top1_agreement", "min": 1.01}]}
    res = audit([teacher, other], close, data, sections=["agreement"], n_replicates=0, policy=policy,
                progress=False)
    r = res.to_dict()
    assert r["models"][0]["kind"] == "ensemble" and list(r["comparisons"][0]) == ["agreement", "role", "student"]
    assert res.verdict == "fail" and res.findings[0].status == "fail"
    # 0 replicates: point estimates without intervals
    assert r["comparisons"][0]["agreement"]["headline"]["top1_agreement"]["low"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sections": ["agreemnt"]}, "sections"),
     ({"sections": ["lineage"]}, "references"),
     ({"seed": -1}, "seed"),
     ({"positive_controls": [object()]}, r"'positive_controls' got '1 models'.*only with references"),
     ({"section_options": {"nope": {}}}, "section_options")],
)
def test_bad_arguments(setup, kwargs, match):
    data, teacher, close, _ = setup
    with pytest.raises(KDAuditError, match=match):
        audit(teacher, close, data, progress=False, n_replicates=0, **kwargs)


def test_bad_data_and_duplicate_names(setup):
    data, teacher, close, _ = setup
    with pytest.raises(KDAuditError, match="AuditData"):
        audit(teacher, close, data.X, progress=False)
    with pytest.raises(KDAuditError, match="distinct model names"):
        audit(teacher, {"teacher": close}, data, progress=False)


def test_result_is_frozen(setup):
    _, _, _, result = setup
    assert isinstance(result, AuditResult)
    with pytest.raises(AttributeError):
        result.verdict = "pass"
