"""The harness: same rows in the same order, outputs equal to direct computation, provenance, cache, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.special
import torch
import torch.nn as nn
from sklearn.linear_model import LogisticRegression

from kdaudit import AuditData, ModelExecutionError, QueryBudgetExceededError
from kdaudit.harness import RunResult, measure_cost, run
from kdaudit.models import Access, BlackBoxModel, PrecomputedModel, TorchModel

torch.set_num_threads(1)

N, D, C = 300, 5, 3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    y = np.argmax(X[:, :C] + 0.3 * rng.normal(size=(N, C)), axis=1)
    sens = pd.DataFrame({"group": np.where(X[:, 4] > 0, "a", "b")})
    return AuditData(X, y_true=y, sensitive=sens, ids=np.arange(1000, 1000 + N), name="toy")


def mlp(seed, hidden=16):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, hidden), nn.ReLU(), nn.Linear(hidden, C))


def logits_of(module, X):
    with torch.no_grad():
        return module.eval()(torch.from_numpy(np.asarray(X))).double().numpy()


class CountingApi:
    """A black-box endpoint: records every row it was asked about; optionally breaks after ``fail_after`` rows."""

    def __init__(self, fail_after=None):
        self.fail_after = fail_after
        self.rows_asked = 0

    def __call__(self, X):
        if self.fail_after is not None and self.rows_asked + len(X) > self.fail_after:
            raise RuntimeError("endpoint crashed")
        self.rows_asked += len(X)
        return scipy.special.softmax(2.0 * np.asarray(X)[:, :C], axis=1)


def test_outputs_match_direct_computation_teacher_first(data):
    teacher, student = mlp(0, 32), mlp(1, 8)
    sk = LogisticRegression(max_iter=300).fit(data.X, data.y_true)
    api = CountingApi()
    res = run({"student": student, "sk": sk, "teacher": teacher,
               "api": BlackBoxModel(api, n_classes=C, name="api")},
              data, teacher="teacher", batch_size=64, progress=False)
    assert isinstance(res, RunResult)
    out, prov = res
    assert out.names == ["teacher", "student", "sk", "api"] and out.teacher == "teacher"
    assert out.students == ["student", "sk", "api"]
    np.testing.assert_array_equal(out.ids, data.ids)
    assert out.data_sha256 == data.fingerprint() == prov.data_sha256
    for name, module in (("teacher", teacher), ("student", student)):
        mo = out[name]
        ref_logits = logits_of(module, data.X)
        np.testing.assert_allclose(mo.logits, ref_logits, rtol=1e-5, atol=1e-6)
        assert mo.probs.dtype == np.float32 and mo.probs.shape == (N, C)
        # float64 softmax then cast: equal to scipy's softmax of the logits up to float32 rounding
        np.testing.assert_allclose(mo.probs, scipy.special.softmax(mo.logits.astype(np.float64), axis=1),
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(mo.labels, ref_logits.argmax(axis=1))
    np.testing.assert_allclose(out["sk"].probs, sk.predict_proba(data.X), rtol=1e-6)
    assert out["sk"].logits is None
    assert api.rows_asked == N
    np.testing.assert_allclose(out["api"].probs, api(data.X), rtol=1e-6)


def test_softmax_keeps_tiny_probabilities():
    # logits 0 and -100: float32 softmax computed naively in float32 keeps e^-100 ~ 3.7e-44 (a float32
    # subnormal); the float64 path must too, and must not overflow for huge logits
    X = np.zeros((4, 1), dtype=np.float32)
    logits = np.array([[0.0, -100.0, 5.0], [1e4, 0.0, -1e4], [3.0, 3.0, 3.0], [-50.0, 50.0, 0.0]])
    out, _ = run([PrecomputedModel(logits, name="p", kind="logits")], AuditData(X), progress=False)
    np.testing.assert_allclose(out["p"].probs, scipy.special.softmax(logits, axis=1).astype(np.float32),
                               rtol=1e-6, atol=0)
    assert np.isfinite(out["p"].probs).all()


def test_provenance(data):
    teacher = TorchModel(mlp(0), name="t")
    res = run([teacher, BlackBoxModel(CountingApi(), n_classes=C, name="api")], data, seed=7,
              batch_size=100, progress=False)
    prov = res.provenance
    assert prov.seed == 7 and prov.n_rows == N and prov.batch_size == 100 and prov.device == "cpu"
    assert prov.precision == "fp32"
    for key in ("python", "numpy", "torch", "scikit-learn", "kdaudit"):
        assert prov.versions[key]
    rec = {r.name: r for r in prov.models}
    assert rec["t"].sha256 == teacher.fingerprint() and rec["t"].kind == "torch"
    assert rec["t"].n_parameters == teacher.n_parameters()
    assert rec["api"].queries == N and rec["api"].queries_this_run == N and rec["api"].access == "probabilities"
    d = prov.to_dict(include_timing=False)
    assert "wall_time_s" not in d and "queries_this_run" not in d["models"][0]
    assert prov.wall_time_s > 0


def test_cache_hit_asks_no_queries_and_gives_identical_outputs(tmp_path, data):
    api = CountingApi()
    teacher = mlp(0)
    first = run([teacher, BlackBoxModel(api, n_classes=C, name="api")], data, batch_size=64,
                cache_dir=tmp_path, progress=False)
    assert api.rows_asked == N
    api2 = CountingApi()
    second = run([teacher, BlackBoxModel(api2, n_classes=C, name="api")], data, batch_size=64,
                 cache_dir=tmp_path, progress=False)
    assert api2.rows_asked == 0
    for name in ("Sequential", "api"):
        np.testing.assert_array_equal(first.outputs[name].probs, second.outputs[name].probs)
    rec = {r.name: r for r in second.provenance.models}
    assert rec["api"].from_cache and rec["api"].queries_this_run == 0 and rec["api"].queries == N
    # the deterministic part of the provenance is the same for a fresh and a cached run
    assert first.provenance.to_dict(include_timing=False) == second.provenance.to_dict(include_timing=False)
    # other data, or another precision, is another cache entry
    run([teacher], data.subset(np.arange(50)), cache_dir=tmp_path, progress=False)
    run([teacher], data, cache_dir=tmp_path, precision="bf16", progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 4
    # the device is part of the key (CPU and CUDA kernels differ in the last bits); models without one are "host"
    from kdaudit.harness._cache import OutputCache
    from kdaudit.harness._run import _device_of

    assert _device_of(TorchModel(teacher)) == "cpu" and _device_of(BlackBoxModel(api, n_classes=C, name="api")) == "host"
    assert OutputCache.key("m", "d", "fp32", device="cpu") != OutputCache.key("m", "d", "fp32", device="cuda")
    assert all("-cpu-" in f.name or "-host-" in f.name for f in tmp_path.glob("*.npz"))


def test_interrupted_run_resumes_without_requerying(tmp_path, data):
    teacher = mlp(0)
    broken = CountingApi(fail_after=130)
    with pytest.raises(ModelExecutionError) as err:
        run([teacher, BlackBoxModel(broken, n_classes=C, name="api")], data, batch_size=20,
            checkpoint_every=3, cache_dir=tmp_path, progress=False)
    e = err.value
    assert e.model == "api" and e.rows_done == 120 and broken.rows_asked == 120
    assert "'api'" in str(e) and "RuntimeError" in str(e) and "120" in str(e)
    assert set(e.partial) == {"Sequential", "api"}
    np.testing.assert_allclose(e.partial["api"].probs, CountingApi()(data.X[:120]), rtol=1e-6)
    assert len(e.partial["Sequential"]) >= 120

    fixed = CountingApi()
    # another batch size on the re-run: resuming works from any row, not only batch boundaries
    res = run([teacher, BlackBoxModel(fixed, n_classes=C, name="api")], data, batch_size=64,
              checkpoint_every=3, cache_dir=tmp_path, progress=False)
    assert fixed.rows_asked == N - 120  # only the rows the broken run did not get answered
    rec = {r.name: r for r in res.provenance.models}
    assert rec["api"].queries_this_run == N - 120 and rec["api"].queries == N
    assert rec["api"].rows_from_cache == 120 and rec["Sequential"].queries_this_run < N
    np.testing.assert_allclose(res.outputs["api"].probs, CountingApi()(data.X), rtol=1e-6)
    fresh = run([teacher, BlackBoxModel(CountingApi(), n_classes=C, name="api")], data, progress=False)
    for name in ("Sequential", "api"):
        np.testing.assert_array_equal(res.outputs[name].probs, fresh.outputs[name].probs)
    assert not list(tmp_path.glob("*.partial"))  # progress files are removed once outputs are complete


def test_query_budget_checked_before_any_query(data):
    api = CountingApi()
    with pytest.raises(QueryBudgetExceededError, match="query_budget of 100"):
        run([mlp(0), BlackBoxModel(api, n_classes=C, name="api", query_budget=100)], data, progress=False)
    assert api.rows_asked == 0


def test_limited_access_models(data):
    X = np.asarray(data.X)
    top = BlackBoxModel(lambda x: scipy.special.softmax(np.asarray(x)[:, :C], axis=1) *
                        (np.argsort(np.argsort(-np.asarray(x)[:, :C], axis=1), axis=1) < 2),
                        n_classes=C, name="top2", access="top_k", top_k=2)
    lab = BlackBoxModel(lambda x: np.argmax(np.asarray(x)[:, :C], axis=1), n_classes=C, name="labels",
                        access="labels")
    out, prov = run([mlp(0), top, lab], data, progress=False)
    assert out["top2"].access is Access.TOP_K and out["top2"].top_k == 2
    assert ((out["top2"].probs > 0).sum(axis=1) <= 2).all() and (out["top2"].probs.sum(axis=1) < 1).all()
    np.testing.assert_array_equal(out["labels"].labels, X[:, :C].argmax(axis=1))
    np.testing.assert_array_equal(out["labels"].probs, np.eye(C, dtype=np.float32)[X[:, :C].argmax(axis=1)])
    np.testing.assert_array_equal(out["top2"].labels, out["labels"].labels)


def test_ensemble_teacher_and_precomputed_by_id(data):
    members = [mlp(s) for s in range(3)]
    expected = np.mean([scipy.special.softmax(logits_of(m, data.X), axis=1) for m in members], axis=0)
    perm = np.random.default_rng(1).permutation(N)
    pre = PrecomputedModel(expected[perm], ids=data.ids[perm], name="pre")  # shuffled rows, matched by id
    out, prov = run({"teachers": members, "pre": pre}, data, progress=False)
    np.testing.assert_allclose(out["teachers"].probs, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["pre"].probs, expected, rtol=1e-6)
    rec = prov.models[0]
    assert rec.kind == "ensemble" and rec.members == ("teachers[0]", "teachers[1]", "teachers[2]")


def test_dataframe_and_memmap_inputs(tmp_path, data):
    X = np.asarray(data.X)
    mm = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.load(tmp_path / "X.npy", mmap_mode="r")
    t = mlp(0)
    a, _ = run([t], AuditData(ro), batch_size=32, progress=False)
    b, _ = run([t], AuditData(pd.DataFrame(X, columns=list("abcde"))), batch_size=32, progress=False)
    np.testing.assert_array_equal(a["Sequential"].probs, b["Sequential"].probs)


def test_progress_bar(capsys, data):
    run([mlp(0)], data, progress=False)
    assert "kdaudit" not in capsys.readouterr().err
    run([mlp(0)], data, progress=True)
    assert "kdaudit: running models" in capsys.readouterr().err


def test_bf16_run_close_to_fp32(data):
    t = mlp(0)
    a, pa = run([t], data, progress=False)
    b, pb = run([t], data, precision="bf16", progress=False)
    np.testing.assert_allclose(a["Sequential"].probs, b["Sequential"].probs, atol=0.02)
    assert pb.precision == "bf16" and pa.precision == "fp32"


def test_measure_cost(data):
    t = TorchModel(mlp(0, 64), name="t")
    cost = measure_cost(t, data, batch_size=50, n_warmup=1, n_batches=4)
    assert cost["n_parameters"] == t.n_parameters() and cost["size_bytes"] == t.size_bytes()
    assert 0 < cost["latency_ms_median"] <= cost["latency_ms_p90"]
    assert cost["throughput_rows_per_s"] > 0 and cost["batch_size"] == 50 and cost["n_batches"] == 4
    assert t.query_count == 50 * 5  # every timed or warm-up row was really computed
    sk = LogisticRegression(max_iter=200).fit(data.X, data.y_true)
    assert measure_cost(sk, data, batch_size=1000, n_batches=2)["n_parameters"] == D * C + C  # wraps around data


def test_teacher_given_as_object_goes_first(data):
    t, s = TorchModel(mlp(0), name="t"), TorchModel(mlp(1), name="s")
    assert run([s], data, teacher=t, progress=False).outputs.names == ["t", "s"]
    assert run([s, t], data, teacher=t, progress=False).outputs.names == ["t", "s"]


# -- CUDA (run where a GPU exists; the benchmark covers speed) ------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_outputs_match_cpu(data):
    t, s = mlp(0, 64), mlp(1, 8)
    cpu, _ = run({"t": t, "s": s}, data, batch_size=32, progress=False)
    gpu, prov = run({"t": t, "s": s}, data, batch_size=32, device="cuda", checkpoint_every=2, progress=False)
    assert prov.device.startswith("cuda")
    for name in ("t", "s"):
        np.testing.assert_allclose(gpu[name].probs, cpu[name].probs, atol=1e-5)
        np.testing.assert_allclose(gpu[name].logits, cpu[name].logits, atol=1e-4)
    low, prov = run({"t": t, "s": s}, data, batch_size=32, device="cuda", precision="bf16", progress=False)
    assert prov.precision == "bf16"
    np.testing.assert_allclose(low["t"].probs, cpu["t"].probs, atol=0.03)
    ens, _ = run({"ens": [t, s]}, data, batch_size=32, device="cuda", progress=False)
    np.testing.assert_allclose(ens["ens"].probs, (cpu["t"].probs + cpu["s"].probs) / 2, atol=1e-5)
    t.to("cpu"), s.to("cpu")


@cuda
def test_cuda_resume_after_failure(tmp_path, data):
    t = mlp(0)
    with pytest.raises(ModelExecutionError):
        run([t, BlackBoxModel(CountingApi(fail_after=100), n_classes=C, name="api")], data, batch_size=20,
            device="cuda", checkpoint_every=2, cache_dir=tmp_path, progress=False)
    fixed = CountingApi()
    res = run([t, BlackBoxModel(fixed, n_classes=C, name="api")], data, batch_size=20, device="cuda",
              checkpoint_every=2, cache_dir=tmp_path, progress=False)
    assert fixed.rows_asked == N - 100
    ref, _ = run([t], data, device="cuda", progress=False)
    np.testing.assert_allclose(res.outputs["Sequential"].probs, ref["Sequential"].probs, atol=1e-6)
    t.to("cpu")


def test_deferred_copy_path_gives_the_same_outputs(tmp_path, data, monkeypatch):
    # the path CUDA outputs take (queued per batch, copied at flushes one flush late), exercised on the CPU
    import kdaudit.harness._run as harness_run

    t = mlp(0)
    direct, _ = run([t], data, batch_size=16, progress=False)
    monkeypatch.setattr(harness_run, "_DEFER_CPU", True)
    deferred, _ = run([t], data, batch_size=16, checkpoint_every=3, progress=False)
    np.testing.assert_array_equal(deferred["Sequential"].probs, direct["Sequential"].probs)
    np.testing.assert_array_equal(deferred["Sequential"].logits, direct["Sequential"].logits)
    with pytest.raises(ModelExecutionError) as err:
        run([t, BlackBoxModel(CountingApi(fail_after=150), n_classes=C, name="api")], data, batch_size=16,
            checkpoint_every=3, cache_dir=tmp_path, progress=False)
    assert len(err.value.partial["Sequential"]) >= 144
    fixed = CountingApi()
    res = run([t, BlackBoxModel(fixed, n_classes=C, name="api")], data, batch_size=16, checkpoint_every=3,
              cache_dir=tmp_path, progress=False)
    assert fixed.rows_asked == N - 144
    np.testing.assert_array_equal(res.outputs["Sequential"].probs, direct["Sequential"].probs)
