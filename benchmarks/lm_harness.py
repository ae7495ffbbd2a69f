"""Sequence-harness scoring throughput against a plain transformers/torch loop, and memory per stored token.

Both paths compute the same thing over the same GPT-2-style model and the same texts: teacher-forced next-token
log-probabilities, the top k per position and the actual next token's log-probability, copied to host memory.

- plain loop: the texts in the given order, ``batch_size`` at a time, tokenized with padding by the tokenizer,
  one forward pass, ``log_softmax``, ``topk``, ``gather``, ``.cpu()``: what one writes by hand;
- harness: ``kdaudit.harness.score_all([HFCausalLM(...)], PromptSet(texts), top_k=k)`` (no cache), which also
  fingerprints the weights and the tokenizer, sorts texts by length before batching, and builds the flat
  :class:`TokenTopK` with provenance.

The two are timed interleaved (so machine load hits both alike), after a warm-up; outputs are checked equal.

    python benchmarks/lm_harness.py                  # CPU: 4-layer 256-wide GPT-2, 96 texts up to 128 tokens
    python benchmarks/lm_harness.py --device cuda    # GPU: GPT-2-small size (12 x 768), 512 tokens, bf16

Results: ``benchmarks/results/lm_harness_cpu.txt`` (targets: >= 0.9x on CPU; >= 0.95x on a GPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdaudit.data import PromptSet, load_stdlib_corpus, train_tokenizer  # noqa: E402
from kdaudit.harness import score_all  # noqa: E402
from kdaudit.models import HFCausalLM  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"
    desc += f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "; no GPU"
    try:
        desc += f"; load average {os.getloadavg()[0]:.1f}"
    except OSError:
        pass
    import transformers

    return (f"{desc}; Python {platform.python_version()}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, numpy {np.__version__}")


def plain_loop(model, tok, texts, k, bs, device):
    """The hand-written loop: per batch, padded tokenization, forward, log_softmax, top-k, gather, to host."""
    tops, tlps, tids, tlp = [], [], [], []
    with torch.inference_mode():
        for a in range(0, len(texts), bs):
            enc = tok(texts[a:a + bs], padding=True, return_tensors="pt").to(device)
            logits = model(**enc, use_cache=False).logits
            lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            valid = enc["attention_mask"][:, 1:].bool()
            lp = lp[valid]
            targets = enc["input_ids"][:, 1:][valid]
            v, i = lp.topk(k, dim=-1)
            tops.append(i.cpu())
            tlps.append(v.cpu())
            tids.append(targets.cpu())
            tlp.append(lp.gather(1, targets[:, None])[:, 0].cpu())
    return torch.cat(tops).numpy(), torch.cat(tlps).numpy(), torch.cat(tids).numpy(), torch.cat(tlp).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--texts", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    import transformers

    corpus = load_stdlib_corpus()
    tok = train_tokenizer(corpus.texts[:600], vocab_size=2048)
    if device.type == "cuda":
        n_texts, bs, max_tokens, precision = args.texts or 512, args.batch_size or 32, 512, "bf16"
        cfg = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024)
    else:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        n_texts, bs, max_tokens, precision = args.texts or 96, args.batch_size or 16, 128, "fp32"
        cfg = dict(n_layer=4, n_embd=256, n_head=4, n_positions=256)
    # real text of varied length: docstrings cut to at most max_tokens tokens (a fixed set and order)
    docs = [d.text for d in corpus.documents if len(d.text) > 200][:n_texts]
    texts = [tok.decode(tok(t)["input_ids"][:max_tokens]) for t in docs]
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tok), bos_token_id=tok.eos_token_id,
                                     eos_token_id=tok.eos_token_id, **cfg)
    model = transformers.GPT2LMHeadModel(config).eval().to(device)
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    lm = HFCausalLM(model, tok, name="gpt2", batch_size=bs)
    prompts = PromptSet(texts)
    k = args.top_k

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def harness():
        lm._sha = None  # the weights are hashed in every timed run, as a first run would
        return score_all([lm], prompts, top_k=k)["gpt2"]

    plain_loop(model, tok, texts[: bs * 2], k, bs, device)
    score_all([lm], PromptSet(texts[: bs * 2]), top_k=k)
    sync()
    t_plain, t_harness = [], []
    for _ in range(args.repeats):
        sync(); t0 = time.perf_counter(); ref = plain_loop(model, tok, texts, k, bs, device); sync()  # noqa: E702
        t_plain.append(time.perf_counter() - t0)
        sync(); t0 = time.perf_counter(); out = harness(); sync()  # noqa: E702
        t_harness.append(time.perf_counter() - t0)
    n_pos = out.n_positions
    assert n_pos == len(ref[2]), (n_pos, len(ref[2]))
    # the plain loop's positions are in text order too (right padding, row-major mask)
    np.testing.assert_array_equal(out.target_ids, ref[2])
    tol = 2e-2 if precision == "bf16" else 1e-4
    max_diff = float(np.max(np.abs(out.target_logprob - ref[3])))
    assert max_diff < tol, max_diff
    stored = out.top_ids.nbytes + out.top_logprobs.nbytes + out.target_ids.nbytes + out.target_logprob.nbytes \
        + out.offsets.nbytes
    full = len(tok) * 4  # float32 log-probabilities of the whole vocabulary, per position
    ratio = min(t_plain) / min(t_harness)
    target = 0.95 if device.type == "cuda" else 0.9
    n_tokens = n_pos + len(texts)
    fmt = lambda ts: ", ".join(f"{t:.3f}" for t in ts)  # noqa: E731
    lines = [
        f"kdaudit LM harness benchmark ({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC)",
        f"machine: {machine()}",
        f"workload: GPT-2 {cfg['n_layer']} layers x {cfg['n_embd']} wide, vocabulary {len(tok)}, {precision}; "
        f"{len(texts)} stdlib docstrings of up to {max_tokens} tokens ({n_tokens} tokens, {n_pos} scored "
        f"positions), batch {bs}, top-{k}",
        f"plain transformers loop: {n_tokens / min(t_plain):,.0f} tokens/s (best of {args.repeats}: "
        f"{min(t_plain):.3f} s; all {fmt(t_plain)})",
        f"kdaudit score_all:       {n_tokens / min(t_harness):,.0f} tokens/s (best of {args.repeats}: "
        f"{min(t_harness):.3f} s; all {fmt(t_harness)})",
        f"ratio harness/plain: {ratio:.3f} (target >= {target}) -> {'PASS' if ratio >= target else 'FAIL'}",
        f"ratio of medians: {statistics.median(t_plain) / statistics.median(t_harness):.3f}",
        f"max |target logprob harness - plain|: {max_diff:.2e}; target tokens identical",
        f"memory per stored position: {stored / n_pos:.1f} bytes (top-{k} ids int32 + log-probs float32 + target id "
        f"and log-prob + offsets) vs {full:,} bytes for the full vocabulary's float32 log-probs "
        f"({full / (stored / n_pos):,.0f}x less)",
        "included in the harness timings: weights sha256 and tokenizer sha256, sorting by length, flat TokenTopK, "
        "provenance",
    ]
    if device.type != "cuda":
        lines.append("GPU: none on this machine; the GPU target (>= 0.95x, GPT-2-small size, 512 tokens, bf16) was "
                     "not measured (run with --device cuda where one is lent)")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(text + "\n\n")


if __name__ == "__main__":
    main()
