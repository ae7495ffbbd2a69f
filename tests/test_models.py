"""Model adapters: each one against the library it wraps."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn as nn
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from kdaudit import KDAuditError, QueryBudgetExceededError
from kdaudit.models import (
    Access,
    BlackBoxModel,
    EnsembleModel,
    OnnxModel,
    PrecomputedModel,
    SklearnModel,
    TorchModel,
    as_model,
)

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def Xy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    return X, y


def mlp(seed=0, d=4, c=3, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, c))


# -- torch ---------------------------------------------------------------------------------------------------
def test_torch_model_matches_module_and_restores_train_mode(Xy):
    X, _ = Xy
    net = mlp(dropout=0.5)
    net.train()
    m = TorchModel(net, name="t")
    out = m.predict(X)
    net.eval()
    with torch.no_grad():
        ref = net(torch.from_numpy(X)).numpy()
    net.train()
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)  # dropout was off: eval mode during predict
    assert net.training and all(mod.training for mod in net.modules())  # ...and the train state came back
    assert out.dtype == np.float32 and m.output == "logits" and m.access is Access.PROBABILITIES
    assert m.n_classes == 3  # inferred from the last Linear layer
    assert m.query_count == len(X)


def test_torch_model_float64_inputs_and_dataframe(Xy):
    import pandas as pd

    X, _ = Xy
    m = TorchModel(mlp(), name="t")
    a = m.predict(X.astype(np.float64))
    b = m.predict(pd.DataFrame(X))
    np.testing.assert_array_equal(a, b)


def test_torch_model_bf16_autocast_close_to_fp32(Xy):
    X, _ = Xy
    net = mlp()
    ref = TorchModel(net, name="a").predict(X)
    low = TorchModel(net, name="b", precision="bf16").predict(X)
    assert low.dtype == np.float32
    np.testing.assert_allclose(low, ref, atol=0.05)
    assert not np.array_equal(low, ref)  # autocast was really on
    with pytest.raises(KDAuditError, match="precision"):
        TorchModel(net, precision="int3")


def test_torch_fingerprint_is_weights_sha_and_tracks_inplace_changes():
    net = mlp()
    m = TorchModel(net, name="t")
    fp = m.fingerprint()
    assert len(fp) == 64 and fp == m.fingerprint()
    clone = mlp()  # same seed -> same weights, other objects
    assert TorchModel(clone).fingerprint() == fp
    with torch.no_grad():
        net[0].weight[0, 0] += 1.0  # in place: the remembered hash must not be reused
    assert m.fingerprint() != fp
    assert m.n_parameters() == sum(p.numel() for p in net.parameters())
    assert m.size_bytes() == sum(t.numel() * t.element_size() for t in net.state_dict().values())


def test_torch_model_rejects_cuda_without_gpu_and_bad_output():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(KDAuditError, match="device"):
        TorchModel(mlp(), device="cuda")
    with pytest.raises(KDAuditError, match="output"):
        TorchModel(mlp(), output="scores")


# -- scikit-learn -------------------------------------------------------------------------------------------
def test_sklearn_predict_proba_and_class_names(Xy):
    X, y = Xy
    names = np.array(["c", "a", "b"])[y]
    est = LogisticRegression(max_iter=200).fit(X, names)
    m = SklearnModel(est, name="lr")
    np.testing.assert_allclose(m.predict(X), est.predict_proba(X), rtol=1e-6)
    assert m.classes == ("a", "b", "c")  # sklearn's classes_ order, which is the column order
    assert m.n_parameters() == est.coef_.size + est.intercept_.size
    assert m.output_source == "predict_proba"
    idx = SklearnModel(LogisticRegression(max_iter=200).fit(X, y))
    assert idx.classes is None and idx.n_classes == 3  # integer classes 0..C-1 are indices, not names


def test_sklearn_decision_function_softmax_and_sigmoid(Xy):
    X, y = Xy
    multi = LinearSVC().fit(X, y)
    m = SklearnModel(multi)
    assert m.output_source == "decision_function"
    np.testing.assert_allclose(m.predict(X), scipy.special.softmax(multi.decision_function(X), axis=1),
                               rtol=1e-5, atol=1e-7)
    binary = LinearSVC().fit(X, y > 0)
    p = SklearnModel(binary).predict(X)
    np.testing.assert_allclose(p[:, 1], scipy.special.expit(binary.decision_function(X)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)


def test_sklearn_fingerprint_stable_and_content_based(Xy):
    X, y = Xy
    a = LogisticRegression(max_iter=200).fit(X, y)
    b = LogisticRegression(max_iter=200).fit(X, y)
    c = LogisticRegression(max_iter=200, C=0.01).fit(X, y)
    assert SklearnModel(a).fingerprint() == SklearnModel(b).fingerprint() != SklearnModel(c).fingerprint()
    with pytest.raises(KDAuditError, match="fit"):
        SklearnModel(LogisticRegression())


# -- ONNX ---------------------------------------------------------------------------------------------------
def _linear_onnx(path, W, b):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", W.shape[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", W.shape[1]])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_model_runs_with_onnxruntime(tmp_path, Xy):
    X, _ = Xy
    rng = np.random.default_rng(1)
    W = rng.normal(size=(4, 3)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    path = _linear_onnx(tmp_path / "lin.onnx", W, b)
    m = OnnxModel(path)
    np.testing.assert_allclose(m.predict(X.astype(np.float64)), X @ W + b, rtol=1e-5, atol=1e-5)
    assert m.name == "lin" and m.n_classes == 3 and m.output == "logits"
    assert m.n_parameters() == W.size + b.size
    import hashlib

    assert m.fingerprint() == hashlib.sha256(path.read_bytes()).hexdigest()


# -- black box ------------------------------------------------------------------------------------------------
class Api:
    """A fake remote model: counts calls and rows, optionally fails transiently first."""

    def __init__(self, probs_fn, fail_first=0, exc=ConnectionError):
        self.probs_fn, self.fail_first, self.exc = probs_fn, fail_first, exc
        self.calls = self.rows = 0

    def __call__(self, X):
        self.calls += 1
        if self.fail_first > 0:
            self.fail_first -= 1
            raise self.exc("temporarily unavailable")
        self.rows += len(X)
        return self.probs_fn(X)


def _probs(X):
    return scipy.special.softmax(X[:, :3] * 2.0, axis=1)


def test_blackbox_probabilities_counts_and_budget(Xy):
    X, _ = Xy
    api = Api(_probs)
    m = BlackBoxModel(api, n_classes=3, name="api", query_budget=150)
    np.testing.assert_allclose(m.predict(X[:100]), _probs(X[:100]), rtol=1e-6)
    assert m.query_count == 100 and m.remaining_budget == 50
    with pytest.raises(QueryBudgetExceededError, match="query_budget of 150") as err:
        m.predict(X[:51])
    assert api.calls == 1 and m.query_count == 100  # refused before asking
    assert err.value.used == 100 and err.value.budget == 150
    m.predict(X[:50])
    assert m.query_count == 150


def test_blackbox_retries_transient_errors_with_exponential_backoff(Xy):
    X, _ = Xy
    api = Api(_probs, fail_first=2)
    m = BlackBoxModel(api, n_classes=3, max_retries=3, backoff_s=0.25)
    waits = []
    m._sleep = waits.append
    m.predict(X[:10])
    # every attempt counts as sent: a failed call may still have reached the owner
    assert waits == [0.25, 0.5] and m.n_failures == 2 and m.n_calls == 3 and m.query_count == 30
    assert m.rows_answered == 10
    stubborn = BlackBoxModel(Api(_probs, fail_first=5), n_classes=3, max_retries=2, backoff_s=0.0)
    stubborn._sleep = lambda s: None
    with pytest.raises(ConnectionError):
        stubborn.predict(X[:10])
    assert stubborn.n_calls == 3 and stubborn.query_count == 30 and stubborn.rows_answered == 0
    broken = BlackBoxModel(Api(_probs, fail_first=1, exc=RuntimeError), n_classes=3, backoff_s=0.0)
    with pytest.raises(RuntimeError):  # not transient: no retry
        broken.predict(X[:10])
    assert broken.n_calls == 1


def test_blackbox_top_k_both_forms_give_the_same_dense_output(Xy):
    X, _ = Xy
    p = _probs(X[:20])
    idx = np.argsort(-p, axis=1)[:, :2]
    val = np.take_along_axis(p, idx, axis=1)
    dense_expected = np.zeros_like(p)
    np.put_along_axis(dense_expected, idx, val, axis=1)
    as_tuple = BlackBoxModel(lambda x: (idx, val), n_classes=3, access="top_k", top_k=2).predict(X[:20])
    as_dense = BlackBoxModel(lambda x: dense_expected, n_classes=3, access="top_k", top_k=2).predict(X[:20])
    np.testing.assert_allclose(as_tuple, dense_expected, rtol=1e-6)
    np.testing.assert_array_equal(as_tuple, as_dense)
    assert (as_tuple > 0).sum(axis=1).max() == 2
    repeated = idx.copy()
    repeated[3, 1] = repeated[3, 0]
    with pytest.raises(KDAuditError, match="repeated"):
        BlackBoxModel(lambda x: (repeated, val), n_classes=3, access="top_k", top_k=2).predict(X[:20])
    with pytest.raises(KDAuditError, match="top_k"):
        BlackBoxModel(lambda x: x, n_classes=3, access="top_k")


def test_blackbox_labels_as_indices_or_names(Xy):
    X, _ = Xy
    m = BlackBoxModel(lambda x: np.array(["b", "a", "c", "a"]), n_classes=3, access="labels",
                      classes=["a", "b", "c"])
    np.testing.assert_array_equal(m.predict(X[:4]), [1, 0, 2, 0])
    assert m.output == "labels" and m.access is Access.LABELS
    bad = BlackBoxModel(lambda x: np.array(["a", "z"]), n_classes=3, access="labels", classes=["a", "b", "c"])
    with pytest.raises(KDAuditError, match="'z'"):
        bad.predict(X[:2])


def test_blackbox_fingerprint_is_declared_identity():
    a = BlackBoxModel(lambda x: x, n_classes=3, name="api")
    b = BlackBoxModel(lambda x: x * 2, n_classes=3, name="api")
    c = BlackBoxModel(lambda x: x, n_classes=3, name="api", fingerprint="api v2")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


# -- precomputed, ensemble, as_model -----------------------------------------------------------------------
def test_precomputed_files_round_trip(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(2)
    p = scipy.special.softmax(rng.normal(size=(30, 3)), axis=1).astype(np.float32)
    ids = np.arange(100, 130)
    np.save(tmp_path / "p.npy", p)
    np.savez(tmp_path / "l.npz", logits=np.log(p), ids=ids)
    df = pd.DataFrame(p, columns=["c0", "c1", "c2"]).assign(id=ids)
    df.to_csv(tmp_path / "p.csv", index=False)
    df.to_parquet(tmp_path / "p.parquet")
    m_npy = PrecomputedModel.from_file(tmp_path / "p.npy")
    m_npz = PrecomputedModel.from_file(tmp_path / "l.npz")
    m_csv = PrecomputedModel.from_file(tmp_path / "p.csv")
    m_pq = PrecomputedModel.from_file(tmp_path / "p.parquet")
    assert m_npz.output == "logits" and m_csv.output == "probabilities"
    np.testing.assert_array_equal(m_npy.predict(np.array([3, 0])), p[[3, 0]])
    np.testing.assert_allclose(m_csv.predict(np.array([103, 100])), p[[3, 0]], rtol=1e-6)
    np.testing.assert_array_equal(m_pq.predict(np.array([129])), p[[29]])
    np.testing.assert_allclose(scipy.special.softmax(m_npz.predict(np.array([101])), axis=1), p[[1]], rtol=1e-5)
    assert m_csv.fingerprint() == m_pq.fingerprint()  # same values and ids, whatever the container


def test_ensemble_is_mean_of_member_probabilities(Xy):
    X, y = Xy
    nets = [mlp(seed=s) for s in range(3)]
    sk = LogisticRegression(max_iter=200).fit(X, y)
    ens = EnsembleModel([*nets, sk], name="teachers")
    expected = np.mean([scipy.special.softmax(TorchModel(n).predict(X), axis=1) for n in nets]
                       + [sk.predict_proba(X)], axis=0)
    np.testing.assert_allclose(ens.predict(X), expected, rtol=1e-5, atol=1e-7)
    assert ens.n_parameters() == sum(TorchModel(n).n_parameters() for n in nets) + sk.coef_.size + 3
    assert ens.fingerprint() != EnsembleModel(nets, name="teachers").fingerprint()
    weighted = EnsembleModel(nets[:2], weights=[3, 1])
    w_expected = 0.75 * scipy.special.softmax(TorchModel(nets[0]).predict(X), axis=1) + \
        0.25 * scipy.special.softmax(TorchModel(nets[1]).predict(X), axis=1)
    np.testing.assert_allclose(weighted.predict(X), w_expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(KDAuditError, match="class counts"):
        EnsembleModel([TorchModel(mlp(c=3), n_classes=3), TorchModel(mlp(c=4), n_classes=4)])
    with pytest.raises(KDAuditError, match=r"shape \(120, 4\)"):  # undeclared counts: the outputs disagree
        EnsembleModel([mlp(c=3), mlp(c=4)]).predict(X)
    with pytest.raises(KDAuditError, match="probability access"):
        EnsembleModel([BlackBoxModel(lambda x: x, n_classes=3, access="labels")])


def test_as_model_dispatch(tmp_path, Xy):
    X, y = Xy
    assert isinstance(as_model(mlp(), name="n"), TorchModel)
    assert isinstance(as_model(torch.jit.script(mlp())), TorchModel)
    assert isinstance(as_model(LogisticRegression(max_iter=100).fit(X, y)), SklearnModel)
    assert isinstance(as_model(np.zeros((3, 2)) + 0.5), PrecomputedModel)
    assert isinstance(as_model([mlp(0), mlp(1)]), EnsembleModel)
    assert isinstance(as_model(lambda x: x, n_classes=2), BlackBoxModel)
    m = TorchModel(mlp())
    assert as_model(m) is m
    with pytest.raises(KDAuditError, match="n_classes"):
        as_model(lambda x: x)
    with pytest.raises(KDAuditError, match="model"):
        as_model(42)


def test_int8_models_are_told_apart_and_counted():
    # dynamic int8 layers keep weights as packed params: their identity and size must come from those weights
    import warnings

    from kdaudit.distill import mlp, quantize_int8

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = quantize_int8(mlp(20, 3, hidden=(600,), seed=0))
        again = quantize_int8(mlp(20, 3, hidden=(600,), seed=0))
        src = mlp(20, 3, hidden=(600,), seed=0)
        first = next(m for m in src.modules() if isinstance(m, torch.nn.Linear))
        with torch.no_grad():
            first.weight[5, 7] += 0.5  # one weight, far from the start of the tensor's truncated repr
        b = quantize_int8(src)
    fa = as_model(a).fingerprint()
    assert fa == as_model(again).fingerprint()
    assert fa != as_model(b).fingerprint()
    float_model = mlp(20, 3, hidden=(600,), seed=0)
    assert as_model(a).n_parameters() == sum(p.numel() for p in float_model.parameters())
    # int8 weights take about a quarter of the float32 bytes
    assert as_model(a).size_bytes() < 0.4 * as_model(float_model).size_bytes()
