"""A large audit from sharded parquet outputs: the local executor against Ray, in one run.

    python benchmarks/distributed.py                       # 10,000,000 rows, 1,000 replicates, Ray with 2 workers
    python benchmarks/distributed.py --rows 200000         # a quick check

Writes ``--files`` parquet shards (ids, labels, two sensitive features, a teacher's and a student's class
probabilities as fixed-size lists, row groups of ``--row-group`` rows), then audits them (agreement, calibration,
bias, fingerprint; ``--replicates`` bootstrap replicates) twice, each in a fresh child process so that memory peaks
do not mix: once with the local executor, once with ``RayExecutor(num_actors=--workers)`` on a local Ray instance.
It prints and writes (``--out``) the wall times, the peak resident memory of the driver and of every worker, the
size of the states a unit sends back, and whether the two results.json are byte-identical. A third child measures
the per-row and per-unit costs the README's scaling estimate is built from: reading a unit, feeding it to the
accumulators, merging a unit's states, and the final computation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECTIONS = ["agreement", "calibration", "bias", "fingerprint"]


def write_shards(directory: Path, rows: int, files: int, row_group: int, n_classes: int, seed: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    cuts = np.linspace(0, rows, files + 1).astype(np.int64)
    for i in range(files):
        rng = np.random.default_rng([seed, i])
        a, b = int(cuts[i]), int(cuts[i + 1])
        n = b - a
        z = rng.normal(size=(n, n_classes)).astype(np.float32) * 2
        zs = z + rng.normal(size=(n, n_classes)).astype(np.float32) * 0.7
        y = (z + rng.gumbel(size=z.shape).astype(np.float32)).argmax(1)

        def softmax(x):
            e = np.exp(x - x.max(1, keepdims=True))
            return (e / e.sum(1, keepdims=True)).astype(np.float32)

        table = pa.table({
            "id": np.arange(a, b, dtype=np.int64),
            "label": y.astype(np.int64),
            "sex": np.where(rng.random(n) < 0.45, "F", "M"),
            "age": rng.choice(np.array(["<30", "30-50", ">50"]), size=n),
            "p_teacher": pa.FixedSizeListArray.from_arrays(pa.array(softmax(z).ravel()), n_classes),
            "p_student": pa.FixedSizeListArray.from_arrays(pa.array(softmax(zs).ravel()), n_classes),
        })
        pq.write_table(table, directory / f"part-{i:04d}.parquet", row_group_size=row_group)


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(args: argparse.Namespace) -> None:
    """One configuration in a fresh process; prints one JSON line."""
    import kdaudit
    from kdaudit.executors import ColumnModel, ParquetSource, RayExecutor

    src = ParquetSource(args.dir, label="label", ids="id", sensitive=["sex", "age"])
    teacher = ColumnModel("p_teacher", n_classes=args.classes, name="teacher")
    student = ColumnModel("p_student", n_classes=args.classes, name="student")
    out: dict = {"mode": args.child, "units": len(src.units), "rows": src.n_rows}
    if args.child == "costs":
        out.update(unit_costs(src, teacher, student, args))
        out["driver_peak_rss_mb"] = _peak_mb()
        print(json.dumps(out))
        return
    ex: object = "local"
    if args.child == "ray":
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        out["ray_init_s"] = time.perf_counter() - t0
        ex = RayExecutor(num_actors=args.workers)
    t0 = time.perf_counter()
    res = kdaudit.audit(teacher, {"student": student}, src, executor=ex, sections=SECTIONS, batch_size=65_536,
                        n_replicates=args.replicates, seed=0, progress=False, measure_cost=False)
    out["audit_s"] = time.perf_counter() - t0
    from kdaudit._io import canonical_json

    text = canonical_json(res.results)
    out["results_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    out["driver_peak_rss_mb"] = _peak_mb()
    out["workers"] = res.run_info["executor"]["workers"]
    out["headline"] = {k: res.results["comparisons"][0]["agreement"]["headline"][k]["value"]
                       for k in ("top1_agreement", "kl_divergence")}
    Path(args.dump).write_text(text)
    if args.child == "ray":
        ex.close()
        import ray

        ray.shutdown()
    print(json.dumps(out))


def unit_costs(src, teacher, student, args) -> dict:
    """Per-row and per-unit costs, on the first units: read, feed (harness + accumulator updates), merge, compute."""
    import pickle

    from kdaudit.metrics import Bootstrap
    from kdaudit.sections import registry
    from kdaudit.sections._engine import ShardTask

    boot = Bootstrap(args.replicates, seed=0)
    reg = registry()
    task = ShardTask(source=src, models=[teacher, student], plan=[("student", s) for s in SECTIONS],
                     sections={s: reg[s] for s in SECTIONS}, options={}, bootstrap=boot, batch_size=65_536)
    task.setup()
    units = src.units[:4]
    src.load(units[0], ["p_teacher", "p_student"])  # warm the file cache and imports
    t0 = time.perf_counter()
    rows = 0
    for u in units:
        rows += len(src.load(u, ["p_teacher", "p_student"]).data)
    read_s = (time.perf_counter() - t0) / rows
    t0 = time.perf_counter()
    results = [task(u) for u in units]
    unit_s = (time.perf_counter() - t0) / rows  # read + harness + per-block updates
    state_bytes = len(pickle.dumps(results[0]["folds"], protocol=5))
    merged = dict(task(units[0])["folds"])
    t0 = time.perf_counter()
    reps = 0
    for r in results * 3:
        for (_, section), acc in r["folds"].items():
            merged[("student", section)].merge(acc)
        reps += 1
    merge_s = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for acc in merged.values():
        acc.compute()
    compute_s = time.perf_counter() - t0
    return {"read_s_per_row": read_s, "unit_s_per_row": unit_s, "update_s_per_row": unit_s - read_s,
            "merge_s_per_unit": merge_s, "compute_s": compute_s, "state_bytes_per_unit": state_bytes,
            "rows_per_unit": rows / len(units)}


def run_child(mode: str, args: argparse.Namespace, dump: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--dir", str(args.dir), "--classes", str(args.classes),
           "--replicates", str(args.replicates), "--workers", str(args.workers), "--dump", str(dump)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child {mode} failed")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t0
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import pyarrow

    try:
        import ray

        rv = ray.__version__
    except ImportError:
        rv = "not installed"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} logical CPUs, load average {load:.1f} at start; Python "
            f"{platform.python_version()}, numpy {numpy.__version__}, pyarrow {pyarrow.__version__}, Ray {rv}; "
            "no GPU lent to this task")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--row-group", type=int, default=250_000)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--replicates", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dir", type=Path, default=None, help="where the shards go (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distributed_cpu.txt")
    p.add_argument("--child", choices=("local", "ray", "costs"), help=argparse.SUPPRESS)
    p.add_argument("--dump", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="kdaudit-dist-") as tmp:
        tmp_path = Path(tmp)
        args.dir = args.dir or tmp_path / "shards"
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        head = machine()
        t0 = time.perf_counter()
        write_shards(args.dir, args.rows, args.files, args.row_group, args.classes, seed=0)
        write_s = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in Path(args.dir).glob("*.parquet"))
        local = run_child("local", args, tmp_path / "local.json")
        ray_ = run_child("ray", args, tmp_path / "ray.json")
        costs = run_child("costs", args, tmp_path / "costs.json")
        same = (tmp_path / "local.json").read_bytes() == (tmp_path / "ray.json").read_bytes()
    lines = [
        f"kdaudit distributed benchmark ({started})",
        f"machine: {head}",
        f"workload: {args.rows:,} rows x {args.classes} classes in {args.files} parquet shards ({size / 2**20:,.0f} MiB,"
        f" row groups of {args.row_group:,} rows = {local['units']} units), teacher and student outputs as columns,"
        f" 2 sensitive features; sections {', '.join(SECTIONS)}; {args.replicates} bootstrap replicates"
        f" (shards written in {write_s:.0f} s)",
        f"local executor: audit {local['audit_s']:.1f} s; peak RSS: driver {local['driver_peak_rss_mb']:,.0f} MB",
        f"Ray, {args.workers} workers: audit {ray_['audit_s']:.1f} s (+ ray.init {ray_['ray_init_s']:.1f} s); peak RSS: "
        f"driver {ray_['driver_peak_rss_mb']:,.0f} MB, workers "
        + ", ".join(f"{w['peak_rss_mb']:,.0f} MB" for w in ray_["workers"]),
        f"speed-up Ray/local (audit wall time): {local['audit_s'] / ray_['audit_s']:.2f}x",
        f"results.json byte-identical (local vs Ray): {same} (sha256 {local['results_sha256'][:16]}... vs "
        f"{ray_['results_sha256'][:16]}...)",
        f"per-row and per-unit costs (first 4 units, one process): read {costs['read_s_per_row'] * 1e9:,.0f} ns/row; "
        f"read + per-block updates {costs['unit_s_per_row'] * 1e9:,.0f} ns/row "
        f"(updates {costs['update_s_per_row'] * 1e9:,.0f} ns/row); merge of one unit's states "
        f"{costs['merge_s_per_unit'] * 1e3:,.1f} ms; states sent back per unit "
        f"{costs['state_bytes_per_unit'] / 2**20:,.1f} MiB; final computation ({args.replicates} replicates) "
        f"{costs['compute_s']:.1f} s",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
