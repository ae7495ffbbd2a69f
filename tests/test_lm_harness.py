"""The sequence harness: identical order for every model, chunked on-disk cache and resume, comparison level."""

from __future__ import annotations

import numpy as np
import pytest

from kdaudit import KDAuditError
from kdaudit.data import PromptSet
from kdaudit.harness import comparison_level, generate_all, score_all
from kdaudit.models import HFCausalLM
from _lm_fixtures import TEXTS, gpt2


class Counting(HFCausalLM):
    """Counts the texts each call asks about, to show what a resumed run asks again."""

    asked: list[int]

    def score(self, texts, ids, *, top_k):
        self.asked.append(len(texts))
        return super().score(texts, ids, top_k=top_k)

    def generate(self, prompts, ids, **kwargs):
        self.asked.append(len(prompts))
        return super().generate(prompts, ids, **kwargs)


def _models():
    t_model, tok = gpt2(0)
    s_model, _ = gpt2(1)
    teacher = Counting(t_model, tok, name="teacher")
    student = Counting(s_model, tok, name="student")
    teacher.asked, student.asked = [], []
    return teacher, student


def test_score_all_equals_each_models_own_scores_in_prompt_order():
    teacher, student = _models()
    prompts = PromptSet(TEXTS, ids=[f"t{i}" for i in range(5)])
    result = score_all([teacher, student], prompts, top_k=3, chunk_size=2)
    assert list(result.outputs) == ["teacher", "student"]
    for m in (teacher, student):
        direct = HFCausalLM(m.model, m.tokenizer).score(TEXTS, list(prompts.ids), top_k=3)
        out = result[m.name]
        assert list(out.text_ids) == list(prompts.ids)
        np.testing.assert_array_equal(out.offsets, direct.offsets)
        np.testing.assert_allclose(out.top_logprobs, direct.top_logprobs, atol=1e-6)
        np.testing.assert_array_equal(out.target_ids, direct.target_ids)
    assert result.comparison.per_token
    prov = result.provenance
    assert prov["prompts"]["sha256"] == prompts.sha256()
    assert [r["queries"] for r in prov["models"]] == [5, 5]
    assert prov["models"][0]["sha256"] == teacher.fingerprint() and prov["models"][0]["tokenizer_sha256"]


def test_resumed_run_asks_no_model_again_for_a_cached_chunk(tmp_path):
    teacher, student = _models()
    prompts = PromptSet(TEXTS)
    first = score_all([teacher, student], prompts, top_k=3, cache_dir=tmp_path, chunk_size=2)
    assert teacher.asked == [2, 2, 1]
    # a run cut short: drop the last chunk's file, as if killed before writing it
    last = sorted(tmp_path.rglob("chunk-*.npz"))
    assert len(last) == 6
    for path in last:
        if path.name.startswith("chunk-000000004"):
            path.unlink()
    teacher.asked.clear()
    student.asked.clear()
    again = score_all([teacher, student], prompts, top_k=3, cache_dir=tmp_path, chunk_size=2)
    assert teacher.asked == [1] and student.asked == [1]
    assert again.provenance["models"][0]["chunks_cached"] == 2
    for name in ("teacher", "student"):
        np.testing.assert_array_equal(again[name].top_logprobs, first[name].top_logprobs)
        np.testing.assert_array_equal(again[name].offsets, first[name].offsets)
    # other settings, other keys: nothing reused
    teacher.asked.clear()
    score_all([teacher], prompts, top_k=2, cache_dir=tmp_path, chunk_size=2)
    assert teacher.asked == [2, 2, 1]
    # a damaged chunk is recomputed, never trusted
    victim = [p for p in last if p.name.startswith("chunk-000000000")][0]
    victim.write_bytes(b"garbage")
    teacher.asked.clear()
    student.asked.clear()
    score_all([teacher, student], prompts, top_k=3, cache_dir=tmp_path, chunk_size=2)
    assert teacher.asked + student.asked == [2]


def test_generate_all_is_cached_and_chunking_does_not_change_samples(tmp_path):
    teacher, _ = _models()
    prompts = PromptSet(["def f(x):", "Return the", "Split", "Open"])
    a = generate_all([teacher], prompts, max_new_tokens=5, do_sample=True, seed=3, chunk_size=3,
                     cache_dir=tmp_path)
    b = generate_all([teacher], prompts, max_new_tokens=5, do_sample=True, seed=3, chunk_size=1)
    assert a["teacher"].texts == b["teacher"].texts
    teacher.asked.clear()
    c = generate_all([teacher], prompts, max_new_tokens=5, do_sample=True, seed=3, chunk_size=3,
                     cache_dir=tmp_path)
    assert teacher.asked == [] and c["teacher"].texts == a["teacher"].texts
    for x, y in zip(c["teacher"].token_logprobs, a["teacher"].token_logprobs):
        np.testing.assert_array_equal(x, y)
    assert c["teacher"].settings["seed"] == 3 and c.provenance["settings"]["do_sample"] is True


def test_different_tokenizers_allow_text_level_comparisons_only():
    import transformers

    from _lm_fixtures import tokenizer

    teacher, _ = _models()
    tok2 = tokenizer(300)
    cfg = transformers.GPT2Config(vocab_size=len(tok2), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    other = HFCausalLM(transformers.GPT2LMHeadModel(cfg), tok2, name="other")
    level = comparison_level([teacher, other])
    assert not level.per_token and "different tokenizers" in level.reason and "text-level" in level.reason
    result = score_all([teacher, other], PromptSet(TEXTS[:2]), top_k=2)
    assert result.provenance["comparison"]["per_token"] is False


def test_harness_arguments_are_checked():
    teacher, _ = _models()
    with pytest.raises(KDAuditError, match="top_k"):
        score_all([teacher], PromptSet(TEXTS), top_k=50)
    with pytest.raises(KDAuditError, match="PromptSet"):
        score_all([teacher], TEXTS, top_k=2)
    with pytest.raises(KDAuditError, match="unique names"):
        score_all([teacher, teacher], PromptSet(TEXTS), top_k=2)
    with pytest.raises(KDAuditError, match="LanguageModel"):
        score_all([object()], PromptSet(TEXTS), top_k=2)
    with pytest.raises(KDAuditError, match="max_new_tokens"):
        generate_all([teacher], PromptSet(TEXTS), max_new_tokens=0)
