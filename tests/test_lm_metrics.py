"""Language-model metrics against references: scipy (KL, JS), rouge-score (ROUGE-L), sacrebleu (chrF), torchmetrics
(calibration), direct computations (agreement, perplexity, groups, log-likelihoods) on synthetic TokenTopK."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from kdaudit import KDAuditError
from kdaudit.harness._sequence import Generations, TokenTopK
from kdaudit.metrics import Bootstrap
from kdaudit.metrics._sequence import (
    TokenAccumulator,
    check_token_pair,
    choice_loglik,
    continuation_loglik,
    generation_section,
    text_logprob,
    token_group_section,
    token_rows,
    token_section,
)
from kdaudit.metrics._text import chrf_score, lcs_length, rouge_l_score, text_pair_scores


def _log_softmax(z: np.ndarray) -> np.ndarray:
    return z - np.logaddexp.reduce(z, axis=1, keepdims=True)


def make_topk(name: str, logits: np.ndarray, targets: np.ndarray, lengths: list[int], k: int, *,
              tokenizer: str = "tok", ids: list | None = None) -> TokenTopK:
    lp = _log_softmax(logits.astype(np.float64))
    order = np.argsort(-lp, axis=1, kind="stable")[:, :k]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenTopK(name=name, text_ids=np.array(ids if ids is not None else [f"t{i}" for i in range(len(lengths))]),
                     offsets=offsets, top_ids=order.astype(np.int32),
                     top_logprobs=np.take_along_axis(lp, order, 1).astype(np.float32),
                     target_ids=targets.astype(np.int32),
                     target_logprob=lp[np.arange(len(targets)), targets].astype(np.float32),
                     tokenizer_sha256=tokenizer)


def _pair(rng: np.random.Generator, *, vocab: int = 12, lengths=(7, 3, 9, 5, 6), k: int | None = None,
          noise: float = 1.0):
    n = sum(lengths)
    zt = rng.normal(size=(n, vocab)) * 2
    zs = zt + rng.normal(size=(n, vocab)) * noise
    y = np.where(rng.random(n) < 0.5, zt.argmax(1), rng.integers(0, vocab, n))  # a teacher right about half the time
    k = vocab if k is None else k
    return make_topk("teacher", zt, y, list(lengths), k), make_topk("student", zs, y, list(lengths), k), zt, zs, y


def _full(t: TokenTopK, vocab: int) -> np.ndarray:
    p = np.zeros((t.n_positions, vocab))
    np.put_along_axis(p, t.top_ids.astype(np.int64), np.exp(t.top_logprobs.astype(np.float64)), 1)
    return p


# --------------------------------------------------------------------------------------------- divergences
def test_divergences_equal_scipy_when_k_covers_the_vocabulary():
    t, s, *_ = _pair(np.random.default_rng(0), vocab=12)
    r = token_rows(t, s)
    p, q = _full(t, 12), _full(s, 12)
    np.testing.assert_allclose(r["kl_forward"], stats.entropy(p.T, q.T), atol=1e-6)
    np.testing.assert_allclose(r["kl_reverse"], stats.entropy(q.T, p.T), atol=1e-6)
    np.testing.assert_allclose(r["js"], distance.jensenshannon(p, q, axis=1) ** 2, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_top_k_divergences_are_lower_bounds_of_the_full_ones(k):
    rng = np.random.default_rng(k)
    t, s, zt, zs, y = _pair(rng, vocab=30, lengths=(40, 25, 35), k=k, noise=2.0)
    r = token_rows(t, s)
    p, q = np.exp(_log_softmax(zt)), np.exp(_log_softmax(zs))
    full_kl, full_rkl = stats.entropy(p.T, q.T), stats.entropy(q.T, p.T)
    full_js = distance.jensenshannon(p, q, axis=1) ** 2
    assert np.all(r["kl_forward"] <= full_kl + 1e-5)
    assert np.all(r["kl_reverse"] <= full_rkl + 1e-5)
    assert np.all(r["js"] <= full_js + 1e-6)
    assert np.all(r["kl_forward"] >= -1e-7)
    # the bound is informative: it grows with k (more of the distribution revealed)
    if k > 1:
        t1, s1 = make_topk("t", zt, y, [40, 25, 35], 1), make_topk("s", zs, y, [40, 25, 35], 1)
        assert token_rows(t1, s1)["kl_forward"].mean() <= r["kl_forward"].mean() + 1e-9


def test_agreement_accuracy_and_perplexity_match_direct_computation():
    t, s, zt, zs, y = _pair(np.random.default_rng(1), vocab=20, k=5)
    res = token_section(t, s, bootstrap=Bootstrap(n_replicates=0))
    lt, ls = _log_softmax(zt), _log_softmax(zs)
    top_t, top_s = lt.argmax(1), ls.argmax(1)
    assert res["top1_agreement"].value == pytest.approx(np.mean(top_t == top_s))
    overlap = np.mean([len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5 for a, b in zip(lt, ls)])
    assert res["top_k_overlap"].value == pytest.approx(overlap)
    acc_t, acc_s = np.mean(top_t == y), np.mean(top_s == y)
    assert res["teacher_next_token_accuracy"].value == pytest.approx(acc_t)
    assert res["student_next_token_accuracy"].value == pytest.approx(acc_s)
    assert res["retained_next_token_accuracy"].value == pytest.approx(acc_s / acc_t)
    nll_t = -lt[np.arange(len(y)), y].mean()
    nll_s = -ls[np.arange(len(y)), y].mean()
    assert res["teacher_perplexity"].value == pytest.approx(np.exp(nll_t), rel=1e-5)
    assert res["perplexity_ratio"].value == pytest.approx(np.exp(nll_s - nll_t), rel=1e-5)
    mass = np.sort(np.exp(lt), axis=1)[:, -5:].sum(1).mean()
    assert res["teacher_topk_mass"].value == pytest.approx(mass, rel=1e-5)


def test_next_token_ece_matches_torchmetrics_binary_calibration_error():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.classification")
    t, s, zt, zs, y = _pair(np.random.default_rng(2), vocab=6, lengths=(60, 80, 70), k=3)
    res = token_section(t, s, bootstrap=Bootstrap(n_replicates=0))
    for who, z in (("teacher", zt), ("student", zs)):
        p = np.exp(_log_softmax(z))
        conf, correct = p.max(1), (p.argmax(1) == y)
        ref = tm.BinaryCalibrationError(n_bins=15, norm="l1")(torch.tensor(conf, dtype=torch.float32),
                                                               torch.tensor(correct.astype(np.int64)))
        assert res[f"{who}_ece"].value == pytest.approx(float(ref), abs=1e-5)


def test_text_is_the_resampling_unit_and_chunks_merge_exactly():
    t, s, *_ = _pair(np.random.default_rng(3), vocab=10, lengths=(4, 6, 5, 7, 3, 8), k=4)
    boot = Bootstrap(n_replicates=50, seed=1)
    whole = TokenAccumulator(bootstrap=boot).update(t, s)
    # two chunks of whole texts, merged
    def part(m: TokenTopK, a: int, b: int) -> TokenTopK:
        lo, hi = m.offsets[a], m.offsets[b]
        return TokenTopK(m.name, m.text_ids[a:b], m.offsets[a:b + 1] - lo, m.top_ids[lo:hi], m.top_logprobs[lo:hi],
                         m.target_ids[lo:hi], m.target_logprob[lo:hi], m.tokenizer_sha256)
    merged = TokenAccumulator(bootstrap=boot).update(part(t, 0, 2), part(s, 0, 2))
    merged.merge(TokenAccumulator(bootstrap=boot).update(part(t, 2, 6), part(s, 2, 6)))
    np.testing.assert_allclose(merged._rows.sums, whole._rows.sums)
    a, b = whole.compute(), merged.compute()
    for key in a.headline:
        assert a[key].value == pytest.approx(b[key].value, nan_ok=True)
        assert a[key].low == pytest.approx(b[key].low, nan_ok=True)
    # all positions of a text share one block: at most n_texts non-empty blocks
    assert (whole._rows.sums[:, 0, 0] > 0).sum() <= t.n_texts
    assert a.detail["n_texts"] == 6


def test_different_tokenizers_make_per_token_comparison_unavailable():
    t, s, zt, zs, y = _pair(np.random.default_rng(4), vocab=8, k=3)
    other = make_topk("student", zs, y, [7, 3, 9, 5, 6], 3, tokenizer="another")
    why = check_token_pair(t, other)
    assert why and "different tokenizers" in why
    res = token_section(t, other)
    assert not res.available and "text-level" in res.reason
    with pytest.raises(KDAuditError, match="aligned"):
        TokenAccumulator().update(t, other)


# --------------------------------------------------------------------------------------------- text metrics
_WORDS = ["def", "self", "return", "x", "(", ")", "None", "the", "a", "import", "Ä", "_x1", "  ", "\n", "ß", "12"]


def _random_texts(seed: int, n: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = " ".join(rng.choice(_WORDS, rng.integers(0, 12)))
        b = " ".join(rng.choice(_WORDS, rng.integers(0, 12)))
        out.append((a, a if i % 9 == 0 else b))
    out += [("", ""), ("", "abc"), ("abc", ""), ("a", "a"), ("ab ab", "ba")]
    return out


def test_rouge_l_matches_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for cand, ref in _random_texts(0, 300):
        assert rouge_l_score(cand, ref) == pytest.approx(scorer.score(ref, cand)["rougeL"].fmeasure, abs=1e-12)


def test_chrf_matches_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    for cand, ref in _random_texts(1, 300):
        assert chrf_score(cand, ref) == pytest.approx(sacrebleu.sentence_chrf(cand, [ref]).score / 100, abs=1e-12)


def test_lcs_and_pair_scores():
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    assert lcs_length([], [1]) == 0
    scores = text_pair_scores(["a b", "x"], ["a b", "y"])
    np.testing.assert_array_equal(scores["exact_match"], [1.0, 0.0])
    with pytest.raises(KDAuditError, match="candidates"):
        text_pair_scores(["a"], ["a", "b"])


def test_generation_section_means_and_loglik_gap():
    ids = np.arange(6)
    teacher = Generations("teacher", ids, ("a b c", "d e", "f", "g h", "i", "j k l"))
    student = Generations("student", ids, ("a b c", "d x", "f", "q", "i", "j k"))
    ll_s = (np.array([-3.0, -4, -1, -6, -2, -5]), np.array([3, 2, 1, 2, 1, 3]))
    ll_t = (np.array([-3.0, -2, -1, -2, -2, -3]), np.array([3, 2, 1, 2, 1, 3]))
    res = generation_section(teacher, student, bootstrap=Bootstrap(n_replicates=0), teacher_loglik_student=ll_s,
                             teacher_loglik_teacher=ll_t)
    assert res["exact_match"].value == pytest.approx(3 / 6)
    ref = text_pair_scores(student.texts, teacher.texts)
    assert res["rouge_l"].value == pytest.approx(ref["rouge_l"].mean())
    assert res["chrf"].value == pytest.approx(ref["chrf"].mean())
    assert res["teacher_loglik_of_student"].value == pytest.approx(ll_s[0].sum() / ll_s[1].sum())
    assert res["teacher_loglik_gap"].value == pytest.approx(ll_s[0].sum() / 12 - ll_t[0].sum() / 12)
    no_ll = generation_section(teacher, student, bootstrap=Bootstrap(n_replicates=0))
    assert "teacher_loglik_gap" not in no_ll.headline and no_ll.detail["unavailable"]


# --------------------------------------------------------------------------------------------- log-likelihoods
def test_continuation_and_choice_loglik():
    rng = np.random.default_rng(5)
    full = make_topk("m", rng.normal(size=(9, 5)), rng.integers(0, 5, 9), [5, 4], 2)
    prefix = TokenTopK("m", full.text_ids, np.array([0, 2, 4]), full.top_ids[[0, 1, 5, 6]],
                       full.top_logprobs[[0, 1, 5, 6]], full.target_ids[[0, 1, 5, 6]],
                       full.target_logprob[[0, 1, 5, 6]], "tok")
    ll, n = continuation_loglik(full, prefix)
    lp = full.target_logprob.astype(np.float64)
    np.testing.assert_allclose(ll, [lp[2:5].sum(), lp[7:9].sum()], rtol=1e-6)
    np.testing.assert_array_equal(n, [3, 2])
    sums, counts = text_logprob(full)
    np.testing.assert_allclose(sums, [lp[:5].sum(), lp[5:].sum()], rtol=1e-6)
    choices = [("ab", "abcd"), ("x", "yy", "zzz")]
    scores = [(np.array([-2.0, -1.0]), None), (np.array([-4.0, -3.0]), None), (np.array([0.0, -6.0]), None)]
    m = choice_loglik(scores, choices)
    assert m[0, 2] == -np.inf and m[1, 2] == -6.0
    norm = choice_loglik(scores, choices, length_normalize="chars")
    assert norm[0, 1] == pytest.approx(-4.0 / 4) and norm[1, 2] == pytest.approx(-6.0 / 3)
    with pytest.raises(KDAuditError, match="length_normalize"):
        choice_loglik(scores, choices, length_normalize="bytes")


def test_reference_perplexity_from_continuation_logliks():
    t, s, *_ = _pair(np.random.default_rng(8), vocab=9, k=4)
    ref_t = (np.array([-3.0, -1.0, -6.0, -2.0, -4.0]), np.array([2, 1, 3, 2, 2]))
    ref_s = (np.array([-4.0, -2.0, -6.5, -2.0, -5.0]), np.array([2, 1, 3, 2, 2]))
    res = token_section(t, s, bootstrap=Bootstrap(n_replicates=30), reference=(ref_t, ref_s))
    assert res["teacher_reference_perplexity"].value == pytest.approx(np.exp(16 / 10))
    assert res["student_reference_perplexity"].value == pytest.approx(np.exp(19.5 / 10))
    assert res["reference_perplexity_ratio"].value == pytest.approx(np.exp(3.5 / 10))
    assert "reference_perplexity_ratio" not in token_section(t, s, bootstrap=Bootstrap(n_replicates=0)).headline
    with pytest.raises(KDAuditError, match="reference"):
        TokenAccumulator().update(t, s, reference=((np.zeros(2), np.ones(2)), ref_s))


# --------------------------------------------------------------------------------------------- bias transfer
def _templated_groups() -> tuple[list[str], list[str], list]:
    from kdaudit.data import templated_prompts

    ps = templated_prompts(
        ["The {x} module is used to", "import {x}  # for", "Use {x} when you need to"],
        {"text": ["re", "string", "textwrap", "difflib", "shlex", "unicodedata", "codecs", "html", "gettext",
                  "locale"],
         "numeric": ["math", "statistics", "random", "decimal", "fractions", "cmath", "numbers", "array", "bisect",
                     "heapq"]}, group="area")
    return list(ps.prompts), ps.groups["area"].tolist(), list(ps.ids)


def test_token_group_disparity_and_amplification_on_templated_prompts():
    prompts, groups, ids = _templated_groups()
    rng = np.random.default_rng(6)
    lengths = [int(x) for x in rng.integers(5, 12, len(prompts))]
    n = sum(lengths)
    vocab = 10
    y = rng.integers(0, vocab, n)
    zt = rng.normal(size=(n, vocab))
    zt[np.arange(n), y] += 2.5  # a teacher right most of the time in both groups
    text_of = np.repeat(np.arange(len(prompts)), lengths)
    numeric = np.array(groups)[text_of] == "numeric"
    zs = zt.copy()
    # the student follows the teacher on "text" prompts but loses the right token on "numeric" ones
    hurt = numeric & (rng.random(n) < 0.6)
    zs[hurt, y[hurt]] -= 5.0
    t = make_topk("teacher", zt, y, lengths, 4, ids=ids)
    s = make_topk("student", zs, y, lengths, 4, ids=ids)
    res = token_group_section(t, s, pd.DataFrame({"area": groups}), bootstrap=Bootstrap(n_replicates=200, seed=0),
                              min_group_size=10)
    feat = res.detail["features"]["area"]
    by = {g["group"]: g for g in feat["groups"]}
    lt, ls = _log_softmax(zt), _log_softmax(zs)
    for g in ("text", "numeric"):
        mask = (np.array(groups)[text_of] == g)
        assert by[g]["teacher_accuracy"].value == pytest.approx(np.mean(lt.argmax(1)[mask] == y[mask]))
        assert by[g]["student_accuracy"].value == pytest.approx(np.mean(ls.argmax(1)[mask] == y[mask]))
        assert by[g]["agreement"].value == pytest.approx(np.mean(lt.argmax(1)[mask] == ls.argmax(1)[mask]))
        assert res.detail["by_group"]["group_agreement"][f"area={g}"] is by[g]["agreement"]
    amp = res["accuracy_amplification"]
    assert amp.value > 0.2 and amp.low > 0  # the interval excludes no change
    assert res["worst_group_agreement"].value == pytest.approx(by["numeric"]["agreement"].value)
    assert res.detail["headline_features"]["accuracy_amplification"] == "area"
    # a group below min_group_size is shown but left out of the disparity
    small = token_group_section(t, s, pd.DataFrame({"area": groups}), bootstrap=Bootstrap(n_replicates=0),
                                min_group_size=1000)
    assert not small.available and "accuracy_amplification" not in small.headline and small.reason
    assert small.detail["features"]["area"]["small_groups"] == ["numeric", "text"]


def test_token_group_section_checks_its_inputs():
    t, s, *_ = _pair(np.random.default_rng(7), vocab=6, k=2)
    with pytest.raises(KDAuditError, match="groups"):
        token_group_section(t, s, pd.DataFrame({"g": ["a", "b"]}))
    assert not token_group_section(t, s, pd.DataFrame(index=range(5))).available
