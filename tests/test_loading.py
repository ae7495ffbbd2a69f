"""Safe loading: formats that cannot run code load; pickle is refused unless trusted, and runs no code."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.linear_model import LogisticRegression

from kdaudit import KDAuditError, UnsafeModelFileError
from kdaudit.models import (
    OnnxModel,
    PrecomputedModel,
    SklearnModel,
    TorchModel,
    detect_format,
    load_model,
)

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")


class Payload:
    """Unpickling this creates ``marker``: stands for any code an attacker's pickle would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class EvilState:
    """A non-sklearn type whose construction (``__setstate__``) runs code, for skops."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        open(state["marker"], "w").close()
        self.__dict__.update(state)


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


X = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)


def _ref(module):
    with torch.no_grad():
        return module.eval()(torch.from_numpy(X)).numpy()


# -- malicious files ---------------------------------------------------------------------------------------
def test_malicious_pickle_is_refused_and_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UnsafeModelFileError) as err:
        load_model(path)
    msg = str(err.value)
    assert str(path) in msg and "skops" in msg and "trust=True" in msg
    assert not marker.exists()
    # the same file with trust=True does run the payload: the refusal above is what kept it from running
    with pytest.raises(KDAuditError):
        load_model(path, trust=True)  # then fails: an open file is not a model
    assert marker.exists()


def test_joblib_and_unknown_pickle_extensions_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    for name in ("m.joblib", "m.pickle", "m.dat"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(Payload(marker), protocol=4))
        with pytest.raises(UnsafeModelFileError, match=name):
            load_model(path)
    assert not marker.exists()


def test_torch_file_with_pickled_object_is_refused_and_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"state_dict": net().state_dict(), "extra": Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(UnsafeModelFileError, match="model.pt") as err:
        load_model(path, arch=net)
    assert "state_dict" in str(err.value) and not marker.exists()
    load_model(path, arch=net, trust=True)  # trusted: full unpickling runs the payload
    assert marker.exists()


def test_skops_file_with_untrusted_type_is_refused_and_runs_no_code(tmp_path):
    import skops.io as sio

    marker = tmp_path / "pwned"
    path = tmp_path / "model.skops"
    sio.dump({"model": EvilState(marker)}, path)
    with pytest.raises(UnsafeModelFileError, match="EvilState"):
        load_model(path)
    assert not marker.exists()


# -- safe formats -----------------------------------------------------------------------------------------------
def test_state_dict_needs_arch(tmp_path):
    module = net(1)
    path = tmp_path / "weights.pt"
    torch.save(module.state_dict(), path)
    with pytest.raises(KDAuditError, match="'arch'"):
        load_model(path)
    m = load_model(path, arch=net)  # a factory
    assert isinstance(m, TorchModel) and m.name == "weights"
    import hashlib

    assert m.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == m.describe()["file_sha256"]
    np.testing.assert_allclose(m.predict(X), _ref(module), rtol=1e-6)
    assert m.fingerprint() == TorchModel(module).fingerprint()  # weights hash: same network, same sha
    with pytest.raises(KDAuditError, match="does not match"):
        load_model(path, arch=nn.Sequential(nn.Linear(4, 3)))
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "model_state_dict": module.state_dict()}, ckpt)
    np.testing.assert_allclose(load_model(ckpt, arch=net(5)).predict(X), _ref(module), rtol=1e-6)


def test_full_module_needs_trust(tmp_path):
    module = net(2)
    path = tmp_path / "full.pth"
    torch.save(module, path)
    with pytest.raises(UnsafeModelFileError, match="trust=True"):
        load_model(path)
    np.testing.assert_allclose(load_model(path, trust=True).predict(X), _ref(module), rtol=1e-6)


def test_torchscript_and_torch_export(tmp_path):
    module = net(3)
    ts = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(module), ts)
    assert detect_format(ts) == "torchscript"
    with pytest.raises(UnsafeModelFileError, match="TorchScript.*trust=True"):
        load_model(ts)  # TorchScript can run code on load: only a trusted file loads
    m = load_model(ts, trust=True)
    assert m.kind == "torchscript"
    np.testing.assert_allclose(m.predict(X), _ref(module), rtol=1e-5, atol=1e-6)

    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (torch.from_numpy(X),), dynamic_shapes=({0: batch},))
    pt2 = tmp_path / "exported.pt2"
    torch.export.save(program, pt2)
    with pytest.raises(UnsafeModelFileError, match="torch.export.*trust=True"):
        load_model(pt2)
    e = load_model(pt2, trust=True)
    assert e.kind == "torch_export"
    np.testing.assert_allclose(e.predict(X[:5]), _ref(module)[:5], rtol=1e-5, atol=1e-6)
    assert e.fingerprint() == m.fingerprint() == TorchModel(module).fingerprint()


def test_torch_export_archive_with_pickled_payload_is_refused(tmp_path):
    # torch.export.load reads sample inputs and pickled weights with full pickle when weights-only fails
    import zipfile

    program = torch.export.export(net(5), (torch.from_numpy(X),))
    clean = tmp_path / "clean.pt2"
    torch.export.save(program, clean)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data/sample_inputs/model.pt"):
                data = pickle.dumps(Payload(marker), protocol=2)
            dst.writestr(info, data)
    assert detect_format(evil) == "torch_export"
    with pytest.raises(UnsafeModelFileError, match="trust=True"):
        load_model(evil)
    assert not marker.exists()
    with pytest.raises(UnsafeModelFileError, match="trust=True"):
        load_model(clean)  # every torch.export archive needs trust, genuine or not


def test_safetensors_with_arch(tmp_path):
    from safetensors.torch import save_file

    module = net(4)
    path = tmp_path / "w.safetensors"
    save_file(module.state_dict(), str(path))
    with pytest.raises(KDAuditError, match="'arch'"):
        load_model(path)
    np.testing.assert_allclose(load_model(path, arch=net).predict(X), _ref(module), rtol=1e-6)


def test_skops_sklearn_model_loads(tmp_path):
    import skops.io as sio

    y = (X[:, 0] > 0).astype(int)
    est = LogisticRegression().fit(X, y)
    path = tmp_path / "lr.skops"
    sio.dump(est, path)
    m = load_model(path, name="lr")
    assert isinstance(m, SklearnModel) and m.name == "lr"
    np.testing.assert_allclose(m.predict(X), est.predict_proba(X), rtol=1e-6)


def test_trusted_pickle_of_sklearn_model(tmp_path):
    est = LogisticRegression().fit(X, (X[:, 1] > 0).astype(int))
    path = tmp_path / "lr.pkl"
    path.write_bytes(pickle.dumps(est))
    with pytest.raises(UnsafeModelFileError):
        load_model(path)
    assert isinstance(load_model(path, trust=True), SklearnModel)


def test_onnx_and_outputs_files(tmp_path):
    from test_models import _linear_onnx

    W = np.ones((4, 3), dtype=np.float32)
    b = np.zeros(3, dtype=np.float32)
    onnx_path = _linear_onnx(tmp_path / "m.onnx", W, b)
    assert isinstance(load_model(onnx_path), OnnxModel)
    npz = tmp_path / "outs.npz"
    np.savez(npz, probabilities=np.full((5, 2), 0.5), ids=np.arange(5))
    m = load_model(npz)
    assert isinstance(m, PrecomputedModel) and m.output == "probabilities" and m.n_classes == 2


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(KDAuditError, match="existing"):
        load_model(tmp_path / "nope.pt")
    odd = tmp_path / "model.txt"
    odd.write_text("hello")
    with pytest.raises(KDAuditError, match="model file"):
        load_model(odd)
