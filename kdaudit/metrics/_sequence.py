"""Language-model metrics: per-token agreement and calibration, perplexity, generations, multiple choice, groups.

The resampling unit is the **text** (a prompt, or a text scored under teacher forcing): every per-position number is
added to the bootstrap block of its text's id (:func:`~kdaudit.metrics._resampling.block_of`), so the block-Poisson
bootstrap of :mod:`kdaudit.metrics._resampling` resamples whole texts, and the positions of one text, which are not
independent, always move together. Per-token statistics are pooled over positions (a ratio of sums: a long text
weighs more than a short one, as in the usual perplexity); per-prompt statistics (generations, multiple choice)
weigh every prompt alike.

How the tail beyond the top k is bounded
    A model reveals, per position, only its k most likely tokens (k <= 20) and the exact log-probability of the
    actual next token. Divergences are computed on a **partition of the vocabulary whose cells both models' revealed
    probabilities determine exactly**: one cell per token in *both* models' top k, one cell for the actual next
    token when it is not among those, and one "other" cell holding all remaining mass (``1 -`` the sum of the known
    cells, for each model). Coarse-graining a distribution pair never increases an f-divergence (the data-processing
    inequality), so KL(teacher‖student), KL(student‖teacher) and Jensen-Shannon computed on this partition are
    **lower bounds** of the divergences between the full next-token distributions, exact when both top-k lists hold
    every token with non-zero probability (k = vocabulary size: a test compares them with ``scipy``). A token in one
    model's top k but not the other's falls into the "other" cell (its probability under the second model is not
    revealed: only bounded by that model's k-th probability). ``teacher_topk_mass`` and ``student_topk_mass`` (mass
    in each model's top k) say how much of the distribution the bound sees. Divergences are in nats; a zero student
    probability against a positive teacher probability is clipped to 1e-12, as in the classifier agreement family.

Next-token calibration
    The confidence of a position is the model's top-1 token probability; it is "correct" when that token is the
    actual next token. The expected calibration error of these pairs is computed by the classifier family's
    :class:`~kdaudit.metrics.CalibrationAccumulator` (each position is fed as a two-cell partial distribution: the
    confidence in cell 0 when right, in cell 1 when wrong, true label 0), so binning, L1/L2 norms and intervals are
    the ones the classifier audit uses.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from kdaudit._exceptions import invalid_argument
from kdaudit.harness._sequence import Generations, TokenTopK
from kdaudit.metrics._agreement import _divergence_rows
from kdaudit.metrics._bias import _difference
from kdaudit.metrics._calibration import CalibrationAccumulator
from kdaudit.metrics._common import SectionResult, definition, evaluate
from kdaudit.metrics._resampling import BlockStats, Bootstrap, block_of
from kdaudit.metrics._text import text_pair_scores

__all__ = [
    "GENERATION_DEFINITIONS",
    "TOKEN_DEFINITIONS",
    "TOKEN_GROUP_DEFINITIONS",
    "TokenAccumulator",
    "check_token_pair",
    "choice_loglik",
    "continuation_loglik",
    "generation_section",
    "text_logprob",
    "token_group_section",
    "token_rows",
    "token_section",
]

KL_EPS = 1e-12
_CHUNK_POSITIONS = 1 << 15  # positions per vectorised chunk: (chunk, k, k) match tables stay ~13 MB at k = 20

TOKEN_DEFINITIONS: dict[str, dict[str, Any]] = {
    "top1_agreement": definition(
        "Top-1 token agreement", "Σ_pos 1{argmax t = argmax s} / #positions", True,
        "Share of token positions where the student's most likely next token is the teacher's."),
    "top_k_overlap": definition(
        "Top-k token overlap", "Σ_pos |topk(t) ∩ topk(s)| / k / #positions", True,
        "Mean overlap of the two models' k most likely next tokens."),
    "kl_forward": definition(
        "KL(teacher‖student) per token, lower bound", "Σ_pos KL(t̃‖s̃) / #positions on the top-k partition", False,
        "Forward KL (the token-level distillation loss) on the partition both models reveal: a lower bound of the "
        "full-vocabulary KL (data-processing inequality), in nats per token."),
    "kl_reverse": definition(
        "KL(student‖teacher) per token, lower bound", "Σ_pos KL(s̃‖t̃) / #positions on the top-k partition", False,
        "Reverse KL (mode-seeking) on the revealed partition: a lower bound, in nats per token."),
    "js_divergence": definition(
        "Jensen-Shannon per token, lower bound", "Σ_pos JS(t̃, s̃) / #positions on the top-k partition", False,
        "Symmetric, bounded (≤ ln 2) divergence on the revealed partition: a lower bound, in nats per token."),
    "teacher_topk_mass": definition(
        "Teacher top-k mass", "Σ_pos Σ_{v in topk(t)} t_v / #positions", None,
        "How much of the teacher's next-token distribution its top k holds (how much the bounds can see)."),
    "student_topk_mass": definition(
        "Student top-k mass", "Σ_pos Σ_{v in topk(s)} s_v / #positions", None,
        "How much of the student's next-token distribution its top k holds."),
    "teacher_next_token_accuracy": definition(
        "Teacher next-token accuracy", "Σ_pos 1{argmax t = actual} / #positions", True,
        "Share of positions where the teacher's top-1 token is the actual next token of the text."),
    "student_next_token_accuracy": definition(
        "Student next-token accuracy", "Σ_pos 1{argmax s = actual} / #positions", True,
        "Share of positions where the student's top-1 token is the actual next token of the text."),
    "retained_next_token_accuracy": definition(
        "Retained next-token accuracy", "acc(student) / acc(teacher)", True,
        "Share of the teacher's next-token accuracy the student keeps."),
    "teacher_perplexity": definition(
        "Teacher perplexity", "exp(−Σ_pos log t(actual) / #positions)", False,
        "Teacher's perplexity on the scored texts (token-pooled)."),
    "student_perplexity": definition(
        "Student perplexity", "exp(−Σ_pos log s(actual) / #positions)", False,
        "Student's perplexity on the scored texts (token-pooled)."),
    "perplexity_ratio": definition(
        "Perplexity ratio (student / teacher)", "ppl(student) / ppl(teacher)", False,
        "How much more perplexed the student is than its teacher on the same texts (1 = as good)."),
    "teacher_reference_perplexity": definition(
        "Teacher perplexity on the references", "exp(−Σ log t(reference | prompt) / Σ #tokens(reference))", False,
        "Teacher's perplexity on the reference continuations given their prompts (token-pooled)."),
    "student_reference_perplexity": definition(
        "Student perplexity on the references", "exp(−Σ log s(reference | prompt) / Σ #tokens(reference))", False,
        "Student's perplexity on the reference continuations given their prompts (token-pooled)."),
    "reference_perplexity_ratio": definition(
        "Reference perplexity ratio (student / teacher)", "ppl_ref(student) / ppl_ref(teacher)", False,
        "Quality kept on the reference continuations: how much more perplexed the student is (1 = as good)."),
}
_NEXT_TOKEN_CALIBRATION = ("ece", "mce", "confidence_gap")
for _m, _label in (("ece", "next-token ECE"), ("mce", "next-token MCE"), ("confidence_gap", "next-token confidence gap")):
    _hib = None if _m == "confidence_gap" else False
    for _who in ("teacher", "student"):
        TOKEN_DEFINITIONS[f"{_who}_{_m}"] = definition(
            f"{_who.capitalize()} {_label}", "top-label calibration of the top-1 token probability against the "
            "actual next token, 15 uniform bins", _hib, f"Calibration of the {_who}'s next-token predictions.")
    TOKEN_DEFINITIONS[f"{_m}_change"] = definition(
        f"{_label.capitalize()} change (student − teacher)", f"{_m}(student) − {_m}(teacher)", _hib,
        "Change in next-token calibration from teacher to student, paired interval.")

GENERATION_DEFINITIONS: dict[str, dict[str, Any]] = {
    "exact_match": definition("Exact match of continuations", "(1/n) Σ_prompts 1{gen_s = gen_t}", True,
                              "Share of prompts where the student generates exactly the teacher's continuation."),
    "rouge_l": definition("ROUGE-L F1 (student vs teacher)", "(1/n) Σ_prompts ROUGE-L_F1(gen_s, gen_t)", True,
                          "Longest-common-subsequence overlap of the two continuations (rouge-score tokens)."),
    "chrf": definition("chrF (student vs teacher)", "(1/n) Σ_prompts chrF(gen_s; ref = gen_t) / 100", True,
                       "Character n-gram F-score (beta 2) of the student's continuation against the teacher's."),
    "teacher_loglik_of_student": definition(
        "Teacher log-likelihood of the student's text", "Σ log t(gen_s | prompt) / Σ #tokens(gen_s)", None,
        "Mean per-token log-probability the teacher gives the student's continuations (nats)."),
    "teacher_loglik_of_teacher": definition(
        "Teacher log-likelihood of its own text", "Σ log t(gen_t | prompt) / Σ #tokens(gen_t)", None,
        "The same for the teacher's own continuations: the reference point."),
    "teacher_loglik_gap": definition(
        "Teacher log-likelihood gap (student − teacher text)", "loglik(gen_s) − loglik(gen_t) per token", True,
        "How much less likely the teacher finds the student's text than its own (0: as likely)."),
}

TOKEN_GROUP_DEFINITIONS: dict[str, dict[str, Any]] = {
    "group_next_token_accuracy": definition(
        "Group next-token accuracy (student)", "next-token accuracy over the positions of the group's texts", True,
        "The student's next-token accuracy within one group of prompts."),
    "group_agreement": definition(
        "Group top-1 token agreement", "top-1 agreement over the positions of the group's texts", True,
        "Student's token agreement with the teacher within one group of prompts."),
    "group_next_token_accuracy_teacher": definition(
        "Group next-token accuracy (teacher)", "teacher's next-token accuracy over the group's positions", True,
        "The teacher's next-token accuracy within one group of prompts."),
    "group_next_token_accuracy_change": definition(
        "Group next-token accuracy change (student − teacher)", "acc_g(student) − acc_g(teacher)", True,
        "What distillation cost (or gained) one group of prompts, paired interval."),
    "group_kl_forward": definition(
        "Group KL(teacher‖student), lower bound", "per-token forward KL bound within the group", False,
        "Per-token divergence within one group of prompts."),
    "accuracy_difference": definition(
        "Next-token accuracy difference between groups", "max_g acc_g − min_g acc_g over reliable groups", False,
        "Spread of next-token accuracy across a feature's groups."),
    "agreement_difference": definition(
        "Agreement difference between groups", "max_g agreement_g − min_g agreement_g over reliable groups", False,
        "Spread of token agreement with the teacher across a feature's groups: distillation served some groups "
        "worse."),
    "accuracy_amplification": definition(
        "Accuracy-gap amplification", "accuracy_difference(student) − accuracy_difference(teacher)", False,
        "Growth of the between-group accuracy gap from teacher to student (paired interval)."),
    "worst_group_agreement": definition(
        "Worst-group token agreement", "min_g agreement_g over reliable groups", True,
        "Token agreement in the group the student follows the teacher least."),
}


# ---------------------------------------------------------------------------------------------- alignment
def check_token_pair(teacher: TokenTopK, student: TokenTopK) -> str | None:
    """Why two models' token outputs cannot be compared position by position, or None when they can.

    Per-token comparison needs the same tokenizer (equal fingerprints) and the same texts, positions and targets.
    """
    for arg, v in (("teacher", teacher), ("student", student)):
        if not isinstance(v, TokenTopK):
            raise invalid_argument(arg, type(v).__name__, "a kdaudit.harness.TokenTopK")
    from kdaudit.harness import comparison_level

    level = comparison_level([teacher, student])
    if not level.per_token:
        return level.reason
    if (len(teacher.text_ids) != len(student.text_ids)
            or not np.array_equal(np.asarray(teacher.text_ids).astype(str), np.asarray(student.text_ids).astype(str))
            or not np.array_equal(teacher.offsets, student.offsets)
            or not np.array_equal(teacher.target_ids, student.target_ids)):
        return "the two models were scored on different texts or positions (not aligned by the harness)"
    return None


# ---------------------------------------------------------------------------------------------- per position
def token_rows(teacher: TokenTopK, student: TokenTopK, *, start: int = 0, stop: int | None = None
               ) -> dict[str, np.ndarray]:
    """Per-position statistics of positions ``start:stop`` (float64): divergence bounds, agreement, correctness,
    negative log-likelihood, top-1 confidence and top-k mass of each model (see the module docstring)."""
    stop = teacher.n_positions if stop is None else stop
    ti, si = teacher.top_ids[start:stop], student.top_ids[start:stop]
    pt = np.exp(teacher.top_logprobs[start:stop].astype(np.float64))
    ps = np.exp(student.top_logprobs[start:stop].astype(np.float64))
    target = teacher.target_ids[start:stop]
    lt = teacher.target_logprob[start:stop].astype(np.float64)
    ls = student.target_logprob[start:stop].astype(np.float64)
    k_t, k_s = ti.shape[1], si.shape[1]
    match = ti[:, :, None] == si[:, None, :]  # (n, k_t, k_s)
    in_both = match.any(axis=2)
    ps_at_t = (match * ps[:, None, :]).sum(axis=2)  # student's probability of each teacher top-k token (0 if unseen)
    n = len(target)
    # cells: k_t shared-token cells (zero when not in both), the target cell, the "other" cell
    cell_t = np.zeros((n, k_t + 2))
    cell_s = np.zeros((n, k_t + 2))
    cell_t[:, :k_t] = np.where(in_both, pt, 0.0)
    cell_s[:, :k_t] = np.where(in_both, ps_at_t, 0.0)
    target_shared = (in_both & (ti == target[:, None])).any(axis=1)
    cell_t[:, k_t] = np.where(target_shared, 0.0, np.exp(lt))
    cell_s[:, k_t] = np.where(target_shared, 0.0, np.exp(ls))
    for cell in (cell_t, cell_s):
        cell[:, k_t + 1] = np.maximum(1.0 - cell[:, :k_t + 1].sum(axis=1), 0.0)
    kl_f, js, _ = _divergence_rows(cell_t, cell_s, KL_EPS)
    kl_r, _, _ = _divergence_rows(cell_s, cell_t, KL_EPS)
    k = min(k_t, k_s)
    return {
        "kl_forward": kl_f, "kl_reverse": kl_r, "js": js,
        "agree": (ti[:, 0] == si[:, 0]).astype(np.float64),
        # overlap of the top min(k_t, k_s): the shorter list's tokens found in the other's top k
        "overlap": (ti[:, :k, None] == si[:, None, :k]).any(axis=2).sum(axis=1) / k,
        "t_correct": (ti[:, 0] == target).astype(np.float64),
        "s_correct": (si[:, 0] == target).astype(np.float64),
        "t_nll": -lt, "s_nll": -ls,
        "t_conf": pt[:, 0], "s_conf": ps[:, 0],
        "t_mass": pt.sum(axis=1), "s_mass": ps.sum(axis=1),
    }


_TOK = ("n", "kl_forward", "kl_reverse", "js", "agree", "overlap", "t_correct", "s_correct", "t_nll", "s_nll",
        "t_mass", "s_mass")
_T = {k: i for i, k in enumerate(_TOK)}


class TokenAccumulator:
    """Streaming per-token agreement, quality and next-token calibration of a teacher and a student.

    Fed with aligned :class:`TokenTopK` chunks (whole texts); state is fixed-size (per-block sums keyed by the text
    ids), so chunks and shards merge exactly. ``compute()`` gives the ``lm_tokens`` section.
    """

    def __init__(self, *, bootstrap: Bootstrap | None = None, n_bins: int = 15) -> None:
        self.bootstrap = bootstrap if bootstrap is not None else Bootstrap()
        self._rows = BlockStats(len(_TOK), n_blocks=self.bootstrap.n_blocks)
        self._calib = CalibrationAccumulator(2, bootstrap=self.bootstrap, n_bins=n_bins, teacher_access="top_k",
                                             student_access="top_k", temperature=False)
        self._ref = BlockStats(4, n_blocks=self.bootstrap.n_blocks)  # per text: ll and tokens of each model
        self.n_texts = 0
        self.n_positions = 0
        self.n_references = 0
        self.k: tuple[int, int] | None = None

    def update(self, teacher: TokenTopK, student: TokenTopK, *,
               reference: tuple[tuple[Any, Any], tuple[Any, Any]] | None = None) -> TokenAccumulator:
        """Add aligned token outputs of whole texts; ``reference`` (optional): ``((loglik, n_tokens) of the
        teacher, (loglik, n_tokens) of the student)`` of each text's reference continuation given its prompt
        (:func:`continuation_loglik`), for the perplexity on the references."""
        why = check_token_pair(teacher, student)
        if why is not None:
            raise invalid_argument("student", student.name, f"token outputs aligned with the teacher's ({why})")
        if reference is not None:
            cols = [np.asarray(v, dtype=np.float64) for pair in reference for v in pair]
            if any(c.shape != (teacher.n_texts,) for c in cols):
                raise invalid_argument("reference", "arrays of another length", f"{teacher.n_texts} values each")
            self._ref.add(block_of(teacher.text_ids, self.bootstrap.n_blocks), tuple(cols))
            self.n_references += teacher.n_texts
        self.k = (teacher.k, student.k)
        text_blocks = block_of(teacher.text_ids, self.bootstrap.n_blocks)
        blocks_all = np.repeat(text_blocks, np.diff(teacher.offsets))
        ids_all = np.repeat(np.asarray(teacher.text_ids), np.diff(teacher.offsets))
        for a in range(0, teacher.n_positions, _CHUNK_POSITIONS):
            b = min(a + _CHUNK_POSITIONS, teacher.n_positions)
            r = token_rows(teacher, student, start=a, stop=b)
            self._rows.add(blocks_all[a:b], tuple(np.ones(b - a) if key == "n" else r[key] for key in _TOK))
            # next-token calibration through the classifier ECE accumulator (see the module docstring)
            y = np.zeros(b - a, dtype=np.int64)
            probs = []
            for conf, correct in ((r["t_conf"], r["t_correct"]), (r["s_conf"], r["s_correct"])):
                p = np.zeros((b - a, 2))
                p[np.arange(b - a), (1 - correct).astype(np.int64)] = conf
                probs.append(p)
            self._calib.update(y, probs[0], probs[1], ids=ids_all[a:b])
        self.n_texts += teacher.n_texts
        self.n_positions += teacher.n_positions
        return self

    def merge(self, other: TokenAccumulator) -> TokenAccumulator:
        if not isinstance(other, TokenAccumulator) or other.bootstrap.n_blocks != self.bootstrap.n_blocks:
            raise invalid_argument("other", type(other).__name__, "a TokenAccumulator with the same bootstrap blocks")
        self._rows.merge(other._rows)
        self._calib.merge(other._calib)
        self._ref.merge(other._ref)
        self.n_references += other.n_references
        self.n_texts += other.n_texts
        self.n_positions += other.n_positions
        self.k = self.k or other.k
        return self

    @staticmethod
    def _values(rows: np.ndarray) -> dict[str, np.ndarray]:
        r = {key: rows[..., 0, i] for key, i in _T.items()}
        n = r["n"]
        t_acc, s_acc = r["t_correct"] / n, r["s_correct"] / n
        t_ppl, s_ppl = np.exp(r["t_nll"] / n), np.exp(r["s_nll"] / n)
        return {
            "top1_agreement": r["agree"] / n, "top_k_overlap": r["overlap"] / n,
            "kl_forward": r["kl_forward"] / n, "kl_reverse": r["kl_reverse"] / n, "js_divergence": r["js"] / n,
            "teacher_topk_mass": r["t_mass"] / n, "student_topk_mass": r["s_mass"] / n,
            "teacher_next_token_accuracy": t_acc, "student_next_token_accuracy": s_acc,
            "retained_next_token_accuracy": s_acc / t_acc,
            "teacher_perplexity": t_ppl, "student_perplexity": s_ppl,
            "perplexity_ratio": np.exp((r["s_nll"] - r["t_nll"]) / n),
        }

    def compute(self) -> SectionResult:
        if self.n_positions == 0:
            return SectionResult(available=False, reason="no token positions were scored")
        headline = dict(evaluate(self.bootstrap, [self._rows], self._values))
        if self.n_references:
            def ref_values(r: np.ndarray) -> dict[str, np.ndarray]:
                r = r[..., 0, :]
                nll_t, nll_s = -r[..., 0] / r[..., 1], -r[..., 2] / r[..., 3]
                return {"teacher_reference_perplexity": np.exp(nll_t), "student_reference_perplexity": np.exp(nll_s),
                        "reference_perplexity_ratio": np.exp(nll_s - nll_t)}

            headline.update(evaluate(self.bootstrap, [self._ref], ref_values))
        calib = self._calib.compute()
        for m in _NEXT_TOKEN_CALIBRATION:
            for key in (f"teacher_{m}", f"student_{m}", f"{m}_change"):
                headline[key] = calib.headline[key]
        detail = {
            "n_texts": self.n_texts, "n_positions": self.n_positions,
            "top_k": {"teacher": self.k[0], "student": self.k[1]} if self.k else None,
            "reliability": calib.detail["reliability"],
            "tail_bound": ("divergences are computed on the partition both models reveal (tokens in both top-k "
                           "lists, the actual next token, one 'other' cell): lower bounds of the full-vocabulary "
                           "divergences by the data-processing inequality; exact when k covers the vocabulary"),
            "resampling_unit": "text (all positions of a text share its bootstrap block)",
        }
        return SectionResult(available=True, headline=headline, detail=detail)


def token_section(teacher: TokenTopK, student: TokenTopK, *, bootstrap: Bootstrap | None = None,
                  n_bins: int = 15, reference: tuple[tuple[Any, Any], tuple[Any, Any]] | None = None
                  ) -> SectionResult:
    """The ``lm_tokens`` section: per-token agreement (divergence bounds, top-1 agreement, top-k overlap), quality
    (next-token accuracy, perplexity and their ratios, on the whole scored texts and, with ``reference``, on the
    reference continuations alone) and next-token calibration, with text-level intervals.

    Unavailable, with the reason, when the two models' positions do not correspond (different tokenizers)."""
    why = check_token_pair(teacher, student)
    if why is not None:
        return SectionResult(available=False, reason=why)
    acc = TokenAccumulator(bootstrap=bootstrap, n_bins=n_bins)
    return acc.update(teacher, student, reference=reference).compute()


# ---------------------------------------------------------------------------------------------- groups
def token_group_section(teacher: TokenTopK, student: TokenTopK, groups: pd.DataFrame, *,
                        bootstrap: Bootstrap | None = None, min_group_size: int = 20) -> SectionResult:
    """Bias transfer at the token level over prompt-level group columns (``lm_bias``'s token part).

    For every column of ``groups`` (one row per text, in the texts' order) and every group: next-token accuracy of
    each model, the student's top-1 agreement with the teacher and the per-token KL bound; across groups with at
    least ``min_group_size`` texts: the spread (max − min) of accuracy for each model, its amplification (student
    minus teacher) and the agreement spread, all with paired text-level intervals. Disparities sit where the bias
    section keeps them (``features[f]["disparities"]``) and per-group values of reliable groups in ``by_group``
    (``{metric: {"feature=group": estimate}}``), so per-group policy rules read both.
    """
    bootstrap = bootstrap if bootstrap is not None else Bootstrap()
    why = check_token_pair(teacher, student)
    if why is not None:
        return SectionResult(available=False, reason=why)
    if groups is None or groups.shape[1] == 0:
        return SectionResult(available=False, reason="the prompt set has no group columns")
    if len(groups) != teacher.n_texts:
        raise invalid_argument("groups", f"{len(groups)} rows", f"{teacher.n_texts} (one per text)")
    if not isinstance(min_group_size, (int, np.integer)) or min_group_size < 1:
        raise invalid_argument("min_group_size", min_group_size, "an integer >= 1")
    per_text = np.diff(teacher.offsets)
    blocks = np.repeat(block_of(teacher.text_ids, bootstrap.n_blocks), per_text)
    rows = {key: np.empty(teacher.n_positions) for key in ("agree", "t_correct", "s_correct", "kl_forward")}
    for a in range(0, teacher.n_positions, _CHUNK_POSITIONS):
        b = min(a + _CHUNK_POSITIONS, teacher.n_positions)
        r = token_rows(teacher, student, start=a, stop=b)
        for key in rows:
            rows[key][a:b] = r[key]
    features: dict[str, Any] = {}
    headline: dict[str, Any] = {}
    by_group: dict[str, dict[str, Any]] = {k: {} for k in (
        "group_agreement", "group_next_token_accuracy", "group_next_token_accuracy_change",
        "group_next_token_accuracy_teacher", "group_kl_forward")}
    worst_amp, worst_agree = None, None
    for col in sorted(groups.columns, key=str):
        values = groups[col].astype(str).to_numpy()
        names = sorted(set(values))
        codes = np.searchsorted(np.array(names), values)
        g = len(names)
        stats = BlockStats(5, n_cells=g, n_blocks=bootstrap.n_blocks)
        stats.add(blocks, (np.ones(teacher.n_positions), rows["t_correct"], rows["s_correct"], rows["agree"],
                           rows["kl_forward"]), np.repeat(codes, per_text))
        n_texts = np.bincount(codes, minlength=g)
        reliable = n_texts >= min_group_size

        def fn(s: np.ndarray, reliable: np.ndarray = reliable) -> dict[str, np.ndarray]:
            n = s[..., 0]
            t_acc, s_acc, agree = s[..., 1] / n, s[..., 2] / n, s[..., 3] / n
            d_t, d_s = _difference(t_acc, reliable), _difference(s_acc, reliable)
            masked = np.where(reliable & np.isfinite(agree), agree, np.inf)
            worst = masked.min(axis=-1)
            return {"t_acc": t_acc, "s_acc": s_acc, "change": s_acc - t_acc, "agree": agree, "kl": s[..., 4] / n,
                    "d_t": d_t, "d_s": d_s, "amp": d_s - d_t, "d_agree": _difference(agree, reliable),
                    "worst": np.where(np.isfinite(worst), worst, np.nan)}

        est = evaluate(bootstrap, [stats], fn)
        group_rows = []
        for j, name in enumerate(names):
            group_rows.append({
                "group": name, "n_texts": int(n_texts[j]), "reliable": bool(reliable[j]),
                "teacher_accuracy": est["t_acc"][j], "student_accuracy": est["s_acc"][j],
                "accuracy_change": est["change"][j], "agreement": est["agree"][j], "kl_forward": est["kl"][j],
            })
            if reliable[j]:  # per-group policy rules judge reliable groups only
                label = f"{col}={name}"
                by_group["group_next_token_accuracy_teacher"][label] = est["t_acc"][j]
                by_group["group_next_token_accuracy"][label] = est["s_acc"][j]
                by_group["group_next_token_accuracy_change"][label] = est["change"][j]
                by_group["group_agreement"][label] = est["agree"][j]
                by_group["group_kl_forward"][label] = est["kl"][j]
        features[str(col)] = {
            "groups": group_rows,
            "disparities": {
                "accuracy_difference": {"teacher": est["d_t"], "student": est["d_s"], "amplification": est["amp"]},
                "agreement_difference": {"student": est["d_agree"]},
            },
            "small_groups": [name for name, ok in zip(names, reliable) if not ok],
        }
        if np.isfinite(est["amp"].value) and (worst_amp is None or est["amp"].value > worst_amp[1].value):
            worst_amp = (str(col), est["amp"])
        if np.isfinite(est["worst"].value) and (worst_agree is None or est["worst"].value < worst_agree[1].value):
            worst_agree = (str(col), est["worst"])
    headline_features = {}
    if worst_amp is not None:
        headline["accuracy_amplification"] = worst_amp[1]
        headline_features["accuracy_amplification"] = worst_amp[0]
    if worst_agree is not None:
        headline["worst_group_agreement"] = worst_agree[1]
        headline_features["worst_group_agreement"] = worst_agree[0]
    detail = {"features": features, "by_group": by_group, "headline_features": headline_features,
              "options": {"min_group_size": int(min_group_size), "unit": "text"}}
    if not headline:
        # the group table is kept in the detail, but no disparity exists to judge: the section says why
        return SectionResult(available=False, reason=f"fewer than two groups with at least {min_group_size} texts "
                                                     "in every feature: no disparity can be estimated",
                             headline={}, detail=detail)
    return SectionResult(available=True, headline=headline, detail=detail)


# ---------------------------------------------------------------------------------------------- log-likelihoods
def text_logprob(scores: TokenTopK) -> tuple[np.ndarray, np.ndarray]:
    """Per text: the sum of the actual tokens' log-probabilities (tokens 1..end given their prefix) and the
    number of predicted positions."""
    counts = np.diff(scores.offsets)
    sums = np.zeros(scores.n_texts)
    nz = counts > 0
    if nz.any():
        sums[nz] = np.add.reduceat(scores.target_logprob.astype(np.float64), scores.offsets[:-1][nz])
    return sums, counts


def continuation_loglik(full: TokenTopK, prefix: TokenTopK) -> tuple[np.ndarray, np.ndarray]:
    """log P(continuation | prompt) = log P(prompt + continuation) − log P(prompt), and the continuation's token
    count, per text, from teacher-forced scores of the full texts and of the prompts alone.

    Exact when the tokenizer splits ``prompt + continuation`` at the prompt's boundary (true for the usual
    whitespace-led continuations of BPE tokenizers); otherwise it is the log-probability of the continuation's
    string under the tokenizations used, as lm-evaluation-harness computes its context/continuation split.
    """
    lf, nf = text_logprob(full)
    lp, np_ = text_logprob(prefix)
    return lf - lp, np.maximum(nf - np_, 0)


def choice_loglik(choice_scores: Sequence[tuple[np.ndarray, np.ndarray]], choices: Sequence[Sequence[str]], *,
                  length_normalize: str = "none") -> np.ndarray:
    """(n_prompts, max_choices) log-likelihood per choice (−inf where a prompt has fewer choices).

    ``choice_scores[j]`` is ``(loglik, n_tokens)`` of choice ``j`` of every prompt (from
    :func:`continuation_loglik`). ``length_normalize``: ``"none"`` (the sum, lm-evaluation-harness's ``acc``) or
    ``"chars"`` (divided by the choice's length in characters, its ``acc_norm`` up to bytes vs characters).
    """
    if length_normalize not in ("none", "chars"):
        raise invalid_argument("length_normalize", length_normalize, "'none' or 'chars'")
    n = len(choices)
    m = max(len(c) for c in choices)
    out = np.full((n, m), -np.inf)
    for j in range(m):
        ll = np.asarray(choice_scores[j][0], dtype=np.float64)
        for i in range(n):
            if j < len(choices[i]):
                norm = max(len(choices[i][j]), 1) if length_normalize == "chars" else 1
                out[i, j] = ll[i] / norm
    return out


# ---------------------------------------------------------------------------------------------- generations
def generation_section(teacher: Generations, student: Generations, *, bootstrap: Bootstrap | None = None,
                       teacher_loglik_student: tuple[np.ndarray, np.ndarray] | None = None,
                       teacher_loglik_teacher: tuple[np.ndarray, np.ndarray] | None = None) -> SectionResult:
    """The ``lm_generation`` section: text-level agreement of the two models' continuations of the same prompts.

    Exact match, ROUGE-L F1 and chrF per prompt (student's text against the teacher's; see
    :mod:`kdaudit.metrics._text`), averaged over prompts; with the teacher's log-likelihoods of the student's and of
    its own continuations (``(loglik, n_tokens)`` per prompt, :func:`continuation_loglik`), the teacher's mean
    per-token log-likelihood of each and their gap. Works across tokenizers and through text-only APIs.
    """
    bootstrap = bootstrap if bootstrap is not None else Bootstrap()
    for arg, v in (("teacher", teacher), ("student", student)):
        if not isinstance(v, Generations):
            raise invalid_argument(arg, type(v).__name__, "a kdaudit.harness.Generations")
    if not np.array_equal(np.asarray(teacher.text_ids).astype(str), np.asarray(student.text_ids).astype(str)):
        raise invalid_argument("student", student.name, "generations for the same prompts, in the teacher's order")
    n = len(teacher)
    scores = text_pair_scores(student.texts, teacher.texts)
    cols: list[np.ndarray] = [np.ones(n), scores["exact_match"], scores["rouge_l"], scores["chrf"]]
    have_ll = teacher_loglik_student is not None and teacher_loglik_teacher is not None
    if have_ll:
        for ll, cnt in (teacher_loglik_student, teacher_loglik_teacher):  # type: ignore[misc]
            cols += [np.asarray(ll, dtype=np.float64), np.asarray(cnt, dtype=np.float64)]
    stats = BlockStats(len(cols), n_blocks=bootstrap.n_blocks)
    stats.add(block_of(teacher.text_ids, bootstrap.n_blocks), tuple(cols))

    def fn(s: np.ndarray) -> dict[str, np.ndarray]:
        s = s[..., 0, :]
        out = {"exact_match": s[..., 1] / s[..., 0], "rouge_l": s[..., 2] / s[..., 0], "chrf": s[..., 3] / s[..., 0]}
        if have_ll:
            ls, lt = s[..., 4] / s[..., 5], s[..., 6] / s[..., 7]
            out.update({"teacher_loglik_of_student": ls, "teacher_loglik_of_teacher": lt,
                        "teacher_loglik_gap": ls - lt})
        return out

    headline = evaluate(bootstrap, [stats], fn)
    examples = []
    # the prompts where the continuations differ most (lowest chrF), shown in the report; ties by position
    for i in np.argsort(scores["chrf"], kind="stable")[:3]:
        examples.append({"id": str(teacher.text_ids[i]), "teacher": teacher.texts[i], "student": student.texts[i],
                         "chrf": float(scores["chrf"][i])})
    detail = {"n_prompts": n, "settings": {"teacher": dict(teacher.settings), "student": dict(student.settings)},
              "examples": examples,
              "unavailable": {} if have_ll else {
                  k: "the teacher reveals no log-probabilities (text-only access)"
                  for k in ("teacher_loglik_of_student", "teacher_loglik_of_teacher", "teacher_loglik_gap")}}
    return SectionResult(available=True, headline=headline, detail=detail)

