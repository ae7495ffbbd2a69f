"""What a model costs to run: parameters, size, latency per batch, throughput."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit.data._audit_data import AuditData
from kdaudit.models._loading import as_model
from kdaudit.models._torch import TorchModel

__all__ = ["measure_cost", "measure_lm_speed", "pool_rounds", "speed_ratio"]


def measure_cost(model: Any, data: Any, *, batch_size: int = 256, n_warmup: int = 2, n_batches: int = 10,
                 device: str | None = "cpu") -> dict[str, Any]:
    """Time ``n_batches`` forward passes of ``batch_size`` rows after ``n_warmup`` untimed ones.

    Rows are taken from the start of ``data``, wrapping around when it is shorter than needed. A torch model is
    moved to ``device`` for the measurement (None: where it is) and moved back afterwards. On CUDA every
    timed batch includes the copy of its inputs to the device and ends with a synchronisation, so the latency
    is what a caller waiting for the result sees. The timed rows are real queries: a black-box model counts them
    and its query budget pays for them.

    Returns
    -------
    dict
        ``n_parameters``, ``size_bytes``, ``batch_size``, ``n_batches``, ``device``, ``batch_ms`` (each timed
        batch), and the summary of :func:`pool_rounds`: ``latency_ms_median``, ``latency_ms_p90`` (per batch),
        ``latency_ms_per_row`` and ``throughput_rows_per_s``, both from the median batch so that they describe the
        same batch and one is the other's reciprocal up to the batch size.
    """
    for arg, value, lo in (("batch_size", batch_size, 1), ("n_batches", n_batches, 1), ("n_warmup", n_warmup, 0)):
        if not isinstance(value, (int, np.integer)) or value < lo:
            raise invalid_argument(arg, value, f"an integer >= {lo}")
    m = as_model(model)
    if _queries_cost(m):
        return _answered_cost(m, batch_size)
    if not isinstance(data, AuditData):
        data = AuditData(data)
    home = m.device if isinstance(m, TorchModel) else None
    if isinstance(m, TorchModel) and device is not None:
        m.configure(device=device)
    try:
        return _measure(m, data, batch_size, n_warmup, n_batches)
    finally:
        if home is not None:  # leave the model where the caller put it
            m.configure(device=home)  # type: ignore[union-attr]


def _measure(m: Any, data: AuditData, batch_size: int, n_warmup: int, n_batches: int) -> dict[str, Any]:
    n = len(data)
    idx = np.arange(batch_size) % n
    X = data.X.iloc[idx] if hasattr(data.X, "iloc") else data.X[idx]
    ids = data.ids[idx]
    m.prepare(data)

    sync = _cuda_sync(m)
    times = []
    for i in range(n_warmup + n_batches):
        t0 = time.perf_counter()
        m.predict_batch(X, ids=ids)
        sync()
        if i >= n_warmup:
            times.append(time.perf_counter() - t0)
    out = {
        "n_parameters": m.n_parameters(),
        "size_bytes": m.size_bytes(),
        "batch_size": int(batch_size),
        "n_batches": int(n_batches),
        "device": str(m.device) if isinstance(m, TorchModel) else "cpu",
        "batch_ms": [float(x) * 1e3 for x in times],
    }
    out.update(_timing_summary(out["batch_ms"], batch_size))
    return out


def _timing_summary(batch_ms: list[float], batch_size: int) -> dict[str, float]:
    t = np.asarray(batch_ms, dtype=np.float64)
    median = float(np.median(t))
    # Latency and throughput from the same (median) batch: "x% of the latency" and "y times the throughput" then
    # always agree (y = 1 / x), which a mean-based throughput beside a median latency did not.
    return {"latency_ms_median": median, "latency_ms_p90": float(np.percentile(t, 90)),
            "latency_ms_per_row": median / batch_size, "throughput_rows_per_s": batch_size / (median / 1e3)}


def pool_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Several :func:`measure_cost` results of one model (interleaved rounds) as one: every timed batch pooled.

    The summary numbers are recomputed from all the batches; ``batch_ms`` keeps them, for :func:`speed_ratio`.
    """
    if not rounds:
        raise invalid_argument("rounds", rounds, "a non-empty list of measure_cost results")
    first = rounds[0]
    if any("batch_ms" not in r for r in rounds):
        # Not timed batch by batch (a black box's latency comes from the calls it answered): nothing to pool.
        return {**first, "batch_ms": []}
    batch_ms = [x for r in rounds for x in r["batch_ms"]]
    out = {k: v for k, v in first.items() if k not in ("batch_ms", "n_batches")}
    out.update({"n_batches": len(batch_ms), "rounds": len(rounds), "batch_ms": batch_ms})
    out.update(_timing_summary(batch_ms, int(first["batch_size"])))
    return out


def speed_ratio(teacher_batch_ms: Any, student_batch_ms: Any, *, seed: int = 0, n_replicates: int = 2000,
                level: float = 0.95) -> dict[str, Any]:
    """How many times the teacher's throughput the student has (teacher's median batch latency over the
    student's, same batch size), with a percentile bootstrap interval over the timed batches.

    Each model's batch times are resampled on their own. The interval describes the variation between repeated
    batches on this machine in this run, not between machines; the method string says so.

    Returns
    -------
    dict
        ``value``, ``low``, ``high``, ``level``, ``method`` (an ``Estimate`` as stored).
    """
    t = np.asarray(teacher_batch_ms, dtype=np.float64)
    s = np.asarray(student_batch_ms, dtype=np.float64)
    if t.size == 0 or s.size == 0 or not (np.all(t > 0) and np.all(s > 0)):
        return {"value": None, "low": None, "high": None, "level": level, "method": "not measured"}
    rng = np.random.default_rng(seed)
    tb = np.median(t[rng.integers(0, t.size, size=(n_replicates, t.size))], axis=1)
    sb = np.median(s[rng.integers(0, s.size, size=(n_replicates, s.size))], axis=1)
    ratios = tb / sb
    a = (1 - level) / 2
    return {"value": float(np.median(t) / np.median(s)), "low": float(np.quantile(ratios, a)),
            "high": float(np.quantile(ratios, 1 - a)), "level": level,
            "method": (f"percentile bootstrap over the timed batches ({t.size} of the teacher, {s.size} of the "
                       f"student; {n_replicates} replicates, seed {seed}): variation between repeats on this "
                       "machine in this run")}


def _queries_cost(m: Any) -> bool:
    """A model whose queries are paid for or rate-limited (a black box, or an ensemble holding one)."""
    from kdaudit.models import BlackBoxModel, EnsembleModel

    if isinstance(m, EnsembleModel):
        return any(_queries_cost(x) for x in m.members)
    return isinstance(m, BlackBoxModel)


def _answered_cost(m: Any, batch_size: int) -> dict[str, Any]:
    times = list(getattr(m, "call_times", []) or [])
    base = {"n_parameters": m.n_parameters(), "size_bytes": m.size_bytes(), "batch_size": int(batch_size),
            "n_batches": len(times), "device": "remote"}
    if not times:
        return {**base, "latency_ms_median": None, "latency_ms_p90": None, "latency_ms_per_row": None,
                "throughput_rows_per_s": None,
                "latency_source": "not measured: no call was answered in this process (a black box is never "
                                  "queried again to time it)"}
    rows = np.array([r for r, _ in times], dtype=np.float64)
    secs = np.array([t for _, t in times], dtype=np.float64)
    ms = secs * 1e3
    return {**base, "latency_ms_median": float(np.median(ms)), "latency_ms_p90": float(np.percentile(ms, 90)),
            "latency_ms_per_row": float(np.median(ms / rows)),
            "throughput_rows_per_s": float(rows.sum() / secs.sum()) if secs.sum() > 0 else None,
            "latency_source": f"the {len(times)} calls answered during the audit (median rows per call "
                              f"{float(np.median(rows)):g})"}


def _cuda_sync(m: Any) -> Any:
    if isinstance(m, TorchModel) and m.device.type == "cuda":
        import torch

        return lambda: torch.cuda.synchronize(m.device)
    return lambda: None


def measure_lm_speed(models: list[Any], texts: list[str], ids: list[Any], top_k: int, *, batch: int = 8,
                     rounds: int = 5) -> dict[str, dict[str, Any]]:
    """Each model's scoring time per batch of ``batch`` texts, over interleaved rounds (a burst of load on a
    shared machine hits every model alike), and its tokens scored per second (median over batches)."""
    ms: dict[str, list[float]] = {m.name: [] for m in models}
    tokens: dict[str, list[int]] = {m.name: [] for m in models}
    for _ in range(rounds):
        for m in models:
            for a in range(0, len(texts), batch):
                t0 = time.perf_counter()
                res = m.score(texts[a:a + batch], ids[a:a + batch], top_k=min(top_k, m.max_top_k))
                ms[m.name].append(1000 * (time.perf_counter() - t0))
                tokens[m.name].append(int(res.n_positions))
    out = {}
    for name in ms:
        rate = [1000 * n / max(t, 1e-9) for n, t in zip(tokens[name], ms[name])]
        out[name] = {"batch_ms": ms[name], "throughput_tokens_per_s": statistics.median(rate),
                     "batch_texts": batch, "rounds": rounds}
    return out
