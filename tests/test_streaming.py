"""Streaming proof: 10 shards updated separately and merged give the whole-data result, intervals included."""

import numpy as np
import pytest
from _arrays import softmax

from kdaudit import KDAuditError
from kdaudit.metrics import (
    AgreementAccumulator,
    Bootstrap,
    CalibrationAccumulator,
    FingerprintAccumulator,
)


def _data(n=5000, c=5, seed=0):
    rng = np.random.default_rng(seed)
    zt = rng.normal(size=(n, c)) * 2
    zs = zt + rng.normal(size=(n, c))
    y = (softmax(zt * 0.7).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    ids = rng.permutation(10 * n)[:n]  # arbitrary, non-contiguous ids
    return y, softmax(zt).astype(np.float32), softmax(zs).astype(np.float32), zt, zs, ids


FAMILIES = {
    "agreement": lambda b: AgreementAccumulator(5, bootstrap=b),
    "calibration": lambda b: CalibrationAccumulator(5, bootstrap=b),
    # quantile state is a fine histogram per block: a smaller block count keeps this test light
    "calibration-quantile-l2": lambda b: CalibrationAccumulator(5, bootstrap=Bootstrap(b.n_replicates, seed=b.seed,
                                                                                       n_blocks=256),
                                                                strategy="quantile", norm="l2", debiased=True),
    "fingerprint": lambda b: FingerprintAccumulator(5, bootstrap=b),
}


def _update(acc, y, pt, ps, zt, zs, ids, sl):
    kw = {}
    if isinstance(acc, CalibrationAccumulator):
        kw = {"logits_teacher": zt[sl], "logits_student": zs[sl]}
    return acc.update(y[sl], pt[sl], ps[sl], ids=ids[sl], **kw)


def _assert_same(a, b):
    da, db = a.to_dict(), b.to_dict()
    assert da["headline"].keys() == db["headline"].keys()
    for key, ea in da["headline"].items():
        eb = db["headline"][key]
        for f in ("value", "low", "high"):
            if ea[f] is None:
                assert eb[f] is None, key
            else:
                assert ea[f] == pytest.approx(eb[f], abs=1e-9), (key, f)
        assert ea["method"] == eb["method"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_ten_shards_merged_equal_the_whole(family):
    y, pt, ps, zt, zs, ids = _data()
    boot = Bootstrap(200, seed=3)
    whole = _update(FAMILIES[family](boot), y, pt, ps, zt, zs, ids, slice(None)).compute()
    # shards of unequal size, in shuffled order, merged into the last one
    order = np.random.default_rng(1).permutation(len(y))
    cuts = np.sort(np.random.default_rng(2).choice(np.arange(1, len(y)), 9, replace=False))
    shards = []
    for part in np.split(order, cuts):
        shards.append(_update(FAMILIES[family](boot), y, pt, ps, zt, zs, ids, part))
    merged = shards[-1]
    for s in shards[:-1]:
        merged.merge(s)
    assert merged.n_rows == len(y)
    _assert_same(whole, merged.compute())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_memmapped_input_in_chunks_equals_in_memory(family, tmp_path):
    y, pt, ps, zt, zs, ids = _data(n=3000, seed=4)
    mm = {}
    for name, arr in {"y": y, "pt": pt, "ps": ps, "zt": zt, "zs": zs, "ids": ids}.items():
        m = np.lib.format.open_memmap(tmp_path / f"{name}.npy", mode="w+", dtype=arr.dtype, shape=arr.shape)
        m[:] = arr
        m.flush()
        mm[name] = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
    boot = Bootstrap(100)
    ref = _update(FAMILIES[family](boot), y, pt, ps, zt, zs, ids, slice(None)).compute()
    acc = FAMILIES[family](boot)
    for a in range(0, 3000, 512):
        _update(acc, mm["y"], mm["pt"], mm["ps"], mm["zt"], mm["zs"], mm["ids"], slice(a, a + 512))
    _assert_same(ref, acc.compute())


def test_string_ids_stream_too():
    y, pt, ps, zt, zs, ids = _data(n=1000, seed=5)
    sids = np.array([f"row-{i}" for i in ids])
    b = Bootstrap(100)
    whole = AgreementAccumulator(5, bootstrap=b).update(y, pt, ps, ids=sids).compute()
    a = AgreementAccumulator(5, bootstrap=b).update(y[:400], pt[:400], ps[:400], ids=sids[:400])
    a.merge(AgreementAccumulator(5, bootstrap=b).update(y[400:], pt[400:], ps[400:], ids=sids[400:]))
    _assert_same(whole, a.compute())


def test_merge_rejects_incompatible_state():
    b = Bootstrap(10)
    with pytest.raises(KDAuditError, match="other"):
        AgreementAccumulator(5, bootstrap=b).merge(AgreementAccumulator(6, bootstrap=b))
    with pytest.raises(KDAuditError, match="other"):
        CalibrationAccumulator(5, bootstrap=b).merge(CalibrationAccumulator(5, bootstrap=b, n_bins=10))
    with pytest.raises(KDAuditError, match="other"):
        FingerprintAccumulator(5, bootstrap=b).merge(FingerprintAccumulator(5, bootstrap=Bootstrap(10, n_blocks=64)))
