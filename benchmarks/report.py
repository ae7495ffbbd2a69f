"""How long the HTML report takes to render and how much it weighs (issue 4, item 9: < 1 s, < 1.5 MB).

    python benchmarks/report.py               # the committed demo (reports/demo/results.json + run.json), 7 renders
    python benchmarks/report.py --fixture     # the test fixture (two students, every section) instead
    python benchmarks/report.py -n 15         # more renders

Renders the same results ``n`` times in this process after one warm-up render (template compilation, matplotlib's
font cache) and prints the median wall time and CPU time (``time.process_time``: the machine is shared, and CPU time
is what the renderer itself spends), the size of the page in bytes, and the targets. A first render in a fresh
process (imports included) is timed too, in a subprocess. Writes ``benchmarks/results/report_cpu.txt``.

The size ratios compare with the offline HTML reports of two tools named in ``../shared/ANCHORS.md``: Evidently's
report inlines a 3.5 MB script bundle, a Deepchecks report weighs about 7.6 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TARGET_S = 1.0
TARGET_BYTES = 1_500_000
EVIDENTLY_BYTES = 3_500_000  # ../shared/ANCHORS.md: Evidently's self-contained report, 3.5 MB script bundle
DEEPCHECKS_BYTES = 7_600_000  # ../shared/ANCHORS.md: Deepchecks' offline HTML, about 7.6 MB
FIXED_TIME = "2026-01-01T00:00:00+00:00"


def _inputs(fixture: bool) -> tuple[str, dict, dict]:
    demo = ROOT / "reports" / "demo"
    if not fixture and (demo / "results.json").is_file():
        results = json.loads((demo / "results.json").read_text(encoding="utf-8"))
        run = demo / "run.json"
        run_info = json.loads(run.read_text(encoding="utf-8")) if run.is_file() else {}
        return "reports/demo/results.json (kdaudit demo)", results, run_info
    from _report_fixture import make_results, make_run_info

    return "tests/_report_fixture.py make_results()", make_results(), make_run_info()


def _count_charts(html: str) -> int:
    return html.count("<svg ")


def _first_render(fixture: bool) -> dict:
    """Imports plus the first render, in a fresh process: what ``kdaudit demo`` pays once."""
    code = (
        "import json, sys, time\n"
        "t0, c0 = time.perf_counter(), time.process_time()\n"
        "from kdaudit.report import render_html\n"
        "t1, c1 = time.perf_counter(), time.process_time()\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "import report as b\n"
        f"_, r, ri = b._inputs({fixture!r})\n"
        "t2, c2 = time.perf_counter(), time.process_time()\n"
        f"render_html(r, run_info=ri, generated_at={FIXED_TIME!r})\n"
        "print(json.dumps({'wall_s': time.perf_counter() - t2, 'cpu_s': time.process_time() - c2,\n"
        "                  'import_wall_s': t1 - t0}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=7, help="renders to time (default 7)")
    ap.add_argument("--fixture", action="store_true", help="render the test fixture instead of the committed demo")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results/")
    args = ap.parse_args(argv)

    from kdaudit.report import render_html

    source, results, run_info = _inputs(args.fixture)
    load_start = os.getloadavg()
    html = render_html(results, run_info=run_info, generated_at=FIXED_TIME)  # warm-up
    walls, cpus = [], []
    for _ in range(max(args.n, 1)):
        t0, c0 = time.perf_counter(), time.process_time()
        page = render_html(results, run_info=run_info, generated_at=FIXED_TIME)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if page != html:
            raise SystemExit("renders differ: the report must be deterministic")
    first = _first_render(args.fixture)
    load_end = os.getloadavg()
    size = len(html.encode("utf-8"))
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    n_students = sum(1 for m in results.get("models", []) if isinstance(m, dict) and m.get("role") == "student")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# benchmarks/report.py  ({stamp})",
        f"machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores, "
        f"load average {' '.join(f'{x:.1f}' for x in load_start)} at start, "
        f"{' '.join(f'{x:.1f}' for x in load_end)} at end (the cores are shared with other work)",
        f"input: {source}; {n_students} students, {_count_charts(html)} inline SVG charts",
        "",
        f"render, median of {len(walls)} (after one warm-up render):",
        f"  wall time : {wall:.3f} s   (min {min(walls):.3f}, max {max(walls):.3f})",
        f"  CPU time  : {cpu:.3f} s   (min {min(cpus):.3f}, max {max(cpus):.3f})  -> {cpu / TARGET_S:.2f}x the "
        f"{TARGET_S:g} s target",
        f"first render in a fresh process: wall {first['wall_s']:.3f} s, CPU {first['cpu_s']:.3f} s (after importing "
        f"kdaudit.report, which took {first['import_wall_s']:.2f} s wall: the kdaudit package imports torch)",
        "",
        f"size: {size:,} bytes ({size / 1e6:.2f} MB) -> {size / TARGET_BYTES:.2f}x the {TARGET_BYTES / 1e6:g} MB "
        "target",
        f"  vs Evidently's 3.5 MB script bundle : {size / EVIDENTLY_BYTES:.3f}x  "
        f"({EVIDENTLY_BYTES / size:.1f} times smaller)",
        f"  vs Deepchecks' ~7.6 MB report       : {size / DEEPCHECKS_BYTES:.3f}x  "
        f"({DEEPCHECKS_BYTES / size:.1f} times smaller)",
        "  (sizes of the other tools as stated in ../shared/ANCHORS.md, not measured here)",
        "",
        f"targets: render < {TARGET_S:g} s: {'met' if cpu < TARGET_S and wall < TARGET_S else 'NOT met'} "
        f"(CPU and wall medians); size < {TARGET_BYTES / 1e6:g} MB: {'met' if size < TARGET_BYTES else 'NOT met'}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if not args.no_write:
        from kdaudit._io import atomic_write_text

        out = ROOT / "benchmarks" / "results" / "report_cpu.txt"
        atomic_write_text(out, text)
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
