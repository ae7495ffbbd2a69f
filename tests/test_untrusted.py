"""Untrusted input stays untrusted: a catalogue of hostile inputs, one per door into kdaudit.

Every loader, every config key that names a file or a callable, the gate and the black-box adapter get hostile input.
Each case asserts a clear error (a KDAuditError naming the input; exit 2 on the command line), that no code from the
input ran (a marker file the payload would create never appears), that nothing was written outside the output
folder, and that no query was lost or sent twice beyond the stated worst case.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
import zipfile
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch
import yaml

import kdaudit
from kdaudit import AuditData, ConfigError, KDAuditError, UnsafeModelFileError, audit
from kdaudit.cli import main
from kdaudit.distill import mlp
from kdaudit.models import BlackBoxModel, detect_format, load_model

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


# ------------------------------------------------------------------------------------------- hostile model files
class _Pickled:
    """Unpickling this creates the marker file: stands for any command a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _EvilScript(torch.nn.Module):
    """A TorchScript module whose compiled ``__setstate__`` writes a file of the sender's choosing on load."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def forward(self, x):
        return x[:, :3]

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.marker = state[0]
        self.training = state[1]
        torch.save(torch.zeros(1), state[0])


def evil_torchscript(path: Path, marker: Path) -> Path:
    torch.jit.script(_EvilScript(str(marker))).save(str(path))
    assert not marker.exists()
    return path


def evil_export_archive(path: Path, marker: Path) -> Path:
    """A torch.export archive whose member names differ in letter case from torch's own (torch's reader does not
    care, Python's zipfile does) and which carries a pickled opaque constant."""
    program = torch.export.export(torch.nn.Linear(4, 3), (torch.zeros(2, 4),))
    clean = path.with_name("clean.pt2")
    torch.export.save(program, clean)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename.upper(), src.read(info.filename))
        prefix = src.namelist()[0].split("/")[0].upper()
        dst.writestr(f"{prefix}/DATA/CONSTANTS/OPAQUE_OBJ_0.pt", pickle.dumps(_Pickled(marker), protocol=2))
    return path


def evil_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps(_Pickled(marker), protocol=2))
    return path


def evil_torch_module(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": torch.nn.Linear(4, 3).state_dict(), "extra": _Pickled(marker)}, path)
    return path


@pytest.fixture()
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a payload from an untrusted file ran"


def test_the_payloads_are_real(tmp_path):
    """With trust the payloads do run: the refusals below are what keeps them from running."""
    for build in (evil_torchscript, evil_pickle):
        marker = tmp_path / f"ran-{build.__name__}"
        path = build(tmp_path / f"{build.__name__}.bin", marker)
        try:
            load_model(path, trust=True)
        except Exception:  # noqa: BLE001 - a pickle opening a file is not a model; the payload ran first
            pass
        assert marker.exists(), build.__name__


CODE_FILES = [
    # (builder, file name, detected format): names chosen to pass for something harmless
    (evil_torchscript, "model.pt", "torchscript"),
    (evil_torchscript, "weights.bin", "torchscript"),
    (evil_torchscript, "model", "torchscript"),
    (evil_export_archive, "model.pt2", "torch_export"),
    (evil_export_archive, "weights.pt", "torch_export"),
    (evil_pickle, "model.pkl", "pickle"),
    (evil_pickle, "model", "pickle"),
    (evil_torch_module, "checkpoint.pt", "torch"),
]


@pytest.mark.parametrize("build, name, fmt", CODE_FILES, ids=[f"{b.__name__}-{n}" for b, n, _ in CODE_FILES])
def test_code_running_formats_are_refused_without_trust(tmp_path, marker, build, name, fmt):
    path = build(tmp_path / name, marker)
    assert detect_format(path) == fmt
    with pytest.raises(UnsafeModelFileError) as err:
        load_model(path)
    msg = str(err.value)
    assert str(path) in msg and "trust=True" in msg
    with pytest.raises(UnsafeModelFileError, match="--trust-suspect"):
        load_model(path, _trust_hint="--trust-suspect")


@pytest.mark.parametrize("name", ["model.pkl", "model.npy", "model.csv", "model.onnx", "model.safetensors",
                                  "model.parquet", "model.npz", "model.skops"])
def test_a_pickle_under_any_name_runs_nothing(tmp_path, marker, name):
    path = evil_pickle(tmp_path / name, marker)
    with pytest.raises(KDAuditError) as err:
        load_model(path)
    assert path.name in str(err.value)


def _write_yaml(path: Path, obj) -> Path:
    path.write_text(yaml.safe_dump(obj))
    return path


def _small_data(tmp_path, n=60):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    np.savez(tmp_path / "rows.npz", X=X, y=(X[:, 0] > 0).astype(np.int64))
    return X


def test_config_model_files_run_no_code_and_name_the_trust_key(tmp_path, marker, capsys):
    _small_data(tmp_path)
    torch.save(mlp(4, 2, hidden=()).state_dict(), tmp_path / "teacher.pt")
    evil_torchscript(tmp_path / "suspect.pt", marker)
    cfg = _write_yaml(tmp_path / "audit.yaml", {
        "models": {"teacher": {"path": "teacher.pt", "arch": "mlp",
                               "arch_kwargs": {"in_features": 4, "n_classes": 2, "hidden": []}},
                   "students": ["suspect.pt"]},
        "data": {"path": "rows.npz"}, "sections": ["agreement"], "bootstrap": {"replicates": 0}})
    assert main(["audit", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "TorchScript" in err and "'trust: true' under config key 'models.students[0]'" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch, kwargs", [("os:system", {"command": "touch PWNED"}),
                                          ("subprocess:run", {"args": ["touch", "PWNED"]}),
                                          ("builtins:exec", {"source": "open('PWNED', 'w')"})])
def test_config_arch_resolves_only_registered_architectures(tmp_path, marker, arch, kwargs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "m.pt")
    _small_data(tmp_path)
    raw = {"models": {"teacher": {"path": "m.pt", "arch": arch, "arch_kwargs": kwargs}, "students": ["m.pt"]},
           "data": {"path": "rows.npz"}}
    with pytest.raises(ConfigError, match=r"models\.teacher\.arch.*registered architecture.*trust: true"):
        kdaudit._config.parse_config(raw, base_dir=tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_a_trusted_arch_must_build_a_module_before_weights_load(tmp_path):
    torch.save(mlp(4, 2, hidden=()).state_dict(), tmp_path / "m.pt")
    with pytest.raises(KDAuditError, match="builds a torch.nn.Module"):
        load_model(tmp_path / "m.pt", arch="builtins:dict", arch_kwargs={"a": 1}, trust=True)
    with pytest.raises(KDAuditError, match="registered architecture"):
        load_model(tmp_path / "m.pt", arch="builtins:dict")
    m = load_model(tmp_path / "m.pt", arch="mlp", arch_kwargs={"in_features": 4, "n_classes": 2, "hidden": []})
    assert m.n_classes == 2


def test_lineage_cli_never_trusts_the_suspect(tmp_path, marker, capsys):
    teacher = tmp_path / "teacher.pt"
    torch.jit.script(torch.nn.Linear(4, 3)).save(str(teacher))
    suspect = evil_torchscript(tmp_path / "suspect.pt", marker)
    pt2 = evil_export_archive(tmp_path / "suspect.pt2", marker)
    np.save(tmp_path / "probes.npy", np.zeros((10, 4), dtype=np.float32))
    base = ["lineage", "--teacher", str(teacher), "--probes", str(tmp_path / "probes.npy")]
    assert main([*base, "--suspect", str(suspect), "--trust"]) == 2
    assert "'--trust' was removed" in capsys.readouterr().err
    for s in (suspect, pt2):
        assert main([*base, "--suspect", str(s), "--trust-teacher", "--trust-references", "--trust-controls"]) == 2
        err = capsys.readouterr().err
        assert "--trust-suspect" in err and "Traceback" not in err


def test_manifest_verification_reads_no_untrusted_code(tmp_path, marker):
    from kdaudit.lineage import verify_manifest, write_manifest
    good = tmp_path / "student.pt"
    torch.jit.script(torch.nn.Linear(4, 3)).save(str(good))  # the distiller's own file: trusted when written
    manifest = write_manifest(tmp_path / "m.json", teachers={"t": str(good)}, student=str(good),
                              distill_settings={}, data_sha256="0" * 64, trust=True)
    for evil in (evil_torchscript(tmp_path / "s.pt", marker), evil_export_archive(tmp_path / "s.pt2", marker)):
        res = verify_manifest(manifest, evil)
        assert not res.ok and "--trust-student" in res.checks[1]["detail"]
        assert main(["lineage", "--verify", str(manifest), "--student", str(evil)]) == 1


def test_onnx_external_data_cannot_point_outside_the_model_folder(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(12, dtype=np.float32).tobytes())
    (tmp_path / "sub").mkdir()
    W = onnx.TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 3])
    W.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("offset", "0"), ("length", "48")):
        W.external_data.add(key=k, value=v)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], initializer=[W])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "sub" / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(KDAuditError, match="external data files lie inside its own folder"):
        load_model(path)


# ------------------------------------------------------------------------------------------ malformed files
def _zip(members: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    return buf.getvalue()


MALFORMED = {
    "garbage.pt": b"\x00\x01 not a torch file",
    "garbage.pth": b"PK\x03\x04 truncated zip",
    "garbage.onnx": b"\x08\x07\x12\x04junk\xff\xff\xff",
    "header.safetensors": (20).to_bytes(8, "little") + b'{"x": broken json}  ',
    "random.safetensors": os.urandom(64),
    "schema.skops": _zip({"schema.json": b"{not json"}),
    "empty.npy": b"",
    "header.npy": b"\x93NUMPY\x01\x00garbage",
    "notzip.npz": b"PK\x03\x04 not a zip",
    "binary.csv": b"\xff\xfe\x00\x81 not utf-8\n\x80\x81",
    "garbage.parquet": b"PAR1 not parquet PAR1",
    "other.zip": _zip({"readme.txt": b"hello"}),
    "noext": b"just some text",
    "torch_zip_without_data.pt": _zip({"archive/data.pkl": b"\x80\x02garbage"}),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_model_files_give_a_clear_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(MALFORMED[name])
    with pytest.raises(KDAuditError) as err:
        load_model(path)
    assert name in str(err.value)


@pytest.mark.parametrize("name", ["notzip.npz", "binary.csv", "garbage.parquet", "header.npy"])
def test_malformed_data_and_probe_files_give_a_clear_error(tmp_path, name):
    from kdaudit._config import load_data_file
    from kdaudit.lineage._files import load_probes

    path = tmp_path / name
    path.write_bytes(MALFORMED[name])
    if path.suffix != ".npy":
        with pytest.raises(ConfigError, match=name):
            load_data_file(path)
    with pytest.raises(KDAuditError, match=name):
        load_probes(path)


def test_malformed_model_in_a_config_exits_2_without_traceback(tmp_path, capsys):
    _small_data(tmp_path)
    (tmp_path / "bad.onnx").write_bytes(MALFORMED["garbage.onnx"])
    cfg = _write_yaml(tmp_path / "audit.yaml", {"models": {"teacher": "bad.onnx", "students": ["bad.onnx"]},
                                                "data": {"path": "rows.npz"}})
    assert main(["audit", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.onnx" in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------- bounded reads
def test_a_decompression_bomb_parquet_fails_before_it_is_read(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kdaudit._io import READ_LIMITS

    path = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"a": np.zeros(300_000, dtype=np.int64), "y": np.zeros(300_000, dtype=np.int64)}), path)
    assert path.stat().st_size < 100_000  # compresses a thousandfold
    monkeypatch.setattr(READ_LIMITS, "max_rows", 100_000)
    for load in (lambda: load_model(path), lambda: kdaudit._config.load_data_file(path, label="y")):
        with pytest.raises(KDAuditError, match="300,000 rows, over the limit of 100,000.*KDAUDIT_MAX_ROWS"):
            load()


def test_a_zip_bomb_npz_fails_before_it_is_inflated(tmp_path, monkeypatch):
    from kdaudit._io import READ_LIMITS

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, probabilities=np.zeros((200_000, 10), dtype=np.float32))
    monkeypatch.setattr(READ_LIMITS, "max_bytes", 1_000_000)
    with pytest.raises(KDAuditError, match="expands to .* bytes, over the limit.*KDAUDIT_MAX_BYTES"):
        load_model(path)


# --------------------------------------------------------------------------------------------------- the gate
def _results(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    t, s = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    res = audit(t, [s], AuditData(X, y), sections=["agreement"], n_replicates=20, progress=False)
    return res.to_dict()


def _set(d, path, value):
    keys = path.split("/")
    for k in keys[:-1]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    if value is _DELETE:
        del d[keys[-1]]
    else:
        d[keys[-1]] = value


_DELETE = object()
HOSTILE_RESULTS = {
    "unknown schema": ("schema", "kdaudit-results/99", 2),
    "changed version": ("kdaudit_version", "9.9.0", 2),
    "one-row audit": ("data/n_rows", 1, 2),
    "no comparisons": ("comparisons", [], 2),
    "missing section": ("comparisons/0/agreement", _DELETE, 1),
    "NaN value": ("comparisons/0/agreement/headline/top1_agreement/value", float("nan"), 1),
    "text value": ("comparisons/0/agreement/headline/top1_agreement/value", "0.99", 1),
    "null value": ("comparisons/0/agreement/headline/top1_agreement/value", None, 1),
    "low above high": ("comparisons/0/agreement/headline/top1_agreement/low", 2.0, 1),
    "infinite bound": ("comparisons/0/agreement/headline/top1_agreement/high", float("inf"), 1),
    "unavailable without reason": ("comparisons/0/agreement/available", False, 1),
    "metric as text": ("comparisons/0/agreement/headline/top1_agreement", "high", 1),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_RESULTS))
def test_the_gate_fails_closed(tmp_path, case, capsys):
    results = _results(tmp_path)
    path, value, code = HOSTILE_RESULTS[case]
    _set(results, path, value)
    if case == "unavailable without reason":
        results["comparisons"][0]["agreement"]["reason"] = None
    f = tmp_path / "results.json"
    f.write_text(json.dumps(results))  # json writes NaN and Infinity as a hostile file may
    policy = _write_yaml(tmp_path / "p.yaml", {"rules": [{"metric": "agreement.top1_agreement", "min": 0.0}]})
    assert main(["gate", str(f), "--policy", str(policy)]) == code
    assert "Traceback" not in capsys.readouterr().err


def test_the_untouched_results_pass_the_same_gate(tmp_path):
    f = tmp_path / "results.json"
    f.write_text(json.dumps(_results(tmp_path)))
    policy = _write_yaml(tmp_path / "p.yaml", {"rules": [{"metric": "agreement.top1_agreement", "min": 0.0}]})
    assert main(["gate", str(f), "--policy", str(policy)]) == 0


# ------------------------------------------------------------------------------------------------ black boxes
def _api_probs(x):
    z = np.asarray(x, dtype=np.float64)[:, :2]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def test_a_hanging_black_box_times_out_and_is_retried(tmp_path):
    release = threading.Event()
    calls = []

    def hang(x):
        calls.append(len(x))
        if len(calls) < 3:
            release.wait(5)  # hangs (until the test ends)
        return _api_probs(x)

    m = BlackBoxModel(hang, n_classes=2, timeout_s=0.2, max_retries=3, backoff_s=0.0)
    out = m.predict(np.zeros((4, 4)))
    assert out.shape == (4, 2) and m.n_failures == 2 and m.query_count == 12 and m.rows_answered == 4
    release.set()


def test_a_black_box_cannot_outlive_its_deadline():
    def slow(x):
        time.sleep(0.15)
        return _api_probs(x)

    m = BlackBoxModel(slow, n_classes=2, deadline_s=0.4, backoff_s=0.0)
    with pytest.raises(TimeoutError, match="deadline_s"):
        for _ in range(10):
            m.predict(np.zeros((2, 4)))
    assert m.n_calls <= 4


def test_labels_access_refuses_fractional_labels():
    m = BlackBoxModel(lambda x: np.full(len(x), 1.5), n_classes=3, access="labels")
    with pytest.raises(KDAuditError, match="1.5"):
        m.predict(np.zeros((3, 4)))
    ok = BlackBoxModel(lambda x: np.full(len(x), 2.0), n_classes=3, access="labels")
    assert ok.predict(np.zeros((3, 4))).tolist() == [2, 2, 2]


def test_an_audit_sends_each_row_once_and_a_rerun_sends_none(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    data = AuditData(X, (X[:, 0] > 0).astype(np.int64))
    sent = []

    def vendor(x):
        sent.append(len(x))
        return _api_probs(x)

    teacher = torch.nn.Linear(4, 2)
    for run in range(2):
        box = BlackBoxModel(vendor, n_classes=2, name="vendor", query_budget=300, journal=tmp_path / "q.jsonl")
        audit(teacher, [box], data, sections=["agreement", "cost"], n_replicates=0, progress=False,
              batch_size=64)  # the cost section times the answers already given: no extra query
        assert box.query_count == (300 if run == 0 else 0) and box.journal.spent == 300
        box.journal.close()
    assert sum(sent) == 300


# ----------------------------------------------------------------------------------- silent wrong answers
def test_numeric_labels_keep_numeric_order(tmp_path):
    from kdaudit._config import load_data_file

    y = np.arange(12, dtype=np.float64) % 12
    import pandas as pd

    pd.DataFrame({"a": np.arange(12.0), "label": y}).to_csv(tmp_path / "f.csv", index=False)
    d = load_data_file(tmp_path / "f.csv", label="label")
    assert d.y_true.tolist() == list(range(12))  # 10.0 is class 10, not class 2
    from kdaudit._validation import encode_labels

    codes, names = encode_labels(np.array(["10", "2", "1"]), "labels")  # numbers as text: numeric order too
    assert names == ("1", "2", "10") and codes.tolist() == [2, 1, 0]
    pd.DataFrame({"a": [1.0], "label": [0.5]}).to_csv(tmp_path / "frac.csv", index=False)
    with pytest.raises(ConfigError, match="fractional label"):
        load_data_file(tmp_path / "frac.csv", label="label")


def test_text_features_and_the_one_sensitive_key(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.normal(size=40), "group": rng.choice(["a", "b"], 40),
                  "label": rng.integers(0, 2, 40)}).to_csv(tmp_path / "d.csv", index=False)
    base = {"models": {"teacher": "t.npy", "students": ["t.npy"]}}
    np.save(tmp_path / "t.npy", np.full((40, 2), 0.5, dtype=np.float32))
    top = kdaudit._config.parse_config({**base, "data": {"path": "d.csv", "label": "label"},
                                        "sensitive": ["group"]}, base_dir=tmp_path)
    nested = kdaudit._config.parse_config({**base, "data": {"path": "d.csv", "label": "label",
                                                            "sensitive": ["group"]}}, base_dir=tmp_path)
    for cfg in (top, nested):
        d = cfg.load_data()
        assert list(d.sensitive.columns) == ["group"] and d.X.shape == (40, 1)
    with pytest.raises(ConfigError, match="non-numeric feature columns"):
        kdaudit._config.parse_config({**base, "data": {"path": "d.csv", "label": "label"}},
                                     base_dir=tmp_path).load_data()
    with pytest.raises(ConfigError, match="both keys name"):
        kdaudit._config.parse_config({**base, "data": {"path": "d.csv", "sensitive": ["group"]},
                                      "sensitive": ["x"]}, base_dir=tmp_path)


def test_unknown_section_option_and_zero_weights():
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    data = AuditData(X, (X[:, 0] > 0).astype(np.int64))
    t = torch.nn.Linear(4, 2)
    with pytest.raises(KDAuditError, match=r"n_bins"):
        audit(t, [t], data, sections=["calibration"], section_options={"calibration": {"n_bin": 5}},
              progress=False)
    from kdaudit.metrics import expected_calibration_error

    with pytest.raises(KDAuditError, match="all zero"):
        expected_calibration_error(np.array([0, 1]), np.array([[0.6, 0.4], [0.3, 0.7]]), sample_weight=[0, 0])


def test_onnx_device_is_checked(tmp_path):
    from test_models import _linear_onnx

    path = _linear_onnx(tmp_path / "m.onnx", np.ones((4, 3), np.float32), np.zeros(3, np.float32))
    with pytest.raises(KDAuditError, match="'device'"):
        load_model(path, device="tpu9")


# --------------------------------------------------------------------------------------------- output folder
def test_outputs_are_replaced_as_a_set_and_nothing_is_written_elsewhere(tmp_path, monkeypatch):
    from kdaudit._io import write_file_set

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "summary.md").write_text("from an older run")
    before = set(tmp_path.iterdir())
    write_file_set(out, {"results.json": b"1", "report.html": b"1"})
    assert set(tmp_path.iterdir()) == before  # nothing left beside the folder
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "report.html", "results.json"]

    import kdaudit._io as kio

    def crash(a, b):
        raise KeyboardInterrupt  # the process dies just before the new set takes the old one's place

    monkeypatch.setattr(kio, "_exchange", crash)
    with pytest.raises(KeyboardInterrupt):
        write_file_set(out, {"results.json": b"2", "report.html": b"2"})
    assert (out / "results.json").read_bytes() == b"1" == (out / "report.html").read_bytes()
    monkeypatch.undo()
    write_file_set(out, {"results.json": b"3", "report.html": b"3"})
    assert set(tmp_path.iterdir()) == before and (out / "notes.txt").read_text() == "mine"


def test_two_audits_into_one_folder_do_not_interleave(tmp_path):
    from kdaudit._io import write_file_set

    out = tmp_path / "out"
    errors = []

    def writer(tag):
        try:
            for _ in range(20):
                write_file_set(out, {"results.json": tag, "run.json": tag, "report.html": tag})
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in (b"a", b"b")]
    for t in threads:
        t.start()
    def read_set():
        """The three files through one handle on the folder: the folder is swapped whole, so a reader that opens it
        once sees one set (three opens by path could straddle a swap and mix two sets, whatever the writer does)."""
        folder = os.open(out, os.O_RDONLY)
        try:
            got = set()
            for n in ("results.json", "run.json", "report.html"):
                fd = os.open(n, os.O_RDONLY, dir_fd=folder)
                with os.fdopen(fd, "rb") as fh:
                    got.add(fh.read())
            return got
        finally:
            os.close(folder)

    for _ in range(200):  # a reader never sees a mixed set
        try:
            got = read_set()
        except FileNotFoundError:  # not written yet, or the old set removed while it was read
            continue
        assert len(got) == 1
    for t in threads:
        t.join()
    assert not errors and len({(out / n).read_bytes() for n in ("results.json", "run.json")}) == 1


def test_report_shows_hostile_names_safely_and_keeps_them_whole_in_results(tmp_path):
    from _report_fixture import PLAIN, make_results

    from kdaudit.report import render_html

    long_name = "x" * 100_000
    names = {**PLAIN, "teacher": long_name, "students": ("a\x00b\u202eevil", "c\u2067d")}
    results = make_results(names=names, n=300, n_replicates=10, with_lineage=False)
    page = render_html(results, generated_at="2026-01-01T00:00:00+00:00")
    assert len(page) < 3_000_000
    assert "\x00" not in page and "\u202e" not in page and "\u2067" not in page
    assert 'http-equiv="Content-Security-Policy"' in page and "script-src 'none'" in page
    assert results["teacher"] == long_name  # results.json keeps every name whole


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b"[" * 5000 + b"]" * 5000, b"!!python/object:os.system {}"])
def test_hostile_config_and_policy_files_give_a_clear_error(tmp_path, content, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    assert main(["audit", str(bad), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    res = tmp_path / "results.json"
    res.write_text("{}")
    assert main(["gate", str(res), "--policy", str(bad)]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"\xff\xfe binary", b"[" * 100_000 + b"]" * 100_000, b"[1, 2]", b'{"a": NaN'])
def test_hostile_results_and_manifest_files_give_a_clear_error(tmp_path, content, capsys):
    from kdaudit.lineage import read_manifest

    bad = tmp_path / "results.json"
    bad.write_bytes(content)
    assert main(["gate", str(bad)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(KDAuditError):
        read_manifest(bad)


def test_hostile_cache_files_are_recomputed_not_trusted(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    data = AuditData(X, (X[:, 0] > 0).astype(np.int64))
    t = torch.nn.Linear(4, 2)
    cache = tmp_path / "cache"
    first = audit(t, [t], data, sections=["agreement"], n_replicates=0, cache_dir=cache, progress=False)
    for f in cache.rglob("*.npz"):  # a party with write access to the cache swaps in pickles
        f.write_bytes(pickle.dumps(_Pickled(tmp_path / "PWNED"), protocol=2))
    again = audit(t, [t], data, sections=["agreement"], n_replicates=0, cache_dir=cache, progress=False)
    assert not (tmp_path / "PWNED").exists()
    assert again.to_dict()["comparisons"] == first.to_dict()["comparisons"]


def _audit_until_killed(journal, received, outcome, die_at, budget):
    """Run in a forked child: an audit whose vendor is killed (SIGKILL) right after receiving call ``die_at``."""
    import signal

    from kdaudit import QueryBudgetExceededError
    from kdaudit.harness import run

    X = np.random.default_rng(0).normal(size=(1000, 4)).astype(np.float32)
    calls = []

    def vendor(x):
        calls.append(len(x))
        with open(received, "a") as fh:
            fh.write(f"{len(x)}\n")
        if len(calls) == die_at:
            os.kill(os.getpid(), signal.SIGKILL)  # the vendor got the rows; the answer never comes back
        return _api_probs(x)

    box = BlackBoxModel(vendor, n_classes=2, name="vendor", query_budget=budget, journal=journal)
    try:
        _, prov = run([box], AuditData(X), batch_size=100, progress=False)
        text = f"done {box.journal.spent} {box.journal.resent} {prov.models[0].queries}"
    except QueryBudgetExceededError:
        text = f"budget {box.journal.spent}"
    Path(outcome).write_text(text)
    os._exit(0)


def test_killed_audit_resumes_within_budget_and_counts_what_was_sent(tmp_path):
    import multiprocessing

    fork = multiprocessing.get_context("fork")  # the child shares the imported modules: no second start-up

    def go(die_at, budget):
        outcome = tmp_path / "outcome.txt"
        outcome.unlink(missing_ok=True)
        p = fork.Process(target=_audit_until_killed, args=(tmp_path / "q.jsonl", tmp_path / "got.txt", outcome,
                                                           die_at, budget))
        p.start()
        p.join(120)
        return p.exitcode, outcome.read_text().split() if outcome.exists() else None

    def received():
        return sum(int(v) for v in (tmp_path / "got.txt").read_text().split())

    assert go(die_at=6, budget=1000) == (-9, None)  # killed mid-run: 600 rows sent, 500 answered
    # resumed with a budget equal to the rows: 500 rows are still to be sent and only 400 are left, so the run is
    # refused before it sends anything
    assert go(die_at=-1, budget=1000) == (0, ["budget", "600"]) and received() == 600
    # with room for the one batch in flight at the kill (the stated worst case), the audit completes and the
    # journal counts exactly what the vendor received
    code, (word, spent, resent, this_run) = go(die_at=-1, budget=1100)
    assert word == "done" and int(spent) == received() == 1100 and int(resent) == 100 and int(this_run) == 500
