"""The language-model audit end to end: tiny GPT-style models, prompt sets with references, choices and groups,
results.json byte-reproducible, what is possible across tokenizers and through text-only access, the policy,
the report, distillation and the demo."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binomtest

import kdaudit
from kdaudit import KDAuditError
from kdaudit.data._prompts import PromptSet
from kdaudit.distill._lm import distill_lm_sequences, distill_lm_tokens, gpt_lm, train_lm
from kdaudit.metrics import Bootstrap
from kdaudit.metrics._sequence import token_section
from kdaudit.models._lm_base import LanguageModel, LMAccess

from _lm_fixtures import DOCSTRING_TEXTS

hf = pytest.importorskip("kdaudit.models._hf")
corpus_mod = pytest.importorskip("kdaudit.data._corpus")

TEXTS = DOCSTRING_TEXTS[:10] * 3


@pytest.fixture(scope="module")
def tok():
    return corpus_mod.train_tokenizer(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def models(tok):
    torch.set_num_threads(1)
    t = train_lm(gpt_lm(len(tok), n_layer=1, n_embd=32, n_head=2, eos_token_id=tok.eos_token_id, seed=0), tok,
                 TEXTS, epochs=3, lr=1e-2, batch_size=8, seed=0)
    teacher = hf.HFCausalLM(t, tok, name="teacher")
    s = distill_lm_tokens(teacher, gpt_lm(len(tok), n_layer=1, n_embd=16, n_head=2, eos_token_id=tok.eos_token_id,
                                          seed=1), tok, TEXTS, epochs=30, lr=1e-2, batch_size=8, seed=1)
    c = train_lm(gpt_lm(len(tok), n_layer=1, n_embd=16, n_head=2, eos_token_id=tok.eos_token_id, seed=2), tok,
                 TEXTS, epochs=30, lr=1e-2, batch_size=8, seed=2)
    return teacher, hf.HFCausalLM(s, tok, name="student"), hf.HFCausalLM(c, tok, name="control")


def _prompt_set(n: int = 24) -> PromptSet:
    prompts = [t[: len(t) // 2] for t in TEXTS[:n]]
    refs = [t[len(t) // 2:] for t in TEXTS[:n]]
    groups = pd.DataFrame({"kind": ["string" if "string" in t else "other" for t in TEXTS[:n]]})
    return PromptSet(prompts=prompts, ids=[f"p{i}" for i in range(n)], references=refs, groups=groups,
                     name="texts <b>", source="test")


def _choice_set(n: int = 20) -> PromptSet:
    rng = np.random.default_rng(0)
    prompts, choices, answers = [], [], []
    base = TEXTS[:10]
    for i in range(n):
        right = base[i % 10]
        wrong = [base[(i + 3) % 10], base[(i + 7) % 10]]
        opts = wrong + [right]
        perm = rng.permutation(3)
        opts = [opts[p] for p in perm]
        prompts.append(f"Docstring {i}:")
        choices.append(tuple(" " + o for o in opts))
        answers.append(opts.index(right))
    return PromptSet(prompts=prompts, ids=[f"q{i}" for i in range(n)], choices=choices, answers=answers,
                     groups=pd.DataFrame({"half": ["a" if i < n // 2 else "b" for i in range(n)]}), name="mc")


def _audit(teacher, students, data, **kw):
    return kdaudit.audit(teacher, students, data, seed=0, n_replicates=50, progress=False,
                         section_options={"lm_generation": {"max_new_tokens": 6}, "lm_bias": {"min_group_size": 3}},
                         **kw)


def test_lm_audit_sections_reproducible_bytes_frame_and_report(models, tmp_path):
    teacher, student, control = models
    data = [_prompt_set(), _choice_set()]
    a = _audit(teacher, {"student": student, "control": control}, data, roles={"control": "control"})
    b = _audit(teacher, {"student": student, "control": control}, data, roles={"control": "control"})
    assert a.to_json() == b.to_json()
    res = a.to_dict()
    assert res["task"] == "lm" and res["teacher"] == "teacher"
    assert [c["student"] for c in res["comparisons"]] == ["student", "control"]
    comp = res["comparisons"][0]
    for section in ("lm_tokens", "lm_generation", "lm_task", "lm_bias", "cost"):
        assert comp[section]["available"], (section, comp[section].get("reason"))
    assert res["comparisons_possible"]["student"]["per_token"] is True
    assert comp["lm_task"]["agreement"]["mcnemar"]["test"].startswith("exact McNemar")
    frame = a.to_frame()
    assert set(frame["section"]) >= {"lm_tokens", "lm_generation", "lm_task", "lm_bias", "cost"}
    assert (frame["group"].str.startswith("kind=")).any()
    assert a["student"]["lm_tokens"]["headline"]["top1_agreement"]["value"] is not None
    assert {f.metric for f in a.findings} >= {"lm_tokens.perplexity_ratio", "lm_task.retained_accuracy"}
    assert {f.student for f in a.findings} == {"student"}  # the control is reported, not judged
    assert [m["role"] for m in res["models"]] == ["teacher", "student", "control"]
    assert list(res["verdict_by_student"]) == ["student"]
    paths = a.save(tmp_path)
    html = paths["report"].read_text()
    assert 'id="scorecard"' in html and "Quality kept on the same texts" in html
    assert "Which comparisons were possible" in html
    assert "texts <b>" not in html and "texts &lt;b&gt;" in html  # user strings are escaped
    assert json.loads(paths["results"].read_text()) == json.loads(a.to_json())
    assert "throughput_ratio" in json.loads(paths["run"].read_text())["cost"]["student"]


def test_lm_audit_cache_resumes_without_asking_again(models, tmp_path):
    teacher, student, _ = models
    first = _audit(teacher, student, _prompt_set(), cache_dir=tmp_path, measure_cost=False)
    again = _audit(teacher, student, _prompt_set(), cache_dir=tmp_path, measure_cost=False)
    assert again.to_json() == first.to_json()  # results.json does not depend on what the cache held
    assert all(m["queries"] == 0 for m in again.run_info["models"])
    assert all(m["queries"] > 0 for m in first.run_info["models"])


def test_multiple_choice_accuracy_and_mcnemar_match_direct_scoring(models):
    teacher, student, _ = models
    mc = _choice_set()
    r = _audit(teacher, student, mc, sections=["lm_task"])
    task = r.to_dict()["comparisons"][0]["lm_task"]

    def answers(m):
        lp = []
        prefix = m.score(list(mc.prompts), list(mc.ids), top_k=1)
        pre = np.add.reduceat(prefix.target_logprob.astype(np.float64), prefix.offsets[:-1])
        for j in range(3):
            full = m.score([p + c[j] for p, c in zip(mc.prompts, mc.choices)], list(mc.ids), top_k=1)
            lp.append(np.add.reduceat(full.target_logprob.astype(np.float64), full.offsets[:-1]) - pre)
        return np.argmax(np.stack(lp, 1), 1)

    at, as_ = answers(teacher), answers(student)
    y = mc.answers
    assert task["headline"]["teacher_accuracy"]["value"] == pytest.approx(np.mean(at == y))
    assert task["headline"]["student_accuracy"]["value"] == pytest.approx(np.mean(as_ == y))
    b, c = int(((at == y) & (as_ != y)).sum()), int(((at != y) & (as_ == y)).sum())
    mcn = task["agreement"]["mcnemar"]
    assert (mcn["b_teacher_only_correct"], mcn["c_student_only_correct"]) == (b, c)
    assert mcn["p_value"] == pytest.approx(1.0 if b + c == 0 else binomtest(c, b + c, 0.5).pvalue)
    counts = task["fingerprint"]["counts"]
    assert counts["inherited"] == int(((at != y) & (as_ != y)).sum())


def test_other_tokenizer_allows_text_level_comparisons_only(models):
    teacher, _, _ = models
    tok2 = corpus_mod.train_tokenizer(TEXTS[:10], vocab_size=280)
    other = hf.HFCausalLM(gpt_lm(len(tok2), n_layer=1, n_embd=16, n_head=2, eos_token_id=tok2.eos_token_id,
                                 seed=5), tok2, name="other")
    r = _audit(teacher, other, _prompt_set())
    comp = r.to_dict()["comparisons"][0]
    assert not comp["lm_tokens"]["available"] and "different tokenizers" in comp["lm_tokens"]["reason"]
    assert comp["lm_generation"]["available"]
    assert r.to_dict()["comparisons_possible"]["other"]["per_token"] is False
    statuses = {f.metric: f.status for f in r.findings}
    assert statuses["lm_tokens.perplexity_ratio"] == "skipped"


class _TextOnly(LanguageModel):
    """A model seen through a text-only API: generations, no log-probabilities."""

    kind = "endpoint"
    access = LMAccess.TEXT

    def __init__(self, inner, name):
        self.inner, self.name = inner, name

    def fingerprint(self):
        return "endpoint:" + self.inner.fingerprint()

    def tokenizer_fingerprint(self):
        return None

    def generate(self, prompts, ids, **kw):
        return self.inner.generate(prompts, ids, **kw)


def test_text_only_student_is_compared_on_generations_and_teacher_likelihood(models):
    teacher, student, _ = models
    api = _TextOnly(student, "api student")
    r = _audit(teacher, api, [_prompt_set(), _choice_set()])
    comp = r.to_dict()["comparisons"][0]
    # one skip rule: a text-only model gives the TEXT kind; every section that needs per-token log-probabilities
    # says so, the generation section (which takes text) runs
    for section in ("lm_tokens", "lm_task", "lm_bias"):
        assert not comp[section]["available"]
        assert comp[section]["reason"] == (f"the {section} section needs outputs of kind token_top_k; "
                                           "student 'api student' gives text")
    assert r.to_dict()["comparisons_possible"]["api student"]["per_token_reason"] == comp["lm_tokens"]["reason"]
    gen = comp["lm_generation"]
    assert gen["available"] and gen["headline"]["teacher_loglik_gap"]["value"] is not None
    # the student's greedy text is the same whether read through the API or directly
    direct = _audit(teacher, student, _prompt_set(), sections=["lm_generation"]).to_dict()["comparisons"][0]
    assert direct["lm_generation"]["headline"]["chrf"] == gen["headline"]["chrf"]


def test_lm_audit_bad_inputs(models):
    teacher, student, _ = models
    with pytest.raises(KDAuditError, match="data"):
        _audit(teacher, student, [_prompt_set(), _prompt_set()])
    with pytest.raises(KDAuditError, match="section_options"):
        kdaudit.audit(teacher, student, _prompt_set(), section_options={"lm_tokens": {"k": 3}}, progress=False)
    with pytest.raises(KDAuditError, match="references"):
        kdaudit.audit(teacher, student, _prompt_set(), references=[student], progress=False)
    with pytest.raises(KDAuditError, match="'executor'.*this process"):
        kdaudit.audit(teacher, student, _prompt_set(), executor="local", progress=False)
    with pytest.raises(KDAuditError, match="teacher"):
        kdaudit.audit(object(), student, _prompt_set(), progress=False)
    with pytest.raises(KDAuditError, match="sections"):
        _audit(teacher, student, _prompt_set(), sections=["lm_tokenz"])
    with pytest.raises(KDAuditError, match="lineage_test"):
        _audit(teacher, student, _prompt_set(), sections=["lineage"])
    with pytest.raises(KDAuditError, match=r"section_options\.lm_tokens\.top_k"):
        kdaudit.audit(teacher, student, _prompt_set(), section_options={"lm_tokens": {"top_k": 21}}, progress=False)
    with pytest.raises(KDAuditError, match="length_normalize"):
        kdaudit.audit(teacher, student, _prompt_set(), section_options={"lm_task": {"length_normalize": "tokens"}},
                      progress=False)


def test_lm_sections_are_registry_sections_judged_by_the_one_skip_rule(models):
    """The language-model sections live in the registry (sections/_lm.py): options, needs, definitions and rows;
    a classifier section asked of language models, or a section whose prompt set is missing, is reported
    unavailable with the skip rule's reason."""
    from kdaudit.sections import registry

    reg = registry()
    assert [n for n in reg if n.startswith("lm_") or n == "cost"] == ["lm_tokens", "lm_generation", "lm_task",
                                                                       "lm_bias", "cost"]
    assert reg["lm_tokens"].check_options({"top_k": "5"}) == {"top_k": 5}  # the CLI's strings, converted
    teacher, student, _ = models
    r = _audit(teacher, student, _choice_set(), sections=["agreement", "lm_tokens", "lm_task"])
    comp = r.to_dict()["comparisons"][0]
    assert comp["agreement"] == {"available": False, "headline": {}, "reason": (
        "the agreement section needs outputs of kind class_probs, labels, top_k; teacher 'teacher' gives "
        "token_top_k")}
    assert comp["lm_tokens"]["reason"] == ("the lm_tokens section needs a prompt set of texts (prompts without "
                                           "choices); none was given")
    assert comp["lm_task"]["available"]
    assert r.to_dict()["settings"]["sections"] == ["agreement", "lm_tokens", "lm_task"]
    # the tidy rows come from each section's reading, in registry order
    frame = r.to_frame()
    assert list(dict.fromkeys(frame["section"])) == ["lm_task"]
    assert set(r.to_dict()["definitions"]) >= {"lm_task.retained_accuracy"}
    assert r.to_dict()["definitions"]["lm_task.retained_accuracy"]["label"].endswith("(task)")


# ------------------------------------------------------------------------------------------------ distillation
def test_distillation_is_deterministic_and_token_kd_follows_the_teacher(models, tok):
    teacher, student, control = models

    def kd(seed):
        return distill_lm_tokens(teacher, gpt_lm(len(tok), n_layer=1, n_embd=16, n_head=2, seed=1), tok, TEXTS,
                                 epochs=1, lr=1e-2, batch_size=8, seed=seed)

    a, b = kd(1), kd(1)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    rec = a.kdaudit_record_
    assert rec.method == "token_kd" and rec.teachers[0]["sha256"] == teacher.fingerprint()
    ids = [f"t{i}" for i in range(len(TEXTS))]
    t = teacher.score(TEXTS, ids, top_k=20)
    kl_student = token_section(t, student.score(TEXTS, ids, top_k=20), bootstrap=Bootstrap(n_replicates=0))
    kl_control = token_section(t, control.score(TEXTS, ids, top_k=20), bootstrap=Bootstrap(n_replicates=0))
    assert kl_student["kl_forward"].value < kl_control["kl_forward"].value
    assert kl_student["top1_agreement"].value > kl_control["top1_agreement"].value


def test_sequence_kd_trains_on_the_teachers_text_and_checks_tokenizers(models, tok):
    teacher, _, _ = models
    s = distill_lm_sequences(teacher, gpt_lm(len(tok), n_layer=1, n_embd=16, n_head=2, seed=3), tok,
                             [t[:20] for t in TEXTS[:10]], max_new_tokens=8, epochs=1, seed=3)
    assert s.kdaudit_record_.method == "sequence_kd" and s.kdaudit_record_.queries == 10
    tok2 = corpus_mod.train_tokenizer(TEXTS[:10], vocab_size=280)
    with pytest.raises(KDAuditError, match="tokenizer"):
        distill_lm_tokens(teacher, gpt_lm(len(tok2), n_layer=1, n_embd=16, n_head=2, seed=4), tok2, TEXTS[:5])
    with pytest.raises(KDAuditError, match="teacher"):
        distill_lm_tokens(object(), gpt_lm(len(tok), seed=4), tok, TEXTS[:5])
    with pytest.raises(KDAuditError, match="epochs"):
        train_lm(gpt_lm(len(tok), seed=4), tok, TEXTS[:5], epochs=0)


def test_sequence_kd_puts_no_loss_on_the_prompt_tokens(models, tok, monkeypatch):
    """A sequence-level student learns the teacher's answers: the gradient of its loss is zero at every logit that
    predicts a prompt token, nonzero at those predicting an answer token."""
    import importlib

    lm_mod = importlib.import_module("kdaudit.distill._lm")

    teacher, _, _ = models
    prompts = [" ".join(t.split()[:4]) for t in TEXTS[:8]]  # ending at a word's end: a clean token boundary
    seen = {}
    real_fit = lm_mod._fit

    def spy(model, seqs, step_loss, **kw):
        seen.update(model=model, seqs=seqs, step_loss=step_loss)
        return real_fit(model, seqs, step_loss, **kw)

    monkeypatch.setattr(lm_mod, "_fit", spy)
    s = distill_lm_sequences(teacher, gpt_lm(len(tok), n_layer=1, n_embd=16, n_head=2, seed=3), tok, prompts,
                             max_new_tokens=6, epochs=1, seed=3)
    rows = np.arange(len(prompts))
    seqs = [seen["seqs"][r] for r in rows]
    width = max(map(len, seqs))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for j, q in enumerate(seqs):
        ids[j, :len(q)], mask[j, :len(q)] = torch.tensor(q), 1
    logits = seen["model"](input_ids=ids, attention_mask=mask).logits.detach().requires_grad_(True)
    seen["step_loss"](logits, ids, mask, rows).backward()
    grad = logits.grad.abs().sum(dim=-1)  # (rows, width): position j predicts token j + 1
    n_prompt = [len(tok(p)["input_ids"]) for p in prompts]
    gen = teacher.generate(prompts, [f"p{i}" for i in range(len(prompts))], max_new_tokens=6, do_sample=False, seed=3)
    clean = [j for j, (q, n) in enumerate(zip(seqs, n_prompt)) if q[:n] == tok(prompts[j])["input_ids"]]
    assert len(clean) >= 4  # most answers do not merge with the prompt's last token
    for j in clean:
        q, n = seqs[j], n_prompt[j]
        assert torch.all(grad[j, :n - 1] == 0), j  # predicting prompt tokens 1 .. n-1: no loss
        if gen.texts[j]:
            assert torch.all(grad[j, n - 1:len(q) - 1] > 0), j  # predicting every answer token
    rec = s.kdaudit_record_
    assert rec.extra["answer_tokens"] >= sum(len(seqs[j]) - n_prompt[j] for j in clean)
    assert rec.extra["answer_tokens"] > 0


# ------------------------------------------------------------------------------------------------------- demo
def test_lm_demo_quick_is_byte_reproducible_and_cli_writes_outside_the_repo(tmp_path, monkeypatch):
    from kdaudit._demo_lm import run_lm_demo
    from kdaudit.cli import main

    r1, p1 = run_lm_demo(tmp_path / "a", quick=True, progress=False)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--task", "lm", "--quick", "--quiet"]) == 0
    out = tmp_path / "kdaudit-demo-lm"
    assert (out / "results.json").read_bytes() == p1["results"].read_bytes()
    assert {p.name for p in out.iterdir()} >= {"results.json", "run.json", "report.html"}
    assert r1.to_dict()["config"]["demo"]["task"] == "lm"


def test_sampled_generations_are_seeded_and_recorded(models):
    teacher, student, _ = models

    def run(**opts):
        return kdaudit.audit(teacher, student, _prompt_set(12), sections=["lm_generation"], seed=3, n_replicates=20,
                             progress=False, section_options={"lm_generation": {"max_new_tokens": 6, **opts}})

    greedy = run()
    a, b = run(do_sample=True, temperature=1.5), run(do_sample="true", temperature="1.5")  # the CLI's strings
    assert a.to_json() == b.to_json()  # one seeded stream per prompt: the same bytes again
    res = a.to_dict()
    assert res["settings"]["section_options"] == {"lm_generation": {"do_sample": True, "temperature": 1.5}}
    assert res["settings"]["max_new_tokens"] == 6 and "section_options" not in greedy.to_dict()["settings"]
    gen = res["comparisons"][0]["lm_generation"]
    assert gen["settings"]["student"] == {"do_sample": True, "max_new_tokens": 6, "seed": 3, "temperature": 1.5}
    assert a.outputs["student"].generations.texts != greedy.outputs["student"].generations.texts
    from kdaudit.report import render_html

    assert "Continuations sampled at temperature 1.5 of at most 6 tokens" in render_html(res)
    assert "Greedy continuations of at most 6 tokens" in render_html(greedy.to_dict())
    with pytest.raises(KDAuditError, match="temperature"):
        run(do_sample=True, temperature=0)


class _Recording(hf.HFCausalLM):
    """An HFCausalLM that records the dtype of its weights at every scoring call."""

    def score(self, texts, ids, *, top_k):
        self.seen = getattr(self, "seen", []) + [next(self.model.parameters()).dtype]
        return super().score(texts, ids, top_k=top_k)


def test_lm_audit_applies_one_precision_to_every_local_model_without_side_effects(models):
    """audit(precision="bf16") runs the teacher and every student in bf16 (each on a copy), records it in
    settings, names the models it cannot apply to, and leaves the caller's adapters and weights as they were."""
    teacher, student, control = models
    t, s = _Recording(teacher.model, teacher.tokenizer, name="teacher"), _Recording(student.model, student.tokenizer,
                                                                                    name="student")
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    api = _TextOnly(control, "api control")
    r = _audit(t, {"student": s, "api control": api}, _prompt_set(8), precision="bf16",
               sections=["lm_tokens", "cost"])
    settings = r.to_dict()["settings"]
    assert settings["device_precision"] == {"device": "cpu", "precision": "bf16",
                                            "not_applied": [{"name": "api control", "kind": "endpoint"}]}
    # the audit ran copies in bf16: the caller's adapters never scored, their weights stay fp32 and unchanged
    assert not hasattr(t, "seen") and not hasattr(s, "seen")
    assert t.precision == "fp32" and all(p.dtype == torch.float32 for p in t.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    # the cost section sees the models as run: bf16 weights are half the bytes of fp32 ones
    comp = r.to_dict()["comparisons"][0]
    assert comp["cost"]["teacher"]["size_bytes"] * 2 == teacher.size_bytes()
    fp32 = _audit(teacher, student, _prompt_set(8), sections=["lm_tokens"])
    assert "device_precision" not in fp32.to_dict()["settings"]  # the defaults leave results.json as it was
    # bf16 scoring differs from fp32 scoring (the policy was applied, not ignored)
    assert (r.to_dict()["comparisons"][0]["lm_tokens"]["headline"]
            != fp32.to_dict()["comparisons"][0]["lm_tokens"]["headline"])


def test_lm_audit_bad_device_or_precision_is_named(models):
    teacher, student, _ = models
    with pytest.raises(KDAuditError, match="precision"):
        _audit(teacher, student, _prompt_set(4), precision="int3")
    with pytest.raises(KDAuditError, match="device"):
        _audit(teacher, student, _prompt_set(4), device="tpu")
