"""Distillation of causal language models through the language-model interface, and controls without a teacher.

* :func:`distill_lm_tokens` -- token-level KD: the student matches, at every position of the training texts, the
  teacher's next-token distribution at temperature T, as the teacher reveals it (its top k log-probabilities from
  :meth:`~kdaudit.models.LanguageModel.score`, what an OpenAI-style endpoint returns at most), renormalised over
  those k tokens; mixed with the usual next-token cross-entropy on the text.
* :func:`distill_lm_sequences` -- sequence-level KD (Kim & Rush 2016): the student is trained on the teacher's
  generated continuations of the prompts. The only option when the teacher's API returns text only.
* :func:`train_lm` -- the same recipe on the texts alone: a control trained without the teacher.

:func:`gpt_lm` builds a small GPT-2-style model from a ``transformers`` config. Training is seeded and, on CPU,
deterministic: ``torch`` runs on ``num_threads`` threads (1 by default) during training, restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit.distill._loss import check_temperature_alpha
from kdaudit.distill._train import TrainingRecord

__all__ = ["distill_lm_sequences", "distill_lm_tokens", "gpt_lm", "train_lm"]

_TAIL_EPS = 1e-12  # floor of a "rest of the vocabulary" cell's probability (its log stays finite)
_WARMUP = 0.05  # share of the steps with a linearly rising learning rate, before the cosine decay


def gpt_lm(vocab_size: int, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, n_positions: int = 256,
           eos_token_id: int | None = None, seed: int = 0, **config: Any) -> Any:
    """A freshly initialised GPT-2-style causal LM (``transformers.GPT2LMHeadModel``), seeded.

    ``eos_token_id`` (the tokenizer's end-of-text id) is also the BOS id. Extra keyword arguments go to ``transformers.GPT2Config`` (dropout is 0 by default here: small models on small
    data, and training that is a pure function of the seed).
    """
    import transformers

    for name, v in (("vocab_size", vocab_size), ("n_layer", n_layer), ("n_embd", n_embd), ("n_head", n_head),
                    ("n_positions", n_positions)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise invalid_argument(name, v, "an integer >= 1")
    if n_embd % n_head:
        raise invalid_argument("n_head", n_head, f"a divisor of n_embd={n_embd}")
    cfg = dict(vocab_size=int(vocab_size), n_layer=int(n_layer), n_embd=int(n_embd), n_head=int(n_head),
               n_positions=int(n_positions), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
               bos_token_id=eos_token_id, eos_token_id=eos_token_id)
    cfg.update(config)
    with _seeded(seed):
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg))


@contextlib.contextmanager
def _seeded(seed: int, num_threads: int | None = None) -> Iterator[None]:
    import torch

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise invalid_argument("seed", seed, "an integer >= 0")
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
        torch.set_num_threads(threads)


def _check_training(model: Any, tokenizer: Any, texts: Any, epochs: Any, lr: Any, batch_size: Any,
                    max_length: Any, num_threads: Any) -> list[str]:
    import torch

    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise invalid_argument("model", type(model).__name__, "a transformers causal LM (e.g. from gpt_lm)")
    if tokenizer is None or not callable(tokenizer):
        raise invalid_argument("tokenizer", type(tokenizer).__name__, "a transformers tokenizer")
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts \
            or not all(isinstance(t, str) for t in texts):
        raise invalid_argument("texts", type(texts).__name__, "a non-empty sequence of str")
    for name, v, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("max_length", max_length, 2),
                        ("num_threads", num_threads, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise invalid_argument(name, v, f"an integer >= {lo}")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise invalid_argument("lr", lr, "a number > 0")
    return list(texts)


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text as the LM adapters encode them (the tokenizer's default special tokens), cut at
    ``max_length``."""
    enc = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    return [list(s)[:max_length] for s in enc]


def _fit(model: Any, seqs: list[list[int]], step_loss: Callable[[Any, Any, Any, np.ndarray], Any], *,
         epochs: int, lr: float, batch_size: int, seed: int, num_threads: int, progress: Callable[[str], None] | None,
         what: str) -> tuple[list[float], float]:
    """The training loop every recipe shares: AdamW with linear warm-up and cosine decay, shuffled batches
    (seeded), right padding with a mask, gradients clipped at norm 1.

    ``step_loss(logits, input_ids, mask, rows)`` returns the batch loss; ``rows`` are the batch's text indices.
    Returns the mean loss of each epoch and the wall time.
    """
    import torch

    usable = np.array([i for i, s in enumerate(seqs) if len(s) >= 2], dtype=np.int64)
    if len(usable) == 0:
        raise invalid_argument("texts", "texts of fewer than 2 tokens", "at least one text of 2 tokens or more")
    t0 = time.perf_counter()
    history: list[float] = []
    with _seeded(seed, num_threads):
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        total_steps = epochs * math.ceil(len(usable) / batch_size)
        warm = max(1, int(_WARMUP * total_steps))
        # linear warm-up, then cosine decay to 0: the usual schedule for small transformers, a function of the step
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min((step + 1) / warm, 0.5 * (1 + math.cos(
            math.pi * min(step, total_steps) / total_steps))))
        rng = np.random.default_rng(seed)
        model.train()
        for epoch in range(epochs):
            order = usable[rng.permutation(len(usable))]
            total, n_batches = 0.0, 0
            for a in range(0, len(order), batch_size):
                rows = order[a:a + batch_size]
                width = max(len(seqs[r]) for r in rows)
                ids = np.zeros((len(rows), width), dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for j, r in enumerate(rows):
                    ids[j, :len(seqs[r])] = seqs[r]
                    mask[j, :len(seqs[r])] = 1
                input_ids, attn = torch.from_numpy(ids), torch.from_numpy(mask)
                logits = model(input_ids=input_ids, attention_mask=attn, use_cache=False).logits
                loss = step_loss(logits, input_ids, attn, rows)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                total += float(loss.detach())
                n_batches += 1
            history.append(total / max(n_batches, 1))
            if progress is not None:
                progress(f"{what}: epoch {epoch + 1}/{epochs}, loss {history[-1]:.3f}")
        model.eval()
    return history, time.perf_counter() - t0


def _ce(logits: Any, input_ids: Any, mask: Any, first_target: np.ndarray | None = None) -> Any:
    """Mean next-token cross-entropy over the real (unpadded) positions.

    ``first_target`` (one per row, optional): the index of the first token of each row that is a target; the
    tokens before it (a prompt) are context only and get no loss.
    """
    import torch

    valid = mask[:, 1:].bool()
    if first_target is not None:
        # target j + 1 is predicted at position j: keep it only from the row's first target token on
        pos = torch.arange(1, input_ids.shape[1])[None, :]
        valid = valid & (pos >= torch.as_tensor(np.asarray(first_target, dtype=np.int64))[:, None])
    return torch.nn.functional.cross_entropy(logits[:, :-1][valid].float(), input_ids[:, 1:][valid])


def _answer_starts(tokenizer: Any, prompts: Sequence[str], seqs: list[list[int]], max_length: int) -> np.ndarray:
    """Per ``prompt + answer`` sequence: the index of its first answer token (where it stops agreeing with the
    prompt's own encoding, so a token merged across the boundary counts as the answer's)."""
    pre = _encode(tokenizer, prompts, max_length)
    out = np.zeros(len(seqs), dtype=np.int64)
    for i, (p, s) in enumerate(zip(pre, seqs)):
        n = 0
        while n < min(len(p), len(s)) and p[n] == s[n]:
            n += 1
        out[i] = max(n, 1)  # the first token is never a target (nothing predicts it)
    return out


def _texts_sha256(texts: Sequence[str]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()


def _attach(model: Any, record: TrainingRecord) -> Any:
    model.kdaudit_record_ = record
    return model


def train_lm(model: Any, tokenizer: Any, texts: Sequence[str], *, epochs: int = 1, lr: float = 3e-3,
             batch_size: int = 16, max_length: int = 128, seed: int = 0, num_threads: int = 1,
             progress: Callable[[str], None] | None = None) -> Any:
    """Train a causal LM on ``texts`` by next-token cross-entropy (a control: the recipe without a teacher).

    Trains ``model`` in place and returns it, with a :class:`~kdaudit.distill.TrainingRecord` as
    ``model.kdaudit_record_``. ``progress`` receives one line per epoch.
    """
    texts = _check_training(model, tokenizer, texts, epochs, lr, batch_size, max_length, num_threads)
    seqs = _encode(tokenizer, texts, max_length)
    history, wall = _fit(model, seqs, lambda logits, ids, mask, rows: _ce(logits, ids, mask), epochs=epochs, lr=lr,
                         batch_size=batch_size, seed=seed, num_threads=num_threads, progress=progress,
                         what="next-token training")
    settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "max_length": max_length, "seed": seed}
    return _attach(model, TrainingRecord(method="lm_control", settings=settings, data_sha256=_texts_sha256(texts),
                                         n_rows=len(texts), loss_history=tuple(history), wall_time_s=wall))


def distill_lm_tokens(teacher: Any, student: Any, tokenizer: Any, texts: Sequence[str], *, temperature: float = 2.0,
                      alpha: float = 0.9, top_k: int = 20, epochs: int = 1, lr: float = 3e-3, batch_size: int = 16,
                      max_length: int = 128, seed: int = 0, num_threads: int = 1,
                      progress: Callable[[str], None] | None = None) -> Any:
    """Token-level knowledge distillation of a causal LM from a teacher's top-k next-token distributions.

    The teacher (a :class:`~kdaudit.models.LanguageModel` with log-probability access, sharing the student's
    tokenizer) scores every training text once, teacher-forced. At each position the teacher reveals k + 1 cells:
    its top ``top_k`` tokens and the rest of the vocabulary as one cell (mass ``1 −`` the top-k mass); the
    student's probabilities are pooled into the same cells. With ``q`` and ``p`` the two cell distributions
    sharpened or softened at ``temperature`` (``softmax(log cells / T)``), the loss is
    ``alpha * T² * KL(q ‖ p) + (1 − alpha) * CE(z, next token)`` (T² as in Hinton et al. 2015). At T = 1 the KD
    term is exactly the forward KL on the partition the audit's divergence bounds use; keeping the rest as a cell
    stops the student from starving every token outside the teacher's top k (which a target renormalised over the
    top k alone would teach it, at a large cost in perplexity).

    Returns ``student``, trained in place, with a :class:`~kdaudit.distill.TrainingRecord` (teacher hash, queries
    and tokens paid) as ``student.kdaudit_record_``.
    """
    import torch

    texts = _check_training(student, tokenizer, texts, epochs, lr, batch_size, max_length, num_threads)
    temperature, alpha = check_temperature_alpha(temperature, alpha)
    _check_lm(teacher)
    if str(getattr(teacher, "access", "logprobs")) != "logprobs":
        raise invalid_argument("teacher", getattr(teacher, "name", teacher),
                               "a language model that reveals log-probabilities (token-level KD); a text-only "
                               "teacher can only be distilled by distill_lm_sequences")
    seqs = _encode(tokenizer, texts, max_length)
    ids = [f"t{i}" for i in range(len(texts))]
    # the teacher scores exactly the token sequences the student trains on (texts cut at max_length)
    cut = [tokenizer.decode(s) if len(s) == max_length else t for s, t in zip(seqs, texts)]
    scores = teacher.score(cut, ids, top_k=top_k)
    keep = []
    for i, s in enumerate(seqs):
        a, b = int(scores.offsets[i]), int(scores.offsets[i + 1])
        if b - a == max(len(s) - 1, 0) and np.array_equal(scores.target_ids[a:b], np.asarray(s[1:])):
            keep.append(i)
        elif len(s) < max_length:
            raise invalid_argument("tokenizer", type(tokenizer).__name__,
                                   f"the teacher's tokenizer (text {i} is split differently: token-level KD needs "
                                   "identical token positions; use distill_lm_sequences across tokenizers)")
        # else: a text cut at max_length whose decoded prefix re-tokenizes differently; it is left out
    seqs = [seqs[i] if i in set(keep) else [] for i in range(len(seqs))]
    offsets = scores.offsets
    top_ids = torch.from_numpy(scores.top_ids.astype(np.int64))
    # the teacher's revealed cells: its top k tokens and one cell for the rest of the vocabulary (its mass is
    # 1 - the top-k mass), the partition the audit's divergence bounds use
    top_lp = torch.from_numpy(scores.top_logprobs.astype(np.float64))
    rest = torch.log((1.0 - top_lp.exp().sum(dim=1)).clamp_min(_TAIL_EPS))
    q_all = torch.softmax((torch.cat([top_lp, rest[:, None]], dim=1) / temperature).float(), dim=-1)

    def step_loss(logits: Any, input_ids: Any, mask: Any, rows: np.ndarray) -> Any:
        valid = mask[:, 1:].bool()
        z = logits[:, :-1][valid].float()  # positions in row-major order: text by text, as the teacher's rows
        flat = torch.from_numpy(np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in rows]))
        ids = top_ids[flat]
        logp = torch.log_softmax(z, dim=-1)
        in_top = torch.zeros_like(logp, dtype=torch.bool).scatter_(1, ids, True)
        s_rest = torch.logsumexp(logp.masked_fill(in_top, float("-inf")), dim=-1).clamp_min(math.log(_TAIL_EPS))
        log_s = torch.log_softmax(torch.cat([logp.gather(1, ids), s_rest[:, None]], dim=1) / temperature, dim=-1)
        q = q_all[flat]
        kd = (q * (torch.log(q.clamp_min(1e-12)) - log_s)).sum(dim=-1).mean() * temperature**2
        ce = torch.nn.functional.cross_entropy(z, input_ids[:, 1:][valid])
        return alpha * kd + (1 - alpha) * ce

    history, wall = _fit(student, seqs, step_loss, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                         num_threads=num_threads, progress=progress, what="token-level KD")
    settings = {"temperature": temperature, "alpha": alpha, "top_k": int(top_k), "epochs": epochs, "lr": lr,
                "batch_size": batch_size, "max_length": max_length, "seed": seed}
    return _attach(student, TrainingRecord(
        method="token_kd", settings=settings, data_sha256=_texts_sha256(texts), teachers=(_teacher_desc(teacher),),
        queries=len(texts), n_rows=len(texts), loss_history=tuple(history), wall_time_s=wall,
        extra={"teacher_tokens_scored": int(scores.n_positions), "texts_left_out": len(texts) - len(keep)}))


def distill_lm_sequences(teacher: Any, student: Any, tokenizer: Any, prompts: Sequence[str], *,
                         max_new_tokens: int = 48, do_sample: bool = False, temperature: float = 1.0,
                         epochs: int = 1, lr: float = 3e-3, batch_size: int = 16, max_length: int = 128,
                         seed: int = 0, num_threads: int = 1, progress: Callable[[str], None] | None = None) -> Any:
    """Sequence-level knowledge distillation: train the student on the teacher's continuations of ``prompts``.

    The teacher (any :class:`~kdaudit.models.LanguageModel`, text-only access suffices; its tokenizer may differ
    from the student's) generates one continuation per prompt (greedy, or sampled at ``temperature`` with ``seed``);
    the student is trained by next-token cross-entropy on the continuation given the prompt: the prompt's tokens are
    context, never targets (the student learns the teacher's answers, not the prompts the distiller wrote). A
    sequence cut at ``max_length`` before its answer starts is left out. Returns ``student``, trained in place, with
    a :class:`~kdaudit.distill.TrainingRecord` as ``student.kdaudit_record_``.
    """
    texts = _check_training(student, tokenizer, prompts, epochs, lr, batch_size, max_length, num_threads)
    _check_lm(teacher)
    gens = teacher.generate(texts, [f"p{i}" for i in range(len(texts))], max_new_tokens=max_new_tokens,
                            do_sample=do_sample, temperature=temperature, seed=seed)
    train_texts = [p + g for p, g in zip(texts, gens.texts)]
    seqs = _encode(tokenizer, train_texts, max_length)
    starts = _answer_starts(tokenizer, texts, seqs, max_length)
    # a sequence with no answer token within max_length has nothing to learn from
    seqs = [s if len(s) > st else [] for s, st in zip(seqs, starts)]
    n_answer = int(sum(max(len(s) - st, 0) for s, st in zip(seqs, starts)))
    if n_answer == 0:
        raise invalid_argument("prompts", f"{len(texts)} prompts", "prompts the teacher continues within "
                                                                   f"max_length={max_length} tokens")
    history, wall = _fit(student, seqs, lambda logits, ids, mask, rows: _ce(logits, ids, mask, starts[rows]),
                         epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, num_threads=num_threads,
                         progress=progress, what="sequence-level KD")
    settings = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "temperature": temperature,
                "epochs": epochs, "lr": lr, "batch_size": batch_size, "max_length": max_length, "seed": seed}
    return _attach(student, TrainingRecord(
        method="sequence_kd", settings=settings, data_sha256=_texts_sha256(texts), teachers=(_teacher_desc(teacher),),
        queries=len(texts), n_rows=len(texts), loss_history=tuple(history), wall_time_s=wall,
        extra={"teacher_generations_sha256": _texts_sha256(gens.texts), "answer_tokens": n_answer,
               "texts_left_out": sum(1 for s in seqs if not s)}))


def _check_lm(teacher: Any) -> None:
    from kdaudit.models._lm_base import LanguageModel

    if not isinstance(teacher, LanguageModel):
        raise invalid_argument("teacher", type(teacher).__name__,
                               "a kdaudit LanguageModel (e.g. HFCausalLM(model, tokenizer) or an endpoint adapter)")


def _teacher_desc(teacher: Any) -> dict[str, Any]:
    return {"name": teacher.name, "sha256": teacher.fingerprint(), "access": str(teacher.access)}
