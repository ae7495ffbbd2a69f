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
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.html").is_file() and (out / "run.json").is_file()
    assert results["config"]["models"]["students"][0]["path"] == "models/student.safetensors"
    assert results["data"]["classes"] == ["neg", "pos"] and [c["student"] for c in results["comparisons"]] == ["tiny"]
    assert "verdict: PASS" in capsys.readouterr().out
    # the written results go straight into the gate
    assert main(["gate", str(out / "results.json")]) == 0
    strict_policy = project / "strict.yaml"
    strict_policy.write_text(yaml.safe_dump({"rules": [{"metric": "agreement.top1_agreement", "min": 1.01}]}))
    assert main(["gate", "--policy", str(strict_policy), str(out / "results.json")]) == 1
    assert main(["audit", str(project / "audit.yaml"), "--out", str(out), "--quiet", "--gate",
                 "--policy", str(strict_policy), "--replicates", "0"]) == 1


def test_audit_command_bad_config_is_one_line_exit_2(project, capsys):
    cfg = yaml.safe_load((project / "audit.yaml").read_text())
    cfg["models"]["students"][0]["path"] = "models/missing.safetensors"
    (project / "bad.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["audit", str(project / "bad.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "models.students[0].path" in err and "missing.safetensors" in err and "Traceback" not in err
    assert main(["audit", str(project / "nope.yaml")]) == 2
    # --debug shows the traceback instead
    with pytest.raises(Exception, match="does not exist"):
        main(["--debug", "audit", str(project / "nope.yaml")])


def test_lineage_command_is_wired():
    out = subprocess.run([sys.executable, "-m", "kdaudit.cli", "lineage", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--suspect" in out.stdout and "--teacher" in out.stdout
