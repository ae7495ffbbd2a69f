"""Same inputs and seed give a byte-identical results.json; the HTML depends only on results, run info and time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kdaudit import AuditData
from kdaudit._audit import audit
from kdaudit.distill import mlp
from kdaudit.report import render_html


def make():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 6)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=400) > 0).astype(np.int64)
    sens = pd.DataFrame({"sex": rng.choice(["F", "M"], 400), "age": rng.choice(["young", "old"], 400)})
    data = AuditData(X, y_true=y, sensitive=sens, classes=("no", "yes"), name="det")
    # untrained but seeded networks: deterministic models without spending test time on training
    teacher = mlp(6, 2, hidden=(16,), seed=1)
    students = {"small": mlp(6, 2, hidden=(4,), seed=2), "linear": mlp(6, 2, hidden=(), seed=3)}
    refs = [mlp(6, 2, hidden=(16,), seed=10 + i) for i in range(5)]
    return data, teacher, students, refs


def run_once(tmp_path, name):
    torch.set_num_threads(1)
    data, teacher, students, refs = make()
    res = audit(teacher, students, data, n_replicates=100, seed=7, references=refs, probes=data,
                lineage_options={"n_probes": 100, "p_value_method": "parametric", "n_replicates": 50},
                progress=False)
    res.save(tmp_path / name, report=False)
    return res


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("det")
    return tmp, run_once(tmp, "a"), run_once(tmp, "b")


def test_results_json_is_byte_identical(two_runs):
    tmp, a, b = two_runs
    assert "lineage" in a.to_dict()["settings"]["sections"]
    assert (tmp / "a" / "results.json").read_bytes() == (tmp / "b" / "results.json").read_bytes()
    # while the run info did change (it holds wall times and a time stamp)
    assert a.run_info["wall_time_s"] != b.run_info["wall_time_s"]


def test_another_seed_changes_intervals_not_points(two_runs, tmp_path):
    _, a, _ = two_runs
    data, teacher, students, _ = make()
    c = audit(teacher, students, data, n_replicates=100, seed=8, sections=["agreement"], progress=False)
    ha = a.to_dict()["comparisons"][0]["agreement"]["headline"]["top1_agreement"]
    hc = c.to_dict()["comparisons"][0]["agreement"]["headline"]["top1_agreement"]
    assert ha["value"] == hc["value"] and (ha["low"], ha["high"]) != (hc["low"], hc["high"])


def test_html_differs_only_through_run_info_and_timestamp(two_runs):
    _, a, b = two_runs
    stamp = "2026-01-01T00:00:00+00:00"
    # the two runs' reports, with their volatile inputs (run info, time stamp) held equal, are byte-identical:
    # rendering hides no clock or randomness (matplotlib's SVG ids and dates included)
    run_b = dict(b.run_info, generated_at=stamp)
    assert render_html(a.to_dict(), run_info=run_b, generated_at=stamp) == \
        render_html(b.to_dict(), run_info=run_b, generated_at=stamp)
