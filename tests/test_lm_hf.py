"""Hugging Face adapters: teacher-forced scoring, seeded generation, safe offline loading, classifiers over text."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from kdaudit import KDAuditError, UnsafeModelFileError
from kdaudit.models import HFCausalLM, HFSequenceClassifier
from kdaudit.models._hf import tokenizer_sha256
from _lm_fixtures import TEXTS, gpt2, gpt2_classifier, tokenizer

pytest.importorskip("transformers")


def _plain_logprobs(model, tok, text):
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), -1)[:-1].numpy(), np.array(ids[1:])


def test_score_matches_an_unpadded_forward_per_text():
    model, tok = gpt2()
    lm = HFCausalLM(model, tok, batch_size=3)
    out = lm.score(TEXTS, list(range(len(TEXTS))), top_k=5)
    assert out.k == 5 and out.n_texts == len(TEXTS)
    for i, text in enumerate(TEXTS):
        rows = slice(out.offsets[i], out.offsets[i + 1])
        if len(tok(text)["input_ids"]) < 2:
            assert out.offsets[i + 1] == out.offsets[i]
            continue
        lp, targets = _plain_logprobs(model, tok, text)
        assert out.offsets[i + 1] - out.offsets[i] == len(targets)
        np.testing.assert_array_equal(out.target_ids[rows], targets)
        np.testing.assert_allclose(out.target_logprob[rows], lp[np.arange(len(targets)), targets], atol=2e-5)
        expected_top = np.sort(lp, axis=1)[:, ::-1][:, :5]
        np.testing.assert_allclose(out.top_logprobs[rows], expected_top, atol=2e-5)
        np.testing.assert_allclose(np.take_along_axis(lp, out.top_ids[rows].astype(int), 1), expected_top, atol=2e-5)
    assert lm.query_count == len(TEXTS) and lm.token_count > 0
    assert out.tokenizer_sha256 == lm.tokenizer_fingerprint()


def test_score_does_not_depend_on_batch_size():
    model, tok = gpt2()
    a = HFCausalLM(model, tok, batch_size=1).score(TEXTS, list(range(5)), top_k=3)
    b = HFCausalLM(model, tok, batch_size=5).score(TEXTS, list(range(5)), top_k=3)
    np.testing.assert_allclose(a.top_logprobs, b.top_logprobs, atol=2e-5)
    np.testing.assert_allclose(a.target_logprob, b.target_logprob, atol=2e-5)


def test_callers_model_is_left_as_it_was():
    model, tok = gpt2()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lm = HFCausalLM(model, tok, precision="bf16")
    assert lm.model is not model and next(model.parameters()).dtype == torch.float32
    out = lm.score(TEXTS[:2], [0, 1], top_k=4)
    assert out.top_logprobs.dtype == np.float32 and out.meta["precision"] == "bf16"
    same = HFCausalLM(model, tok)
    same.score(TEXTS[:2], [0, 1], top_k=4)
    assert same.model is model and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert tok.padding_side == "right"


def test_fingerprint_follows_in_place_training():
    model, tok = gpt2()
    lm = HFCausalLM(model, tok)
    first = lm.fingerprint()
    assert lm.fingerprint() == first
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert lm.fingerprint() != first


def test_greedy_generation_matches_token_by_token_argmax_and_batching():
    model, tok = gpt2()
    prompts = ["def f(x):", "Return the", "A much longer prompt that forces left padding of the others"]
    gens = HFCausalLM(model, tok, batch_size=3).generate(prompts, ["a", "b", "c"], max_new_tokens=6)
    single = HFCausalLM(model, tok, batch_size=1).generate(prompts, ["a", "b", "c"], max_new_tokens=6)
    assert gens.texts == single.texts
    for prompt, text, lps in zip(prompts, gens.texts, gens.token_logprobs):
        ids = tok(prompt)["input_ids"]
        chosen = []
        for _ in range(6):
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1)
            nxt = int(lp.argmax())
            chosen.append(float(lp[nxt]))
            ids.append(nxt)
            if nxt == tok.eos_token_id:
                break
        assert text == tok.decode(ids[len(tok(prompt)["input_ids"]):], skip_special_tokens=True)
        np.testing.assert_allclose(lps, chosen, atol=1e-4)
    assert gens.settings == {"do_sample": False, "max_new_tokens": 6, "temperature": 0.0, "seed": 0}


def test_sampled_generation_is_seeded_per_prompt():
    model, tok = gpt2()
    prompts = ["def f(x):", "Return the", "Split"]
    lm3 = HFCausalLM(model, tok, batch_size=3)
    a = lm3.generate(prompts, [1, 2, 3], max_new_tokens=8, do_sample=True, seed=7)
    b = HFCausalLM(model, tok, batch_size=1).generate(prompts, [1, 2, 3], max_new_tokens=8, do_sample=True, seed=7)
    c = lm3.generate(prompts, [1, 2, 3], max_new_tokens=8, do_sample=True, seed=8)
    assert a.texts == b.texts
    assert a.texts != c.texts
    greedy = lm3.generate(prompts, [1, 2, 3], max_new_tokens=8)
    assert a.texts != greedy.texts  # a random tiny model's distribution is nearly flat: sampling differs


def test_sampling_follows_the_model_distribution():
    # Gumbel-max: the first sampled token's frequencies match softmax(logits / T)
    model, tok = gpt2()
    lm = HFCausalLM(model, tok, batch_size=64)
    prompt = "Return"
    with torch.no_grad():
        logits = model(torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1]
    p = torch.softmax(logits / 0.05, -1).numpy()
    gens = lm.generate([prompt] * 400, list(range(400)), max_new_tokens=1, do_sample=True, temperature=0.05)
    first = [tok(g)["input_ids"][0] if g else tok.eos_token_id for g in gens.texts]
    top = int(np.argmax(p))
    assert abs(np.mean(np.array(first) == top) - p[top]) < 0.1


def test_invalid_arguments_are_named():
    model, tok = gpt2()
    lm = HFCausalLM(model, tok)
    with pytest.raises(KDAuditError, match="top_k"):
        lm.score(["a b"], [0], top_k=21)
    with pytest.raises(KDAuditError, match="ids"):
        lm.score(["a b"], [0, 1], top_k=2)
    with pytest.raises(KDAuditError, match="max_length"):
        lm.score(["word " * 400], [0], top_k=2)
    out = HFCausalLM(model, tok, truncation=True).score(["word " * 400], [0], top_k=2)
    assert out.n_positions == 127
    with pytest.raises(KDAuditError, match="max_new_tokens"):
        lm.generate(["a"], [0], max_new_tokens=0)
    with pytest.raises(KDAuditError, match="device"):
        HFCausalLM(model, tok, device="nonsense")


@pytest.fixture()
def saved_lm(tmp_path):
    model, tok = gpt2()
    path = tmp_path / "lm"
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path, model, tok


def test_from_pretrained_loads_offline_without_network(saved_lm, monkeypatch):
    path, model, tok = saved_lm
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during load")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    lm = HFCausalLM.from_pretrained(path, name="teacher")
    assert attempts == []
    assert lm.name == "teacher" and lm.file_sha256 and lm.kind == "huggingface"
    assert lm.fingerprint() == HFCausalLM(model, tok).fingerprint()
    assert lm.tokenizer_fingerprint() == tokenizer_sha256(tok)
    a = lm.score(TEXTS, list(range(5)), top_k=3)
    b = HFCausalLM(model, tok).score(TEXTS, list(range(5)), top_k=3)
    np.testing.assert_allclose(a.top_logprobs, b.top_logprobs, atol=1e-6)
    described = lm.describe()
    assert described["sha256"] == lm.fingerprint() and described["n_parameters"] > 0


def test_from_pretrained_refuses_code_and_pickles(saved_lm, tmp_path):
    path, _, _ = saved_lm
    with pytest.raises(UnsafeModelFileError, match="trust_remote_code"):
        HFCausalLM.from_pretrained(path, trust_remote_code=True)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "m.Evil"}}))
    with pytest.raises(UnsafeModelFileError, match="auto_map"):
        HFCausalLM.from_pretrained(path)
    (path / "config.json").write_text(json.dumps({**config, "model_type": "evil-net"}))
    with pytest.raises(UnsafeModelFileError, match="evil-net"):
        HFCausalLM.from_pretrained(path)
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(UnsafeModelFileError, match="safetensors"):
        HFCausalLM.from_pretrained(path)
    with pytest.raises(KDAuditError, match="local directory"):
        HFCausalLM.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KDAuditError, match="config.json"):
        HFCausalLM.from_pretrained(tmp_path / "empty")


def test_tokenizer_fingerprints_tell_tokenizers_apart():
    assert tokenizer_sha256(tokenizer(400)) == tokenizer_sha256(tokenizer(400))
    assert tokenizer_sha256(tokenizer(400)) != tokenizer_sha256(tokenizer(300))


@pytest.mark.parametrize("pad", [True, False])
def test_sequence_classifier_matches_unpadded_forward(pad):
    model, tok = gpt2_classifier(pad=pad)
    clf = HFSequenceClassifier(model, tok, batch_size=4)
    texts = [t for t in TEXTS if t]
    logits = clf.predict(np.array(texts, dtype=object))
    for i, text in enumerate(texts):
        with torch.no_grad():
            ref = model(torch.tensor([tok(text)["input_ids"]])).logits[0].numpy()
        np.testing.assert_allclose(logits[i], ref, atol=2e-5)


def test_sequence_classifier_through_the_classifier_audit(tmp_path):
    import kdaudit
    from kdaudit.data import AuditData

    teacher_model, tok = gpt2_classifier(seed=0)
    student_model, _ = gpt2_classifier(seed=1)
    path = tmp_path / "teacher"
    teacher_model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    teacher = HFSequenceClassifier.from_pretrained(path, name="teacher")
    student = HFSequenceClassifier(student_model, tok, name="student")
    from _lm_fixtures import corpus

    docs = corpus().documents[:60]
    X = np.array([d.text[:200] for d in docs], dtype=object)
    y = np.array([d.kind == "function" for d in docs], dtype=np.int64)
    result = kdaudit.audit(teacher, student, AuditData(X=X, y_true=y), n_replicates=50, progress=False,
                           sections=["agreement", "calibration"])
    frame = result.to_frame()
    agreement = frame[(frame.section == "agreement")].set_index("metric")["value"]
    expected = np.mean(teacher.predict(X).argmax(1) == student.predict(X).argmax(1))
    name = [m for m in agreement.index if "agreement" in m and "teacher" not in m][0]
    assert agreement[name] == pytest.approx(expected)
    assert {m["kind"] for m in result.results["models"]} == {"huggingface"}
    assert set(frame.section) >= {"agreement", "calibration"}
