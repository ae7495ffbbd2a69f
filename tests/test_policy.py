"""The policy and the gate: interval semantics, per-group rules, bad input, exit codes and summaries."""

from __future__ import annotations

import json
import math

import pytest
import yaml

import kdaudit

from kdaudit import ConfigError
from kdaudit.cli import main
from kdaudit.policy import DEFAULT_POLICY, Rule, evaluate_policy, gate, load_policy, verdict_of


def est(value, low=None, high=None):
    return {"value": value, "low": low, "high": high, "method": "test", "level": 0.95}


def results(agreement=0.95, lo=0.93, hi=0.97, *, feature_amp=(0.01, -0.02, 0.03)):
    """A minimal results dict shaped like results.json (one student)."""
    return {
        "schema": "kdaudit.results/1",
        "kdaudit_version": kdaudit.__version__,
        "data": {"n_rows": 500},
        "comparisons": [{
            "student": "s",
            "agreement": {"available": True, "reason": None,
                          "headline": {"top1_agreement": est(agreement, lo, hi),
                                       "retained_accuracy": est(0.99, 0.985, 0.995)}},
            "calibration": {"available": False, "reason": "labels-only student", "headline": {}},
            "bias": {"available": True, "reason": None,
                     "headline": {"dp_amplification": est(0.01, -0.01, 0.02)},
                     "features": {"sex": {"disparities": {"dp_difference": {"amplification": est(*feature_amp)}},
                                          "groups": [
                                              {"group": "F", "reliable": True, "group_agreement": est(0.9, 0.85, 0.95),
                                               "student": {"group_accuracy": est(0.8, 0.7, 0.9)},
                                               "change": {"group_accuracy": est(-0.01, -0.03, 0.01)}},
                                              {"group": "X", "reliable": False, "group_agreement": est(0.5, 0.1, 0.9),
                                               "student": {"group_accuracy": est(0.5)},
                                               "change": {"group_accuracy": est(-0.3)}}]}}},
            "lineage": {"available": True, "p_value": 0.004, "headline": {"lineage_effect": est(3.0, 2.0, 4.0)}},
        }],
        "definitions": {"agreement.top1_agreement": {}, "bias.dp_amplification": {}},
    }


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [(0.95, 0.91, 0.99, "pass"),  # whole interval above the minimum
     (0.90, 0.90, 0.93, "pass"),  # the bound itself counts as meeting the rule
     (0.92, 0.88, 0.96, "warn"),  # point above, interval reaches below
     (0.89, 0.85, 0.91, "fail"),  # point below
     (0.95, math.nan, math.nan, "pass"),  # no interval: judged on the point
     (0.80, math.nan, math.nan, "fail")],
)
def test_min_rule_interval_semantics(value, low, high, expected):
    assert Rule("agreement.top1_agreement", min=0.9).judge(value, low, high) == expected


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [(0.01, -0.01, 0.015, "pass"), (0.018, 0.0, 0.02, "pass"), (0.015, 0.0, 0.03, "warn"),
     (0.02, 0.0, 0.03, "warn"), (0.03, 0.01, 0.05, "fail")],
)
def test_max_rule_mirrors_min(value, low, high, expected):
    assert Rule("calibration.ece_change", max=0.02).judge(value, low, high) == expected


def test_warning_level_caps_a_failure_at_warn():
    assert Rule("calibration.ece_change", max=0.02, level="warning").judge(0.5, 0.4, 0.6) == "warn"


def test_min_and_max_together():
    r = Rule("agreement.top1_agreement", min=0.5, max=0.9)
    assert r.judge(0.7, 0.6, 0.8) == "pass"
    assert r.judge(0.95, 0.92, 0.97) == "fail"
    assert r.judge(0.88, 0.8, 0.93) == "warn"


def test_findings_carry_numbers_threshold_and_plain_message():
    pol = {"rules": [{"metric": "agreement.top1_agreement", "min": 0.94}]}
    (f,) = evaluate_policy(results(), pol)
    assert (f.status, f.student, f.value, f.low, f.high, f.threshold) == ("warn", "s", 0.95, 0.93, 0.97, "min 0.94")
    assert "interval" in f.message and "0.95" in f.message


def test_unavailable_section_is_skipped_with_its_reason():
    (f,) = evaluate_policy(results(), {"rules": [{"metric": "calibration.ece_change", "max": 0.02}]})
    assert f.status == "skipped" and "labels-only student" in f.message
    assert verdict_of([f]) == "warn" and verdict_of([f], strict=True) == "fail"


def test_per_feature_disparity_rule_and_per_group_rule():
    f = evaluate_policy(results(), {"rules": [{"metric": "bias.dp_amplification", "max": 0.02, "per_group": True}]})
    assert [(x.group, x.status) for x in f] == [("sex", "warn")]
    g = evaluate_policy(results(), {"rules": [{"metric": "bias.group_agreement", "min": 0.8, "per_group": True}]})
    # the unreliable (small) group is not judged; one note says so
    assert [(x.group, x.status) for x in g] == [("sex=F", "pass"), ("small groups", "info")]
    h = evaluate_policy(results(), {"rules": [{"metric": "bias.group_accuracy_change", "min": -0.02,
                                               "per_group": True}]})
    assert h[0].status == "warn" and h[0].value == -0.01


def test_rules_resolve_against_the_tidy_rows_for_any_section():
    """A section kdaudit does not know (a plugin's, in results from another machine) is gated by the same code: its
    headline, its top-level numbers and its ``by_group`` table are rows like the built-ins'."""
    from kdaudit._rows import result_rows

    r = results()
    r["comparisons"][0]["drift"] = {"available": True, "reason": None,
                                    "headline": {"shift": est(0.02, 0.01, 0.03)}, "n_shifted": 17,
                                    "by_group": {"group_shift": {"a": est(0.01, 0.0, 0.02), "b": est(0.09, 0.07, 0.1)}}}
    r["definitions"]["drift.shift"] = {"higher_is_better": False, "formula": "shift of the inputs"}
    g = gate(r, {"rules": [{"metric": "drift.shift", "max": 0.05}, {"metric": "drift.n_shifted", "max": 20},
                           {"metric": "drift.group_shift", "max": 0.05, "per_group": True}]})
    assert [(f.metric, f.group, f.status) for f in g.findings] == [
        ("drift.shift", None, "pass"), ("drift.n_shifted", None, "pass"),
        ("drift.group_shift", "a", "pass"), ("drift.group_shift", "b", "fail")]
    rows = {(x.metric, x.group): x for x in result_rows("drift", r["comparisons"][0]["drift"],
                                                         {"shift": r["definitions"]["drift.shift"]})}
    assert rows[("shift", "")].higher_is_better is False and rows[("shift", "")].definition == "shift of the inputs"
    assert rows[("group_shift", "b")].estimate.value == g.findings[-1].value
    # a metric reported per group only needs per_group: the error says so
    with pytest.raises(ConfigError, match="per group only: add 'per_group: true'"):
        gate(r, {"rules": [{"metric": "drift.group_shift", "max": 0.05}]})


def test_bias_rows_are_named_as_the_policy_names_them():
    from kdaudit._rows import result_rows

    rows = {(x.metric, x.group): x for x in result_rows("bias", results()["comparisons"][0]["bias"])}
    # the per-feature breakdown of the headline's dp_amplification, and the groups' values (student, change)
    assert rows[("dp_amplification", "")].estimate.value == 0.01
    assert rows[("dp_amplification", "sex")].estimate.value == 0.01
    assert rows[("group_accuracy", "sex=F")].estimate.value == 0.8
    assert rows[("group_accuracy_change", "sex=F")].estimate.value == -0.01
    assert rows[("group_agreement", "sex=X")].reliable is False and rows[("group_agreement", "sex=F")].reliable


def test_malformed_numbers_fail_closed():
    r = results()
    r["comparisons"][0]["agreement"]["headline"]["top1_agreement"] = {"value": "high", "low": None, "high": None}
    (f,) = evaluate_policy(r, {"rules": [{"metric": "agreement.top1_agreement", "min": 0.9}]})
    assert f.status == "fail" and "could not be judged" in f.message
    r["comparisons"][0]["agreement"]["headline"]["top1_agreement"] = est(10 ** 400)
    (f,) = evaluate_policy(r, {"rules": [{"metric": "agreement.top1_agreement", "min": 0.9}]})
    assert f.status == "fail" and "not finite" in f.message
    r["comparisons"][0]["agreement"]["headline"]["top1_agreement"] = est(0.95, 0.97, 0.93)
    (f,) = evaluate_policy(r, {"rules": [{"metric": "agreement.top1_agreement", "min": 0.9}]})
    assert f.status == "fail" and "malformed" in f.message


def test_lineage_p_value_plain_number():
    (f,) = evaluate_policy(results(), {"rules": [{"metric": "lineage.p_value", "max": 0.01}]})
    assert f.status == "pass" and f.low is None


def test_unknown_metric_is_a_config_error_with_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'top1_agreement'"):
        evaluate_policy(results(), {"rules": [{"metric": "agreement.top1_agreemnt", "min": 0.9}]})
    with pytest.raises(ConfigError, match="did you mean 'agreement'"):
        load_policy({"rules": [{"metric": "agrement.top1_agreement", "min": 0.9}]})


@pytest.mark.parametrize(
    ("policy", "match"),
    [({"rules": [{"metric": "agreement.top1_agreement"}]}, "'min' or a 'max'"),
     ({"rules": [{"metric": "agreement.top1_agreement", "min": "high"}]}, r"rules\[0\]\.min"),
     ({"rules": [{"metric": "agreement.top1_agreement", "min": 0.9, "levle": "error"}]}, "did you mean 'level'"),
     ({"rules": [{"metric": "agreement.top1_agreement", "min": 0.9, "level": "fatal"}]}, r"rules\[0\]\.level"),
     ({"rules": []}, "non-empty list"),
     ({"rulez": []}, "did you mean 'rules'"),
     ({"rules": [{"metric": "top1_agreement", "min": 0.9}]}, "section.key")],
)
def test_policy_validation_messages(policy, match):
    with pytest.raises(ConfigError, match=match):
        load_policy(policy)


def test_default_policy_loads():
    pol = load_policy(None)
    assert pol.name == DEFAULT_POLICY["name"] and len(pol.rules) == len(DEFAULT_POLICY["rules"])
    assert all(r.section in ("agreement", "calibration", "bias") for r in pol.rules)


def test_gate_without_policy_uses_the_one_recorded_in_results():
    pol = load_policy({"name": "recorded", "rules": [{"metric": "agreement.top1_agreement", "min": 0.96,
                                                      "per_group": False, "level": "warning"}]})
    g = gate({**results(), "policy": pol.to_dict()})
    assert g.policy.rules == pol.rules and g.policy.name == "recorded" and g.verdict == "warn"


def test_gate_markdown_escapes_table_breaking_text():
    r = results()
    r["comparisons"][0]["student"] = "a|b<script>"
    md = gate(r, {"rules": [{"metric": "agreement.top1_agreement", "min": 0.9}]}).to_markdown()
    assert "a\\|b&lt;script&gt;" in md and "<script>" not in md


# ------------------------------------------------------------------------------------------------ CLI exit codes
def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj) if name.endswith(".json") else yaml.safe_dump(obj))
    return str(p)


def test_gate_cli_exit_codes(tmp_path, capsys):
    res = _write(tmp_path, "results.json", results())
    ok = _write(tmp_path, "ok.yaml", {"rules": [{"metric": "agreement.top1_agreement", "min": 0.9}]})
    warn = _write(tmp_path, "warn.yaml", {"rules": [{"metric": "agreement.top1_agreement", "min": 0.94}]})
    bad = _write(tmp_path, "bad.yaml", {"rules": [{"metric": "agreement.top1_agreement", "min": 0.96}]})
    md = tmp_path / "summary.md"
    assert main(["gate", "--policy", ok, res, "--markdown", str(md)]) == 0
    assert "PASS" in md.read_text()
    assert main(["gate", "--policy", warn, res]) == 0
    assert main(["gate", "--policy", warn, res, "--strict"]) == 1
    assert main(["gate", "--policy", bad, res]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "top1_agreement" in out


def test_gate_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    res = _write(tmp_path, "results.json", results())
    ok = _write(tmp_path, "ok.yaml", {"rules": [{"metric": "agreement.top1_agreement", "min": 0.9}]})
    typo = _write(tmp_path, "typo.yaml", {"rules": [{"metric": "agreement.top1_agreemnt", "min": 0.9}]})
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [ {metric: x\n")
    notjson = tmp_path / "r.json"
    notjson.write_text("{nope")
    odd = _write(tmp_path, "odd.json", {"comparisons": [1]})
    odd_policy = _write(tmp_path, "odd_policy.json", dict(results(), policy={"rules": [3]}))
    for argv in (["gate", "--policy", ok, str(tmp_path / "missing.json")],
                 ["gate", "--policy", str(tmp_path / "missing.yaml"), res],
                 ["gate", "--policy", str(broken), res],
                 ["gate", "--policy", typo, res],
                 ["gate", "--policy", ok, str(notjson)],
                 ["gate", "--policy", ok, odd],
                 ["gate", odd_policy]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("kdaudit: error:") and "Traceback" not in err and err.count("\n") == 1


def test_show_default_policy_is_valid_yaml(capsys):
    assert main(["gate", "--show-default-policy"]) == 0
    assert load_policy(yaml.safe_load(capsys.readouterr().out)).name == "kdaudit-default"
