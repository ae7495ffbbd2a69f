"""Every registered section's accumulator, through the one base: shards merged in any order equal the whole (the
intervals too), state_dict/load_state_dict round-trips, reset forgets, and a refused merge changes nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _arrays import softmax

from kdaudit import KDAuditError
from kdaudit.metrics import Bootstrap
from kdaudit.metrics._accumulator import SUM, Accumulator
from kdaudit.sections import registry


class _Outputs:
    def __init__(self, access="probabilities", top_k=None):
        self.access, self.top_k = access, top_k


def _sections_with_accumulators():
    out = []
    for name, section in registry().items():
        if section.stream and section.accumulator(n_classes=4, teacher=_Outputs(), student=_Outputs(),
                                                  bootstrap=Bootstrap(10, n_blocks=64), options={}) is not None:
            out.append(name)
    return out


SECTIONS = _sections_with_accumulators()


def _data(n=3000, c=4, seed=0):
    rng = np.random.default_rng(seed)
    zt = rng.normal(size=(n, c)) * 2
    zs = zt + rng.normal(size=(n, c))
    y = (softmax(zt * 0.7).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    ids = rng.permutation(10 * n)[:n]
    sens = pd.DataFrame({"sex": rng.choice(["f", "m"], n), "age": rng.choice(["young", "old", "mid"], n)})
    # sorted by a group so that some groups first appear in late shards
    order = np.argsort(sens["age"].to_numpy(), kind="stable")
    return (y[order], softmax(zt).astype(np.float32)[order], softmax(zs).astype(np.float32)[order], ids[order],
            sens.iloc[order].reset_index(drop=True))


def _new(name, boot):
    return registry()[name].accumulator(n_classes=4, teacher=_Outputs(), student=_Outputs(), bootstrap=boot,
                                        options={})


def _update(acc, data, rows):
    y, pt, ps, ids, sens = data
    return acc.update(y[rows], pt[rows], ps[rows], ids=ids[rows], sensitive=sens.iloc[rows].reset_index(drop=True))


def _dict(result):
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    return d


def _close(a, b, path="result"):
    """Equal JSON trees, floats to 1e-9 (shards sum in another order than the whole)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9, nan_ok=True), path
    else:
        assert a == b, path


def _assert_same(a, b):
    import json

    from kdaudit._io import canonical_json

    _close(json.loads(canonical_json(_dict(a))), json.loads(canonical_json(_dict(b))))


def test_every_streaming_builtin_section_has_an_accumulator_on_the_base():
    assert {"agreement", "calibration", "bias", "fingerprint"} <= set(SECTIONS)
    for name in SECTIONS:
        acc = _new(name, Bootstrap(10, n_blocks=64))
        assert isinstance(acc, Accumulator) and acc.states, name
        assert "merge" not in type(acc).__dict__, f"{name}: merge comes from the base, not a copy of its own"


@pytest.mark.parametrize("name", SECTIONS)
def test_shards_merged_in_any_order_equal_the_whole(name):
    data = _data()
    boot = Bootstrap(100, seed=3, n_blocks=128)
    whole = _update(_new(name, boot), data, np.arange(len(data[0]))).compute()
    cuts = np.sort(np.random.default_rng(2).choice(np.arange(1, len(data[0])), 6, replace=False))
    shards = [_update(_new(name, boot), data, part) for part in np.split(np.arange(len(data[0])), cuts)]
    rng = np.random.default_rng(5)
    merged = _new(name, boot)  # an empty accumulator first: merging into it must work too
    for k in rng.permutation(len(shards)):
        merged.merge(shards[k])
    _assert_same(whole, merged.compute())


@pytest.mark.parametrize("name", SECTIONS)
def test_the_engine_fold_builds_the_same_accumulator(name):
    # the engine runs Section.fold; the tests above run Section.accumulator: one configuration, so the shard
    # merge proven above is the engine's (same class and options: merging one into the other is accepted)
    from kdaudit.harness._outputs import ModelOutputs

    y, pt, ps, ids, sens = _data(n=1500, seed=4)
    boot = Bootstrap(50, seed=2, n_blocks=64)
    section = registry()[name]
    models = [ModelOutputs(m, p, p.argmax(axis=1)) for m, p in (("teacher", pt), ("student", ps))]
    folded = section.fold(y_true=y, teacher=models[0], student=models[1], ids=ids, sensitive=sens, bootstrap=boot,
                          options={"chunk_size": 400})
    direct = _update(_new(name, boot), (y, pt, ps, ids, sens), np.arange(len(y)))
    assert type(folded) is type(direct)
    _assert_same(direct.compute(), folded.compute())
    _assert_same(direct.compute(), _new(name, boot).merge(folded).compute())


@pytest.mark.parametrize("name", SECTIONS)
def test_state_dict_round_trip_and_reset(name):
    data = _data(n=1200, seed=1)
    boot = Bootstrap(50, seed=1, n_blocks=64)
    rows = np.arange(len(data[0]))
    acc = _update(_new(name, boot), data, rows)
    expected = acc.compute()
    restored = _new(name, boot).load_state_dict(acc.state_dict())
    _assert_same(expected, restored.compute())
    # the state dict is a copy: changing the accumulator afterwards does not change a restored one
    state = acc.state_dict()
    _update(acc, data, rows[:100])
    _assert_same(expected, _new(name, boot).load_state_dict(state).compute())
    acc.reset()
    _assert_same(expected, _update(acc, data, rows).compute())
    with pytest.raises(KDAuditError, match="state"):
        _new(name, boot).load_state_dict({"nonsense": 1})


@pytest.mark.parametrize("name", SECTIONS)
def test_a_refused_merge_changes_nothing(name):
    data = _data(n=600, seed=2)
    acc = _update(_new(name, Bootstrap(20, n_blocks=64)), data, np.arange(600))
    before = acc.compute()
    other = _update(_new(name, Bootstrap(20, n_blocks=32)), data, np.arange(600))
    with pytest.raises(KDAuditError, match="other"):
        acc.merge(other)
    _assert_same(before, acc.compute())


def test_the_base_rejects_unknown_rules_and_merges_by_rule():
    with pytest.raises(TypeError, match="expected one of"):
        type("Bad", (Accumulator,), {"states": {"x": "avg"}})

    class Count(Accumulator):
        states = {"n": SUM, "labelled": "same", "flags": "all", "parts": "keyed"}
        merge_key = ("k",)

        def __init__(self, k):
            self.k, self.n, self.labelled, self.flags, self.parts = k, 0, None, [True, True], {}

    a, b = Count(1), Count(1)
    a.n, a.flags = 2, [True, False]
    b.n, b.labelled = 3, True
    a.merge(b)
    assert (a.n, a.labelled, a.flags) == (5, True, [True, False])
    b.labelled = False
    with pytest.raises(KDAuditError, match="labelled"):
        a.merge(b)
    assert a.n == 5  # refused before anything changed
    with pytest.raises(KDAuditError, match="same options"):
        a.merge(Count(2))
    assert a.reset().n == 0 and a.labelled is None
