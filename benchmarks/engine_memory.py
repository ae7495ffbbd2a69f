"""Peak memory of a full audit from models, streamed by the engine, at two sizes: flat in the number of rows.

    python benchmarks/engine_memory.py                       # 1,000,000 and 10,000,000 rows x 10 classes
    python benchmarks/engine_memory.py --sizes 200000 2000000

Each size runs in a fresh process: a torch teacher and student (linear models over 8 features, 10 classes) audited
by ``kdaudit.audit(...)`` (the engine, local executor, units of 65,536 rows) with the agreement, calibration and
fingerprint sections and 1,000 bootstrap replicates. The inputs stay on disk and are read batch by batch (an array-like whose slices read the
file: nothing of them stays resident; the data's sha256, one pass before the audit, is taken first); labels and sample ids are in memory (``AuditData`` holds them: 16 bytes a
row, the only part that grows with N). Reported per size: the peak resident memory during the audit (``VmRSS``
sampled every 20 ms), the same for anonymous memory (``RssAnon``: what the engine allocates), the labels' and
ids' own bytes, and the wall time; then, in the same run, the same audit keeping every model's N x C outputs
(``keep_outputs=True``, for ``AuditResult.outputs``: what the former in-memory path always held) at the smaller
size, as the baseline the ratio refers to.
Results are printed and written to ``benchmarks/results/engine_memory_cpu.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_FEATURES, N_CLASSES = 8, 10


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class FileRows:
    """Rows of a 2-D float32 .npy file, read on slicing: inputs larger than memory, with no page cache mapped."""

    def __init__(self, path: Path) -> None:
        import numpy as np

        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            self.shape, _, self.dtype = read(fh)
            self.offset = fh.tell()
        self.path = path

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        # for the data's sha256 (one pass before the audit, then cached on the AuditData): a memmap released after
        import numpy as np

        return np.load(self.path, mmap_mode="r")

    def __getitem__(self, rows: slice):
        import numpy as np

        start, stop, _ = rows.indices(self.shape[0])
        width = int(np.prod(self.shape[1:]))
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * width * self.dtype.itemsize)
            out = np.fromfile(fh, dtype=self.dtype, count=(stop - start) * width)
        return out.reshape(stop - start, *self.shape[1:])


def child(n_rows: int, mode: str, workdir: Path) -> dict:
    """One audit of ``n_rows`` rows in this process; returns its measurements."""
    import numpy as np
    import torch

    from kdaudit import AuditData, audit
    from kdaudit.models import TorchModel

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    peak_anon, peak_rss = [0], [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak_anon[0] = max(peak_anon[0], _status("RssAnon"))
            peak_rss[0] = max(peak_rss[0], _status("VmRSS"))
            time.sleep(0.02)

    X = np.lib.format.open_memmap(workdir / f"X-{n_rows}.npy", mode="w+", dtype=np.float32,
                                  shape=(n_rows, N_FEATURES))
    rng = np.random.default_rng(0)
    step = 1 << 20
    for a in range(0, n_rows, step):  # written in chunks: the inputs never sit in anonymous memory
        X[a:a + step] = rng.normal(size=(min(step, n_rows - a), N_FEATURES)).astype(np.float32)
    X.flush()
    del X
    X = np.load(workdir / f"X-{n_rows}.npy", mmap_mode="r")
    torch.manual_seed(0)
    w = torch.randn(N_FEATURES, N_CLASSES)
    y = np.empty(n_rows, dtype=np.int64)
    for a in range(0, n_rows, step):
        y[a:a + step] = (torch.as_tensor(np.asarray(X[a:a + step])) @ w + torch.randn(min(step, n_rows - a),
                                                                                      N_CLASSES)).argmax(1).numpy()
    torch.manual_seed(1)
    teacher = torch.nn.Linear(N_FEATURES, N_CLASSES)
    with torch.no_grad():
        teacher.weight.copy_(w.T * 1.5)
    student = torch.nn.Linear(N_FEATURES, N_CLASSES)
    with torch.no_grad():
        student.weight.copy_(w.T + 0.3 * torch.randn_like(w.T))
    del X
    data = AuditData(FileRows(workdir / f"X-{n_rows}.npy"), y_true=y, name=f"synthetic {n_rows:,}")
    input_bytes = int(data.y_true.nbytes + data.ids.nbytes)
    data.fingerprint()  # the data's sha256 for the provenance: one pass over the file, before the measurement
    import gc

    gc.collect()
    baseline_anon = _status("RssAnon")
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    result = audit(TorchModel(teacher, name="teacher"), {"student": TorchModel(student, name="student")}, data,
                   sections=["agreement", "calibration", "fingerprint"], n_replicates=1000, seed=0, progress=False,
                   measure_cost=False, batch_size=65_536, keep_outputs=mode != "stream")
    wall = time.perf_counter() - t0
    stop.set()
    thread.join()
    head = result.to_dict()["comparisons"][0]
    return {"n_rows": n_rows, "mode": mode, "wall_s": wall, "peak_rss": peak_rss[0], "peak_anon": peak_anon[0],
            "anon_before_audit": baseline_anon, "labels_ids_bytes": input_bytes,
            "top1_agreement": head["agreement"]["headline"]["top1_agreement"]["value"],
            "student_ece": head["calibration"]["headline"]["student_ece"]["value"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[1_000_000, 10_000_000])
    ap.add_argument("--workdir", default="/tmp/kdaudit-engine-bench")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engine_memory_cpu.txt"))
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], work)))
        return
    runs = []
    plan = [(args.sizes[0], "stream"), (args.sizes[1], "stream"), (args.sizes[0], "kept")]
    for n, mode in plan:
        proc = subprocess.run([sys.executable, __file__, "--workdir", str(work), "--child", str(n), mode],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        (work / f"X-{n}.npy").unlink(missing_ok=True)
    mib = 1 << 20
    lines = [f"kdaudit engine memory benchmark ({time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())})",
             f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; Python "
             f"{platform.python_version()}",
             f"workload: torch linear teacher and student ({N_FEATURES} features -> {N_CLASSES} classes), sections "
             "agreement + calibration + fingerprint, 1,000 replicates, batch 65,536; inputs read from disk unit by unit"]
    for r in runs:
        engine = r["peak_anon"] - r["anon_before_audit"]
        lines.append(f"{r['mode']:>9} {r['n_rows']:>12,} rows: peak RSS during the audit {r['peak_rss'] / mib:7.1f} MiB, "
                     f"peak anonymous "
                     f"{r['peak_anon'] / mib:7.1f} MiB (of which the audit added {engine / mib:6.1f} MiB; labels+ids "
                     f"{r['labels_ids_bytes'] / mib:6.1f} MiB), {r['wall_s']:7.1f} s, top-1 agreement "
                     f"{r['top1_agreement']:.6f}")
    small, large, mem = runs
    grow = (large["peak_anon"] - large["anon_before_audit"]) / max(1, small["peak_anon"] - small["anon_before_audit"])
    lines.append(f"stream, audit's own memory at {large['n_rows']:,} / at {small['n_rows']:,} rows: {grow:.2f}x for "
                 f"{large['n_rows'] / small['n_rows']:.0f}x the rows (flat: ~1)")
    lines.append(f"peak RSS at {large['n_rows']:,} rows: {large['peak_rss'] / mib:.0f} MiB (target < 1024 MiB) -> "
                 f"{'PASS' if large['peak_rss'] < 1024 * mib else 'FAIL'}")
    lines.append(f"outputs kept (keep_outputs=True) at {mem['n_rows']:,} rows: audit's own memory "
                 f"{(mem['peak_anon'] - mem['anon_before_audit']) / mib:.1f} MiB = "
                 f"{(mem['peak_anon'] - mem['anon_before_audit']) / max(1, small['peak_anon'] - small['anon_before_audit']):.1f}x "
                 "the stream's; same numbers: "
                 f"{abs(mem['top1_agreement'] - small['top1_agreement']) < 1e-12}")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
