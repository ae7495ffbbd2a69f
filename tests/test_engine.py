"""The audit engine: no side effects on the caller's models, one device and precision for every model the audit
touches, options that reach every section, and the lineage pool run once per audit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kdaudit import AuditData
from kdaudit._audit import audit
from kdaudit.harness import run
from kdaudit.models import TorchModel

torch.set_num_threads(1)


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = (X[:, :3] @ rng.normal(size=(3, 3))).argmax(1)
    sens = pd.DataFrame({"grp": np.where(rng.random(n) < 0.5, "a", "b")})
    return AuditData(X, y_true=y, sensitive=sens, name="engine")


def _net(seed, hidden=8):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 3))


class Recording(TorchModel):
    """A torch model that records the precision of every forward call and counts its rows."""

    def __init__(self, module, **kwargs):
        super().__init__(module, **kwargs)
        self.seen_precisions: list[str] = []
        self.rows = 0

    def forward_tensor(self, x):
        self.seen_precisions.append(self.precision)
        self.rows += int(x.shape[0])
        return super().forward_tensor(x)


def test_run_leaves_the_callers_models_as_they_were():
    data = _data()
    net = _net(0)
    teacher = TorchModel(net, name="teacher")
    student = TorchModel(_net(1), name="student", precision="fp16")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    outputs, prov = run([teacher, student], data, precision="bf16", device="cpu", progress=False)
    assert prov.precision == "bf16"  # the run itself was in bf16 ...
    # ... and afterwards each model is back at its own precision, device and weights
    assert teacher.precision == "fp32" and student.precision == "fp16"
    assert teacher.device.type == "cpu" and all(p.dtype == torch.float32 for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.training  # eval mode is restored too


def test_the_lineage_pool_is_compared_at_the_audits_precision_and_run_once():
    """Under audit(precision="bf16") the teacher, the references and the controls all run in bf16; the pool runs
    once for two students; the caller's models are left in fp32."""
    data = _data()
    teacher = Recording(_net(0), name="teacher")
    refs = [Recording(_net(10 + i), name=f"ref{i}") for i in range(3)]
    controls = [Recording(_net(20 + i, hidden=4), name=f"control{i}") for i in range(2)]
    students = {"s1": Recording(_net(30), name="s1"), "s2": Recording(_net(31), name="s2")}
    result = audit(teacher, students, data, sections=["agreement", "lineage"], references=refs, controls=controls,
                   precision="bf16", n_replicates=0, seed=0, progress=False, measure_cost=False,
                   lineage_options={"n_probes": 50, "query_budget": 200})
    pool = [teacher, *refs, *controls]
    for m in pool + list(students.values()):
        assert m.seen_precisions and set(m.seen_precisions) == {"bf16"}, (m.name, set(m.seen_precisions))
        assert m.precision == "fp32"  # restored
    # one pool run for two students: each reference computed its probe rows once
    single = [Recording(_net(10 + i), name=f"ref{i}") for i in range(3)]
    audit(Recording(_net(0), name="teacher"), {"s1": Recording(_net(30), name="s1")}, data,
          sections=["agreement", "lineage"], references=single, controls=[Recording(_net(20 + i, hidden=4),
                                                                                     name=f"control{i}")
                                                                           for i in range(2)],
          precision="bf16", n_replicates=0, seed=0, progress=False, measure_cost=False,
          lineage_options={"n_probes": 50, "query_budget": 200})
    assert [r.rows for r in refs] == [r.rows for r in single] and refs[0].rows > 0
    assert [c["lineage"]["available"] for c in result.to_dict()["comparisons"]] == [True, True]


def test_n_replicates_reaches_the_lineage_section():
    data = _data()
    refs = [_net(10 + i) for i in range(3)]
    for n_rep, has_interval in ((0, False), (30, True)):
        result = audit(_net(0), {"s": _net(30)}, data, sections=["lineage"], references=refs, n_replicates=n_rep,
                       seed=0, progress=False, measure_cost=False,
                       lineage_options={"n_probes": 50, "query_budget": 200})
        effect = result["s"]["lineage"].effect
        assert np.isfinite(effect.low) == has_interval, (n_rep, effect)


#: module-level caches allowed: facts about the installation, which cannot change while a process runs
_INSTALLATION_FACTS = {"_library_versions", "_blas_controller"}


def test_no_module_global_result_caches():
    """No module of the engine keeps results between calls (a lineage pool's statistics, outputs...): no module-level
    ``*CACHE*``/``*MEMO*`` container and no ``lru_cache`` other than facts about the installation."""
    import functools
    import importlib
    import pkgutil

    import kdaudit

    found = []
    for info in pkgutil.walk_packages(kdaudit.__path__, "kdaudit."):
        if info.name.split(".")[1] not in {"_audit", "harness", "metrics", "lineage", "sections", "models"}:
            continue
        mod = importlib.import_module(info.name)
        for name, value in vars(mod).items():
            if isinstance(value, functools._lru_cache_wrapper) and value.__module__ == info.name:
                if name not in _INSTALLATION_FACTS:
                    found.append(f"{info.name}.{name} (lru_cache)")
            elif isinstance(value, (dict, list, set)) and ("CACHE" in name.upper() or "MEMO" in name.upper()):
                found.append(f"{info.name}.{name}")
    assert not found, found


# -- the streaming engine --------------------------------------------------------------------------------------
def _close(a, b, path="r", rel=1e-9):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, sorted(set(a) ^ set(b)))
        for k in a:
            _close(a[k], b[k], f"{path}.{k}", rel)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=rel, abs=rel, nan_ok=True), path
    else:
        assert a == b, path


def test_one_unit_gives_the_section_functions_numbers_and_resumes_from_its_chunks(tmp_path):
    """The engine is the one path: one unit is exactly the harness plus each metric family's section function;
    several units agree to rounding; a re-run reads the chunked cache and asks no model again."""
    from kdaudit import metrics
    from kdaudit._io import to_jsonable

    data = _data(n=700)
    names = ["agreement", "calibration", "bias", "fingerprint"]
    kw = dict(sections=names, n_replicates=50, seed=0, progress=False, measure_cost=False, batch_size=128)
    t, s = Recording(_net(0), name="teacher"), Recording(_net(1), name="s")
    one = audit(t, {"s": s}, data, cache_dir=tmp_path / "cache", keep_outputs=True, **kw)
    assert t.rows == len(data) and s.rows == len(data)
    out = one.outputs
    comp = one.to_dict()["comparisons"][0]
    for name in names:
        expected = getattr(metrics, f"{name}_section")(data.y_true, out["teacher"], out["s"], ids=out.ids,
                                                      sensitive=data.sensitive,
                                                      bootstrap=metrics.Bootstrap(n_replicates=50, seed=0))
        assert to_jsonable(expected) == comp[name], name
    # several units: the same numbers to rounding (the unit size fixes the order of floating-point sums)
    units = audit(TorchModel(_net(0), name="teacher"), {"s": TorchModel(_net(1), name="s")}, data, block_rows=200,
                  **kw)
    assert units.outputs is None  # outputs are kept only when asked for
    _close(one.to_dict()["comparisons"], units.to_dict()["comparisons"], rel=1e-9)
    assert one.to_dict()["provenance"] == units.to_dict()["provenance"]
    # a re-run reads every unit back from the chunked cache: no model is asked again, same bytes
    t2, s2 = Recording(_net(0), name="teacher"), Recording(_net(1), name="s")
    again = audit(t2, {"s": s2}, data, cache_dir=tmp_path / "cache", **kw)
    assert t2.rows == 0 and s2.rows == 0
    assert again.to_json() == one.to_json()


def test_precomputed_outputs_follow_the_units_by_position_or_by_id():
    """Outputs aligned with the data by position (a precomputed array without ids, as an ensemble member too) or
    matched by sample id give the one-unit numbers and provenance whatever the unit size."""
    from kdaudit.models import PrecomputedModel

    data = _data(n=500)
    with torch.no_grad():
        pt = [torch.softmax(_net(i)(torch.as_tensor(data.X)), 1).numpy() for i in (0, 1)]
        ps = torch.softmax(_net(5)(torch.as_tensor(data.X)), 1).numpy()
    order = np.random.default_rng(0).permutation(len(data))
    kw = dict(sections=["agreement", "calibration", "bias", "fingerprint"], n_replicates=20, seed=0,
              progress=False, measure_cost=False)

    def go(block_rows):
        teacher = [PrecomputedModel(pt[0], name="t0"), PrecomputedModel(pt[1], name="t1")]  # an ensemble
        students = {"by_position": PrecomputedModel(ps, name="by_position"),
                    "by_id": PrecomputedModel(ps[order], ids=data.ids[order], name="by_id")}
        return audit(teacher, students, data, block_rows=block_rows, **kw).to_dict()

    one, units = go(None), go(128)
    _close(one["comparisons"], units["comparisons"], rel=1e-9)
    assert one["provenance"] == units["provenance"] and one["models"] == units["models"]
    by = {c["student"]: c for c in one["comparisons"]}
    _close(by["by_position"]["agreement"], by["by_id"]["agreement"], rel=1e-12)


def test_a_black_box_budget_is_checked_for_the_whole_audit_before_any_unit():
    from kdaudit import QueryBudgetExceededError
    from kdaudit.models import BlackBoxModel

    data = _data(n=300)
    net = _net(1)
    api = BlackBoxModel(lambda X: torch.softmax(net(torch.as_tensor(X)), 1).detach().numpy(), n_classes=3,
                        name="api", query_budget=250)
    with pytest.raises(QueryBudgetExceededError):
        audit(_net(0), {"api": api}, data, sections=["agreement"], block_rows=100, n_replicates=0, progress=False,
              measure_cost=False)
    assert api.query_count == 0  # refused up front, not after spending part of the budget


def test_a_model_error_in_a_later_unit_names_the_unit():
    from kdaudit import KDAuditError
    from kdaudit.models import BlackBoxModel

    data = _data(n=300)
    net = _net(1)

    def api(X):
        p = torch.softmax(net(torch.as_tensor(X)), 1).detach().numpy()
        if len(X) and np.isclose(X[0, 0], data.X[250, 0]):
            p[0] = np.nan  # a bad answer at row 250 of the audit, row 50 of its third unit
        return p

    with pytest.raises(KDAuditError, match=r"NaN or inf at row 50 .*in unit rows 200:300 of the audit data"):
        audit(_net(0), {"api": BlackBoxModel(api, n_classes=3, name="api")}, data, sections=["agreement"],
              block_rows=100, batch_size=50, n_replicates=0, progress=False, measure_cost=False)


class _ReversedExecutor:
    """Runs the shards last to first (as parallel workers might finish), yields them in order."""

    name = "reversed"

    def map(self, fn, shards):
        done = {s.index: fn(s) for s in reversed(list(shards))}
        for s in shards:
            yield done[s.index]


def test_any_executor_and_shard_order_give_identical_results():
    from kdaudit.harness import Executor, LocalExecutor
    from kdaudit.metrics import Bootstrap
    from kdaudit.sections import registry
    from kdaudit.sections._engine import stream_sections

    assert isinstance(_ReversedExecutor(), Executor) and isinstance(LocalExecutor(), Executor)
    data = _data(n=900)
    sections = [registry()[n] for n in ("agreement", "calibration", "fingerprint", "bias")]
    boot = Bootstrap(40, seed=2)

    def go(executor, block_rows):
        out = stream_sections(TorchModel(_net(0), name="t"), [TorchModel(_net(1), name="s")], data,
                              sections=sections, bootstrap=boot, executor=executor, batch_size=100,
                              block_rows=block_rows).results
        from kdaudit._io import canonical_json, to_jsonable

        return canonical_json(to_jsonable(out))

    local = go(LocalExecutor(), 250)
    assert go(_ReversedExecutor(), 250) == local  # merged in shard order: byte-identical
    import json

    _close(json.loads(go(None, None)), json.loads(local))  # one shard or four: the same numbers
    with pytest.raises(Exception, match="executor"):
        go("nope", 100)


def test_a_section_for_another_output_kind_is_skipped_by_the_one_rule():
    """A language-model section asked of classifiers is reported unavailable, saying which kind it needs."""
    data = _data(n=200)
    for executor in (None, "local"):
        r = audit(_net(0), {"s": _net(1)}, data, sections=["agreement", "lm_tokens"], n_replicates=0, seed=0,
                  progress=False, measure_cost=False, executor=executor).to_dict()
        sec = r["comparisons"][0]["lm_tokens"]
        assert not sec["available"] and "needs outputs of kind token_top_k" in sec["reason"], sec
        assert "gives class_probs" in sec["reason"] and r["comparisons"][0]["agreement"]["available"]


def test_a_labels_only_student_skips_calibration_by_one_rule_on_every_path():
    # the in-memory and the streaming (executor) paths give the same reason, from Section.skip_reason
    from kdaudit.models import BlackBoxModel

    data = _data()
    student = _net(1)
    api = BlackBoxModel(lambda X: student(torch.as_tensor(X)).argmax(1).numpy(), n_classes=3, access="labels",
                        name="api")
    reasons = []
    for executor in (None, "local"):
        r = audit(_net(0), {"api": api}, data, seed=0, n_replicates=10, executor=executor, progress=False,
                  measure_cost=False)
        cal = r.results["comparisons"][0]["calibration"]
        assert cal["available"] is False
        reasons.append(cal["reason"])
        assert r.results["comparisons"][0]["agreement"]["available"] is not False  # labels suffice for agreement
    assert reasons[0] == reasons[1] and "needs at least top_k" in reasons[0] and "'api' gives labels" in reasons[0]


def test_a_dict_key_names_the_student_in_the_results_without_renaming_the_callers_adapter():
    data = _data()
    student = TorchModel(_net(1), name="as_built")
    result = audit(TorchModel(_net(0), name="teacher"), {"candidate": student}, data, sections=["agreement"],
                   n_replicates=0, seed=0, progress=False, measure_cost=False)
    assert [c["student"] for c in result.results["comparisons"]] == ["candidate"]
    assert student.name == "as_built"
