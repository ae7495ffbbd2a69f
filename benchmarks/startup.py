"""Start-up time of the CLI: ``kdaudit --help`` and ``kdaudit gate`` on a results file, against a bare Python start,
in one run.

    python benchmarks/startup.py [RESULTS.json]      # default: reports/demo/results.json

Each command runs ``--repeats`` times in a fresh interpreter (as a user or a CI step would start it), alternating
with ``python -c pass``; the best time of each is reported (the least disturbed by other work on the machine), and
which heavy libraries the command loaded. Target: ``kdaudit gate`` under 0.5 s on 2 cores, torch, scipy and
scikit-learn never loaded. Results are printed and written to benchmarks/results/startup_cpu.txt.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_PROBE = ("import sys, runpy\nsys.argv = ['kdaudit'] + sys.argv[1:]\n"
          "try:\n    runpy.run_module('kdaudit.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
          "print('HEAVY=' + ','.join(sorted({'torch', 'scipy', 'sklearn'} & set(sys.modules))), file=sys.stderr)\n")


def _time(cmd: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    heavy = next((line[6:] for line in proc.stderr.splitlines() if line.startswith("HEAVY=")), "?")
    return wall, heavy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default=str(ROOT / "reports" / "demo" / "results.json"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "startup_cpu.txt"))
    args = ap.parse_args()
    commands = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "kdaudit --help": [sys.executable, "-c", _PROBE, "--help"],
        "kdaudit gate RESULTS.json": [sys.executable, "-c", _PROBE, "gate", args.results],
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    heavy: dict[str, str] = {}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            wall, h = _time(cmd)
            times[name].append(wall)
            heavy[name] = h
    base = min(times["python -c pass (baseline)"])
    lines = [f"kdaudit start-up benchmark ({time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())})",
             f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, load average "
             f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}"]
    for name, ts in times.items():
        extra = "" if name.startswith("python") else (f"; +{min(ts) - base:.3f} s over a bare start; heavy libraries "
                                                     f"loaded: {heavy[name] or 'none'}")
        lines.append(f"{name}: best {min(ts):.3f} s of {len(ts)} (median {sorted(ts)[len(ts) // 2]:.3f} s){extra}")
    gate = min(times["kdaudit gate RESULTS.json"])
    lines.append(f"kdaudit gate under 0.5 s: {'PASS' if gate < 0.5 else 'FAIL'} ({gate:.3f} s)")
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
