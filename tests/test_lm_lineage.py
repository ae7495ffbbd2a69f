"""The language-model lineage test: both nulls, both access modes, the budget and journal, the CLI, determinism.

Tiny GPT-2-style models (1 layer, d = 16) trained for one epoch on a slice of the bundled corpus: seconds in all.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from kdaudit import lineage_test  # noqa: E402
from kdaudit._exceptions import KDAuditError, QueryBudgetExceededError  # noqa: E402
from kdaudit.lineage import LMLineageResult, lm_attribute, lm_lineage_test  # noqa: E402

ARCH = {"n_layer": 1, "n_embd": 32, "n_head": 2}


def _paragraphs(docs):
    out = []
    for d in docs:
        for p in re.split(r"\n\s*\n", d):
            p = re.sub(r"\s+", " ", p).strip()
            if len(p) >= 60:
                out.append(p)
    return out


@pytest.fixture(scope="module")
def zoo():
    """A base checkpoint trained once; the teacher, 19 references (its siblings: other seeds) and an unrelated model
    are one pass of fine-tuning from it; the student is distilled from the teacher's top-10 log-probabilities."""
    import copy

    from kdaudit.data import PromptSet, load_stdlib_corpus, train_tokenizer
    from kdaudit.distill import distill_lm_tokens, gpt_lm, train_lm
    from kdaudit.models import HFCausalLM

    torch.set_num_threads(1)
    train, held = load_stdlib_corpus().split(heldout_fraction=0.2)
    texts = _paragraphs(train.texts)
    A, B = texts[0:600:5], texts[1:600:5]
    tok = train_tokenizer(texts, vocab_size=300)
    base = train_lm(gpt_lm(len(tok), n_positions=96, eos_token_id=tok.eos_token_id, seed=0, **ARCH), tok,
                    texts[:1200], epochs=2, lr=1e-2, max_length=32, seed=0, batch_size=16)

    def wrap(model, name):
        return HFCausalLM(model, tok, name=name, batch_size=64, max_length=90, truncation=True)

    def tuned(data, seed, name):
        return wrap(train_lm(copy.deepcopy(base), tok, data, epochs=1, lr=1e-2, max_length=32, seed=seed,
                             batch_size=8), name)

    teacher = tuned(A, 1, "teacher")
    refs = [tuned(A, 100 + i, f"ref{i}") for i in range(19)]
    student = wrap(distill_lm_tokens(teacher, copy.deepcopy(base), tok, B, temperature=2.0, top_k=10, epochs=2,
                                     lr=1e-2, max_length=32, seed=7, batch_size=8), "student")
    unrelated = tuned(B, 300, "unrelated")
    # scorers of the controls null with sampled text: models outside every test (the base and a tune on part B)
    scorers = [wrap(copy.deepcopy(base), "scorer_base"), tuned(B, 301, "scorer_b")]
    # controls of the student's kind (tuned on part B, other seeds): under the controls null the controls must
    # stand for what the suspect would be if it were not derived (the siblings above are closer to the teacher)
    controls_b = [tuned(B, 400 + i, f"ctl_b{i}") for i in range(19)]
    held_all = [t for t in _paragraphs(held.texts) if len(t) >= 80]
    held_p = held_all[:60]
    prompts = PromptSet(prompts=[t[:40] for t in held_p], references=[t[40:70] for t in held_p],
                        ids=[f"h{i}" for i in range(len(held_p))], name="held")
    # text access needs more evidence than per-token log-probabilities: 150 prompts
    prompts_text = PromptSet(prompts=[t[:40] for t in held_all[:150]], ids=[f"h{i}" for i in range(150)],
                             name="held-150")
    # the siblings are not derived from the teacher: they double as the unrelated baselines of the controls null
    return {"teacher": teacher, "refs": refs, "controls": refs, "student": student, "unrelated": unrelated,
            "prompts": prompts, "prompts_text": prompts_text, "tok": tok, "scorers": scorers,
            "controls_b": controls_b}


def _opts(**kw):
    base = {"n_prompts": 30, "max_new_tokens": 8, "top_k": 10}
    base.update(kw)
    return base


def _power(access):
    """Text access needs more evidence than per-token log-probabilities: every prompt, longer continuations."""
    return _opts() if access == "top_k" else _opts(n_prompts=60, max_new_tokens=16)



@pytest.mark.parametrize("access", ["top_k"])  # text: test_sampled_text_tells_the_student_from_an_unrelated_model
def test_references_null_finds_the_student(zoo, access):
    r = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], access=access,
                        **_power(access))
    assert isinstance(r, LMLineageResult)
    assert r.null == "references" and r.access.startswith(access)
    assert r.members[0] == "teacher" and len(r.members) == 20
    assert r.verdict == "derived", r.reason
    assert r.p_value == pytest.approx(1 / 20)
    assert r.effect > 0


def test_references_null_is_calibrated_by_the_controls_most_like_the_suspect(zoo):
    """With 19+ controls each member is put on its null scale by the nearer half of them (top-k), chosen by the
    suspect's statistics with the whole pool: recorded, explained, and the same whatever order the controls come in.
    (The siblings double as controls here, as in the controls-null tests: this checks the plumbing; the statistics
    are checked in test_nearest_controls_remove_a_members_affinity_to_the_suspects_kind_and_keep_the_rank_exact.)"""
    from kdaudit.lineage._lm_cli import lm_result_text

    controls = [zoo["unrelated"], *zoo["refs"]]
    kw = dict(references=zoo["refs"], access="top_k", **_opts())
    r = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], controls=controls, **kw)
    chosen = r.settings["calibration_controls"]
    assert r.settings["calibrated_by_controls"] and len(chosen) == 10
    assert set(chosen) <= {c.name for c in controls}
    assert any("most like the suspect" in a for a in r.assumptions)
    assert "calibrated by the 10 controls most like the suspect: " in lm_result_text(r)
    again = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], controls=controls[::-1], **kw)
    assert sorted(again.settings["calibration_controls"]) == sorted(chosen)
    assert again.p_value == r.p_value and again.statistic == pytest.approx(r.statistic)
    plain = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], **kw)
    assert not plain.settings["calibrated_by_controls"] and plain.settings["calibration_controls"] == []


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_text_tells_the_student_from_an_unrelated_model(zoo, seed):
    """Text access under the references null samples the suspect's continuations (temperature 1, seeded): the
    distilled student is found, the model fine-tuned from the same base on other text is not, on the same prompts.
    (On this tiny zoo greedy continuations single the teacher out for the unrelated model too: exact over the draw of
    the teacher, but not for this one; sampled text is not fooled.)"""
    kw = dict(references=zoo["refs"], access="text", n_prompts=150, max_new_tokens=16, seed=seed)
    r = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts_text"], **kw)
    assert r.settings["decoding"] == "sample" and r.verdict == "derived", r.reason
    assert list(r.signatures) == ["loglik_of_anchor_samples", "forced_top1_agreement", "word_agreement",
                                  "idiosyncratic_ngrams"]
    assert any("temperature 1" in a for a in r.assumptions) and "sampled at temperature 1" in r.methodology
    u = lm_lineage_test(zoo["teacher"], zoo["unrelated"], zoo["prompts_text"], **kw)
    assert u.verdict == "not derived" and u.p_value > 0.1, u.reason


def test_decoding_is_checked_and_recorded(zoo):
    g = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], access="text",
                        decoding="greedy", **_opts())
    assert g.settings["decoding"] == "greedy" and "loglik_of_anchor_text" in g.signatures
    c = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], controls=zoo["controls"], access="text",
                        **_opts())
    assert c.settings["decoding"] == "greedy"  # the controls null's default
    t = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], access="top_k",
                        **_opts())
    assert t.settings["decoding"] is None
    with pytest.raises(KDAuditError, match="decoding"):
        lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], access="text",
                        decoding="beam", **_opts())
    with pytest.raises(KDAuditError, match="decoding"):
        lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], access="top_k",
                        decoding="sample", **_opts())


@pytest.mark.parametrize("access", ["top_k", "text"])
def test_controls_null_finds_the_student(zoo, access):
    # text: greedy continuations of 150 prompts (the controls null reads closeness three ways, see _CONTROLS_FAMILIES)
    prompts, opts = ((zoo["prompts"], _power(access)) if access == "top_k" else
                     (zoo["prompts_text"], _opts(n_prompts=150, max_new_tokens=16)))
    r = lm_lineage_test(zoo["teacher"], zoo["student"], prompts, controls=zoo["controls"], access=access, **opts)
    assert r.null == "controls" and r.members[0] == "student" and len(r.members) == 20
    assert r.verdict == "derived", r.reason
    assert "controls" in r.null_hypothesis and "baseline" in r.explanation
    families = {n.partition(":")[2] for n in r.signatures}
    assert families == {"", "beyond_nearest", "beyond_peers"} and "nearest" in r.methodology
    assert all(v["description"] for v in r.signatures.values())


@pytest.mark.parametrize("null", ["references", "controls"])
def test_rank_is_exact_under_exchangeability(zoo, null):
    """Rotating which exchangeable model plays the special role spreads the p-values over exactly 1/M..M/M:
    the procedure (prompt selection included) treats every member alike, so under H0 the rank is uniform."""
    if null == "references":
        pool = [zoo["teacher"], *zoo["refs"][:9]]
        rs = [lm_lineage_test(pool[i], zoo["unrelated"], zoo["prompts"], access="text",
                              references=[m for j, m in enumerate(pool) if j != i], **_opts())
              for i in range(len(pool))]
    else:
        pool = [zoo["unrelated"], *zoo["controls"][:9]]
        rs = [lm_lineage_test(zoo["teacher"], pool[i], zoo["prompts"], access="text",
                              controls=[m for j, m in enumerate(pool) if j != i], **_opts())
              for i in range(len(pool))]
    # every rotation computes the same statistics, only reordered: the seat does not change a member's value
    first = sorted(rs[0].member_statistics)
    assert all(sorted(r.member_statistics) == pytest.approx(first) for r in rs)
    # each p-value is the member's rank with ties counted against it; distinct values give exactly 1/M..M/M. Two
    # tiny models can write the same greedy text for every prompt (seen on one machine's floating point), and a
    # tie gives both the larger p: conservative, never below the exact level
    ps = [r.p_value for r in rs]
    assert ps == [sum(x >= r.member_statistics[0] for x in r.member_statistics) / 10 for r in rs]
    if len(set(first)) == len(first):
        assert sorted(ps) == pytest.approx([k / 10 for k in range(1, 11)])
    assert sum(p <= 0.1 for p in ps) <= 1


def test_controls_null_with_scorers_finds_the_student(zoo):
    """Sampled text under the controls null, scored by fixed models outside the test: the teacher's likelihood of
    each candidate's samples over the scorers', read beyond its nearest other candidate's. The student is found;
    the result names the scorers, and says what they are in the assumptions and the methodology."""
    from kdaudit.lineage._lm_cli import lm_result_text

    kw = dict(controls=zoo["controls_b"], scorers=zoo["scorers"], access="text", n_prompts=60, max_new_tokens=16)
    r = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts_text"], **kw)
    assert r.null == "controls" and r.settings["decoding"] == "sample"  # the default with scorers
    assert list(r.signatures) == ["loglik_ratio_to_scorers:beyond_nearest_peer"]
    assert r.verdict == "derived" and r.p_value == pytest.approx(0.05), r.reason
    assert [m["name"] for m in r.models["scorers"]] == ["scorer_base", "scorer_b"]
    assert any("scorers are fixed models outside the test" in a for a in r.assumptions)
    assert "2 scorers" in r.methodology and "than 2 other models (the scorers" in r.explanation
    assert "samples scored by 2 scorers: 'scorer_base', 'scorer_b'" in lm_result_text(r)


def test_controls_null_with_scorers_is_exact(zoo):
    """The scorers are fixed and no candidate scores another, so rotating which candidate is the suspect spreads the
    p-values over exactly 1/M..M/M."""
    pool = [zoo["unrelated"], *zoo["controls_b"][:9]]
    memo: dict = {}
    ps = [lm_lineage_test(zoo["teacher"], pool[i], zoo["prompts"], access="text", scorers=zoo["scorers"],
                          controls=[m for j, m in enumerate(pool) if j != i], memo=memo, **_opts()).p_value
          for i in range(len(pool))]
    assert sorted(ps) == pytest.approx([k / 10 for k in range(1, 11)])


def test_scorers_are_checked(zoo):
    kw = dict(access="text", **_opts())
    with pytest.raises(KDAuditError, match="scorers"):  # the references null has its own yardstick
        lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"],
                        scorers=zoo["scorers"], **kw)
    with pytest.raises(KDAuditError, match="scorers"):  # greedy text was not validated with scorers
        lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], controls=zoo["controls"],
                        scorers=zoo["scorers"], decoding="greedy", **kw)
    with pytest.raises(KDAuditError, match="at least 2"):
        lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], controls=zoo["controls"],
                        scorers=zoo["scorers"][:1], **kw)
    with pytest.raises(KDAuditError, match="outside the test"):  # a control would score its own samples
        lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], controls=zoo["controls"],
                        scorers=[zoo["scorers"][0], zoo["controls"][0]], **kw)


def test_inconclusive_with_few_references_and_unrelated_not_derived(zoo):
    r = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"][:5], access="text",
                        **_opts())
    assert r.verdict == "inconclusive" and "at least 19" in r.reason
    r = lm_lineage_test(zoo["teacher"], zoo["unrelated"], zoo["prompts"], references=zoo["refs"], access="top_k",
                        **_opts())
    assert r.verdict in ("not derived", "derived") and r.p_value >= 1 / 20


def test_record_and_determinism(zoo):
    from kdaudit._io import canonical_json

    kw = dict(references=zoo["refs"], access="top_k", **_opts())
    shared: dict = {}
    a = canonical_json(lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], memo=shared, **kw).to_dict())
    assert shared  # a caller's memo holds the owner side's outputs for the next suspect
    # each call computes the owner models' outputs afresh (no module-level memo): the rerun recomputes everything
    b = canonical_json(lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], **kw).to_dict())
    assert a == b
    d = json.loads(a)
    assert d["null"] == "references" and d["null_hypothesis"] and d["null_explained"] and d["assumptions"]
    assert d["prompts"]["candidates_sha256"] == zoo["prompts"].sha256()
    assert len(d["prompts"]["selected_text_sha256"]) == d["n_prompts"] == 30
    assert d["models"]["teacher"]["sha256"] == zoo["teacher"].fingerprint()
    assert len(d["models"]["references"]) == 19 and all(m["sha256"] for m in d["models"]["references"])
    assert d["queries"]["prompts_sent"] == 30 and d["queries"]["tokens_sent_bound"] > 0
    assert {"top1_agreement", "teacher_logprob_corr"} <= set(d["raw_similarity"])


def test_budget_and_journal_resume(zoo, tmp_path):
    with pytest.raises(QueryBudgetExceededError):
        lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], access="text",
                        token_budget=50, **_opts())
    r = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], access="text",
                        query_budget=12, **_opts())
    assert r.n_prompts == 12 and r.queries["prompts_sent"] == 12
    path = tmp_path / "suspect.jsonl"
    first = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], access="text",
                            journal=path, **_opts())
    assert first.queries["prompts_sent"] == 30
    again = lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], access="text",
                            journal=path, **_opts())
    assert again.queries["prompts_sent"] == 0 and again.queries["prompts_from_journal"] == 30
    assert again.p_value == first.p_value and again.statistic == first.statistic


def test_dispatch_and_bad_input(zoo):
    r = lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], suspect_access="text",
                     n_probes=30, lm_options={"max_new_tokens": 8})
    assert isinstance(r, LMLineageResult) and r.access == "text"
    with pytest.raises(KDAuditError, match="null"):
        lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], null="siblings")
    with pytest.raises(KDAuditError, match="controls"):
        lm_lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], null="controls")
    with pytest.raises(KDAuditError, match="suspect_access"):
        lineage_test(zoo["teacher"], zoo["student"], zoo["prompts"], references=zoo["refs"], suspect_access="top_k:x")


def test_attribution_holm(zoo):
    a = lm_attribute(zoo["student"], {"teacher": zoo["teacher"], "unrelated": zoo["unrelated"]}, zoo["prompts"],
                     controls=zoo["controls"], access="text", **_opts())
    assert set(a.adjusted_p_values) == {"teacher", "unrelated"}
    assert a.adjusted_p_values["teacher"] >= a.results["teacher"].p_value
    d = a.to_dict()
    assert d["correction"].startswith("Holm")


def test_cli_local_directories(zoo, tmp_path):
    def save(m, name):
        path = tmp_path / name
        m.model.save_pretrained(str(path), safe_serialization=True)
        zoo["tok"].save_pretrained(str(path))
        return str(path)

    teacher, suspect = save(zoo["teacher"], "teacher"), save(zoo["student"], "student")
    ctrls = [save(c, f"c{i:02d}") for i, c in enumerate(zoo["controls"])]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": str(i), "prompt": p}) + "\n"
                               for i, p in zip(zoo["prompts"].ids[:40], zoo["prompts"].prompts[:40])))
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "kdaudit.cli", "lineage", "--teacher", teacher, "--suspect", suspect,
           "--prompts", str(prompts), "--control", str(tmp_path / "c*"), "--suspect-access", "text",
           "--n-probes", "25", "--max-new-tokens", "8", "--decoding", "sample", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "verdict" in proc.stdout and "controls" in proc.stdout
    d = json.loads(out.read_text())
    assert d["null"] == "controls" and d["n_prompts"] == 25 and d["settings"]["decoding"] == "sample"
    bad = subprocess.run(cmd[:-2] + ["--suspect", str(tmp_path / "missing")], capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(ctrls) == 19 and np.isfinite(d["p_value"])
    # --candidate: the teacher and a second candidate teacher, each tested against the controls, Holm over both
    other = save(zoo["controls"][0], "other_teacher")
    att = subprocess.run(cmd + ["--candidate", other], capture_output=True, text=True, timeout=600)
    assert att.returncode == 0, att.stderr
    assert "attribution: parent =" in att.stdout and "other_teacher" in att.stdout
    assert set(json.loads(out.read_text())["candidates"]) == {"teacher", "other_teacher"}
    # --scorer (repeatable): the controls null's sampled-text statistic
    scorers = [save(m, f"scorer{i}") for i, m in enumerate(zoo["scorers"])]
    sc = subprocess.run(cmd + ["--scorer", scorers[0], "--scorer", scorers[1]], capture_output=True, text=True,
                        timeout=600)
    assert sc.returncode == 0, sc.stderr
    assert "samples scored by 2 scorers" in sc.stdout
    d = json.loads(out.read_text())
    assert len(d["models"]["scorers"]) == 2 and list(d["signatures"]) == ["loglik_ratio_to_scorers:beyond_nearest_peer"]
    one = subprocess.run(cmd + ["--scorer", scorers[0]], capture_output=True, text=True, timeout=600)
    assert one.returncode == 2 and "scorers" in one.stderr and "Traceback" not in one.stderr
    url = subprocess.run(cmd + ["--scorer", "http://127.0.0.1:9/v1", "--scorer", scorers[0]], capture_output=True,
                         text=True, timeout=600)
    assert url.returncode == 2 and "--scorer" in url.stderr and "Traceback" not in url.stderr


def test_suspect_behind_an_openai_endpoint(tmp_path):
    """The real client path: a local OpenAI-compatible server serves a copy of the teacher (random-init tiny GPT-2,
    seed 0); 19 siblings of other seeds are the references. Text only, and top-k with the teacher's tokenizer."""
    pytest.importorskip("httpx")
    from _lm_fixtures import gpt2
    from test_lm_endpoint import KEY_ENV, Server

    from kdaudit.models import HFCausalLM, OpenAIEndpointModel

    model, tok = gpt2(0)
    teacher = HFCausalLM(model, tok, name="teacher")
    refs = [HFCausalLM(gpt2(s)[0], tok, name=f"sib{s}") for s in range(1, 20)]
    prompts = ["Return the sum of a and b.", "Split the string at the first", "Create a new dictionary with",
               "Open a file and return a", "Convert a number to a", "Read the whole file and",
               "Join the path components", "Parse the date string"]
    server = Server(tmp_path)
    api_text = None
    try:
        for access, tokenizer in (("text", None), ("top_k", tok)):
            api = OpenAIEndpointModel(server.url, "tiny-gpt2", name="api", tokenizer=tokenizer, api_key_env=KEY_ENV,
                                      cache_dir=tmp_path / f"cache-{access}", backoff_s=0.01,
                                      access="text" if access == "text" else "logprobs")
            api_text = api if access == "text" else api_text
            # greedy: a copy of the teacher writes the teacher's top-1 token at every position, which 8 prompts
            # show; 48 sampled tokens of an untrained (near-uniform) model cannot, so sampling is only run through
            decoding = "greedy" if access == "text" else None
            r = lm_lineage_test(teacher, api, prompts, references=refs, access=access, n_prompts=8,
                                max_new_tokens=6, top_k=5, decoding=decoding)
            assert r.verdict == "derived" and r.p_value == pytest.approx(0.05), (access, r.reason)
            assert r.queries["prompts_sent"] == 8
        s = lm_lineage_test(teacher, api_text, prompts, references=refs, access="text", n_prompts=8,
                            max_new_tokens=6, decoding="sample")
        assert s.settings["decoding"] == "sample" and s.queries["prompts_sent"] == 8  # sampled: new requests
        assert 0.05 <= s.p_value <= 1 and s.verdict in ("derived", "not derived")
    finally:
        server.stop()


def test_forced_agreement_counts_only_where_the_pool_differs():
    """Pooled: positions where every scorer's top-1 is the same carry no evidence; elsewhere each scorer scores the
    share of positions at which its top-1 is the written token. Weighted: by the scorer's uncertainty."""
    from kdaudit.lineage._lm_signatures import forced_agreement_pooled, forced_agreement_weighted

    top1 = np.array([[1, 2, 3, 4],
                     [1, 2, 5, 6],
                     [1, 7, 5, 4]])
    written = np.array([1, 2, 3, 6])
    # position 0 is unanimous (left out); positions 1-3 differ
    assert forced_agreement_pooled(top1, written) == pytest.approx([2 / 3, 2 / 3, 0.0])
    assert forced_agreement_pooled(np.array([[1, 2], [1, 2]]), np.array([1, 3])).tolist() == [0.0, 0.0]
    sure, unsure = np.log(0.99), np.log(0.5)
    out = forced_agreement_weighted([(np.array([1, 2]), np.array([sure, unsure]), np.array([1, 9])),
                                     (np.array([1, 2]), np.array([sure, unsure]), np.array([9, 2]))])
    # member 0 matches only where the scorer was sure (weight 0.01), member 1 only where it was unsure (0.5)
    assert out == pytest.approx([0.01 / 0.51, 0.5 / 0.51])


def _kinds_pool(seed=0):
    """Candidates of two kinds (6 each) and a suspect: kind "near" comes close to the teacher (the teacher's own
    recipe), kind "far" does not (another architecture); the suspect is of kind "far" but was distilled from the
    teacher, so it comes closer to the teacher than its kind does, yet less close than kind "near"."""
    rng = np.random.default_rng(seed)
    kind = np.array([1] + [0] * 6 + [1] * 6)  # suspect first (kind "far" = 1)
    to_teacher = np.where(kind == 0, 0.75, 0.45) + rng.normal(0, 0.01, kind.size)
    to_teacher[0] = 0.58
    M = kind.size
    pairs = np.where(kind[:, None] == kind[None, :], 0.8, 0.3) + rng.normal(0, 0.01, (M, M))
    return to_teacher[:, None], pairs[:, :, None]


def test_peer_relative_finds_a_student_of_a_far_kind_and_keeps_the_rank_exact():
    from kdaudit.lineage._stats import pair_similarity, peer_relative, rank_p_value

    stats, pairs = _kinds_pool()
    assert rank_p_value(stats[0, 0], stats[1:, 0]) > 0.5  # as it is: every model of the near kind ranks higher
    rel = peer_relative(stats, pair_similarity(pairs), 2)
    assert rank_p_value(rel[0, 0], rel[1:, 0]) == pytest.approx(1 / 13)  # against its own kind: first
    # permutation-equivariant (ties broken by a rank of the members' own, not by the listed order)
    perm = np.random.default_rng(1).permutation(stats.shape[0])
    tb = np.arange(stats.shape[0])
    back = peer_relative(stats[perm], pair_similarity(pairs[np.ix_(perm, perm)]), 2, tiebreak=tb[perm])
    assert back == pytest.approx(peer_relative(stats, pair_similarity(pairs), 2, tiebreak=tb)[perm])
    tied = np.ones((4, 4, 1))
    a = peer_relative(np.arange(4.0)[:, None], pair_similarity(tied), 1, tiebreak=np.array([3, 2, 1, 0]))
    b = peer_relative(np.arange(4.0)[::-1, None], pair_similarity(tied[::-1, ::-1]), 1, tiebreak=np.array([0, 1, 2, 3]))
    assert a[::-1] == pytest.approx(b)


def test_nearest_controls_remove_a_members_affinity_to_the_suspects_kind_and_keep_the_rank_exact():
    """A member drawn to a whole kind of unrelated models (the benchmark's teacher and the students of another
    teacher): calibrated by every control, it ranks first for that kind's suspects far beyond alpha; calibrated by the
    controls most like the suspect, near alpha. The map stays permutation-equivariant (so the rank stays exact)."""
    from kdaudit.lineage._stats import calibrate_by_controls, combined_statistic, nearest_controls, rank_p_value

    rng = np.random.default_rng(0)
    M, S = 20, 3
    # where each of 4 kinds of unrelated model sits, per member and signature; member 0 is drawn to kind 3
    kind_mean = rng.normal(0, 1.0, (4, 1, S)) + rng.normal(0, 0.3, (4, M, S))
    kind_mean[3, 0] += 3.0

    def draw(kind):
        return kind_mean[kind] + rng.normal(0, 1, (len(kind), M, S))

    controls = draw(np.array([0] * 3 + [1] * 3 + [2] * 4 + [3] * 10))
    suspects = draw(np.full(400, 3))  # underived, all of the kind member 0 is drawn to
    ones = np.ones(S)
    p_all, p_near, own = [], [], []
    for st in suspects:
        c = combined_statistic(calibrate_by_controls(st, controls), ones)
        p_all.append(rank_p_value(c[0], c[1:]))
        near = nearest_controls(st, controls, 10)
        own.append(np.mean(near >= 10))
        c = combined_statistic(calibrate_by_controls(st, controls[near]), ones)
        p_near.append(rank_p_value(c[0], c[1:]))
    assert np.mean(own) > 0.8  # mostly the suspect's own kind
    assert np.mean(np.array(p_all) <= 0.05) > 0.5  # the failure being fixed (0.61)
    assert np.mean(np.array(p_near) <= 0.05) < 0.1  # 0.06: near the exact level (20 of 400)
    # equivariant: the members listed in another order choose the same controls and get their own statistics back
    st = suspects[0]
    perm = rng.permutation(M)
    near = nearest_controls(st, controls, 10)
    assert np.array_equal(nearest_controls(st[perm], controls[:, perm], 10), near)
    a = calibrate_by_controls(st, controls[near])
    assert calibrate_by_controls(st[perm], controls[near][:, perm]) == pytest.approx(a[perm])
    with pytest.raises(ValueError, match="k = 21"):
        nearest_controls(st, controls, 21)
    with pytest.raises(ValueError, match="do not match"):
        nearest_controls(st[:, :2], controls, 5)


def test_beyond_nearest_is_positive_only_where_the_teacher_is_the_nearest_neighbour():
    from kdaudit.lineage._stats import beyond_nearest

    stats = np.array([[0.9], [0.5], [0.5]])
    pairs = np.array([[[0.0], [0.6], [0.4]],
                      [[0.7], [0.0], [0.6]],
                      [[0.3], [0.8], [0.0]]])  # [i, j]: member j with member i in the anchor's place
    out = beyond_nearest(stats, pairs)[:, 0]
    # member 0's nearest other: 0.7 (with member 1); member 1's: 0.8; member 2's: 0.6
    assert out == pytest.approx([0.9 - 0.7, 0.5 - 0.8, 0.5 - 0.6])
    nan = pairs.copy()
    nan[:, :, 0] = np.nan  # a signature the members cannot measure between themselves is left as it is
    assert beyond_nearest(stats, nan)[:, 0] == pytest.approx(stats[:, 0])
