"""The kdaudit command line: help, version, audit from a config file, exit codes at the boundary."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from safetensors.torch import save_file

from kdaudit import __version__
from kdaudit.cli import main
from kdaudit.distill import mlp


def test_help_lists_every_command_with_a_description():
    out = subprocess.run([sys.executable, "-m", "kdaudit.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for cmd in ("demo", "audit", "gate", "lineage"):
        assert f"    {cmd}" in out
    assert "Exit codes" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"kdaudit {__version__}"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: kdaudit" in capsys.readouterr().out


def test_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as info:
        main(["gate", "--no-such-flag"])
    assert info.value.code == 2


@pytest.fixture()
def project(tmp_path):
    """Model weight files, a data file and a config naming them (paths relative to the config)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "rows.npz", X=X, y=y, sensitive_group=rng.choice(["a", "b"], 300),
             classes=np.array(["neg", "pos"]))
    (tmp_path / "models").mkdir()
    for name, hidden, seed in (("teacher", [8], 1), ("student", [2], 2)):
        save_file(mlp(4, 2, hidden=hidden, seed=seed).state_dict(), str(tmp_path / "models" / f"{name}.safetensors"))
    arch = "kdaudit.distill:mlp"
    config = {
        "name": "cli test",
        "models": {
            "teacher": {"path": "models/teacher.safetensors", "arch": arch,
                        "arch_kwargs": {"in_features": 4, "n_classes": 2, "hidden": [8]}},
            "students": [{"path": "models/student.safetensors", "name": "tiny", "arch": arch,
                          "arch_kwargs": {"in_features": 4, "n_classes": 2, "hidden": [2]}}],
        },
        "data": {"path": "rows.npz"},
        "sections": ["agreement", "calibration", "bias", "cost"],
        "bootstrap": {"replicates": 30},
        "policy": {"rules": [{"metric": "agreement.top1_agreement", "min": 0.0}]},
    }
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp_path


def test_audit_command_writes_report_and_gates(project, capsys):
    out = project / "out"
    assert main(["audit", str(project / "audit.yaml"), "--out", str(out), "--quiet"]) == 0
    text = (out / "results.json").read_text()
    results = json.loads(text)
    assert (out / "report.html").is_file() and (out / "run.json").is_file()
    # paths are recorded relative to the config file: results.json does not depend on the checkout location
    assert str(project) not in text
    assert results["config"]["models"]["students"][0]["path"] == "models/student.safetensors"
    assert results["data"]["classes"] == ["neg", "pos"] and [c["student"] for c in results["comparisons"]] == ["tiny"]
    assert "verdict: PASS" in capsys.readouterr().out
    # the written results go straight into the gate
    assert main(["gate", str(out / "results.json")]) == 0
    strict_policy = project / "strict.yaml"
    strict_policy.write_text(yaml.safe_dump({"rules": [{"metric": "agreement.top1_agreement", "min": 1.01}]}))
    assert main(["gate", "--policy", str(strict_policy), str(out / "results.json")]) == 1
    assert main(["audit", str(project / "audit.yaml"), "--out", str(out), "--quiet", "--gate",
                 "--policy", str(strict_policy), "--replicates", "0", "--seed", "5"]) == 1
    # overrides are what ran and what is recorded
    again = json.loads((out / "results.json").read_text())
    assert again["settings"]["bootstrap"]["n_replicates"] == 0 and again["settings"]["seed"] == 5
    assert again["config"]["bootstrap"]["replicates"] == 0 and again["config"]["seed"] == 5
    assert again["policy"]["rules"][0]["min"] == 1.01


def test_audit_command_bad_config_is_one_line_exit_2(project, capsys):
    cfg = yaml.safe_load((project / "audit.yaml").read_text())
    cfg["models"]["students"][0]["path"] = "models/missing.safetensors"
    (project / "bad.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["audit", str(project / "bad.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "models.students[0].path" in err and "missing.safetensors" in err and "Traceback" not in err
    assert main(["audit", str(project / "nope.yaml")]) == 2
    # --strict only means something for the gate: alone it is a mistake, not silently ignored
    capsys.readouterr()
    assert main(["audit", str(project / "audit.yaml"), "--strict", "--quiet"]) == 2
    assert "--gate" in capsys.readouterr().err
    # --debug shows the traceback instead
    with pytest.raises(Exception, match="does not exist"):
        main(["--debug", "audit", str(project / "nope.yaml")])


def test_audit_command_config_mistakes_found_late_are_exit_2(project, capsys):
    cfg = yaml.safe_load((project / "audit.yaml").read_text())
    (project / "other").mkdir()
    (project / "other" / "student.safetensors").write_bytes((project / "models" / "student.safetensors").read_bytes())
    # two unnamed students whose files share a stem would share a name: one must not silently replace the other
    second = dict(cfg["models"]["students"][0], path="other/student.safetensors")
    del second["name"]
    cfg["models"]["students"] = [dict(second, path="models/student.safetensors"), second]
    (project / "dup.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["audit", str(project / "dup.yaml"), "--quiet"]) == 2
    assert "models.students[1].name" in capsys.readouterr().err
    cfg = yaml.safe_load((project / "audit.yaml").read_text())
    cfg["models"]["students"][0]["arch_kwargs"] = {"in_features": 4, "n_clases": 2}
    (project / "kw.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["audit", str(project / "kw.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "arch_kwargs" in err and "n_clases" in err and "Traceback" not in err
    # an --out under a file is bad input too
    (project / "afile").write_text("x")
    assert main(["audit", str(project / "audit.yaml"), "--out", str(project / "afile" / "out"), "--quiet"]) == 2


def test_config_access_restricts_what_the_audit_sees(project):
    cfg = yaml.safe_load((project / "audit.yaml").read_text())
    cfg["models"]["students"][0].update(access="labels", query_budget=1000)
    cfg["sections"] = ["agreement", "calibration"]
    (project / "labels.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["audit", str(project / "labels.yaml"), "--out", str(project / "lab"), "--quiet"]) == 0
    results = json.loads((project / "lab" / "results.json").read_text())
    student = next(m for m in results["models"] if m["role"] == "student")
    assert student["access"] == "labels" and student["kind"] == "blackbox"
    assert results["comparisons"][0]["agreement"]["available"]
    assert not results["comparisons"][0]["calibration"]["available"]  # no probabilities, no calibration


def _saved_mlps(project, teacher, stem: str, seeds, name=lambda i: f"ref{i}") -> list[dict]:
    """MLPs of the teacher's architecture saved under models/ as safetensors, as config model specs."""
    specs = []
    for i, seed in enumerate(seeds):
        save_file(mlp(4, 2, hidden=[8], seed=seed).state_dict(), str(project / "models" / f"{stem}{i}.safetensors"))
        specs.append({**teacher, "path": f"models/{stem}{i}.safetensors", "name": name(i)})
    return specs


def test_audit_command_with_lineage_references(project):
    cfg = yaml.safe_load((project / "audit.yaml").read_text())
    teacher = cfg["models"]["teacher"]
    refs = _saved_mlps(project, teacher, "ref", range(50, 54))
    cfg["models"]["references"] = refs
    cfg["sections"] = ["agreement", "lineage"]
    cfg["lineage"] = {"p_value_method": "parametric", "n_probes": 60}
    cfg["policy"] = {"rules": [{"metric": "lineage.p_value", "max": 0.01}]}
    (project / "lineage.yaml").write_text(yaml.safe_dump(cfg))
    out = project / "lin"
    assert main(["audit", str(project / "lineage.yaml"), "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    lineage = results["comparisons"][0]["lineage"]
    assert lineage["n_references"] == 4 and lineage["p_value_method"].startswith("parametric")
    assert [m["role"] for m in results["models"]].count("reference") == 4
    assert results["findings"][0]["metric"] == "lineage.p_value"
    # negative controls from the config: other architectures trained with fresh seeds, calibrating the test
    controls = []
    for i in range(19):
        path = project / "models" / f"control{i}.safetensors"
        save_file(mlp(4, 2, hidden=[3], seed=80 + i).state_dict(), str(path))
        controls.append({"path": f"models/control{i}.safetensors", "name": f"control{i}", "arch": teacher["arch"],
                         "arch_kwargs": {**teacher["arch_kwargs"], "hidden": [3]}})
    cfg["models"]["controls"] = controls
    cfg["lineage"]["controls_mode"] = "calibrate"
    (project / "controls.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["audit", str(project / "controls.yaml"), "--out", str(project / "ctl"), "--quiet"]) == 0
    results = json.loads((project / "ctl" / "results.json").read_text())
    nc = results["comparisons"][0]["lineage"]["negative_controls"]
    nc_p, nc_verdict = results["comparisons"][0]["lineage"]["p_value"], results["comparisons"][0]["lineage"]["verdict"]
    assert nc["n"] == 19 and nc["calibrated"] and nc["names"][3] == "control3"
    assert [m["role"] for m in results["models"]].count("control") == 19
    assert results["config"]["models"]["controls"][0]["name"] == "control0"
    html = (project / "ctl" / "report.html").read_text()
    assert "Calibrated by the negative controls" in html and "control18" in html
    # positive controls from the config (here stand-ins: the plumbing, not the power), tested like each student
    positives = _saved_mlps(project, teacher, "own_student", range(90, 93), name=lambda i: f"own student <{i}>")
    cfg["models"]["positive_controls"] = positives
    (project / "positive.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["audit", str(project / "positive.yaml"), "--out", str(project / "pos"), "--quiet"]) == 0
    results = json.loads((project / "pos" / "results.json").read_text())
    lin = results["comparisons"][0]["lineage"]
    pc = lin["positive_controls"]
    assert pc["n"] == 3 and pc["names"] == [p["name"] for p in positives] and len(pc["p_values"]) == 3
    assert 0 <= pc["n_found"] <= 3 and len(pc["interval"]) == 2
    # the student's own test does not move
    assert lin["p_value"] == nc_p and lin["verdict"] == nc_verdict
    assert [m["role"] for m in results["models"]].count("positive control") == 3
    assert results["config"]["models"]["positive_controls"][2]["name"] == "own student <2>"
    html = (project / "pos" / "report.html").read_text()
    assert "Power for this teacher" in html and "3 positive controls of the lineage test" in html
    assert "own student &lt;2&gt;" in html and "own student <2>" not in html


def test_lineage_command_is_wired(capsys):
    with pytest.raises(SystemExit) as info:
        main(["lineage", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "--suspect" in out and "--teacher" in out

