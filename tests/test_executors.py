"""Executors without Ray: the unit fold equals the in-process audit, in any schedule; sharded parquet; config, CLI."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import yaml
from _executor_fixture import KW, fit_models, make_data, results_text, write_shards

from kdaudit import ConfigError, KDAuditError
from kdaudit._audit import audit
from kdaudit._config import parse_config
from kdaudit.executors._base import setup as run_setup
from kdaudit.executors import (
    EXECUTORS,
    ColumnModel,
    Executor,
    LocalExecutor,
    ParquetSource,
    RayExecutor,
    get_executor,
    query_pool,
    register_executor,
    train_pool,
)
from kdaudit.models import PrecomputedModel


@pytest.fixture(scope="module")
def setup():
    data = make_data()
    teacher, students = fit_models(data)
    return data, teacher, students, audit(teacher, students, data, **KW)


class Scrambled(Executor):
    """Computes units in a shuffled order, some of them twice (a retry), and yields them in unit order, as the
    contract asks: what any worker schedule, with lost workers, looks like to the driver."""

    name = "scrambled"

    def map(self, task, units):
        run_setup(task)
        order = np.random.default_rng(0).permutation(len(units))
        done = {}
        for i in order:
            if i % 2:
                task(units[i])  # a first attempt whose result is lost
            done[i] = task(units[i])
        for i in range(len(units)):
            yield done[i]


def test_local_executor_streams(setup):
    data, teacher, students, legacy = setup
    local = audit(teacher, students, data, executor="local", **KW)
    assert local.outputs is None and local.run_info["executor"]["kind"] == "local"


def test_units_in_any_schedule_give_the_same_bytes(setup):
    data, teacher, students, legacy = setup
    local = audit(teacher, students, data, executor=LocalExecutor(), block_rows=500, **KW)
    assert results_text(audit(teacher, students, data, executor=Scrambled(), block_rows=500, **KW)) \
        == results_text(local)
    # the streamed path agrees with the in-memory one to rounding (and the temperature fit, see ARCHITECTURE.md)
    a, b = json.loads(results_text(local)), json.loads(results_text(legacy))
    assert a["data"] == b["data"]
    for ca, cb in zip(a["comparisons"], b["comparisons"]):
        for section in ("agreement", "calibration", "bias", "fingerprint"):
            for key, est in ca[section]["headline"].items():
                for f in ("value", "low", "high"):
                    other = cb[section]["headline"][key][f]
                    if other is None or est[f] is None:  # no interval (point estimate only): absent on both paths
                        assert est[f] is other, key
                    else:
                        assert est[f] == pytest.approx(other, rel=1e-4, abs=1e-6), key


def test_labels_only_and_unlabelled_sections_are_unavailable_alike(setup):
    data, teacher, students, _ = setup
    from kdaudit.models import BlackBoxModel

    labels = BlackBoxModel(lambda X: students["close"].predict(np.asarray(X)), n_classes=3, access="labels",
                           name="labels-only")
    kw = dict(KW, sections=["agreement", "calibration", "bias", "fingerprint"])
    plain = audit(teacher, {"labels-only": labels}, data, executor="local", **kw)
    labels.query_count = 0
    through = audit(teacher, {"labels-only": labels}, data, executor=Scrambled(), **kw)
    assert results_text(through) == results_text(plain)
    calibration = plain.results["comparisons"][0]["calibration"]
    assert not calibration["available"] and "labels" in calibration["reason"]  # the one skip rule
    # without labels, each section that needs them reports its own reason, on any executor
    unlabelled = type(data)(data.X, sensitive=data.sensitive, ids=data.ids, name=data.name)
    labels.query_count = 0  # the model's description in results.json counts its queries so far
    plain = audit(teacher, {"labels-only": labels}, unlabelled, executor="local", block_rows=500, **kw)
    labels.query_count = 0
    through = audit(teacher, {"labels-only": labels}, unlabelled, executor=Scrambled(), block_rows=500, **kw)
    assert results_text(through) == results_text(plain)
    comp = plain.results["comparisons"][0]
    assert not comp["fingerprint"]["available"] and "no true labels" in comp["fingerprint"]["reason"]
    assert comp["agreement"]["available"] and comp["bias"]["available"]


def test_sharded_parquet_equals_the_same_rows_in_memory(setup, tmp_path):
    data, teacher, students, _ = setup
    pt = teacher.predict_proba(data.X).astype(np.float32)
    ps = students["close"].predict_proba(data.X).astype(np.float32)
    write_shards(data, pt, ps, tmp_path / "shards")
    src = ParquetSource(tmp_path / "shards", label="label", ids="id", sensitive=["grp", "age"],
                        classes=("x", "y", "z"))
    assert src.n_rows == len(data) and len(src.units) == 9  # 3 files x 3 row groups of 300 rows
    cols = [ColumnModel("p_teacher", n_classes=3, name="teacher"), ColumnModel("p_student", n_classes=3,
                                                                                name="student")]
    sharded = audit(cols[0], {"student": cols[1]}, src, executor="local", **KW)
    mem = audit(PrecomputedModel(pt, name="teacher"), {"student": PrecomputedModel(ps, name="student")}, data,
                **KW)
    a, b = sharded.results, mem.results
    assert a["data"]["class_counts"] == b["data"]["class_counts"] and a["data"]["groups"] == b["data"]["groups"]
    assert a["data"]["n_rows"] == len(data)
    for section in ("agreement", "calibration", "bias", "fingerprint"):
        for key, est in a["comparisons"][0][section]["headline"].items():
            assert est["value"] == pytest.approx(b["comparisons"][0][section]["headline"][key]["value"],
                                                 rel=1e-6, abs=1e-9), key
    # the data hash covers the output columns: change one probability, the hash changes
    other = tmp_path / "other"
    pt2 = pt.copy()
    pt2[5] = pt2[5][::-1]
    write_shards(data, pt2, ps, other)
    src2 = ParquetSource(other, label="label", ids="id", sensitive=["grp", "age"], classes=("x", "y", "z"))
    again = audit(cols[0], {"student": cols[1]}, src2, executor="local", **KW)
    assert again.results["data"]["sha256"] != a["data"]["sha256"]


def test_parquet_source_errors(tmp_path):
    with pytest.raises(KDAuditError, match="paths"):
        ParquetSource(tmp_path / "missing")
    with pytest.raises(KDAuditError, match="paths"):
        ParquetSource(tmp_path)  # no parquet file in it
    data = make_data(n=100)
    write_shards(data, np.full((100, 3), 1 / 3, np.float32), np.full((100, 3), 1 / 3, np.float32), tmp_path / "s",
                 n_files=1)
    with pytest.raises(KDAuditError, match="'nope'"):
        ParquetSource(tmp_path / "s", label="nope")
    # the local executor is the default: a sharded source needs no executor named
    cols = (ColumnModel("p_teacher", n_classes=3), {"s": ColumnModel("p_student", n_classes=3)})
    assert results_text(audit(*cols, ParquetSource(tmp_path / "s"), **KW)) == \
        results_text(audit(*cols, ParquetSource(tmp_path / "s"), executor="local", **KW))
    with pytest.raises(KDAuditError, match="data"):
        audit(*cols, {"not": "data"}, **KW)


def test_get_executor_and_missing_ray(monkeypatch):
    assert isinstance(get_executor(None), LocalExecutor) and isinstance(get_executor("local"), LocalExecutor)
    with pytest.raises(KDAuditError, match="executor"):
        get_executor("spark")
    # one lookup and one registry: the engine's (harness layer), which kdaudit.executors registers Ray into
    from kdaudit import harness

    assert get_executor is harness.get_executor and EXECUTORS is harness.EXECUTORS
    assert EXECUTORS["ray"] is RayExecutor and get_executor("ray", num_actors=2).num_actors == 2
    with pytest.raises(KDAuditError, match=r"'spark'.*one of local, ray"):
        get_executor("spark")
    with pytest.raises(KDAuditError, match=r"executor options.*\['nope'\].*options of the ray executor \(address"):
        get_executor("ray", nope=1)
    with pytest.raises(KDAuditError, match=r"executor options.*options of the local executor \(none\)"):
        get_executor("local", num_actors=2)
    with pytest.raises(KDAuditError, match="a name when options are given"):
        get_executor(LocalExecutor(), num_actors=2)
    with pytest.raises(KDAuditError, match=r"'int'.*an executor name"):
        get_executor(3)

    class Toy(LocalExecutor):
        name = "toy"

    monkeypatch.setitem(EXECUTORS, "toy", Toy)  # what register_executor("toy", Toy) does, undone after the test
    assert isinstance(get_executor("toy"), Toy)
    with pytest.raises(KDAuditError, match="factory"):
        register_executor("bad", 3)
    monkeypatch.setitem(sys.modules, "ray", None)  # what a machine without Ray sees
    with pytest.raises(KDAuditError, match=r'pip install "kdaudit\[ray\]"'):
        list(RayExecutor().map(None, [0]))
    with pytest.raises(KDAuditError, match="num_actors"):
        RayExecutor(num_actors=0)


def test_config_executor_block_is_validated(tmp_path):
    (tmp_path / "t.pt").write_bytes(b"x")
    base = {"models": {"teacher": "t.pt", "students": ["t.pt"]}, "data": {"dataset": "adult"}}

    def parse(ex):
        return parse_config({**base, "executor": ex}, source="audit.yaml", base_dir=tmp_path)

    assert parse({"kind": "ray", "address": "auto", "num_actors": 4, "num_gpus_per_actor": 1}).executor == {
        "kind": "ray", "address": "auto", "num_actors": 4, "num_gpus_per_actor": 1}
    assert parse("local").executor == {"kind": "local"}
    assert "executor" not in parse("ray").to_dict()  # results.json must not depend on where the audit ran
    for bad, key in (({"kind": "rya"}, "executor.kind"), ({"kind": "ray", "num_actors": 0}, "executor.num_actors"),
                     ({"kind": "ray", "actors": 2}, "executor.actors"),
                     ({"kind": "local", "address": "auto"}, "executor.address"),
                     ({"kind": "ray", "num_gpus_per_actor": -1}, "executor.num_gpus_per_actor")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse(bad)
    with pytest.raises(ConfigError, match="did you mean 'ray'"):
        parse({"kind": "rya"})


def test_cli_executor_local_and_address_errors(tmp_path, capsys):
    from kdaudit.cli import main

    data = make_data(n=300)
    np.savez(tmp_path / "t.npz", probabilities=np.full((300, 3), 1 / 3, np.float32))
    np.savez(tmp_path / "s.npz", probabilities=np.tile(np.float32([[0.5, 0.25, 0.25]]), (300, 1)))
    np.savez(tmp_path / "data.npz", X=data.X, y=data.y_true)
    cfg = {"models": {"teacher": "t.npz", "students": ["s.npz"]}, "data": {"path": "data.npz"},
           "sections": ["agreement", "fingerprint"], "bootstrap": {"replicates": 20}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["audit", str(tmp_path / "a.yaml"), "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    assert main(["audit", str(tmp_path / "a.yaml"), "--out", str(tmp_path / "local"), "--quiet",
                 "--executor", "local"]) == 0
    run = json.loads((tmp_path / "local" / "run.json").read_text())
    assert run["executor"]["kind"] == "local"
    assert main(["audit", str(tmp_path / "a.yaml"), "--executor", "local", "--address", "auto"]) == 2
    assert "--address" in capsys.readouterr().err


def _recipe(seed):
    from kdaudit.distill import mlp

    return mlp(5, 3, hidden=(4,), seed=seed)


def test_train_and_query_a_pool_locally():
    import torch

    pool = train_pool(_recipe, [1, 2, 3])
    again = train_pool(_recipe, [1, 2, 3], executor="local")
    for a, b in zip(pool, again):
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
    data = make_data(n=200)
    outs = query_pool(pool, data)
    from kdaudit import harness

    direct = harness.run(pool[0], data, progress=False).outputs
    np.testing.assert_array_equal(outs[0].values, direct[direct.names[0]].probs)
    # the stand-in keeps the member's identity: its hash, not that of the outputs
    assert outs[0].fingerprint() == harness.run(pool[0], data, progress=False).provenance.models[0].sha256
    with pytest.raises(KDAuditError, match="seeds"):
        train_pool(_recipe, [])


def test_a_black_box_is_asked_on_the_driver_once_per_row_under_other_executors(setup):
    from kdaudit.models import BlackBoxModel

    data, teacher, students, _ = setup
    close = students["close"]

    def api():  # a budget of exactly one pass: asking any row twice would raise
        return BlackBoxModel(lambda X: close.predict(np.asarray(X)), n_classes=3, access="labels", name="api",
                             query_budget=len(data))

    kw = dict(KW, sections=["agreement", "bias", "fingerprint"])
    local = audit(teacher, {"api": api()}, data, executor="local", block_rows=500, **kw)
    asked = api()
    other = audit(teacher, {"api": asked}, data, executor=Scrambled(), block_rows=500, **kw)  # units re-run too
    assert asked.query_count == len(data)
    assert results_text(other) == results_text(local)
