"""``kdaudit demo --task lm``: distil a small GPT-style language model and audit it, from training to report.

What it does, on the bundled offline text (the docstrings of a fixed list of Python standard-library modules, read
from this Python's own source; PSF licence; see :mod:`kdaudit.data._corpus`), split by a hash of each docstring's
id into training text and held-out text:

1. trains a byte-level BPE tokenizer and a GPT-2-style teacher (2 layers) on the training text;
2. distils a student (1 layer, about a quarter of the teacher's parameters) by token-level knowledge distillation:
   the teacher scores every training text through the language-model interface and reveals its top-20
   log-probabilities per token, the student matches them at temperature T (:func:`kdaudit.distill.distill_lm_tokens`);
3. trains an independent control of the student's architecture on the same text without the teacher;
4. audits both against the teacher on held-out prompts (continuations of docstrings, with the docstring's own next
   words as reference) and a held-out multiple-choice task (which summary line belongs to this function?),
   with paired bootstrap intervals over prompts, judges the default LM policy and writes results.json, run.json and
   report.html.

Everything is seeded and torch runs on one thread: two runs with the same seed give byte-identical results.json.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_LM_DEMO_OUT", "LMDemoRecipe", "run_lm_demo"]

#: Where ``kdaudit demo --task lm`` writes by default: outside the files a clone tracks.
DEFAULT_LM_DEMO_OUT = "kdaudit-demo-lm"


@dataclass(frozen=True)
class LMDemoRecipe:
    """Sizes of the language-model demo (``quick`` shrinks them for smoke tests)."""

    vocab_size: int = 512
    max_length: int = 64
    teacher_layers: int = 2
    teacher_width: int = 96
    student_layers: int = 1
    student_width: int = 48
    heads: int = 4
    teacher_epochs: int = 2
    student_epochs: int = 2
    lr: float = 1e-2
    teacher_lr: float = 5e-3
    batch_size: int = 16
    temperature: float = 2.0
    alpha: float = 0.9
    top_k: int = 20
    train_texts: int | None = None
    n_prompts: int = 120
    prompt_chars: int = 80
    reference_chars: int = 80
    n_choice: int = 100
    max_new_tokens: int = 24
    n_replicates: int = 1000
    min_group_size: int = 10

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


QUICK_LM = LMDemoRecipe(vocab_size=300, max_length=48, teacher_width=32, student_width=16, teacher_epochs=1,
                        student_epochs=1, train_texts=200, n_prompts=40, prompt_chars=60, reference_chars=60,
                        n_choice=30, max_new_tokens=8, n_replicates=100, min_group_size=3)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[kdaudit demo lm] {message}", file=sys.stderr, flush=True)


def run_lm_demo(out_dir: str | Path = DEFAULT_LM_DEMO_OUT, *, seed: int = 0, quick: bool = False,
                progress: bool = True, recipe: LMDemoRecipe | None = None,
                save_models: bool = False) -> tuple[Any, dict[str, Path]]:
    """Train, distil, audit and write the report; returns ``(AuditResult, {"results": ..., "report": ..., ...})``.

    Parameters
    ----------
    out_dir : path
        Where results.json, run.json and report.html go (default ``./kdaudit-demo-lm``).
    seed : int
    quick : bool
        A reduced run (tiny models, few prompts and replicates) for smoke tests; not a real audit.
    progress : bool
        Progress lines on stderr.
    recipe : LMDemoRecipe, optional
    save_models : bool
        Also write the teacher, the student and the control as Hugging Face directories (safetensors and the
        tokenizer) under ``out_dir/models/{teacher,student,control}``, which ``kdaudit audit
        examples/configs/lm_audit.yaml`` audits again from disk (results.json does not change).
    """
    import torch

    from kdaudit._audit import audit
    from kdaudit.data._corpus import continuation_prompts, docstring_choice_task, load_stdlib_corpus, train_tokenizer
    from kdaudit.distill._lm import distill_lm_tokens, gpt_lm, train_lm
    from kdaudit.models._hf import HFCausalLM

    t_start = time.perf_counter()
    recipe = recipe or (QUICK_LM if quick else LMDemoRecipe())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is fastest on a shared machine, and deterministic
    try:
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        corpus = load_stdlib_corpus()
        train, held = corpus.split(heldout_fraction=0.2)
        texts = train.texts if recipe.train_texts is None else train.texts[:recipe.train_texts]
        tok = train_tokenizer(texts, vocab_size=recipe.vocab_size)
        times["corpus_and_tokenizer"] = time.perf_counter() - t0
        _say(progress, f"corpus: {len(corpus):,} standard-library docstrings (Python {corpus.python_version}); "
                       f"training on {len(texts):,}, auditing on held-out ones; tokenizer of {len(tok)} tokens")
        say = (lambda m: _say(True, m)) if progress else None
        common = dict(batch_size=recipe.batch_size, max_length=recipe.max_length, progress=say)

        def lm(layers: int, width: int, s: int) -> Any:
            return gpt_lm(len(tok), n_layer=layers, n_embd=width, n_head=recipe.heads,
                          n_positions=512, eos_token_id=tok.eos_token_id, seed=s)

        t0 = time.perf_counter()
        _say(progress, f"training the teacher ({recipe.teacher_layers} layers, width {recipe.teacher_width}, "
                       f"{recipe.teacher_epochs} epochs)")
        teacher = train_lm(lm(recipe.teacher_layers, recipe.teacher_width, seed), tok, texts,
                           epochs=recipe.teacher_epochs, lr=recipe.teacher_lr, seed=seed, **common)
        times["teacher"] = time.perf_counter() - t0
        teacher_lm = HFCausalLM(teacher, tok, name="teacher", batch_size=32)
        t0 = time.perf_counter()
        _say(progress, f"distilling the student from the teacher's top-{recipe.top_k} log-probabilities "
                       f"(T = {recipe.temperature}, alpha = {recipe.alpha})")
        student = distill_lm_tokens(teacher_lm, lm(recipe.student_layers, recipe.student_width, seed + 1), tok,
                                    texts, temperature=recipe.temperature, alpha=recipe.alpha, top_k=recipe.top_k,
                                    epochs=recipe.student_epochs, lr=recipe.lr, seed=seed + 1, **common)
        times["student"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _say(progress, "training the independent control (the student's architecture, no teacher)")
        control = train_lm(lm(recipe.student_layers, recipe.student_width, seed + 2), tok, texts,
                           epochs=recipe.student_epochs, lr=recipe.lr, seed=seed + 2, **common)
        times["control"] = time.perf_counter() - t0

        prompts = continuation_prompts(held, n=recipe.n_prompts, prompt_chars=recipe.prompt_chars,
                                       reference_chars=recipe.reference_chars, seed=seed)
        task = docstring_choice_task(held, n=recipe.n_choice, seed=seed)
        _say(progress, f"auditing on {len(prompts)} held-out prompts and a {len(task)}-question multiple-choice task")
        config = {"demo": {"task": "lm", "seed": seed, "quick": quick, "recipe": recipe.to_dict(),
                           "corpus": corpus.describe(), "train_texts": len(texts), "training": {
                               name: m.kdaudit_record_.to_dict(include_timing=False)
                               for name, m in (("teacher", teacher), ("student", student), ("control", control))}}}
        result = audit(
            teacher_lm,
            {"distilled student": HFCausalLM(student, tok, name="distilled student", batch_size=32),
             "independent control": HFCausalLM(control, tok, name="independent control", batch_size=32)},
            [prompts, task], n_replicates=recipe.n_replicates, seed=seed, config=config, progress=progress,
            roles={"independent control": "control"},
            section_options={"lm_tokens": {"top_k": recipe.top_k},
                             "lm_generation": {"max_new_tokens": recipe.max_new_tokens},
                             "lm_bias": {"min_group_size": recipe.min_group_size}})
    finally:
        torch.set_num_threads(threads)
    run_info = dict(result.run_info)
    run_info["demo"] = {"timings_s": {k: round(v, 3) for k, v in times.items()},
                        "total_s": round(time.perf_counter() - t_start, 3)}
    result = replace(result, run_info=run_info)
    if save_models:  # before the results: save() carries what else the folder holds into the new set
        for name, model in (("teacher", teacher), ("student", student), ("control", control)):
            folder = Path(out_dir) / "models" / name
            model.save_pretrained(folder, safe_serialization=True)
            tok.save_pretrained(folder)
        _say(progress, f"models: {Path(out_dir) / 'models'}")
    paths = result.save(out_dir)
    if save_models:
        paths["models"] = Path(out_dir) / "models"
    _say(progress, f"done in {time.perf_counter() - t_start:.1f} s: {paths['report']}")
    return result, paths
