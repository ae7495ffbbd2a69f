"""Metric families against their peers, in one run, on the same inputs.

    python benchmarks/metrics.py            # everything; writes benchmarks/results/metrics_cpu.txt
    python benchmarks/metrics.py --quick    # smaller sizes, for a smoke run

1. ECE at 200,000 rows x 1,000 classes (float32 softmax outputs): kdaudit's ``expected_calibration_error`` (input
   checks included) against a bare numpy bincount pass (max, argmax, bincount; no checks), torchmetrics'
   ``MulticlassCalibrationError`` and netcal's ``ECE``. Values are checked equal (1e-6) before timing is reported;
   each time is the best of 3 runs (netcal: 1 run), the least disturbed by other work on the machine.
2. Bias transfer at 1,000,000 rows against fairlearn ``MetricFrame`` (``benchmarks/_bias_bench.py``).
3. The whole suite (agreement + calibration + fingerprint + bias accumulators, 1,000-replicate paired intervals,
   999-permutation amplification test) over 10 classes, streamed from ``np.memmap`` files in chunks of 65,536 rows,
   at 250,000 and 1,000,000 rows, each in a fresh process: wall time and peak resident memory during the run (Linux
   ``VmHWM`` reset through ``/proc/self/clear_refs`` after the imports, minus the resident size at that moment; the
   memmaps are reopened per chunk, so at most one chunk's file pages are mapped at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHUNK = 65_536
N_CLASSES = 10
GROUPS = np.array(["a", "b", "c", "d"])


def _best(fn, repeats=3):
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


# ------------------------------------------------------------------------------------------------------------ ECE
def _softmax_inplace(z: np.ndarray) -> np.ndarray:
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def bincount_ece(y: np.ndarray, p: np.ndarray, n_bins: int = 15) -> float:
    """The bare reference pass: no input checks, one max and one argmax over the matrix, three bincounts."""
    conf = p.max(axis=1)
    pred = p.argmax(axis=1)
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    cnt = np.bincount(b, minlength=n_bins)
    s_conf = np.bincount(b, weights=conf, minlength=n_bins)
    s_acc = np.bincount(b, weights=pred == y, minlength=n_bins)
    return float(np.abs(s_acc - s_conf)[cnt > 0].sum() / len(y))


def bench_ece(n_rows: int, n_classes: int) -> dict:
    import torch
    from netcal.metrics import ECE
    from torchmetrics.classification import MulticlassCalibrationError

    from kdaudit.metrics import expected_calibration_error

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    p = _softmax_inplace(rng.standard_normal((n_rows, n_classes), dtype=np.float32) * 3)
    y = rng.integers(0, n_classes, n_rows)
    t_np, v_np = _best(lambda: bincount_ece(y, p))
    t_ours, v_ours = _best(lambda: expected_calibration_error(y, p))
    t_ours_tm, v_ours_tm = _best(lambda: expected_calibration_error(y, p, binning="torchmetrics"), 1)
    metric = MulticlassCalibrationError(num_classes=n_classes, n_bins=15, norm="l1")
    pt, yt = torch.from_numpy(p), torch.from_numpy(y)
    t_tm, v_tm = _best(lambda: float(metric(pt, yt)))
    t_nc, v_nc = _best(lambda: float(ECE(bins=15).measure(p, y)), 1)
    for name, a, b in (("bincount", v_ours, v_np), ("torchmetrics", v_ours_tm, v_tm), ("netcal", v_ours, v_nc)):
        if abs(a - b) > 1e-6:
            raise AssertionError(f"ECE disagrees with {name}: {a} vs {b}")
    return {"rows": n_rows, "classes": n_classes, "ece": v_ours, "kdaudit_s": t_ours, "numpy_bincount_s": t_np,
            "torchmetrics_s": t_tm, "netcal_s": t_nc, "kdaudit_over_bincount": t_ours / t_np,
            "torchmetrics_over_kdaudit": t_tm / t_ours, "netcal_over_kdaudit": t_nc / t_ours}


# ---------------------------------------------------------------------------------------------------------- suite
def make_files(directory: Path, n_rows: int) -> None:
    """1M-row inputs written chunk by chunk to .npy files (never whole in memory)."""
    arrays = {
        "y": ((n_rows,), np.int64), "ids": ((n_rows,), np.int64), "group": ((n_rows,), np.int8),
        "zt": ((n_rows, N_CLASSES), np.float32), "zs": ((n_rows, N_CLASSES), np.float32),
        "pt": ((n_rows, N_CLASSES), np.float32), "ps": ((n_rows, N_CLASSES), np.float32),
    }
    mm = {k: np.lib.format.open_memmap(directory / f"{k}.npy", mode="w+", dtype=d, shape=s)
          for k, (s, d) in arrays.items()}
    rng = np.random.default_rng(1)
    for a in range(0, n_rows, CHUNK):
        n = min(CHUNK, n_rows - a)
        zt = rng.normal(size=(n, N_CLASSES)).astype(np.float32) * 3
        zs = zt + rng.normal(size=(n, N_CLASSES)).astype(np.float32)
        q = _softmax_inplace(zt / 1.5)
        mm["y"][a:a + n] = (q.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
        mm["ids"][a:a + n] = np.arange(a, a + n)
        mm["group"][a:a + n] = rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
        mm["zt"][a:a + n], mm["zs"][a:a + n] = zt, zs
        mm["pt"][a:a + n], mm["ps"][a:a + n] = _softmax_inplace(zt.copy()), _softmax_inplace(zs.copy())
    for m in mm.values():
        m.flush()


def run_suite(directory: Path, n_rows: int) -> dict:
    """Stream the first ``n_rows`` rows through the four accumulators; report time and memory."""
    from kdaudit.metrics import (
        AgreementAccumulator,
        BiasAccumulator,
        Bootstrap,
        CalibrationAccumulator,
        FingerprintAccumulator,
    )

    boot = Bootstrap(n_replicates=1000, seed=0)
    boot.weights()
    rss0 = _reset_peak_rss()
    start = time.perf_counter()
    accs = {
        "agreement": AgreementAccumulator(N_CLASSES, bootstrap=boot),
        "calibration": CalibrationAccumulator(N_CLASSES, bootstrap=boot),
        "fingerprint": FingerprintAccumulator(N_CLASSES, bootstrap=boot),
        "bias": BiasAccumulator(N_CLASSES, sensitive_names=["group"], bootstrap=boot, n_permutations=999),
    }
    for a in range(0, n_rows, CHUNK):
        sl = slice(a, min(a + CHUNK, n_rows))
        # reopen the memmaps per chunk: only this chunk's pages are mapped, so RSS measures the heap
        c = {k: np.load(directory / f"{k}.npy", mmap_mode="r")[sl] for k in ("y", "ids", "group", "pt", "ps", "zt",
                                                                            "zs")}
        accs["agreement"].update(c["y"], c["pt"], c["ps"], ids=c["ids"])
        accs["calibration"].update(c["y"], c["pt"], c["ps"], ids=c["ids"], logits_teacher=c["zt"],
                                   logits_student=c["zs"])
        accs["fingerprint"].update(c["y"], c["pt"], c["ps"], ids=c["ids"])
        accs["bias"].update(c["y"], c["pt"], c["ps"], ids=c["ids"], sensitive={"group": GROUPS[c["group"]]})
        del c
    t_update = time.perf_counter() - start
    results = {name: acc.compute() for name, acc in accs.items()}
    total = time.perf_counter() - start
    rss1 = _status_kb("VmHWM")
    return {"rows": n_rows, "seconds": total, "update_seconds": t_update, "compute_seconds": total - t_update,
            "peak_rss_delta_mb": (rss1 - rss0) / 1024,
            "ece_change": results["calibration"].headline["ece_change"].to_dict(),
            "top1_agreement": results["agreement"].headline["top1_agreement"].to_dict()}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the peak resident size (VmHWM) to the current one; return the current resident size in kB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS")


def _suite_subprocess(directory: Path, n_rows: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--suite-worker", str(directory), str(n_rows)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------- main
def _machine() -> str:
    load = os.getloadavg()
    return (f"{platform.platform()}, Python {platform.python_version()}, numpy {np.__version__}, "
            f"{os.cpu_count()} CPU cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--suite-worker", nargs=2, metavar=("DIR", "ROWS"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "metrics_cpu.txt"))
    args = ap.parse_args()
    if args.suite_worker:
        print(json.dumps(run_suite(Path(args.suite_worker[0]), int(args.suite_worker[1]))))
        return

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"# benchmarks/metrics.py  ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    say(f"machine: {_machine()}")
    ece_rows, bias_rows, suite_rows = (20_000, 100_000, (50_000, 200_000)) if args.quick else (
        200_000, 1_000_000, (250_000, 1_000_000))

    say("\n## 1. ECE (15 uniform bins, L1), float32 softmax outputs")
    e = bench_ece(ece_rows, 1000)
    say(f"{e['rows']:,} rows x {e['classes']:,} classes; all four agree on ECE = {e['ece']:.6f}")
    say(f"  kdaudit expected_calibration_error : {e['kdaudit_s']:.3f} s  (input checks included)")
    say(f"  numpy bincount pass (no checks)    : {e['numpy_bincount_s']:.3f} s  -> kdaudit / bincount = "
        f"{e['kdaudit_over_bincount']:.2f}x (target <= 2x)")
    say(f"  torchmetrics MulticlassCalibration : {e['torchmetrics_s']:.3f} s  -> {e['torchmetrics_over_kdaudit']:.1f}x "
        f"kdaudit's time")
    say(f"  netcal ECE                         : {e['netcal_s']:.3f} s  -> {e['netcal_over_kdaudit']:.1f}x kdaudit's "
        f"time")

    say("\n## 2. Bias transfer vs fairlearn MetricFrame")
    import _bias_bench

    b = _bias_bench.run(bias_rows)
    for k, v in b.items():
        say(f"  {k}: {v}")

    say("\n## 3. Whole suite: agreement + calibration + fingerprint + bias, 1,000 replicates, memmap chunks")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        make_files(Path(tmp), max(suite_rows))
        took = time.perf_counter() - start
        say(f"  (wrote {max(suite_rows):,} x {N_CLASSES} inputs to .npy memmaps in {took:.1f} s)")
        runs = [_suite_subprocess(Path(tmp), n) for n in suite_rows]
    for r in runs:
        say(f"  {r['rows']:>9,} rows: {r['seconds']:.1f} s (updates {r['update_seconds']:.1f} s, compute "
            f"{r['compute_seconds']:.1f} s), peak memory +{r['peak_rss_delta_mb']:.0f} MB")
    say(f"  memory ratio {suite_rows[1] // suite_rows[0]}x rows: "
        f"{runs[1]['peak_rss_delta_mb'] / max(runs[0]['peak_rss_delta_mb'], 1):.2f}x  (target: does not grow with N);"
        f" time target < 30 s at 1M rows")
    say(f"  ece_change at {runs[1]['rows']:,} rows: {runs[1]['ece_change']}")
    say(f"\nload average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
        "(other agents share these 2 cores; timings on an idle machine are lower)")
    if not args.quick:
        from kdaudit._io import atomic_write_text

        atomic_write_text(args.out, "\n".join(lines) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
