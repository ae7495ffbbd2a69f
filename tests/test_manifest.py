"""Lineage manifests: written atomically as canonical JSON with hashes; verified against student files."""

from __future__ import annotations

import json

import pytest
import torch

from kdaudit import KDAuditError
from kdaudit.lineage import (
    MANIFEST_SCHEMA,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from kdaudit.models import TorchModel, sha256_file


def _save(module: torch.nn.Module, path) -> str:
    torch.jit.trace(module.eval(), torch.zeros(1, 4)).save(str(path))
    return str(path)


@pytest.fixture()
def files(tmp_path):
    torch.manual_seed(0)
    teacher = _save(torch.nn.Linear(4, 3), tmp_path / "teacher.pt")
    student_module = torch.nn.Linear(4, 3)
    student = _save(student_module, tmp_path / "student.pt")
    return tmp_path, teacher, student, student_module


def test_write_manifest_records_hashes_and_settings(files):
    tmp, teacher, student, _ = files
    path = write_manifest(tmp / "m.json", trust=True, teachers={"big": teacher}, student=student,
                          distill_settings={"temperature": 4.0, "alpha": 0.9}, data_sha256="a" * 64,
                          extra={"ticket": "KD-1"})
    doc = read_manifest(path)
    assert doc["schema"] == MANIFEST_SCHEMA
    assert doc["teachers"]["big"]["file_sha256"] == sha256_file(teacher)
    assert doc["student"]["file_sha256"] == sha256_file(student)
    assert doc["student"]["weights_sha256"] is not None
    assert doc["distill_settings"] == {"alpha": 0.9, "temperature": 4.0} and doc["data_sha256"] == "a" * 64
    # canonical: same inputs, same bytes; nothing left behind by the atomic write
    first = path.read_bytes()
    write_manifest(tmp / "m.json", trust=True, teachers={"big": teacher}, student=student,
                   distill_settings={"alpha": 0.9, "temperature": 4.0}, data_sha256="a" * 64, extra={"ticket": "KD-1"})
    assert path.read_bytes() == first
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".")] == []


def test_verify_match_and_tampered_student(files):
    tmp, teacher, student, module = files
    m = write_manifest(tmp / "m.json", trust=True, teachers={"big": teacher}, student=student, distill_settings={},
                       data_sha256="b" * 64)
    res = verify_manifest(m, student, teachers={"big": teacher})
    assert res.ok and res.status == "match" and all(c["ok"] for c in res.checks)
    with torch.no_grad():
        module.weight[0, 0] += 1e-3  # a tampered student: one weight changed
    tampered = _save(module, tmp / "tampered.pt")
    res = verify_manifest(m, tampered)
    assert not res.ok and res.status == "mismatch"
    assert "differ" in res.checks[1]["detail"]
    assert not verify_manifest(m, student, teachers={"other": teacher}).ok


def test_same_weights_in_another_file_match(files):
    tmp, teacher, student, module = files
    m = write_manifest(tmp / "m.json", trust=True, teachers={"t": teacher}, student=student, distill_settings={},
                       data_sha256="c" * 64)
    resaved = tmp / "resaved.pt"
    torch.jit.script(module.eval()).save(str(resaved))  # scripted, not traced: different bytes, same weights
    assert sha256_file(resaved) != sha256_file(student)
    untrusted = verify_manifest(m, resaved)  # TorchScript can run code on load: not read unless trusted
    assert not untrusted.ok and "--trust-student" in untrusted.checks[1]["detail"]
    res = verify_manifest(m, resaved, trust_student=True)
    assert res.ok and "weights" in res.checks[1]["detail"]


def test_edited_manifest_is_detected(files):
    tmp, teacher, student, _ = files
    m = write_manifest(tmp / "m.json", trust=True, teachers={"t": teacher}, student=student, distill_settings={"epochs": 3},
                       data_sha256="d" * 64)
    doc = json.loads(m.read_text())
    doc["distill_settings"]["epochs"] = 30
    m.write_text(json.dumps(doc))
    res = verify_manifest(m, student)
    assert not res.ok and res.checks[0]["check"] == "manifest intact" and not res.checks[0]["ok"]


def test_manifest_from_model_objects(tmp_path):
    model = TorchModel(torch.nn.Linear(4, 3), name="s")
    m = write_manifest(tmp_path / "m.json", teachers={"t": torch.nn.Linear(4, 3)}, student=model,
                       distill_settings={}, data_sha256="e" * 64)
    doc = read_manifest(m)
    assert doc["student"]["file_sha256"] is None and doc["student"]["weights_sha256"] == model.fingerprint()


def test_bad_manifest_input(tmp_path, files):
    _, teacher, student, _ = files
    with pytest.raises(KDAuditError, match="data_sha256"):
        write_manifest(tmp_path / "m.json", teachers={"t": teacher}, student=student, distill_settings={},
                       data_sha256="short")
    with pytest.raises(KDAuditError, match="teachers"):
        write_manifest(tmp_path / "m.json", teachers={}, student=student, distill_settings={}, data_sha256="f" * 64)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(KDAuditError, match="manifest"):
        verify_manifest(tmp_path / "junk.json", student)
    (tmp_path / "other.json").write_text(json.dumps({"schema": "x"}))
    with pytest.raises(KDAuditError, match="manifest"):
        read_manifest(tmp_path / "other.json")
    good = write_manifest(tmp_path / "good.json", teachers={"t": teacher}, student=student, distill_settings={},
                          data_sha256="f" * 64)
    with pytest.raises(KDAuditError, match="student_file"):
        verify_manifest(good, tmp_path / "missing.pt")
