"""The Ray executor on a local Ray instance (started once for this module): byte-identical results with 1 and 3
workers, from memory and from sharded parquet, a worker killed mid-run, and a pool trained as Ray tasks."""

from __future__ import annotations

import os

import numpy as np
import pytest
from _executor_fixture import KW, DieOnce, fit_models, make_data, results_text, write_shards

from kdaudit._audit import audit
from kdaudit.executors import ColumnModel, ParquetSource, RayExecutor, train_pool
from kdaudit.models import as_model

try:  # skip only when Ray truly cannot be imported; any other failure is a test failure
    import ray
except ImportError as exc:  # pragma: no cover - CI installs Ray through the dev extra
    pytest.skip(f"Ray is not installed ({exc}); pip install 'kdaudit[ray]'", allow_module_level=True)

# Half a CPU per actor: the 1- and 3-actor pools (2 CPUs in all) fit on a 2-CPU local instance together.
HALF = 0.5


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # the workers unpickle this module's helpers (DieOnce, _recipe): they need the tests directory on their path,
    # and Ray's processes inherit this environment
    saved = os.environ.get("PYTHONPATH")
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join([here] + ([saved] if saved else []))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup():
    data = make_data()
    teacher, students = fit_models(data)
    local = audit(teacher, students, data, executor="local", block_rows=400, **KW)
    return data, teacher, students, local


@pytest.fixture(scope="module")
def pools():
    one = RayExecutor(num_actors=1, num_cpus_per_actor=HALF)
    three = RayExecutor(num_actors=3, num_cpus_per_actor=HALF)
    yield one, three
    one.close()
    three.close()


def test_one_and_three_workers_give_the_local_bytes(setup, pools):
    data, teacher, students, local = setup
    for ex in pools:
        r = audit(teacher, students, data, executor=ex, block_rows=400, **KW)
        assert results_text(r) == results_text(local), ex.num_actors
        assert r.run_info["executor"]["kind"] == "ray"
    # three actors really shared the six shards
    assert len(pools[1].last_actors_used) == 3


def test_sharded_parquet_on_ray_equals_local(setup, pools, tmp_path):
    data, teacher, students, _ = setup
    pt = teacher.predict_proba(data.X).astype(np.float32)
    ps = students["close"].predict_proba(data.X).astype(np.float32)
    src = ParquetSource(write_shards(data, pt, ps, tmp_path / "shards"), label="label", ids="id",
                        sensitive=["grp", "age"], classes=("x", "y", "z"))
    t, s = ColumnModel("p_teacher", n_classes=3, name="teacher"), ColumnModel("p_student", n_classes=3,
                                                                             name="student")
    local = audit(t, {"student": s}, src, executor="local", **KW)
    remote = audit(t, {"student": s}, src, executor=pools[1], **KW)
    assert results_text(remote) == results_text(local)


def test_a_worker_killed_mid_run_changes_nothing(setup, pools, tmp_path):
    data, teacher, students, _ = setup
    marker = tmp_path / "killed"
    # the teacher kills its worker the first time it meets a row of the fourth unit (of six)
    dying = DieOnce(as_model(teacher, name="teacher"), trigger_id=int(data.ids[1300]), marker=marker,
                    driver_pid=os.getpid())
    ex = pools[1]  # three actors; a dead one is restarted and its units run again (max_restarts, max_task_retries)
    assert ex.max_restarts >= 1 and ex.max_task_retries >= 1
    local = audit(dying, students, data, executor="local", block_rows=400, **KW)  # in the driver it never dies
    assert not marker.exists()
    r = audit(dying, students, data, executor=ex, block_rows=400, **KW)
    assert marker.exists()  # a worker did die, and Ray ran its unit again on the restarted actor
    assert results_text(r) == results_text(local)
    # every row was asked of the teacher once in the result, whatever the retry re-ran
    assert r.results["provenance"]["models"][0]["queries"] == len(data)


def test_a_black_box_is_asked_each_row_once_on_the_driver(setup, pools):
    from kdaudit.models import BlackBoxModel

    data, teacher, students, _ = setup
    close = students["close"]
    api = BlackBoxModel(lambda X: close.predict(np.asarray(X)), n_classes=3, access="labels", name="api",
                        query_budget=len(data))
    kw = dict(KW, sections=["agreement", "bias", "fingerprint"])  # see test_executors: labels-only calibration
    local = audit(teacher, {"api": api}, data, executor="local", block_rows=400, **kw)
    assert api.query_count == len(data)
    api2 = BlackBoxModel(lambda X: close.predict(np.asarray(X)), n_classes=3, access="labels", name="api",
                         query_budget=len(data))  # a budget of one pass: a second ask of any row would fail
    remote = audit(teacher, {"api": api2}, data, executor=pools[1], block_rows=400, **kw)
    assert api2.query_count == len(data)  # asked here, once per row; the workers only read its answers
    assert results_text(remote) == results_text(local)


def _recipe(seed):
    from kdaudit.distill import mlp

    return mlp(5, 3, hidden=(4,), seed=seed)


def _halved(model, seed):
    # a stand-in extraction: the sibling's weights halved (deterministic, picklable)
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    return model


def test_pool_trained_as_ray_tasks_equals_local(pools):
    import torch

    remote = train_pool(_recipe, [5, 6, 7], executor=pools[1])
    local = train_pool(_recipe, [5, 6, 7])
    for a, b in zip(remote, local):
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
    # the lineage helpers take the same executor: references, and student controls (sibling -> student)
    from kdaudit.lineage import train_references, train_student_controls

    for a, b in zip(train_references(_recipe, [5, 6, 7], executor=pools[1]), local):
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
    students = train_student_controls(_recipe, [8, 9], _halved, executor=pools[1])
    for seed, m in zip([8, 9], students):
        for pa, pb in zip(m.parameters(), _halved(_recipe(seed), seed).parameters()):
            assert torch.equal(pa, pb)
