"""Shadow students (issue 16): where the lineage test loses label-only extractions, and what the suspect's own
queries recover.

Each pool member (the teacher and its 39 references) in turn is the teacher; its students are made on the rows the
suspects' makers queried (``pa``: half of the public rows): KD at T = 4 and label-only extraction, 2 seeds each. Three
tests per suspect, all through the library's own analysis (:func:`lineage.array_test`, calibrated by 40 controls:
20 students of siblings kept out of the pool, made on the same rows, and 20 models of other architectures):

- **members**: the lineage test as it stands (the pool of the teacher and its references);
- **shadows**: the pool of shadow students, one per member, made with :func:`kdaudit.lineage.train_shadow_students`
  by label-only extraction into an architecture no suspect has, on ``--shadow-rows suspects`` (the suspects' own
  query rows ``pa``: an investigator holding the suspect's queries, such as an API's logs) or ``other`` (the other
  half ``pb``: same distribution, other rows);
- **either**: the Bonferroni combination, derived if ``2 * min(p_members, p_shadows) <= alpha``;
- **joint**: :func:`kdaudit.lineage.joint_rank_p_value`, one rank test on the sum of each member's and its
  shadows' combined statistics, each standardized over its pool (exact: the tuples are exchangeable).

``--shadow-kinds labels,kd`` adds a second shadow pool made by KD at T = 2 (then "either" is Bonferroni over three
tests, which 39 references cannot bring to 0.05).

The false-positive rate is over each teacher's tests of underived suspects: students (KD and label-only, on the same
rows) of siblings kept out of the pool, models of the recipe trained on other rows, and smaller models.

Run: ``python benchmarks/lineage_shadows.py --task mnist --shadow-rows suspects --teachers 0-9`` (writes
``benchmarks/results/lineage_{task}_shadows_{rows}_cpu.txt``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import lineage as B  # noqa: E402  (the lineage benchmark's array-level test and data)
from kdaudit.data import load_mnist5k, split_data  # noqa: E402
from kdaudit.distill import distill, mlp, train_control  # noqa: E402
from kdaudit.lineage import joint_rank_p_value, train_shadow_students  # noqa: E402
from kdaudit.lineage._probes import disagreement_scores, select_probes  # noqa: E402
from kdaudit.lineage._stats import rank_p_value  # noqa: E402
from kdaudit.lineage._test import _candidates  # noqa: E402
from kdaudit.metrics._resampling import Bootstrap  # noqa: E402

K = 40
ALPHA = 0.05
TASKS = {
    # n_features, n_classes, teacher, student, shadow, control architectures, KD-control, training options
    "mnist": {"d": 784, "c": 10, "teacher": (128,), "student": (64,), "shadow": (96,), "kd_control": (48,),
              "label_control": (96,), "others": ((64,), (256,)), "train": {"epochs": 20, "lr": 1e-3}},
    "adult": {"d": 91, "c": 2, "teacher": (64,), "student": (16,), "shadow": (24,), "kd_control": (24,),
              "label_control": (32,), "others": ((16,), (32, 32)), "train": {"epochs": 5, "lr": 1e-3}},
}


def data(task: str):
    if task == "mnist":
        own, rest = split_data(load_mnist5k(), test_size=3000, seed=0)
        public, probe = split_data(rest, test_size=1000, seed=0)
    else:
        own, public, probe = B.adult_data()
    pa, pb = split_data(public, test_size=0.5, seed=1)
    return own, pa, pb, probe


def joint_p(*tests: dict) -> float:
    """:func:`kdaudit.lineage.joint_rank_p_value` of the pools' analyses, after checking that each pool's statistics
    give back its own calibrated p-value."""
    for r in tests:
        an = r["analysis"]
        assert abs(rank_p_value(an["statistic"], np.asarray(an["reference_statistics"])) - r["cal"][0]) < 1e-12
    return joint_rank_p_value(*(r["analysis"] for r in tests))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(TASKS), default="mnist")
    ap.add_argument("--shadow-rows", choices=("suspects", "other"), default="suspects")
    ap.add_argument("--teachers", default="0-9", help="pool members run as the teacher, as first-last")
    ap.add_argument("--modes", default="probabilities,labels")
    ap.add_argument("--shadow-kinds", default="labels", help="labels, kd or labels,kd: how the shadows are made")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = TASKS[args.task]
    first, last = (int(x) for x in args.teachers.split("-"))
    teachers = range(first, last + 1)
    lines: list[str] = []

    def log(msg: str = "") -> None:
        print(msg, flush=True)
        lines.append(msg)

    t0 = time.perf_counter()
    own, pa, pb, probe = data(args.task)
    train = cfg["train"]

    def net(hidden, seed):
        return mlp(cfg["d"], cfg["c"], hidden=hidden, seed=seed)

    def fit(hidden, seed, rows):
        return train_control(net(hidden, seed), rows, seed=seed, **train).eval()

    def student(teacher, hidden, seed, rows=pa, **kw):
        return distill(teacher, net(hidden, seed), rows, seed=seed, **train, **kw).eval()

    log("kdaudit lineage benchmark: shadow students (benchmarks/lineage_shadows.py)")
    log(f"machine: {platform.machine()}, torch {torch.__version__}, 1 thread, python {platform.python_version()}; "
        f"task {args.task}; rows: owner {len(own)}, suspects' queries {len(pa)}, other public rows {len(pb)}, probe "
        f"candidates {len(probe)} (plus blends)")
    members = [fit(cfg["teacher"], 100 + i, own) for i in range(K)]
    rows = pa if args.shadow_rows == "suspects" else pb
    shadow_kinds = args.shadow_kinds.split(",")
    extraction = {"labels": {"teacher_access": "labels"}, "kd": {"temperature": 2.0}}
    shadows = {k: train_shadow_students(
        members, lambda m, s, k=k: student(m, cfg["shadow"], s, rows, **extraction[k]),
        seeds=[(6000 if k == "labels" else 6500) + i for i in range(K)]) for k in shadow_kinds}
    name = B._mlp_name
    log(f"pool: {K} members ({name(cfg['teacher'])}, the owner's rows); shadows: "
        + " and ".join({"labels": "label-only extraction", "kd": "KD at T = 2"}[k] for k in shadow_kinds)
        + f" of each into {name(cfg['shadow'])} on the "
        + ("suspects' own query rows" if rows is pa else "other public rows"))
    students = []  # (teacher, kind, model)
    for t in teachers:
        for s in range(2):
            students.append((t, "label-only", student(members[t], cfg["student"], 5000 + 10 * t + s,
                                                      teacher_access="labels")))
            students.append((t, "KD T=4", student(members[t], cfg["student"], 5500 + 10 * t + s, temperature=4.0)))
    siblings = [fit(cfg["teacher"], 900 + s, own) for s in range(20)]
    controls = [(f"sibling student {s}", student(siblings[s], cfg["label_control"], 7100 + s, teacher_access="labels")
                 if s % 2 else student(siblings[s], cfg["kd_control"], 7000 + s, temperature=2.0))
                for s in range(20)]
    controls += [(f"other {j}.{s}", fit(h, 850 + 40 * j + s, own)) for j, h in enumerate(cfg["others"])
                 for s in range(10)]
    negatives = [fit(cfg["student"], 650 + s, own) for s in range(3)]
    negatives += [fit(cfg["teacher"], 700 + s, pb) for s in range(3)]
    negatives += [student(fit(cfg["teacher"], 950 + s, own), cfg["student"], 8000 + s, teacher_access="labels")
                  for s in range(3)]
    negatives += [student(fit(cfg["teacher"], 970 + s, own), cfg["student"], 8100 + s, temperature=4.0)
                  for s in range(3)]
    log(f"students: {len(students)} (teachers {first}-{last}, KD T=4 and label-only into {name(cfg['student'])}, "
        f"2 seeds each, on the suspects' query rows); controls: 20 students of out-of-pool siblings + 20 of other "
        f"architectures; underived suspects: {len(negatives)} ({name(cfg['student'])} and the recipe on other "
        f"rows, students of out-of-pool siblings: 3 label-only, 3 KD); models ready in {time.perf_counter() - t0:.0f}s")

    Xc, yc = _candidates(np.asarray(probe.X), np.asarray(probe.y_true), None, 0)

    def out(m):
        return B.probs_of(m, Xc).astype(np.float64)

    PM = np.stack([out(m) for m in members])
    PS = {k: np.stack([out(m) for m in v]) for k, v in shadows.items()}
    C = np.stack([out(m) for _, m in controls])
    names = [n for n, _ in controls]
    SP, NP = [out(m) for *_, m in students], [out(m) for m in negatives]
    bootstrap = Bootstrap(n_replicates=0, seed=0)
    kinds = ("KD T=4", "label-only")
    for mode in args.modes.split(","):
        access = (mode, None)
        memo_m: dict = {}
        memo_s: dict = {k: {} for k in PS}
        idx_m = select_probes(disagreement_scores(PM, access=mode), B.N_PROBES, seed=0)
        idx_s = {k: select_probes(disagreement_scores(v, access=mode), B.N_PROBES, seed=0) for k, v in PS.items()}
        tests = ("members", *(f"{k} shadows" for k in PS), "either", "joint")
        found = {k: np.zeros((len(teachers), 2), dtype=int) for k in tests}
        fp = {k: np.zeros(len(teachers), dtype=int) for k in tests}
        for ti, t in enumerate(teachers):
            order = [t] + [j for j in range(K) if j != t]

            def ps(s):
                a = B.array_test(PM[order], idx_m, s, C, names, yc, access=access, memo=memo_m, bootstrap=bootstrap)
                b = {k: B.array_test(v[order], idx_s[k], s, C, names, yc, access=access, memo=memo_s[k],
                                     bootstrap=bootstrap) for k, v in PS.items()}
                ps_all = [a["cal"][0], *(r["cal"][0] for r in b.values())]
                return {"members": a["cal"][0], **{f"{k} shadows": r["cal"][0] for k, r in b.items()},
                        "either": min(1.0, len(ps_all) * min(ps_all)), "joint": joint_p(a, *b.values())}

            for (tt, kind, _), s in zip(students, SP):
                if tt == t:
                    p = ps(s)
                    for k in tests:
                        found[k][ti, kinds.index(kind)] += p[k] <= ALPHA
            for s in NP:
                p = ps(s)
                for k in tests:
                    fp[k][ti] += p[k] <= ALPHA
        log("")
        log(f"== {mode}: TPR over {len(students)} students of {len(teachers)} teachers; FPR over {len(teachers)} x "
            f"{len(NP)} tests of underived suspects ==")
        rng = np.random.default_rng(0)
        draws = rng.integers(0, len(teachers), (20000, len(teachers)))
        per = {k: found[k].sum(axis=1) / 4 for k in tests}
        for k in tests:
            line = (f"  {k:<15} TPR {found[k].sum() / (4 * len(teachers)):.3f} (" + ", ".join(
                f"{kind} {found[k][:, j].sum()}/{2 * len(teachers)}" for j, kind in enumerate(kinds))
                + f"); FPR {fp[k].sum() / (len(teachers) * len(NP)):.3f} ({fp[k].sum()}/{len(teachers) * len(NP)})")
            if k != "members":
                diff = (per[k][draws] - per["members"][draws]).mean(axis=1)
                lo, hi = np.quantile(diff, [0.025, 0.975])
                line += (f"; change in TPR against members {per[k].mean() - per['members'].mean():+.3f} "
                         f"[{lo:+.3f}, {hi:+.3f}] (95% bootstrap over teachers)")
            log(line)
    log("")
    log(f"wall {time.perf_counter() - t0:.0f}s")
    path = Path(args.out) if args.out else (ROOT / "benchmarks" / "results"
                                            / f"lineage_{args.task}_shadows_{args.shadow_rows}_cpu.txt")
    command = "python benchmarks/lineage_shadows.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path.write_text(f"# {command}\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
