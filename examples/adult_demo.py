"""The Adult demo: train a teacher ensemble, distill a student, audit it, and render reports/demo/.

This is what ``kdaudit demo`` runs. It also saves the teacher members, the student and the control as safetensors
weights in examples/models/adult/, so the same audit can be run from a config file afterwards::

    python examples/adult_demo.py                     # writes reports/demo/ and examples/models/adult/
    kdaudit audit examples/configs/adult.yaml --out /tmp/adult-audit   # audits those weight files
    kdaudit gate --policy examples/policy.yaml reports/demo/results.json

Run from the repository root. Takes about a minute on two CPU cores (see reports/demo/run.json for the timings of
the run that produced the committed report).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from kdaudit._demo import run_demo
from kdaudit.cli import print_summary

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "reports" / "demo"))
    parser.add_argument("--models", default=str(ROOT / "examples" / "models" / "adult"),
                        help="where to save the trained weights (for examples/configs/adult.yaml)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a reduced smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result, paths = run_demo(args.out, seed=args.seed, quick=args.quick, save_models=args.models)
    print_summary(result, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
