"""The offline text corpus (Python standard library docstrings) and the prompt sets built from it."""

from __future__ import annotations

import ast

import numpy as np
import pytest

from kdaudit import KDAuditError
from kdaudit.data import (
    STDLIB_MODULES,
    continuation_prompts,
    docstring_choice_task,
    load_stdlib_corpus,
    templated_prompts,
    train_tokenizer,
)
from _lm_fixtures import corpus


def test_corpus_is_deterministic_and_identified():
    a = corpus()
    b = load_stdlib_corpus()
    assert a.sha256() == b.sha256() and len(a) > 1000
    assert [f for f, _ in a.files] == sorted(f"{p}.py" for p, _ in STDLIB_MODULES)
    assert len({d.id for d in a.documents}) == len(a)
    described = a.describe()
    assert "PSF" in described["license"] and described["n_chars"] > 300_000
    first = a.documents[0]
    assert first.id == "argparse:" and first.kind == "module"
    fn = next(d for d in a.documents if d.kind == "function")
    assert fn.signature.startswith(f"def {fn.name}(") and fn.signature.endswith("):")
    ast.parse(fn.signature + "\n    pass")


def test_split_is_stable_and_disjoint():
    train, held = corpus().split(heldout_fraction=0.2)
    assert len(train) + len(held) == len(corpus())
    assert not {d.id for d in train.documents} & {d.id for d in held.documents}
    assert 0.1 < len(held) / len(corpus()) < 0.3
    assert corpus().split(heldout_fraction=0.2)[1].sha256() == held.sha256()


def test_continuation_prompts_reassemble_the_text():
    ps = continuation_prompts(corpus(), n=50, seed=3)
    assert len(ps) == 50 and ps.references is not None
    texts = {d.id: d.text for d in corpus().documents}
    for pid, prompt, ref in zip(ps.ids, ps.prompts, ps.references):
        assert texts[pid].startswith(prompt + ref)
        assert len(prompt) <= 120 and len(ref) > 0
    assert ps.sha256() == continuation_prompts(corpus(), n=50, seed=3).sha256()
    assert ps.sha256() != continuation_prompts(corpus(), n=50, seed=4).sha256()
    assert set(ps.groups["area"]) <= {a for _, a in STDLIB_MODULES}
    with pytest.raises(KDAuditError, match="'n'"):
        continuation_prompts(corpus(), n=10**6)


def test_docstring_choice_task_has_one_right_answer():
    ps = docstring_choice_task(corpus(), n=100, n_choices=4, seed=0)
    by_id = {d.id: d for d in corpus().documents}
    for pid, prompt, options, answer in zip(ps.ids, ps.prompts, ps.choices, ps.answers):
        doc = by_id[pid]
        assert prompt.startswith(doc.signature)
        assert options[answer] == doc.text.split("\n", 1)[0].strip()
        assert len(set(options)) == 4
    # right answers are spread over positions, not always last
    assert len(np.unique(ps.answers)) == 4
    assert docstring_choice_task(corpus(), n=100, seed=0).sha256() == ps.sha256()


def test_templated_prompts_carry_groups():
    ps = templated_prompts(["import {x}  # used for", "The {x} module"], {"text": ["re", "textwrap"],
                                                                         "numeric": ["math"]}, group="area")
    assert len(ps) == 6 and ps.groups["area"].tolist() == ["text", "text", "numeric"] * 2
    with pytest.raises(KDAuditError, match="templates"):
        templated_prompts(["no slot"], {"a": ["x"]})
    with pytest.raises(KDAuditError, match="fillers"):
        templated_prompts(["{x}"], {"a": []})


def test_tokenizer_is_deterministic_and_lossless():
    texts = corpus().texts[:200]
    a = train_tokenizer(texts, vocab_size=300)
    b = train_tokenizer(texts, vocab_size=300)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    sample = "Ünïcode — and\ttabs\n  stay: λx.x"
    assert a.decode(a(sample)["input_ids"]) == sample
    with pytest.raises(KDAuditError, match="vocab_size"):
        train_tokenizer(texts, vocab_size=10)
