"""A report never says more than its numbers: claims follow intervals, values keep their side of a threshold,
controls are labelled and not judged, lineage names the p-value to cite, the scorecard opens the report."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
from _report_fixture import make_results, make_run_info

from kdaudit.policy import Finding, GateResult, load_policy
from kdaudit.report import render_html
from kdaudit.report._claims import claim
from kdaudit.report._format import fmt_against, fmt_interval, side_digits, thresholds_in
from kdaudit.report._scorecard import scorecard


@pytest.fixture(scope="module")
def results():
    return make_results()


# ---------------------------------------------------------------------------------------------------------- claims
@pytest.mark.parametrize("low, high, direction", [
    (0.01, 0.03, "up"),          # entirely above no change
    (-0.03, -0.01, "down"),      # entirely below
    (-0.005, 0.003, "unclear"),  # straddling (the ECE case)
    (0.0, 0.02, "unclear"),      # touching 0 from above: 0 is not excluded
    (-0.02, 0.0, "unclear"),     # touching 0 from below
    (math.nan, math.nan, "unknown"),  # no interval: nothing may be claimed
])
def test_claim_says_a_direction_only_when_the_interval_excludes_no_change(low, high, direction):
    value = 0.0 if math.isnan(low) else (low + high) / 2
    c = claim({"value": value, "low": low, "high": high}, up="higher", down="lower")
    assert c.direction == direction
    if direction == "up":
        assert c.words == "higher" and c.supported
    elif direction == "down":
        assert c.words == "lower" and c.supported
    else:
        assert not c.supported and "cannot tell" in c.words
        assert "higher" not in c.words.replace("higher or lower", "")  # never a bare claim


def test_claim_states_the_largest_changes_ruled_out():
    c = claim({"value": -0.00065, "low": -0.005, "high": 0.003}, up="higher", down="lower")
    assert c.rules_out == "an increase larger than 0.003 and a decrease larger than 0.005"
    touching = claim({"value": 0.01, "low": 0.0, "high": 0.02}, up="higher", down="lower")
    assert touching.rules_out == "an increase larger than 0.020 and any decrease"


def test_claim_on_a_ratio_uses_one_as_no_change():
    assert claim({"value": 1.2, "low": 1.05, "high": 1.3}, up="faster", down="slower", no_change=1.0).words == \
        "faster"
    c = claim({"value": 0.999, "low": 0.997, "high": 1.001}, up="more", down="less", kind="percent",
              no_change=1.0)
    assert c.direction == "unclear" and c.rules_out == "an increase larger than 0.1% and a decrease larger than 0.3%"
    assert claim({"value": math.nan, "low": 1, "high": 2}, up="a", down="b").direction == "unknown"


def test_report_sentences_follow_the_intervals(results):
    r = copy.deepcopy(results)
    head = r["comparisons"][0]["calibration"]["headline"]
    head["ece_change"] = {"value": -0.00065, "low": -0.005, "high": 0.003, "level": 0.95, "method": "m"}
    page = render_html(r, generated_at="x")
    assert "more trustworthy" not in page and "less trustworthy" not in page
    assert "cannot tell whether it is higher or lower" in page
    head["ece_change"] = {"value": -0.02, "low": -0.03, "high": -0.01, "level": 0.95, "method": "m"}
    assert "its confidence is more trustworthy" in render_html(r, generated_at="x")


# ------------------------------------------------------------------------------------------------------ thresholds
@pytest.mark.parametrize("value, limit, kind, shown", [
    (0.9697, 0.97, "percent", "96.97%"),
    (0.8996, 0.9, "percent", "89.96%"),
    (0.905, 0.9, "percent", "90.5%"),       # already visibly above: no extra digits
    (0.0504, 0.05, "decimal", "0.0504"),
    (0.97, 0.97, "percent", "97.0%"),       # equal stays equal
])
def test_values_keep_their_side_of_a_threshold(value, limit, kind, shown):
    assert fmt_against(value, [limit], kind) == shown


def test_gate_table_markdown_and_messages_keep_the_side(tmp_path):
    f = Finding(rule="r", metric="agreement.retained_accuracy", student="s", status="fail", value=0.96999,
                low=0.9690, high=0.97001, threshold="min 0.97", message="m")
    g = GateResult(findings=(f,), verdict="fail", strict=False, policy=load_policy(None))
    assert "0.96999 [0.969, 0.97001]" in g.to_text()
    assert "0.96999 [0.969, 0.97001]" in g.to_markdown()
    assert thresholds_in("min 0.9, max 1e-2") == [0.9, 0.01]
    assert side_digits(0.96999, [0.97], lambda v, d: f"{v:.{d}g}", float, 4) == "0.96999"
    assert fmt_interval({"value": 0.97, "low": 0.96999, "high": 0.98}, "percent", against=[0.97]).startswith(
        "95% CI 96.999–")


def test_report_findings_show_enough_digits(results):
    r = copy.deepcopy(results)
    r["findings"] = [{"status": "fail", "student": r["comparisons"][0]["student"], "metric":
                      "agreement.retained_accuracy", "value": 0.9697, "low": 0.96, "high": 0.98,
                      "threshold": "min 0.97", "message": "x", "group": None, "level": "error"}]
    page = render_html(r, generated_at="x")
    assert "96.97%" in page and ">97.0%<" not in page


# ------------------------------------------------------------------------------------------------------- roles
def _with_control(results):
    r = copy.deepcopy(results)
    control = r["comparisons"][1]["student"]
    r["comparisons"][1]["role"] = "control"
    for m in r["models"]:
        if m["name"] == control:
            m["role"] = "control"
    r["findings"] = [f for f in r["findings"] if f["student"] != control]
    r.get("verdict_by_student", {}).pop(control, None)
    return r, control


def test_a_control_is_labelled_folded_and_outside_the_verdict(results):
    r, control = _with_control(results)
    page = render_html(r, run_info=make_run_info(), generated_at="x")
    assert "control, not judged" in page and 'id="controls"' in page
    assert f"Findings for {control}" not in page  # not laid out as a student
    assert f"{control} is a control (trained without the teacher)" in page
    summary = page[page.index('id="summary"'):page.index("</section>", page.index('id="summary"'))]
    assert "The control predicts the same class" in summary


def test_audit_roles_keep_a_control_out_of_the_policy():
    import numpy as np
    import torch

    import kdaudit
    from kdaudit.data import AuditData

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    data = AuditData(X=X, y_true=(X[:, 0] > 0).astype(np.int64))
    nets = [torch.nn.Linear(4, 2) for _ in range(3)]
    res = kdaudit.audit(nets[0], {"s": nets[1], "c": nets[2]}, data, sections=["agreement"], n_replicates=0,
                        roles={"c": "control"}, progress=False)
    d = res.to_dict()
    assert [c["role"] for c in d["comparisons"]] == ["student", "control"]
    assert {f["student"] for f in d["findings"]} == {"s"} and set(d["verdict_by_student"]) == {"s"}
    with pytest.raises(kdaudit.KDAuditError, match="roles"):
        kdaudit.audit(nets[0], {"s": nets[1]}, data, sections=["agreement"], roles={"x": "control"},
                      progress=False)
    with pytest.raises(kdaudit.KDAuditError, match="'student' or 'control'"):
        kdaudit.audit(nets[0], {"s": nets[1], "c": nets[2]}, data, sections=["agreement"],
                      roles={"c": "teacher"}, progress=False)


# ------------------------------------------------------------------------------------------------------ lineage
def _lineage_results(results, *, p=0.05, method="exact rank", k=19):
    r = copy.deepcopy(results)
    lin = r["comparisons"][0]["lineage"]
    lin.update(p_value=p, p_value_method=method, n_references=k, p_value_exact=0.05, p_value_parametric=0.005,
               verdict="derived", alpha=0.05)
    return r


def test_lineage_headline_cites_one_p_value_with_its_assumption_and_floor(results):
    page = render_html(_lineage_results(results), generated_at="x")
    assert "p-value to cite" in page and "exact rank test" in page
    assert "exchangeable with the teacher" in page
    assert "cannot go below 1/20 = 0.05" in page  # the floor, said
    assert "Parametric p = 0.005" in page and "normally distributed" in page  # in the details, with its assumption
    quick = render_html(_lineage_results(results, p=0.005, method="parametric t"), generated_at="x")
    assert "parametric t test (assumes normality)" in quick and "cannot go below" not in quick
    # the summary's section table shows the test's verdict, not "no rule"
    assert re.search(r'badge-info">Derived<', page)


# ----------------------------------------------------------------------------------------------------- scorecard
def test_scorecard_reads_quality_size_and_speed_from_results():
    comp = {"agreement": {"headline": {"retained_accuracy": {"value": 0.97, "low": 0.96, "high": 0.98,
                                                             "level": 0.95}}},
            "cost": {"headline": {"parameter_ratio": {"value": 0.6, "method": "exact (no interval)"}}}}
    measured = {"throughput_ratio": {"value": 1.6, "low": 1.5, "high": 1.7, "level": 0.95, "method": "b"}}
    items = scorecard(comp, label_of=lambda s, k: "Retained accuracy", measured=measured)
    assert [i["label"] for i in items] == ["Quality kept", "Size", "Speed"]
    assert items[0]["value"] == "97.0%" and "below the teacher" in items[0]["detail"]
    assert items[1]["value"] == "60.0%" and "1.67× smaller" in items[1]["detail"]
    assert items[2]["value"] == "1.60×" and items[2]["interval"] == "95% CI 1.50×–1.70×"
    assert "faster than the teacher" in items[2]["detail"] and items[2]["volatile"]
    # another task names its own quality metric (a language-model audit, say)
    lm = {"quality": {"headline": {"perplexity_ratio": {"value": 0.9, "low": 0.85, "high": 0.95}}}}
    assert scorecard(lm, label_of=lambda s, k: k, quality=["quality.perplexity_ratio"])[0]["value"] == "90.0%"


def test_report_opens_with_the_scorecard(results):
    page = render_html(results, run_info=make_run_info(), generated_at="x")
    summary = page.index('id="summary"')
    assert page.index('class="scorecard"', summary) < page.index('class="verdict ', summary)
    assert "Quality kept" in page


def test_degenerate_binary_fingerprint_numbers_are_left_out_with_the_reason(results):
    page = render_html(results, generated_at="x")
    assert "Not informative on two classes" in page
    fp = json.dumps(results["comparisons"][0]["fingerprint"]["headline"])
    assert "same_wrong_label_lift" in fp  # still in the results


# ---------------------------------------------------------------------------------------------------------- CLI
def test_lineage_cli_loads_safetensors_with_arch_flags(tmp_path, capsys):
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from kdaudit.cli import main
    from kdaudit.distill import mlp

    torch.set_num_threads(1)
    paths = {}
    for name, hidden, seed in [("teacher", 8, 0), ("suspect", 4, 1), ("ref1", 8, 2), ("ref2", 8, 3), ("ref3", 8, 4)]:
        net = mlp(5, 2, hidden=(hidden,), seed=seed)
        paths[name] = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(paths[name]))
    probes = tmp_path / "probes.npz"
    np.savez(probes, X=np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32))
    base = ["lineage", "--teacher", str(paths["teacher"]), "--suspect", str(paths["suspect"]), "--probes",
            str(probes), "--reference", str(paths["ref1"]), "--reference", str(paths["ref2"]), "--reference",
            str(paths["ref3"]), "--p-value", "parametric", "--n-probes", "100"]
    archs = ["--arch", "mlp", "--arch-kwargs", '{"in_features": 5, "n_classes": 2, "hidden": [8]}',
             "--suspect-arch", "mlp", "--suspect-arch-kwargs", '{"in_features": 5, "n_classes": 2, "hidden": [4]}']
    assert main(base + archs) == 0
    assert "verdict:" in capsys.readouterr().out
    # without the flags the weights-only files cannot be loaded: a one-line error, exit 2
    assert main(base) == 2
    assert "arch" in capsys.readouterr().err
    # a malformed --arch-kwargs names the flag and what it accepts
    assert main(base + ["--arch", "mlp", "--arch-kwargs", "{not json"]) == 2
    err = capsys.readouterr().err
    assert "--arch-kwargs" in err and "JSON object" in err


def test_report_command_renders_again_from_results(tmp_path, results, capsys):
    from kdaudit.cli import main

    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "run.json").write_text(json.dumps(make_run_info()))
    assert main(["report", str(tmp_path / "results.json")]) == 0
    assert "Quality kept" in (tmp_path / "report.html").read_text()
    (tmp_path / "bad.json").write_text("[1]")
    assert main(["report", str(tmp_path / "bad.json")]) == 2
    assert "RESULTS.json" in capsys.readouterr().err


def test_hash_table_shows_what_sha256sum_prints_and_sizes_on_disk(tmp_path):
    import hashlib

    import numpy as np
    import torch
    from safetensors.torch import save_file

    import kdaudit
    from kdaudit.data import AuditData
    from kdaudit.distill import mlp
    from kdaudit.models import load_model

    torch.set_num_threads(1)
    files = {}
    for name, hidden in (("teacher", 8), ("student", 4)):
        files[name] = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in mlp(3, 2, hidden=(hidden,), seed=0).state_dict().items()},
                  str(files[name]))
    models = {n: load_model(p, arch="mlp", arch_kwargs={"in_features": 3, "n_classes": 2, "hidden": [h]})
              for (n, p), h in zip(files.items(), (8, 4))}
    X = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    res = kdaudit.audit(models["teacher"], {"s": models["student"]}, AuditData(X=X, y_true=(X[:, 0] > 0) * 1),
                        sections=["agreement", "cost"], n_replicates=0, progress=False)
    page = render_html(res.to_dict(), run_info=res.run_info, generated_at="x")
    for p in files.values():
        assert hashlib.sha256(p.read_bytes()).hexdigest() in page  # exactly what `sha256sum FILE` prints
    assert "file (sha256sum)" in page and "content fingerprint (sha256 of the weights)" in page
    size = files["student"].stat().st_size
    from kdaudit.report._format import fmt_bytes

    assert fmt_bytes(size) in page and "Weights in memory" in page


def test_scorecard_value_beside_a_failed_threshold_shows_the_digits_of_its_verdict():
    # the case: a retained accuracy of 0.9697 judged against "min 0.97" must not read "97.0%"
    from kdaudit.report._scorecard import scorecard

    comp = {"agreement": {"available": True, "headline": {"retained_accuracy": {
        "value": 0.9697, "low": 0.96, "high": 0.9789, "level": 0.95, "method": "bca"}}}}
    label = lambda section, key: key  # noqa: E731
    plain = scorecard(comp, label_of=label)[0]
    judged = scorecard(comp, label_of=label, thresholds={"agreement.retained_accuracy": [0.97]})[0]
    assert plain["value"] == "97.0%" and judged["value"] == "96.97%"
    assert "97.89%" in judged["interval"] or "97.9%" in judged["interval"]
