"""How the LM references null is calibrated by its controls: against all of them, or the nearer half (issue 13).

``dump`` runs :func:`kdaudit.lineage.lm_lineage_test` (references null, 19 references, 20 controls) on the zoo of
``benchmarks/lm_lineage.py`` for one seed set and access mode, calibrated by *all* the controls, and saves for every
suspect the two arrays the calibration takes: the suspect's statistics with the pool (M, S) and each control's in its
place (L, M, S). ``compare`` reads those files and runs the last step both ways, through the library's own
functions (``calibrate_by_controls``, ``nearer_half``, ``combined_statistic``, ``rank_p_value``): so one set of
(slow) model outputs answers how each calibration would have decided, suspect by suspect.

    python benchmarks/lm_calibration.py dump --access top_k --first-seed 10 --out DIR
    python benchmarks/lm_calibration.py compare DIR [DIR ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def dump(args: argparse.Namespace) -> int:
    import torch

    import kdaudit.lineage._lm as lm
    import lm_lineage as bench

    torch.set_num_threads(1)
    zoo = bench.Zoo(False)
    teacher, refs = zoo.teacher(), zoo.references(19)
    controls = [zoo.underived(k, 100 + i) for k in bench.NEGATIVE_KINDS for i in range(5)]  # as the benchmark
    suspects = []
    for s in range(args.first_seed, args.first_seed + max(args.seeds, args.negative_seeds)):
        if s < args.first_seed + args.seeds:
            suspects += [(f"{k}_{s}", 1, zoo.derived(k, s)) for k in bench.POSITIVE_KINDS]
        if s < args.first_seed + args.negative_seeds:
            suspects += [(f"{k}_{s}", 0, zoo.underived(k, s)) for k in bench.NEGATIVE_KINDS]
    access, _, decoding = args.access.partition(":")
    n = 500 if access == "top_k" else 1000  # the benchmark's full-budget settings
    prompts = zoo.prompt_set(2 * n)
    captured: dict = {}
    library_calibrate = lm.calibrate_by_controls

    def capture(stats, cal):
        captured["stats"], captured["cal"] = stats.copy(), cal.copy()
        return library_calibrate(stats, cal)

    lm.calibrate_by_controls = capture  # the library's own step, recorded on the way
    lm.NEAREST_CALIBRATION = ()  # every control, in the order given: the nearer half is chosen in `compare`
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    memo: dict = {}
    for name, label, model in suspects:
        t0 = time.perf_counter()
        r = lm.lm_lineage_test(teacher, model, prompts, references=refs, controls=controls, null="references",
                               access=access, n_prompts=n, max_new_tokens=24, alpha=0.05, seed=0, memo=memo,
                               query_budget=1000, decoding=decoding or None)
        np.savez(out / f"{name}.npz", stats=captured["stats"], cal=captured["cal"], label=label, p=r.p_value)
        print(f"{name} p={r.p_value:.3g} {time.perf_counter() - t0:.0f}s", flush=True)
    return 0


def _evaluate(rows: list[tuple[str, int, np.ndarray, np.ndarray]], nearest: bool) -> dict:
    from kdaudit.lineage._stats import calibrate_by_controls, combined_statistic, effect_size, nearer_half, rank_p_value

    out = []
    for name, label, stats, cal in rows:
        if nearest:
            cal = cal[nearer_half(stats, cal)]
        c = combined_statistic(calibrate_by_controls(stats, cal), np.ones(stats.shape[1]))
        out.append((name, label, rank_p_value(c[0], c[1:]), float(effect_size(c))))
    pos = [r for r in out if r[1] == 1]
    neg = [r for r in out if r[1] == 0]
    auc = float(np.mean([(p[3] > q[3]) + 0.5 * (p[3] == q[3]) for p in pos for q in neg]))
    return {"auc": auc, "found": sum(p[2] <= 0.05 for p in pos), "n_pos": len(pos),
            "fp": [q[0] for q in neg if q[2] <= 0.05], "n_neg": len(neg), "missed": [p[0] for p in pos if p[2] > 0.05]}


def compare(args: argparse.Namespace) -> int:
    for d in args.dirs:
        rows = []
        for f in sorted(Path(d).glob("*.npz")):
            z = np.load(f)
            if z["cal"].shape[0] < 19:
                raise SystemExit(f"{f}: {z['cal'].shape[0]} controls captured; dump with every control (19+)")
            rows.append((f.stem, int(z["label"]), z["stats"], z["cal"]))
        print(f"{d}: {len(rows)} suspects, {rows[0][3].shape[0]} controls, statistics {rows[0][2].shape}")
        for nearest in (False, True):
            r = _evaluate(rows, nearest)
            how = "nearest half of the controls" if nearest else "all the controls"
            print(f"  {how:<28}  AUC {r['auc']:.3f}  found {r['found']}/{r['n_pos']}  false positives "
                  f"{len(r['fp'])}/{r['n_neg']} {r['fp']}  missed {r['missed']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump", help="run the tests and save the calibration's inputs")
    d.add_argument("--access", default="top_k", choices=("top_k", "text:sample", "text:greedy"))
    d.add_argument("--first-seed", type=int, default=0)
    d.add_argument("--seeds", type=int, default=3, help="suspects per derived kind")
    d.add_argument("--negative-seeds", type=int, default=5, help="suspects per underived kind")
    d.add_argument("--out", required=True)
    c = sub.add_parser("compare", help="both calibrations on saved inputs")
    c.add_argument("dirs", nargs="+")
    args = ap.parse_args(argv)
    return dump(args) if args.cmd == "dump" else compare(args)


if __name__ == "__main__":
    raise SystemExit(main())
