"""Benchmark: the language-model lineage test on a zoo of tiny GPT-2-style models with known lineage.

Everything is built offline from the bundled corpus (the Python standard library's docstrings): the owner's part of
the training documents (A), another part (B: the suspect maker's own texts), held-out documents for the prompts.

* Owner: a teacher (recipe R: 2 layers, d = 48, trained on A), 19 references (R on A, other seeds: null
  "references"), 19 controls (null "controls": models not derived from the teacher, drawn from the same kinds as
  the underived suspects below, other seeds).
* Derived from the teacher: token-level KD (top-20, on B) at T = 1, 2, 4; sequence-level KD on the teacher's
  greedy answers to 2,000 prompts (windows of the maker's texts; the loss is on the answers only); text-only
  extraction (training on the teacher's sampled text alone); KD into another architecture; KD then fine-tuned on B;
  KD then int8 (weights rounded to int8 per tensor).
* Not derived: R with other seeds, another architecture on A, R on the disjoint part B, students (token KD) of
  another teacher (trained on B).

For each suspect, both access modes (top-k log-probabilities, text only: sampled and greedy continuations) and
both nulls are run (``--modes``); the single
statistics (top-1 agreement, teacher log-prob correlation; ROUGE-L, word agreement, teacher log-likelihood) are
scored in the same run. Reported: ROC AUC (on the effect), TPR and empirical FPR at alpha, prompts and tokens used.

Run: ``nice -n 10 python benchmarks/lm_lineage.py [--quick] [--seeds N] [--out FILE]``. Models are cached under
``.kdaudit-cache/lm_lineage/`` (safetensors; our own files).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = ROOT / ".kdaudit-cache" / "lm_lineage"
MAX_LEN = 40
VOCAB = 384
RECIPE = {"n_layer": 2, "n_embd": 48, "n_head": 4}
OTHER_ARCH = {"n_layer": 1, "n_embd": 64, "n_head": 2}
BASE_EPOCHS = 6  # the public base checkpoints: trained once, cached
EPOCHS = 1  # every zoo model: one pass of fine-tuning (or distillation) from a base
LR = 1e-2
FT_LR = 3e-3
SEQ_KD_ANSWERS = 2000  # the cap on the sequence-level student's API answers


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def paragraphs(docs) -> list[str]:
    """Docstring paragraphs with runs of whitespace collapsed (short texts: many training sequences per step)."""
    out = []
    for d in docs:
        for p in re.split(r"\n\s*\n", d):
            p = re.sub(r"\s+", " ", p).strip()
            if len(p) >= 30:
                out.append(p)
    return out


class Zoo:
    """Every model starts from one of two public base checkpoints (one per architecture), as LLMs start from an
    open base: the owner's teacher and references are the base fine-tuned on the owner's part A with their own
    seeds (data order), suspects are the base fine-tuned or distilled on the maker's part B (or on A)."""

    def __init__(self, quick: bool) -> None:
        import torch
        import transformers

        from kdaudit.data import load_stdlib_corpus, train_tokenizer

        torch.set_num_threads(1)
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        self.quick = quick
        corpus = load_stdlib_corpus()
        train, held = corpus.split(heldout_fraction=0.2)
        texts = paragraphs(train.texts)
        side = [int(hashlib.sha256(f"owner|{t}".encode()).hexdigest()[:8], 16) % 2 for t in texts]
        self.all = texts
        self.A = [t for t, s in zip(texts, side) if s == 0]
        self.B = [t for t, s in zip(texts, side) if s == 1]
        # fine-tuning texts per model: every zoo model is trained on 2 CPU cores shared with other work
        n_texts = 500 if quick else 700
        self.B_all = self.B  # the maker's prompts for its API queries (sequence-level KD)
        self.A, self.B = self.A[:n_texts], self.B[:n_texts]
        self.held = paragraphs(held.texts)
        self.tok = train_tokenizer(texts, vocab_size=VOCAB)
        self.base_tag = hashlib.sha256(f"{corpus.sha256()}|{VOCAB}|{MAX_LEN}|{BASE_EPOCHS}|{LR}|v2".encode()
                                       ).hexdigest()[:12]
        self.tag = hashlib.sha256(f"{self.base_tag}|{EPOCHS}|{FT_LR}|{n_texts}|v2".encode()).hexdigest()[:12]
        self.n_trained = 0

    # -- building blocks ------------------------------------------------------------------------------
    def _wrap(self, model, name):
        from kdaudit.models import HFCausalLM

        return HFCausalLM(model, self.tok, name=name, batch_size=64, max_length=MAX_LEN + 48, truncation=True)

    def _fresh(self, arch, seed):
        from kdaudit.distill import gpt_lm

        return gpt_lm(len(self.tok), n_positions=MAX_LEN + 48, eos_token_id=self.tok.eos_token_id, seed=seed, **arch)

    def _load(self, path):
        from transformers import GPT2LMHeadModel

        return GPT2LMHeadModel.from_pretrained(str(path), local_files_only=True)

    def get(self, name: str, build, *, tag: str | None = None) -> object:
        """A cached model (safetensors under CACHE), trained by ``build()`` on a miss."""
        path = CACHE / (tag or self.tag) / name
        if (path / "model.safetensors").is_file():
            model = self._load(path)
        else:
            t0 = time.perf_counter()
            model = build()
            path.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(str(path), safe_serialization=True)
            self.n_trained += 1
            _log(f"trained {name} in {time.perf_counter() - t0:.1f}s")
        return self._wrap(model.eval(), name)

    def base(self, arch):
        from kdaudit.distill import train_lm

        name = "base_main" if arch is RECIPE else "base_other_arch"
        seed = 1 if arch is RECIPE else 2
        lm = self.get(name, lambda: train_lm(self._fresh(arch, seed), self.tok, self.all, epochs=BASE_EPOCHS, lr=LR,
                                             max_length=MAX_LEN, seed=seed, batch_size=32), tag=self.base_tag)
        return lm.model

    def _from_base(self, arch):
        import copy

        return copy.deepcopy(self.base(arch)).train()

    def trained(self, arch, texts, seed):
        from kdaudit.distill import train_lm

        return train_lm(self._from_base(arch), self.tok, texts, epochs=EPOCHS, lr=FT_LR, max_length=MAX_LEN,
                        seed=seed, batch_size=16)

    def token_kd(self, teacher, arch, texts, seed, T):
        from kdaudit.distill import distill_lm_tokens

        return distill_lm_tokens(teacher, self._from_base(arch), self.tok, texts, temperature=T, top_k=20,
                                 epochs=EPOCHS, lr=FT_LR, max_length=MAX_LEN, seed=seed, batch_size=16)

    def seq_kd(self, teacher, arch, prompts, seed):
        from kdaudit.distill import distill_lm_sequences

        return distill_lm_sequences(teacher, self._from_base(arch), self.tok, prompts, max_new_tokens=24,
                                    epochs=EPOCHS, lr=FT_LR, max_length=MAX_LEN, seed=seed, batch_size=16)

    @staticmethod
    def windows(texts, n: int, min_len: int = 90, shift: int = 0) -> tuple[list[str], list[str]]:
        """Up to ``n`` (prompt, reference) windows of ~90 characters from ``texts``: a prompt of 30 to 50 characters
        ending between words, its reference the next 40; the next window starts where the prompt ends. ``shift``:
        the first window of each text starts at its first word after ``shift`` characters (a second tiling of the
        same texts whose prompts start and end elsewhere)."""
        prompts, refs = [], []
        for t in texts:
            start = 0 if shift == 0 else t.find(" ", shift) + 1
            if start == 0 and shift:
                continue
            while len(t) - start >= min_len and len(prompts) < n:
                cut = max(t.rfind(" ", start, start + 50), start + 30)  # prompts end between words
                prompts.append(t[start:cut])
                refs.append(t[cut:cut + 40])
                start = cut + 1
        return prompts, refs

    def prompt_set(self, n: int):
        """Up to ``n`` candidate prompts: windows of the held-out paragraphs (no zoo model trained on them); when
        one tiling of them gives fewer than ``n``, a second tiling shifted by ~20 characters adds windows that start
        and end at other words (never text of the teacher's training part A)."""
        from kdaudit.data import PromptSet

        # a held-out paragraph may repeat text of a training paragraph (docstrings are copied between modules):
        # windows whose prompt any zoo model trained on are left out
        trained = "\x00".join(self.all)
        prompts, refs, seen = [], [], set()
        for shift in (0, 20):
            for p, r in zip(*self.windows(self.held, 10**9, shift=shift)):
                if len(prompts) < n and p not in seen and p not in trained:
                    seen.add(p)
                    prompts.append(p)
                    refs.append(r)
        return PromptSet(prompts=prompts, references=refs, name="stdlib-paragraphs",
                         source="held-out docstring paragraphs, ~90-character windows (two tilings when needed)")

    # -- the zoo ---------------------------------------------------------------------------------------
    def teacher(self):
        return self.get("teacher", lambda: self.trained(RECIPE, self.A, 1000))

    def references(self, n):
        return [self.get(f"reference_{i:02d}", lambda i=i: self.trained(RECIPE, self.A, 2000 + i))
                for i in range(n)]

    def other_teacher(self):
        return self.get("other_teacher", lambda: self.trained(RECIPE, self.B, 9000))

    def underived(self, kind, seed):
        """Not derived from the teacher (also the controls' kinds)."""
        name = f"neg_{kind}_{seed}"
        if kind == "seed":
            return self.get(name, lambda: self.trained(RECIPE, self.A, 3000 + seed))
        if kind == "arch":
            return self.get(name, lambda: self.trained(OTHER_ARCH, self.A, 3000 + seed))
        if kind == "disjoint":
            return self.get(name, lambda: self.trained(RECIPE, self.B, 3000 + seed))
        if kind == "other_teacher_student":
            other = self.other_teacher()
            return self.get(name, lambda: self.token_kd(other, RECIPE, self.B, 3000 + seed, 2.0))
        raise ValueError(kind)

    def derived(self, kind, seed):
        teacher = self.teacher()
        name = f"pos_{kind}_{seed}"
        if kind.startswith("token_kd_T"):
            T = float(kind.removeprefix("token_kd_T"))
            return self.get(name, lambda: self.token_kd(teacher, RECIPE, self.B, 5000 + seed, T))
        if kind == "seq_kd":  # 2,000 API answers: windows of the maker's texts, continued by the teacher
            prompts = self.windows(self.B_all, SEQ_KD_ANSWERS, min_len=60)[0]
            return self.get(f"{name}_n{len(prompts)}", lambda: self.seq_kd(teacher, RECIPE, prompts, 5000 + seed))
        if kind == "text_extraction":  # sampled text only, from 2-word seeds, nothing of the maker's texts kept
            seeds = [" ".join(t.split()[:2])[:20] for t in self.B][:2000]

            def build():
                from kdaudit.distill import train_lm

                gens = teacher.generate(seeds, list(range(len(seeds))), max_new_tokens=32, do_sample=True,
                                        temperature=1.0, seed=5000 + seed)
                texts = [s + g for s, g in zip(seeds, gens.texts)]
                return train_lm(self._from_base(RECIPE), self.tok, texts, epochs=EPOCHS, lr=FT_LR,
                                max_length=MAX_LEN, seed=5000 + seed, batch_size=16)

            return self.get(name, build)
        if kind == "other_arch_kd":
            return self.get(name, lambda: self.token_kd(teacher, OTHER_ARCH, self.B, 5000 + seed, 2.0))
        if kind == "kd_finetuned":
            def build():
                from kdaudit.distill import train_lm

                base = self.token_kd(teacher, RECIPE, self.B, 6000 + seed, 2.0)
                return train_lm(base, self.tok, self.B[: len(self.B) // 2], epochs=1, lr=FT_LR, max_length=MAX_LEN,
                                seed=6000 + seed, batch_size=16)

            return self.get(name, build)
        if kind == "kd_int8":
            def build():
                import torch

                model = self.token_kd(teacher, RECIPE, self.B, 7000 + seed, 2.0)
                with torch.no_grad():
                    for p in model.parameters():  # symmetric per-tensor int8 round trip
                        scale = p.abs().max() / 127
                        if scale > 0:
                            p.copy_(torch.round(p / scale).clamp(-127, 127) * scale)
                return model

            return self.get(name, build)
        raise ValueError(kind)


POSITIVE_KINDS = ("token_kd_T1", "token_kd_T2", "token_kd_T4", "seq_kd", "text_extraction", "other_arch_kd",
                  "kd_finetuned", "kd_int8")
NEGATIVE_KINDS = ("seed", "arch", "disjoint", "other_teacher_student")


def auc(pos, neg) -> float:
    from sklearn.metrics import roc_auc_score

    pos = [x for x in pos if np.isfinite(x)]
    neg = [x for x in neg if np.isfinite(x)]
    if not pos or not neg:
        return float("nan")
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg))


def upper95(k: int, n: int) -> float:
    """One-sided 95% Clopper-Pearson upper bound of a rate seen k times in n draws."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(0.95, k + 1, n - k))


def zoo_check(zoo, teacher, refs, models: dict, n: int = 200) -> list[str]:
    """How closely each derived kind follows the teacher, against the teacher's siblings (the references): greedy
    word agreement with the teacher's continuations and teacher-forced top-1 agreement on held-out text. A student
    no closer to the teacher than a sibling has not learned the teacher: a zoo defect, not a miss of the test."""
    from kdaudit.lineage._lm import _word_agreement
    from kdaudit.lineage._lm_signatures import words

    prompts, cont = zoo.windows(zoo.held[::-1], n)  # other windows than the test's first candidates
    texts = [p + " " + c for p, c in zip(prompts, cont)]

    def profile(m):
        s = m.score(texts, list(range(len(texts))), top_k=1)
        g = m.generate(prompts, list(range(len(prompts))), max_new_tokens=20, do_sample=False, seed=0).texts
        return np.asarray(s.top_ids[:, 0]), [words(x) for x in g]

    t1, tg = profile(teacher)

    def dist(m):
        a, g = profile(m)
        return float(np.mean(a == t1)), float(np.mean([_word_agreement(x, y) for x, y in zip(g, tg)]))

    R = np.array([dist(r) for r in refs])
    lines = [f"zoo check ({n} held-out windows; agreement with the teacher: teacher-forced top-1 / greedy words "
             "over 20 new tokens):",
             f"  {'references (siblings)':<22} top-1 {R[:, 0].min():.3f}..{R[:, 0].max():.3f}  "
             f"greedy {R[:, 1].min():.3f}..{R[:, 1].max():.3f} (min..max of {len(refs)})"]
    for kind, ms in models.items():
        D = np.array([dist(m) for m in ms])
        lines.append(f"  {kind:<22} top-1 {D[:, 0].mean():.3f}  greedy {D[:, 1].mean():.3f}  "
                     f"(mean of {len(ms)}; greedy above every sibling: "
                     f"{int(np.sum(D[:, 1] > R[:, 1].max()))}/{len(ms)})")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller zoo and fewer prompts (development)")
    ap.add_argument("--seeds", type=int, default=None, help="suspects per kind (default 3; quick 1)")
    ap.add_argument("--first-seed", type=int, default=0, help="suspects' first seed (e.g. 5: held-out suspects, "
                                                               "never tested in development; controls use 100+)")
    ap.add_argument("--negative-seeds", type=int, default=None, help="suspects per underived kind (default --seeds; "
                                                                      "more make the FPR evidence stronger)")
    ap.add_argument("--n-prompts", type=int, default=None, help="prompts sent to each suspect, top-k access "
                                                                 "(default 150)")
    ap.add_argument("--n-prompts-text", type=int, default=None, help="prompts sent to each suspect, text access "
                                                                      "(default 300; the issue allows 1,000)")
    ap.add_argument("--rotations", type=int, default=4, help="underived suspects whose tests are rerun with every "
                                                             "exchangeable model in the first place (null check)")
    ap.add_argument("--rotation-access", default="top_k", help="modes of the null check (comma-separated: "
                                                                 "top_k,text:sample,text:greedy)")
    ap.add_argument("--no-attribution", action="store_true", help="skip lm_attribute over two candidate teachers")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--modes", default="top_k/references,top_k/controls,text:sample/references,"
                                       "text:greedy/references,text:greedy/controls",
                    help="access[:decoding]/null pairs to run (comma-separated; also text:sample/controls; "
                         "\"none\": attribution only)")
    ap.add_argument("--scorers", type=int, default=0,
                    help="text:sample/controls: score every candidate's samples by this many fixed models (a "
                         "multiple of 3: seed, arch and disjoint kinds, seeds 105 on, none of them a control)")
    ap.add_argument("--scorer-kinds", default="seed,arch,disjoint",
                    help="the underived kinds the scorers are drawn from (comma-separated), as many of each")
    ap.add_argument("--out", default=None, help="write the report here (e.g. benchmarks/results/lm_lineage_cpu.txt)")
    args = ap.parse_args()

    from kdaudit.lineage._lm import lm_attribute, lm_lineage_test

    t_start = time.perf_counter()
    zoo = Zoo(args.quick)
    seeds = args.seeds or (1 if args.quick else 3)
    n_prompts = {"top_k": args.n_prompts or (100 if args.quick else 150),
                 "text": args.n_prompts_text or (150 if args.quick else 300)}
    n_ctrl_each = 5  # per negative kind: 20 controls (>= 19 for alpha = 0.05)
    teacher = zoo.teacher()
    refs = zoo.references(19)
    controls = [zoo.underived(kind, 100 + i) for kind in NEGATIVE_KINDS for i in range(n_ctrl_each)]
    neg_seeds = args.negative_seeds or seeds
    scorer_kinds = [k.strip() for k in args.scorer_kinds.split(",") if k.strip()]
    if not scorer_kinds or any(k not in NEGATIVE_KINDS for k in scorer_kinds):
        ap.error(f"--scorer-kinds {args.scorer_kinds!r}: choose among {', '.join(NEGATIVE_KINDS)}")
    if args.scorers % len(scorer_kinds):
        ap.error(f"--scorers {args.scorers}: a multiple of {len(scorer_kinds)} (as many of each of --scorer-kinds)")
    scorers = [zoo.underived(kind, 105 + i) for kind in scorer_kinds for i in range(args.scorers // len(scorer_kinds))]
    # seed by seed (every kind once, then again), so that a report written part way has every kind in it
    suspects = []
    if not (0 <= args.first_seed and args.first_seed + max(seeds, neg_seeds) <= 100):
        ap.error(f"--first-seed {args.first_seed}: suspects' seeds must lie in 0..99 (the controls' start at 100)")
    for s in range(args.first_seed, args.first_seed + max(seeds, neg_seeds)):
        if s < args.first_seed + seeds:
            suspects += [(f"{k}/{s}", 1, zoo.derived(k, s)) for k in POSITIVE_KINDS]
        if s < args.first_seed + neg_seeds:
            suspects += [(f"{k}/{s}", 0, zoo.underived(k, s)) for k in NEGATIVE_KINDS]
    # attribution: the teacher and the other teacher are the candidates; its controls must be derived from neither
    # (seed, arch and disjoint kinds), 39 of them so that Holm over 2 candidates can reach 0.05 (p >= 1/40)
    attr_kinds = [k for k in NEGATIVE_KINDS if k != "other_teacher_student"]
    attr_controls = [] if args.no_attribution else [zoo.underived(k, 100 + i) for k in attr_kinds for i in range(13)]
    other = zoo.other_teacher()
    t_zoo = time.perf_counter() - t_start
    _log(f"zoo ready: {len(suspects)} suspects, {len(refs)} references, {len(controls)} controls, "
         f"{len(attr_controls)} attribution controls, {zoo.n_trained} trained now ({t_zoo:.0f}s)")
    prompts = {a: zoo.prompt_set(2 * n) for a, n in n_prompts.items()}

    # text access by its decoding: sampled continuations (the library's default under the references null) and
    # greedy ones (its default under the controls null, and the references null's before), head to head
    all_modes = [("top_k", "references"), ("top_k", "controls"), ("text:sample", "references"),
                 ("text:greedy", "references"), ("text:greedy", "controls"), ("text:sample", "controls")]
    wanted = [] if args.modes == "none" else args.modes.split(",")  # "none": attribution only
    modes = [m for m in all_modes if f"{m[0]}/{m[1]}" in wanted]
    rows = {m: [] for m in modes}
    memo: dict = {}  # the owner models' outputs, computed once for every suspect of this run
    rot: dict = {}
    attr: list = []
    underived: list = []

    def test(mode, null, t, s, pool, ctrl):
        kw = {"references": pool, "controls": ctrl} if null == "references" else {"controls": ctrl}
        access, _, decoding = mode.partition(":")
        if null == "controls" and decoding == "sample" and scorers:
            kw["scorers"] = scorers
        return lm_lineage_test(t, s, prompts[access], null=null, access=access, n_prompts=n_prompts[access],
                               max_new_tokens=24, alpha=args.alpha, seed=0, memo=memo, query_budget=1000,
                               decoding=decoding or None, **kw)

    def write_report(partial):
        """The report of what has run so far (``partial`` says how far; None: the whole run)."""
        lines = [f"kdaudit LM lineage benchmark ({'quick' if args.quick else 'full'} zoo)"
                 + ("" if partial is None else f" -- PARTIAL ({partial})"),
                 f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores "
                 f"(shared), python {platform.python_version()}, torch 1 thread",
                 f"zoo: teacher {RECIPE} on part A ({len(zoo.A)} docs); 19 references; {len(controls)} controls "
                 f"({n_ctrl_each} of each underived kind, other seeds); {seeds} seed(s) per derived kind, "
                 f"{neg_seeds} per underived kind; prompts sent per suspect: "
                 f"top-k {n_prompts['top_k']}, text {n_prompts['text']} (of {len(prompts['top_k'])} and "
                 f"{len(prompts['text'])} candidates), 24 new tokens; alpha = {args.alpha}"
                 + (f"; text:sample/controls scored by {len(scorers)} fixed scorers ({', '.join(scorer_kinds)} "
                    "kinds, seeds 105 on)" if scorers else ""),
                 ""]
        if modes:  # per-mode tables (none in an attribution-only run)
            lines.append(f"{'access':<11} {'null':<11} {'AUC':>6} {'TPR':>6} {'FPR':>10} {'FPR<=(95%)':>10}  "
                         f"{'prompts':>7} {'tokens<=':>9}  baselines (AUC)")
            summary = {}
            for (access, null), rs in rows.items():
                if not any(r["label"] == 1 for r in rs) or not any(r["label"] == 0 for r in rs):
                    return
                pos = [r for r in rs if r["label"] == 1]
                neg = [r for r in rs if r["label"] == 0]
                a = auc([r["effect"] for r in pos], [r["effect"] for r in neg])
                tpr = float(np.mean([r["derived"] for r in pos]))
                k = int(sum(r["derived"] for r in neg))
                fpr = k / len(neg)
                base = {key: auc([r["raw"][key] for r in pos], [r["raw"][key] for r in neg]) for key in pos[0]["raw"]}
                summary[(access, null)] = (a, tpr, fpr)
                lines.append(f"{access:<11} {null:<11} {a:6.3f} {tpr:6.2f} {f'{k}/{len(neg)}':>10} "
                             f"{upper95(k, len(neg)):10.2f}  "
                             f"{max(r['prompts'] for r in rs):7d} {max(r['tokens'] for r in rs):9d}  "
                             + ", ".join(f"{key} {v:.3f}" for key, v in base.items()))
            lines += ["", "per kind (share 'derived'; mean effect):"]
            kinds = list(POSITIVE_KINDS) + list(NEGATIVE_KINDS)
            for kind in kinds:
                cells = []
                for m in modes:
                    rs = [r for r in rows[m] if r["name"].split("/")[0] == kind]
                    cells.append(f"{np.mean([r['derived'] for r in rs]):.2f}/{np.mean([r['effect'] for r in rs]):+.1f}")
                lines.append(f"  {kind:<22} " + "  ".join(f"{m[0]}-{m[1]}: {c}" for m, c in zip(modes, cells)))
            targets = {"top_k": (0.99, 0.9), "text": (0.95, 0.8)}
            lines += ["", "targets (AUC, TPR at alpha, FPR <= alpha):"]
            for access, null in modes:
                a_t, tpr_t = targets[access.partition(":")[0]]
                a, tpr, fpr = summary[(access, null)]
                ok = a >= a_t and tpr >= tpr_t and fpr <= args.alpha
                lines.append(f"  {access}/{null}: AUC {a:.3f} (>= {a_t}), TPR {tpr:.2f} (>= {tpr_t}), FPR {fpr:.2f} "
                             f"(<= {args.alpha}): {'met' if ok else 'NOT met'}")
            n_neg = sum(1 for r in rows[modes[0]] if r["label"] == 0)
            lines.append(f"FPR: false positives among the {n_neg} underived suspects per mode, with the one-sided "
                         "95% Clopper-Pearson upper bound of the rate.")
        if rot and any(rot.values()):
            lines += ["", f"null check (rotation; {len(underived)} underived suspects: "
                          + ", ".join(n for n, _ in underived) + "):"]
            for m, lists in rot.items():
                flat = [p for ps in lists for p in ps]
                k = sum(p <= args.alpha for p in flat)
                exact = all(np.allclose(ps, np.arange(1, len(ps) + 1) / len(ps)) for ps in lists)
                lines.append(f"  {m[0]}/{m[1]}: {k}/{len(flat)} draws at p <= {args.alpha} ({k / len(flat):.3f}; "
                             f"95% upper {upper95(k, len(flat)):.3f}); every suspect's rotation p-values exactly "
                             f"1/M..M/M: {'yes' if exact else 'NO'}")
        if attr:
            ok = [t == p for _, t, p, _ in attr]
            lines += ["", f"attribution (lm_attribute, top-k, controls null with {len(attr_controls)} controls "
                          "derived from neither candidate, Holm over {teacher, other}):",
                      f"  accuracy {np.mean(ok):.2f} ({sum(ok)}/{len(ok)})"]
            for truth in ("teacher", "other", "none"):
                sub = [(n, p) for n, t, p, _ in attr if t == truth]
                if sub:
                    got = {}
                    for _, p in sub:
                        got[p] = got.get(p, 0) + 1
                    lines.append(f"  true parent {truth:<8} ({len(sub):2d}): "
                                 + ", ".join(f"{k} {v}" for k, v in sorted(got.items())))
            wrong = [f"{n} -> {p}" for n, t, p, _ in attr if t != p]
            if wrong:
                lines.append("  wrong: " + "; ".join(wrong))
        if partial is None:
            tested = range(args.first_seed, args.first_seed + seeds)
            lines += [""] + zoo_check(zoo, teacher, refs[:8], {k: [zoo.derived(k, s) for s in tested]
                                                                for k in POSITIVE_KINDS})
            lines.append(f"\nwall time: {time.perf_counter() - t_start:.0f}s (zoo {t_zoo:.0f}s, tests "
                         f"{t_tests - t_zoo - t_rot:.0f}s, rotations {t_rot:.0f}s, attribution {t_attr:.0f}s)")
        else:
            lines.append(f"\n{partial}; wall time so far: {time.perf_counter() - t_start:.0f}s")
        lines.append("command: nice -n 10 python benchmarks/lm_lineage.py " + " ".join(sys.argv[1:]))
        text = "\n".join(lines)
        if partial is None:
            print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")

    # null check: each underived suspect's test rerun with every exchangeable model in the special place (the
    # teacher rotated among its references; the suspect rotated among the controls). Exactness says the p-values
    # of one suspect's rotations are 1/M, 2/M, ..., 1 (each once, no ties): share <= alpha is exactly floor(alpha M)/M
    # (run first: it is short, and a run stopped part way keeps it)
    underived = [(n, m) for n, lab, m in suspects if lab == 0][: args.rotations]
    pool = [teacher, *refs]
    rot_modes = [m for m in modes if m[0] in args.rotation_access.split(",")]
    rot = {m: [] for m in rot_modes}
    for name, model in underived:
        for access, null in rot_modes:
            if null == "references":
                ps = [test(access, null, pool[i], model, [m for j, m in enumerate(pool) if j != i], controls).p_value
                      for i in range(len(pool))]
            else:
                ring = [model, *controls]
                ps = [test(access, null, teacher, ring[i], pool, [m for j, m in enumerate(ring) if j != i]).p_value
                      for i in range(len(ring))]
            rot[(access, null)].append(sorted(ps))
        _log(f"rotations of {name} done")
    t_rot = time.perf_counter() - t_start - t_zoo

    for name, label, model in suspects:
        for access, null in modes:
            # the references null is also calibrated by the controls (each member on its own null scale)
            t0 = time.perf_counter()
            r = test(access, null, teacher, model, refs, controls)
            rows[(access, null)].append({"name": name, "label": label, "p": r.p_value, "effect": r.effect,
                                         "derived": r.derived, "raw": dict(r.raw_similarity),
                                         "prompts": r.queries["prompts_sent"],
                                         "tokens": r.queries["tokens_sent_bound"],
                                         "seconds": time.perf_counter() - t0})
            # signature name, shortened, with its family under the controls null (":n" beyond nearest, ":p" peers)
            sig = " ".join(f"{k[:6]}{(':' + k.partition(':')[2][7]) if ':' in k else ''}{v['z_first']:+.1f}"
                           for k, v in r.signatures.items())
            rows[(access, null)][-1]["z"] = sig
        _log(f"{name}: " + "  ".join(f"{a}/{n} p={rows[(a, n)][-1]['p']:.3f} e={rows[(a, n)][-1]['effect']:+.1f} "
                                     f"[{rows[(a, n)][-1]['z']}] {rows[(a, n)][-1]['seconds']:.0f}s" for a, n in modes))
        if modes:
            write_report(f"partial: {len(rows[modes[0]])} of {len(suspects)} suspects tested")
    t_tests = time.perf_counter() - t_start

    # attribution among two candidate teachers (top-k access, controls null, Holm): the parent of a teacher's
    # student is "teacher", of the other teacher's student "other", of an underived model "none"
    attr = []
    if attr_controls:
        for name, label, model in suspects:
            kind = name.split("/")[0]
            truth = "teacher" if label == 1 else ("other" if kind == "other_teacher_student" else "none")
            a = lm_attribute(model, {"teacher": teacher, "other": other}, prompts["top_k"], controls=attr_controls,
                             null="controls", access="top_k", n_prompts=n_prompts["top_k"], alpha=args.alpha, seed=0,
                             memo=memo)
            attr.append((name, truth, a.parent, a.adjusted_p_values))
        _log("attribution done")
    t_attr = time.perf_counter() - t_start - t_tests

    write_report(None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
