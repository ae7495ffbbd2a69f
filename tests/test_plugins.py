"""A section registered from outside kdaudit (an installed distribution's entry point in the group
``kdaudit.sections``) appears in results.json, ``AuditResult.to_frame``, the policy, the gate and the report, with no
edit to kdaudit; and a section that cannot run on what a model reveals is skipped with the reason, by one rule."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from kdaudit import AuditData, KDAuditError
from kdaudit._audit import audit
from kdaudit.models import BlackBoxModel
from kdaudit.sections import ENTRY_POINT_GROUP, registry, section_names

torch.set_num_threads(1)

TOY = '''
import numpy as np

from kdaudit import Estimate
from kdaudit.metrics import BlockStats, SectionResult, block_of
from kdaudit.metrics._accumulator import SUM, Accumulator
from kdaudit.sections import ModelResults, Needs, Option, Section
from kdaudit._kinds import Access, OutputKind


class GapAccumulator(Accumulator):
    """Mean confidence gap (teacher's top probability minus the student's), per block and per group."""

    states = {"stats": SUM, "n_rows": SUM}
    merge_key = ("bootstrap",)

    def __init__(self, bootstrap, scale=1.0):
        self.bootstrap, self.scale = bootstrap, scale
        self.stats, self.n_rows = BlockStats(2, n_blocks=bootstrap.n_blocks), 0

    def update(self, y_true, p_teacher, p_student, *, ids, sensitive=None):
        gap = self.scale * (np.asarray(p_teacher).max(axis=1) - np.asarray(p_student).max(axis=1))
        self.stats.add(block_of(np.asarray(ids), self.bootstrap.n_blocks), (gap, np.ones(len(gap))))
        self.n_rows += len(gap)
        return self

    def compute(self):
        est = self.bootstrap.estimate(self.stats, lambda t: t[..., 0, 0] / t[..., 0, 1])
        return SectionResult(available=True, headline={"confidence_gap": est}, detail={"n_rows": self.n_rows})


class ToySection(Section):
    name, order, title = "toy", 45, "Toy confidence gap"
    description = "How much less confident the student is than its teacher."
    needs = Needs(kinds=frozenset({OutputKind.CLASS_PROBS}), least_access=Access.PROBABILITIES)
    options = (Option("scale", float, 1.0, "multiplies the gap", minimum=0.0),)

    def definitions(self):
        return {"confidence_gap": {"label": "Confidence gap", "formula": "mean(max p_teacher - max p_student)",
                                   "higher_is_better": False, "description": "A toy plugin metric."}}

    def accumulator(self, *, n_classes, teacher, student, bootstrap, options):
        return GapAccumulator(bootstrap, **options)


class SizeSection(Section):
    """A section computed from the models themselves (as cost and lineage are): once per audit, every student."""

    name, order, title = "toysize", 55, "Toy size"
    stream = False
    calls = []

    def compute_models(self, context):
        SizeSection.calls.append(tuple(s.name for s in context.students))
        t = context.teacher.n_parameters()
        by = {s.name: {"available": True, "reason": None,
                       "headline": {"parameters_saved": float(t - s.n_parameters())}} for s in context.students}
        return ModelResults(by_student=by, results={"toysize": {"teacher_parameters": t}},
                            run_info={"toysize": {"seen": len(context.students)}})
'''


@pytest.fixture
def toy_installed(tmp_path, monkeypatch):
    """Install the toy section as a distribution with an entry point (dist-info on sys.path, as pip would)."""
    (tmp_path / "kdaudit_toy_section.py").write_text(textwrap.dedent(TOY))
    info = tmp_path / "kdaudit_toy_section-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdaudit-toy-section\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntoy = kdaudit_toy_section:ToySection\n"
                                          "toysize = kdaudit_toy_section:SizeSection\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("kdaudit_toy_section", None)


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = (X[:, :3] @ rng.normal(size=(3, 3))).argmax(1)
    return AuditData(X, y_true=y, sensitive=pd.DataFrame({"grp": np.where(rng.random(n) < 0.5, "a", "b")}),
                     name="plugin")


def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def test_a_plugin_section_reaches_results_frame_policy_gate_and_report(toy_installed, tmp_path):
    assert "toy" in section_names() and list(registry()).index("toy") == 4  # order 45: after fingerprint
    data = _data()
    teacher, student = _net(0), _net(1)
    labels_only = BlackBoxModel(lambda X: _net(1)(torch.as_tensor(X)).argmax(1).detach().numpy(), n_classes=3,
                                access="labels", name="api")
    policy = {"name": "with-toy", "rules": [{"metric": "toy.confidence_gap", "max": 5.0},
                                            {"metric": "agreement.top1_agreement", "min": 0.0}]}
    result = audit(teacher, {"student": student, "api": labels_only}, data, sections=["agreement", "toy"],
                   section_options={"toy": {"scale": 2}}, policy=policy, n_replicates=50, seed=0, progress=False,
                   measure_cost=False, keep_outputs=True)
    r = result.to_dict()
    comp = {c["student"]: c for c in r["comparisons"]}
    # results.json: the section, its definitions and its options
    assert comp["student"]["toy"]["available"] and "confidence_gap" in comp["student"]["toy"]["headline"]
    assert r["definitions"]["toy.confidence_gap"]["label"] == "Confidence gap"
    assert r["settings"]["sections"] == ["agreement", "toy"] and r["settings"]["section_options"]["toy"] == {
        "scale": 2.0}
    # the option reached the section: the gap is twice the unscaled one
    probs = [result.outputs[n].probs for n in result.outputs.names[:2]]  # teacher, student
    expected = 2 * float(np.mean(probs[0].max(axis=1).astype(np.float64) - probs[1].max(axis=1)))
    assert comp["student"]["toy"]["headline"]["confidence_gap"]["value"] == pytest.approx(expected, abs=1e-6)
    # the engine folds the plugin's accumulator unit by unit and merges the units: the same number
    units = audit(teacher, {"student": student}, data, sections=["toy"], section_options={"toy": {"scale": 2}},
                  n_replicates=50, seed=0, progress=False, measure_cost=False, block_rows=100)
    assert units.results["comparisons"][0]["toy"]["headline"]["confidence_gap"]["value"] == pytest.approx(
        expected, abs=1e-6)
    # one rule skips a section a model's outputs cannot feed: the labels-only API
    assert not comp["api"]["toy"]["available"]
    assert comp["api"]["toy"]["reason"] == "the toy section needs outputs of kind class_probs; student 'api' gives labels"
    # to_frame: tidy rows of the plugin's section
    frame = result.to_frame()
    row = frame[(frame.section == "toy") & (frame.student == "student")]
    # its headline, then the numbers at the top level of its result (the detail's row count), all from one reader
    assert list(row.metric) == ["confidence_gap", "n_rows"] and np.isfinite(row.low.iloc[0])
    assert row.value.iloc[1] == 400 and np.isnan(row.low.iloc[1])
    # policy: judged like any section's metric; skipped where the section was unavailable
    toy_findings = {f.student: f.status for f in result.findings if f.rule.startswith("toy.") or "toy." in
                    getattr(f, "metric", "")}
    assert toy_findings["student"] == "pass" and toy_findings["api"] in ("skipped", "fail")
    # the saved results and the report
    paths = result.save(tmp_path / "out")
    page = paths["report"].read_text(encoding="utf-8")
    assert "Confidence gap" in page and "Toy" in page
    # the gate judges the saved results with a toy rule (the results hold the section)
    from kdaudit.cli import main

    pol_file = tmp_path / "policy.yaml"
    pol_file.write_text("rules:\n  - {metric: toy.confidence_gap, max: 5.0, students: [student]}\n")
    assert main(["gate", "--policy", str(pol_file), str(paths["results"])]) == 0


def test_a_plugin_section_computed_from_the_models_runs_through_the_same_loop(toy_installed):
    """A ``stream = False`` section (like cost and lineage) runs once per audit for every student, its results land
    in results.json (its comparison entries and its own top-level entry), run.json, the frame and the policy."""
    import kdaudit_toy_section as toy

    data = _data(n=100)
    result = audit(_net(0), {"a": _net(1), "b": torch.nn.Sequential(torch.nn.Linear(5, 3))}, data,
                   sections=["agreement", "toysize"], n_replicates=0, progress=False, measure_cost=False,
                   policy={"rules": [{"metric": "toysize.parameters_saved", "min": 0.0}]})
    assert toy.SizeSection.calls == [("a", "b")]  # one call for both students
    r = result.to_dict()
    assert r["toysize"] == {"teacher_parameters": 75} and result.run_info["toysize"] == {"seen": 2}
    saved = {c["student"]: c["toysize"]["headline"]["parameters_saved"] for c in r["comparisons"]}
    assert saved == {"a": 0.0, "b": 57.0}
    assert result["b"]["toysize"]["headline"]["parameters_saved"] == 57.0
    frame = result.to_frame()
    assert list(frame[frame.section == "toysize"].value) == [0.0, 57.0]
    assert [f.status for f in result.findings] == ["pass", "pass"]


def test_plugin_options_are_checked_by_one_schema(toy_installed, tmp_path):
    data = _data(n=100)
    with pytest.raises(KDAuditError, match=r"section_options\.toy.*scal.*did you mean 'scale'"):
        audit(_net(0), _net(1), data, sections=["toy"], section_options={"toy": {"scal": 2}}, progress=False,
              n_replicates=0, measure_cost=False)
    with pytest.raises(KDAuditError, match=r"section_options\.toy\.scale.*>= 0"):
        audit(_net(0), _net(1), data, sections=["toy"], section_options={"toy": {"scale": -1}}, progress=False,
              n_replicates=0, measure_cost=False)
    # the config file validates with the same schema, naming the key path
    from kdaudit._config import load_config
    from kdaudit._exceptions import ConfigError

    X = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=X, y=np.zeros(30, dtype=np.int64))
    for name in ("t", "s"):
        np.save(tmp_path / f"{name}.npy", np.full((30, 2), 0.5, dtype=np.float32))
    base = {"models": {"teacher": [{"path": str(tmp_path / "t.npy")}], "students": [{"path": str(tmp_path / "s.npy")}]},
            "data": {"path": str(tmp_path / "d.npz")}}
    assert load_config({**base, "section_options": {"toy": {"scale": 3}}}).section_options == {"toy": {"scale": 3.0}}
    with pytest.raises(ConfigError, match=r"section_options\.toy\.scale"):
        load_config({**base, "section_options": {"toy": {"scale": "big"}}})
    # and the CLI's --option strings convert through it too
    from kdaudit.cli import _parse_options

    opts = _parse_options(["toy.scale=2.5", "calibration.n_bins=10"])
    assert registry()["toy"].check_options(opts["toy"]) == {"scale": 2.5}
    assert registry()["calibration"].check_options(opts["calibration"]) == {"n_bins": 10}


def test_a_broken_or_misnamed_plugin_names_itself(tmp_path, monkeypatch):
    info = tmp_path / "bad-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbroken = no_such_module_kdaudit:X\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KDAuditError, match="'broken'.*failed to load"):
        registry()


def test_section_option_choices_match_the_metrics():
    """The declared option schema agrees with what the metric functions accept."""
    from kdaudit.metrics import _calibration as cal

    opts = {o.name: o for o in registry()["calibration"].options}
    assert opts["strategy"].choices == cal._STRATEGIES and opts["norm"].choices == cal._NORMS
    assert opts["binning"].choices == cal._BINNINGS
    from kdaudit.lineage import CONTROLS_MODES

    assert registry()["lineage"].options[-1].choices == tuple(CONTROLS_MODES)
    assert json.dumps([o.name for o in registry()["bias"].options])
