"""Prompt files (JSONL, CSV, parquet) and precomputed LM outputs: round trips and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kdaudit import KDAuditError
from kdaudit.data import PromptSet, load_prompts
from kdaudit.harness import Generations, TokenTopK
from kdaudit.models import HFCausalLM, PrecomputedLM, save_lm_outputs
from _lm_fixtures import TEXTS, gpt2

RECORDS = [
    {"id": "a", "prompt": "def f(x):", "reference": " return x", "choices": ["yes", "no"], "answer": 0,
     "topic": "code"},
    {"id": "b", "prompt": "The sky is", "reference": " blue", "choices": ["red", "blue"], "answer": "blue",
     "topic": "nature"},
]


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_prompt_files_round_trip(tmp_path, fmt):
    path = tmp_path / f"prompts.{fmt}"
    if fmt == "jsonl":
        _write_jsonl(path, RECORDS)
    else:
        frame = pd.DataFrame(RECORDS)
        frame["answer"] = frame["answer"].astype(str)
        if fmt == "csv":
            frame["choices"] = frame["choices"].map(json.dumps)
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path)
    ps = load_prompts(path, groups=["topic"])
    assert ps.prompts == ("def f(x):", "The sky is") and list(ps.ids) == ["a", "b"]
    assert ps.references == (" return x", " blue")
    assert ps.choices == (("yes", "no"), ("red", "blue")) and ps.answers.tolist() == [0, 1]
    assert ps.groups["topic"].tolist() == ["code", "nature"] and ps.name == "prompts"


def test_chat_messages_and_defaults(tmp_path):
    path = _write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
        {"messages": [{"role": "user", "content": "Bye"}]}])
    ps = load_prompts(path)
    assert ps.messages[0][1] == {"role": "user", "content": "Hi"}
    assert ps.prompts[0] == "system: Be brief.\nuser: Hi\n" and list(ps.ids) == ["0", "1"]
    assert ps.references is None and ps.choices is None


@pytest.mark.parametrize("bad, match", [
    ('{"id": 1}\n', r"line 1: field 'prompt' is missing"),
    ('{"prompt": "a"}\n{"prompt": 3}\n', r"line 2: field 'prompt' must be a string"),
    ('{"prompt": "a"}\nnot json\n', r"line 2: not valid JSON"),
    ('{"prompt": "a", "choices": ["x", "y"], "answer": 5}\n', r"line 1: field 'answer' got 5"),
    ('{"prompt": "a", "choices": ["x", "y"]}\n', r"line 1: field 'answer' is missing"),
    ('{"prompt": "a", "choices": "x"}\n', r"line 1: field 'choices' is not a JSON list"),
    ('{"prompt": "a", "messages": [{"role": "user"}]}\n', r"line 1: field 'messages' must be"),
    ('{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n', r"line 2: id 'x' appears twice"),
    ('{"prompt": "a", "reference": "r"}\n{"prompt": "b"}\n', r"line 2: field 'reference' is missing"),
    ('{"prompt": "a"}\n', r"field 'topic' is missing"),
])
def test_malformed_prompt_files_name_line_and_field(tmp_path, bad, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(bad)
    with pytest.raises(KDAuditError, match=match) as info:
        load_prompts(path, groups=["topic"] if "topic" in match else None)
    assert "bad.jsonl" in str(info.value)


def test_prompt_file_bounds(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": str(i)} for i in range(5)])
    with pytest.raises(KDAuditError, match="max_rows=3"):
        load_prompts(path, max_rows=3)
    with pytest.raises(KDAuditError, match="'path'"):
        load_prompts(tmp_path / "p.txt")
    (tmp_path / "bad.csv").write_text("prompt,answer\nhello,1\n")
    with pytest.raises(KDAuditError, match="row 1: field 'choices' is missing"):
        load_prompts(tmp_path / "bad.csv")


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_precomputed_lm_round_trips_harness_outputs(tmp_path, suffix):
    model, tok = gpt2()
    lm = HFCausalLM(model, tok, name="teacher")
    ids = list(range(len(TEXTS)))
    scores = lm.score(TEXTS, ids, top_k=4)
    gens = lm.generate(TEXTS[:4] + ["x"], ids, max_new_tokens=3)
    path = save_lm_outputs(tmp_path / f"teacher.{suffix}", scores=scores, generations=gens, texts=TEXTS)
    pre = PrecomputedLM(path, tokenizer_sha256=lm.tokenizer_fingerprint())
    back = pre.score(TEXTS, ids, top_k=3)
    np.testing.assert_array_equal(back.offsets, scores.offsets)
    np.testing.assert_array_equal(back.top_ids, scores.top_ids[:, :3])
    np.testing.assert_array_equal(back.top_logprobs, scores.top_logprobs[:, :3])
    np.testing.assert_array_equal(back.target_logprob, scores.target_logprob)
    assert back.tokenizer_sha256 == scores.tokenizer_sha256
    again = pre.generate(TEXTS[:4] + ["x"], ids, max_new_tokens=3)
    assert again.texts == gens.texts
    np.testing.assert_array_equal(again.token_logprobs[0], gens.token_logprobs[0])
    # ids are looked up, in the order asked
    order = [3, 0]
    sub = pre.score([TEXTS[i] for i in order], order, top_k=2)
    np.testing.assert_array_equal(sub.target_ids, np.concatenate([scores.target_ids[scores.offsets[i]:
                                                                                   scores.offsets[i + 1]]
                                                                  for i in order]))
    with pytest.raises(KDAuditError, match="differs"):
        pre.score(["another text"], [0], top_k=2)
    with pytest.raises(KDAuditError, match="no scores for id 99"):
        pre.score(["x"], [99], top_k=2)
    with pytest.raises(KDAuditError, match="top_k"):
        pre.score(TEXTS, ids, top_k=5)


@pytest.mark.parametrize("record, match", [
    ({"id": 1, "target_ids": [1], "target_logprobs": [-1.0], "top_ids": [[1]]}, "'top_logprobs' is missing"),
    ({"id": 1, "target_ids": [1], "target_logprobs": [-1.0], "top_ids": [[1, 2]], "top_logprobs": [[-1.0]]},
     "'top_ids' has shape"),
    ({"id": 1, "target_ids": [1], "target_logprobs": [0.5], "top_ids": [[1]], "top_logprobs": [[-1.0]]},
     "'target_logprobs' must hold log-probabilities"),
    ({"id": 1, "target_ids": [1], "target_logprobs": [-1.0], "top_ids": [[1, 2]], "top_logprobs": [[-2.0, -1.0]]},
     "sorted"),
    ({"id": 1, "target_ids": [1], "target_logprobs": [-1.0], "top_ids": [list(range(21))],
      "top_logprobs": [[-1.0] * 21]}, "k=21"),
    ({"id": 1}, "neither"),
    ({"generation": "x"}, "'id' is missing"),
])
def test_malformed_precomputed_files_are_refused(tmp_path, record, match):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 0, "generation": "fine"}\n' + json.dumps(record) + "\n")
    with pytest.raises(KDAuditError, match=match) as info:
        PrecomputedLM(path)
    assert "line 2" in str(info.value)


def test_text_only_precomputed_file(tmp_path):
    path = tmp_path / "gens.jsonl"
    path.write_text('{"id": "p", "generation": "hello"}\n')
    pre = PrecomputedLM(path)
    assert str(pre.access) == "text" and pre.tokenizer_fingerprint() is None
    out = pre.generate(["prompt"], ["p"], max_new_tokens=2)
    assert isinstance(out, Generations) and out.texts == ("hello",) and out.token_logprobs is None
    with pytest.raises(KDAuditError, match="scores"):
        pre.score(["prompt"], ["p"], top_k=1)
    assert isinstance(PromptSet(["a"]), PromptSet) and TokenTopK is not None
