"""``kdaudit demo``: a complete audit on real data, from training to report, in under two minutes on two CPU cores.

What it does, on the bundled UCI Adult data (train split to train, test split to audit):

1. trains a teacher ensemble: 3 MLPs (one hidden layer of 64) with seeds 1..3, on the labels;
2. distills a small student (one hidden layer of 16; 1/12 of the ensemble's parameters) from the ensemble's
   probabilities through the harness (Hinton loss, T = 4, alpha = 0.9, 10 epochs);
3. trains an independent control of the student's architecture on the labels alone (same data, no teacher);
4. for the lineage section, trains 19 reference ensembles: the teacher's own recipe with other seeds, which is what
   the lineage test's null needs (a teacher's owner can always train them), so "derived" has a p-value that holds;
   and 10 negative controls, MLPs of the student's architecture trained on the labels alone with fresh seeds
   (models known not to be derived), which check the test's calibration for this teacher (too few to calibrate
   by: that takes 19);
5. audits both students against the teacher (agreement, calibration, bias, fingerprint, cost, lineage) with
   1,000-replicate paired bootstrap intervals, judges the default policy and writes results.json, run.json and
   report.html.

Everything is seeded: two runs with the same seed give byte-identical results.json.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["DemoRecipe", "build_demo_models", "run_demo"]


@dataclass(frozen=True)
class DemoRecipe:
    """Sizes of the demo (``quick`` shrinks them for smoke tests)."""

    teacher_members: int = 3
    teacher_hidden: tuple[int, ...] = (64,)
    student_hidden: tuple[int, ...] = (16,)
    epochs: int = 4
    student_epochs: int = 10
    lr: float = 3e-3
    batch_size: int = 512
    temperature: float = 4.0
    alpha: float = 0.9
    n_references: int = 19
    n_controls: int = 10
    n_replicates: int = 1000
    train_rows: int | None = None
    audit_rows: int | None = None
    lineage_probes: int = 1000
    p_value_method: str = "exact"

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


QUICK = DemoRecipe(teacher_members=2, teacher_hidden=(16,), student_hidden=(8,), epochs=3, student_epochs=3,
                   batch_size=256, n_references=4, n_replicates=100, train_rows=6000, audit_rows=3000, lineage_probes=300,
                   p_value_method="parametric")


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[kdaudit demo] {msg}", file=sys.stderr, flush=True)


def build_demo_models(recipe: DemoRecipe, *, seed: int = 0, lineage: bool = True, progress: bool = True
                      ) -> dict[str, Any]:
    """Train the demo's models; returns train/audit data, teacher members, student, control, references, timings."""
    import numpy as np
    import torch

    from kdaudit.data import load_adult
    from kdaudit.distill import distill, mlp, train_control
    from kdaudit.models import EnsembleModel, TorchModel

    torch.set_num_threads(1)  # the demo's networks are tiny: one thread is as fast and leaves the other core free
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    train, test = load_adult(split="train"), load_adult(split="test")
    if recipe.train_rows is not None:
        train = train.subset(np.sort(np.random.default_rng(seed).permutation(len(train))[: recipe.train_rows]))
    if recipe.audit_rows is not None:
        test = test.subset(np.sort(np.random.default_rng(seed + 1).permutation(len(test))[: recipe.audit_rows]))
    times["load_data_s"] = time.perf_counter() - t0
    n_in, n_cls = train.X.shape[1], len(train.classes)

    def fit(hidden: tuple[int, ...], s: int, epochs: int) -> Any:
        return train_control(mlp(n_in, n_cls, hidden=hidden, seed=s), train, epochs=epochs, lr=recipe.lr,
                             batch_size=recipe.batch_size, seed=s)

    def member_seeds(k: int) -> list[int]:
        # ensemble k (0 = the teacher) uses seeds 1000 k + seed + 1 .. + members: disjoint across ensembles
        return [1000 * k + seed + 1 + i for i in range(recipe.teacher_members)]

    t0 = time.perf_counter()
    _say(progress, f"training the teacher: an ensemble of {recipe.teacher_members} MLPs {recipe.teacher_hidden} "
                   f"on {len(train):,} rows")
    members = [fit(recipe.teacher_hidden, s, recipe.epochs) for s in member_seeds(0)]
    times["train_teacher_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say(progress, f"distilling a student MLP {recipe.student_hidden} from the ensemble (T={recipe.temperature}, "
                   f"alpha={recipe.alpha})")
    student = distill(members, mlp(n_in, n_cls, hidden=recipe.student_hidden, seed=seed + 500), train,
                      temperature=recipe.temperature, alpha=recipe.alpha, epochs=recipe.student_epochs, lr=recipe.lr,
                      batch_size=recipe.batch_size, seed=seed + 500)
    times["distill_student_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say(progress, f"training an independent control MLP {recipe.student_hidden} on the labels alone")
    # the student's recipe without the teacher: same architecture, epochs and optimiser, trained on the labels
    control = fit(recipe.student_hidden, seed + 600, recipe.student_epochs)
    times["train_control_s"] = time.perf_counter() - t0

    references: list[Any] = []
    if lineage and recipe.n_references:
        t0 = time.perf_counter()
        _say(progress, f"training {recipe.n_references} reference ensembles (the teacher's recipe, other seeds) "
                       "for the lineage test")
        ks: Any = range(1, recipe.n_references + 1)
        if progress:
            from tqdm.auto import tqdm

            ks = tqdm(ks, desc="kdaudit demo: reference ensembles", unit="ensemble", leave=False)
        for k in ks:
            ref_members = [TorchModel(fit(recipe.teacher_hidden, s, recipe.epochs), name=f"reference{k}[{i}]")
                           for i, s in enumerate(member_seeds(k))]
            references.append(EnsembleModel(ref_members, name=f"reference{k}"))
        times["train_references_s"] = time.perf_counter() - t0
    controls: list[Any] = []
    if lineage and recipe.n_references and recipe.n_controls:
        t0 = time.perf_counter()
        _say(progress, f"training {recipe.n_controls} negative controls (MLP {recipe.student_hidden} on the labels "
                       "alone, fresh seeds) for the lineage test")
        controls = [TorchModel(fit(recipe.student_hidden, seed + 700 + k, recipe.student_epochs),
                               name=f"negative control {k}") for k in range(1, recipe.n_controls + 1)]
        times["train_controls_s"] = time.perf_counter() - t0

    teacher_members = [TorchModel(m, name=f"teacher[{i}]") for i, m in enumerate(members)]
    teacher = EnsembleModel(teacher_members, name="teacher ensemble")
    return {
        "train": train, "test": test, "teacher": teacher, "teacher_modules": members,
        "student": TorchModel(student, name="distilled student"), "student_module": student,
        "control": TorchModel(control, name="independent control"), "control_module": control,
        "references": references, "controls": controls, "times": times,
    }


def save_demo_models(models: dict[str, Any], directory: str | Path) -> dict[str, Path]:
    """Write the teacher members, the student and the control as safetensors weights (for a config-file audit)."""
    from safetensors.torch import save

    from kdaudit._io import atomic_write_bytes

    directory = Path(directory)
    written = {}
    named = [(f"teacher_{i + 1}", m) for i, m in enumerate(models["teacher_modules"])]
    named += [("student", models["student_module"]), ("control", models["control_module"])]
    for name, module in named:
        data = save({k: v.contiguous() for k, v in module.state_dict().items()})
        written[name] = atomic_write_bytes(directory / f"{name}.safetensors", data)
    return written


def _load_saved(models: dict[str, Any], paths: dict[str, Path], recipe: DemoRecipe) -> dict[str, Any]:
    """The teacher members, student and control loaded back from their safetensors files (same weights)."""
    from kdaudit.models import EnsembleModel, load_model

    shape = {"in_features": int(models["train"].X.shape[1]), "n_classes": len(models["train"].classes)}

    def load(key: str, name: str, hidden: tuple[int, ...]) -> Any:
        return load_model(paths[key], name=name, arch="mlp", arch_kwargs=dict(shape, hidden=list(hidden)))

    members = [load(f"teacher_{i + 1}", f"teacher[{i}]", recipe.teacher_hidden)
               for i in range(len(models["teacher_modules"]))]
    return {"teacher": EnsembleModel(members, name="teacher ensemble"),
            "student": load("student", "distilled student", recipe.student_hidden),
            "control": load("control", "independent control", recipe.student_hidden)}


def _write_student_manifest(models: dict[str, Any], model_paths: dict[str, Path], path: Path) -> Path:
    """The documented-distillation record of the demo student, for ``kdaudit lineage --verify``."""
    from kdaudit.lineage import write_manifest

    record = models["student_module"].kdaudit_record_
    teachers = {name: file for name, file in model_paths.items() if name.startswith("teacher_")}
    return write_manifest(path, teachers=teachers, student=model_paths["student"],
                          distill_settings=record.to_dict(include_timing=False), data_sha256=record.data_sha256,
                          extra={"report": "report.html", "results": "results.json"})


def run_demo(out_dir: str | Path = "kdaudit-demo", *, seed: int = 0, quick: bool = False, lineage: bool = True,
             progress: bool = True, recipe: DemoRecipe | None = None, save_models: str | Path | None = None,
             n_references: int | None = None) -> tuple[Any, dict[str, Path]]:
    """Train, distill, audit and write the report; returns ``(AuditResult, {"results": ..., "report": ..., ...})``.

    Parameters
    ----------
    out_dir : path
        Where results.json, run.json and report.html go.
    seed : int
    quick : bool
        A reduced run (fewer rows, epochs, references and replicates) for smoke tests.
    lineage : bool
        Train reference models and run the lineage section.
    progress : bool
    recipe : DemoRecipe, optional
        Sizes; default the full demo (or the quick one).
    save_models : path, optional
        Where to save the teacher members', student's and control's weights (safetensors); default
        ``out_dir/models``. The student's lineage manifest (``out_dir/lineage-manifest.json``) names these files.
    n_references : int, optional
        Reference ensembles for the lineage test (default: the recipe's, 19).
    """
    from kdaudit._audit import audit

    t_start = time.perf_counter()
    recipe = recipe or (QUICK if quick else DemoRecipe())
    if n_references is not None:
        recipe = replace(recipe, n_references=n_references)
    models = build_demo_models(recipe, seed=seed, lineage=lineage, progress=progress)
    model_paths = save_demo_models(models, Path(out_dir) / "models" if save_models is None else save_models)
    # Audit the files just written, not the modules in memory: the report's hash table then shows what
    # `sha256sum FILE` prints for each of them, and their sizes on disk.
    models = dict(models, **_load_saved(models, model_paths, recipe))
    from kdaudit._audit import available_sections
    from kdaudit._config import ALL_SECTIONS, DEFAULT_SECTIONS

    wanted = ALL_SECTIONS if lineage and models["references"] else DEFAULT_SECTIONS
    provided = available_sections()
    sections = tuple(s for s in wanted if s in provided)
    _say(progress, f"auditing on {len(models['test']):,} held-out rows: {', '.join(sections)}")
    lineage_options = {"n_probes": recipe.lineage_probes, "p_value_method": recipe.p_value_method}
    config = {"demo": {"seed": seed, "quick": quick, "recipe": recipe.to_dict(),
                       "train_data": models["train"].summary()["name"],
                       "train_sha256": models["train"].fingerprint()}}
    result = audit(
        models["teacher"],
        {"distilled student": models["student"], "independent control": models["control"]},
        models["test"],
        sections=sections,
        n_replicates=recipe.n_replicates,
        seed=seed,
        references=models["references"] or None,
        controls=models["controls"] or None,
        roles={"independent control": "control"},  # shown beside the student, never judged as one
        lineage_options=lineage_options if "lineage" in sections else None,
        config=config,
        progress=progress,
    )
    run_info = dict(result.run_info)
    run_info["demo"] = {"timings_s": {k: round(v, 3) for k, v in models["times"].items()},
                        "total_s": round(time.perf_counter() - t_start, 3)}
    result = replace(result, run_info=run_info)
    paths = result.save(out_dir)
    paths["manifest"] = _write_student_manifest(models, model_paths, Path(out_dir) / "lineage-manifest.json")
    _say(progress, f"done in {time.perf_counter() - t_start:.1f} s")
    return result, paths
