"""Compare two ``benchmarks/lineage.py --part teacher-power`` records teacher by teacher (issue 16).

Both records must hold the same teachers with the same students and underived models (the same zoo and seeds; only
the test's settings differ, for example the controls). For each access mode and test (calibrated, plain) this
prints, for a range of teachers, the share of students found (TPR) and of underived models accused (FPR) in each
record, the paired change, and a 95% percentile interval for the change that resamples teachers with all their
students and underived models (the teacher is the unit that was drawn; students of one teacher are not independent).

    python benchmarks/lineage_power_compare.py benchmarks/results/lineage_adult_teacher_power_40_cpu.txt \\
        benchmarks/results/lineage_adult_teacher_power_student_controls_cpu.txt --teachers 0-11,12-23,24-39,0-39
"""
from __future__ import annotations

import argparse
import re
import sys

import numpy as np

_SECTION = re.compile(r"^== (?P<mode>[\w-]+): each of the first \d+ ")
_TEACHER = re.compile(r"^\s+(?P<name>\S+)\s+centrality .*?: (?P<kinds>.*); false positives (?P<fp>\d+)/(?P<fn>\d+)$")
_KIND = re.compile(r"(?P<found>\d+)/(?P<n>\d+)$")


def parse(path: str) -> dict[tuple[str, str], list[tuple[str, int, int, int, int]]]:
    """``{(mode, test): [(teacher, found, students, false positives, underived), ...]}`` in the record's order."""
    out: dict[tuple[str, str], list[tuple[str, int, int, int, int]]] = {}
    mode = test = None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            m = _SECTION.match(line)
            if m:
                mode, test = m.group("mode"), None
                continue
            if line.strip().startswith("calibrated by"):
                test = "calibrated"
                continue
            if line.strip().startswith("plain test"):
                test = "plain"
                continue
            m = _TEACHER.match(line)
            if m and mode and test:
                found = n = 0
                for part in m.group("kinds").split(", "):
                    k = _KIND.search(part)
                    if k:
                        found, n = found + int(k.group("found")), n + int(k.group("n"))
                out.setdefault((mode, test), []).append((m.group("name"), found, n, int(m.group("fp")),
                                                          int(m.group("fn"))))
    if not out:
        raise SystemExit(f"{path}: no per-teacher lines of a --part teacher-power record")
    return out


def _ranges(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


def compare(a: str, b: str, teachers: str, draws: int = 20000, seed: int = 0) -> list[str]:
    ra, rb = parse(a), parse(b)
    lines = [f"A = {a}", f"B = {b}",
             f"paired change B - A; 95% percentile interval over {draws:,} bootstrap draws of teachers (seed {seed})"]
    for key in ra:
        if key not in rb:
            continue
        for lo, hi in _ranges(teachers):
            xa, xb = ra[key][lo:hi + 1], rb[key][lo:hi + 1]
            if not xa or len(xa) != len(xb):
                continue
            if [t[0] for t in xa] != [t[0] for t in xb] or [t[2] for t in xa] != [t[2] for t in xb]:
                raise SystemExit(f"{key}: the records hold different teachers or students for teachers {lo}-{hi}")
            fa, fb, n = (np.array([t[i] for t in x]) for x, i in ((xa, 1), (xb, 1), (xa, 2)))
            pa, pb, m = (np.array([t[i] for t in x]) for x, i in ((xa, 3), (xb, 3), (xa, 4)))
            idx = np.random.default_rng(seed).integers(0, len(xa), size=(draws, len(xa)))
            d_tpr = (fb[idx].sum(1) - fa[idx].sum(1)) / n[idx].sum(1)
            d_fpr = (pb[idx].sum(1) - pa[idx].sum(1)) / m[idx].sum(1)
            lines.append(
                f"{key[0]:13s} {key[1]:10s} teachers {lo}-{hi} ({len(xa)}): TPR {fa.sum() / n.sum():.3f} -> "
                f"{fb.sum() / n.sum():.3f} ({(fb.sum() - fa.sum()) / n.sum():+.3f} [{np.quantile(d_tpr, .025):+.3f}, "
                f"{np.quantile(d_tpr, .975):+.3f}]); FPR {pa.sum() / m.sum():.3f} -> {pb.sum() / m.sum():.3f} "
                f"({(pb.sum() - pa.sum()) / m.sum():+.3f} [{np.quantile(d_fpr, .025):+.3f}, "
                f"{np.quantile(d_fpr, .975):+.3f}]); teachers with more / as many / fewer found "
                f"{int((fb > fa).sum())} / {int((fb == fa).sum())} / {int((fb < fa).sum())}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="the baseline record")
    ap.add_argument("b", help="the record to compare with it")
    ap.add_argument("--teachers", default="0-11", help="teacher index ranges, e.g. 0-11,12-23 (default 0-11)")
    ap.add_argument("--draws", type=int, default=20000)
    args = ap.parse_args(argv)
    print("\n".join(compare(args.a, args.b, args.teachers, args.draws)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
