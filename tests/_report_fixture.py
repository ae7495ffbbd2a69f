"""A realistic audit results dict for report tests, made by the real metric section functions on synthetic outputs.

``make_results()`` lays the sections out as ``kdaudit.audit`` does (results.json shape) so that report, CLI and
notebook tests can share it; ``make_run_info()`` is the matching non-deterministic run record. ``EVIL`` names put
HTML/script payloads into every user string (model names, class labels, group names, config values, paths).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from _arrays import softmax

__all__ = ["EVIL", "PAYLOADS", "make_results", "make_run_info"]

PAYLOADS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')

PLAIN = {
    "teacher": "teacher-gbm",
    "students": ("student-mlp", "student-labels-api"),
    "classes": ("<=50K", ">50K"),
    "sex": ("Female", "Male"),
    "race": ("White", "Black", "Asian-Pac-Islander", "Other"),
    "data": "adult-test",
    "path": "models/student.pt",
}
EVIL = {
    "teacher": "teacher " + PAYLOADS[0],
    "students": ("student " + PAYLOADS[1], "api <b>bold</b> " + PAYLOADS[0]),
    "classes": (PAYLOADS[0], PAYLOADS[1]),
    "sex": (PAYLOADS[0], PAYLOADS[1]),
    "race": ("White", PAYLOADS[0], PAYLOADS[1], "$x$ & <i>"),
    "data": "data " + PAYLOADS[1],
    "path": "models/" + PAYLOADS[1] + ".pt",
}


def _outputs(n: int, seed: int) -> dict[str, Any]:
    """Teacher and students whose behaviour resembles a distilled Adult classifier: a student close to its teacher
    but less sharp, and a labels-only API copy."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(2, n, p=[0.33, 0.67])
    race = rng.choice(4, n, p=[0.85, 0.1, 0.04, 0.01])
    signal = rng.normal(size=n) + 0.5 * sex - 1.0
    y = (signal + rng.normal(scale=0.8, size=n) > 0).astype(np.int64)
    t_logit = np.stack([np.zeros(n), 2.2 * signal], axis=1)
    s_logit = np.stack([np.zeros(n), 1.6 * signal + 0.35 * sex + rng.normal(scale=0.45, size=n)], axis=1)
    a_logit = np.stack([np.zeros(n), 1.9 * signal + rng.normal(scale=0.6, size=n)], axis=1)
    probs = {name: softmax(z).astype(np.float32)
             for name, z in (("teacher", t_logit), ("student", s_logit), ("labels_api", a_logit))}
    return {"y": y, "sex": sex, "race": race, **probs}


def make_results(*, names: dict[str, Any] | None = None, n: int = 2000, n_replicates: int = 100,
                 seed: int = 0, with_lineage: bool = True) -> dict[str, Any]:
    """Results as ``kdaudit.audit`` writes them to results.json (real section functions, policy and findings)."""
    from kdaudit import __version__
    from kdaudit._estimate import Estimate
    from kdaudit._io import canonical_json
    from kdaudit.harness._outputs import ModelOutputs
    from kdaudit.metrics import (
        Bootstrap,
        agreement_section,
        bias_section,
        calibration_section,
        fingerprint_section,
    )
    from kdaudit.models._base import Access
    from kdaudit.policy import DEFAULT_POLICY, evaluate_policy, load_policy, verdict_of

    nm = dict(PLAIN if names is None else names)
    o = _outputs(n, seed)
    ids = np.arange(n)
    sensitive = pd.DataFrame({"sex": np.asarray(nm["sex"], dtype=object)[o["sex"]],
                              "race": np.asarray(nm["race"], dtype=object)[o["race"]]})
    teacher = ModelOutputs(nm["teacher"], o["teacher"], o["teacher"].argmax(1))
    s_probs = o["student"]
    api_labels = o["labels_api"].argmax(1)
    students = [
        ModelOutputs(nm["students"][0], s_probs, s_probs.argmax(1)),
        ModelOutputs(nm["students"][1], np.eye(2, dtype=np.float32)[api_labels], api_labels, access=Access.LABELS),
    ]
    boot = Bootstrap(n_replicates=n_replicates, seed=seed)
    comparisons = []
    sections = (("agreement", agreement_section, {}), ("calibration", calibration_section, {}),
                ("bias", bias_section, {"sensitive": sensitive, "n_permutations": 199}),
                ("fingerprint", fingerprint_section, {}))
    for st in students:
        comp: dict[str, Any] = {"student": st.name}
        for key, fn, kw in sections:
            comp[key] = fn(o["y"], teacher, st, ids=ids, bootstrap=boot, **kw).to_dict()
        comparisons.append(comp)

    params = {nm["teacher"]: 1_204_481, nm["students"][0]: 48_129, nm["students"][1]: None}
    sizes = {nm["teacher"]: 4_821_376, nm["students"][0]: 196_608, nm["students"][1]: None}
    for comp in comparisons:
        s = comp["student"]

        def ratio(a: Any, b: Any) -> Estimate:
            return Estimate(math.nan if a is None or b is None else a / b, method="exact (no interval)")

        comp["cost"] = {"available": True, "reason": None,
                        "headline": {"parameter_ratio": ratio(params[s], params[nm["teacher"]]).to_dict(),
                                     "size_ratio": ratio(sizes[s], sizes[nm["teacher"]]).to_dict()},
                        "teacher": {"n_parameters": params[nm["teacher"]], "size_bytes": sizes[nm["teacher"]]},
                        "student": {"n_parameters": params[s], "size_bytes": sizes[s]}}
    if with_lineage:
        comparisons[0]["lineage"] = _lineage(nm["teacher"], nm["students"][0])
        comparisons[1]["lineage"] = {"available": False, "reason": "no reference models were given",
                                     "headline": {}}

    def describe(name: str, kind: str, access: str, role: str) -> dict[str, Any]:
        return {"name": name, "kind": kind, "access": access, "top_k": None, "n_classes": 2,
                "classes": list(nm["classes"]), "sha256": _sha(name), "n_parameters": params[name],
                "size_bytes": sizes[name], "role": role, "path": nm["path"]}

    models = [describe(nm["teacher"], "sklearn", "probabilities", "teacher"),
              describe(nm["students"][0], "torch", "probabilities", "student"),
              describe(nm["students"][1], "blackbox", "labels", "student")]
    data = {"name": nm["data"], "source": nm["path"], "n_rows": n, "sha256": _sha("data"),
            "classes": list(nm["classes"]), "class_counts": np.bincount(o["y"], minlength=2).tolist(),
            "groups": {c: sensitive[c].value_counts().sort_index().to_dict() for c in sensitive.columns}}
    from kdaudit._audit import _definitions  # the audit's own definitions table

    definitions = _definitions(["agreement", "calibration", "bias", "fingerprint", "cost", "lineage"])
    pol = load_policy(DEFAULT_POLICY)
    results: dict[str, Any] = {
        "schema": "kdaudit.results/1",
        "kdaudit_version": __version__,
        "data": data,
        "models": models,
        "teacher": nm["teacher"],
        "comparisons": comparisons,
        "cost": {"models": {k: {"n_parameters": params[k], "size_bytes": sizes[k]} for k in params}},
        "provenance": {"data_sha256": _sha("data"), "n_rows": n, "seed": seed, "device": "cpu", "precision": "fp32",
                       "batch_size": 256, "versions": {"kdaudit": __version__, "numpy": np.__version__,
                                                       "python": "3.11", "torch": "2.13.0"},
                       "models": []},
        "settings": {"sections": ["agreement", "calibration", "bias", "fingerprint", "cost", "lineage"],
                     "seed": seed, "batch_size": 256, "device": "cpu",
                     "bootstrap": {"n_replicates": n_replicates, "seed": seed, "level": 0.95, "method": boot.method}},
        "config": {"teacher": {"path": nm["path"], "name": nm["teacher"]},
                   "students": [{"name": s, "path": nm["path"]} for s in nm["students"]],
                   "data": {"name": nm["data"], "sensitive": ["sex", "race"]}, "seed": seed,
                   "note": nm["students"][0]},
        "definitions": definitions,
        "policy": pol.to_dict(),
    }
    results = json.loads(canonical_json(results))
    findings = evaluate_policy(results, pol)
    results["findings"] = [f.to_dict() for f in findings]
    results["verdict"] = verdict_of(findings)
    results["verdict_by_student"] = {c["student"]: verdict_of([f for f in findings if f.student == c["student"]])
                                     for c in comparisons}
    return json.loads(canonical_json(results))


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _lineage(teacher: str, suspect: str) -> dict[str, Any]:
    """A lineage section as ``LineageResult.to_dict()`` gives it, for a suspect distilled from the teacher."""
    from kdaudit._estimate import Estimate
    from kdaudit.lineage import NULL_HYPOTHESIS, SIGNATURES, LineageResult

    rng = np.random.default_rng(7)
    refs = tuple(float(x) for x in rng.normal(0.0, 1.0, 19))
    sigs = {name: {"description": desc, "teacher": float(0.3 + 0.05 * i),
                   "references": [float(x) for x in rng.normal(0.05, 0.04, 19)], "z_teacher": float(4.0 - 0.3 * i),
                   "rank_p_value": 0.05} for i, (name, desc) in enumerate(SIGNATURES.items())}
    method = "probe bootstrap, 200 replicates, percentile 95% interval"
    res = LineageResult(
        verdict="derived", reason="", p_value=0.05, p_value_method="exact rank", p_value_exact=0.05,
        p_value_parametric=3.1e-6, alpha=0.05, effect=Estimate(5.2, 3.9, 6.8, method), statistic=3.7,
        reference_statistics=refs, signatures=sigs,
        raw_similarity={"top1_agreement": Estimate(0.91, 0.89, 0.93, method)}, queries_used=1000,
        query_budget=2000, n_probes=1000, n_candidates=4000, n_references=19, suspect_access="probabilities",
        pool_access="probabilities", teacher=teacher, suspect=suspect, null_hypothesis=NULL_HYPOTHESIS,
        assumptions=("Under H0 the teacher and the references are exchangeable with respect to the suspect.",),
        methodology="The suspect was queried on 1000 probes where the teacher and its references disagree most.",
        probe_selection={"strategy": "max disagreement", "n_mixup": 1000},
        negative_controls={"n": 4, "names": [f"{suspect} control {i}" for i in range(4)],
                           "p_values": [0.45, 0.05, 0.8, None], "effects": [0.1, 2.2, -0.7, None], "n_at_alpha": 1,
                           "share_at_alpha": 0.25, "expected_share": 0.05, "binomial_p": 0.185,
                           "suspect_rank_p_value": 0.2, "warning": None,
                           "assumption": "controls are known not to be derived from the teacher"},
        positive_controls={"n": 5, "names": [f"{suspect} student {i}" for i in range(5)],
                           "p_values": [0.05, 0.05, 0.3, 0.05, 0.05],
                           "verdicts": ["derived", "derived", "not derived", "derived", "derived"], "n_found": 4,
                           "share_found": 0.8, "interval": [0.2836, 0.9949], "confidence_level": 0.95,
                           "interval_method": "Clopper-Pearson",
                           "assumption": "positive controls are known to be derived from the teacher"})
    return res.to_dict()


def make_run_info(names: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``kdaudit.audit`` records in run.json: wall times, measured latency, the command line."""
    nm = dict(PLAIN if names is None else names)
    timing = {nm["teacher"]: (3.1, 0.0121, 82_600.0), nm["students"][0]: (0.21, 0.00082, 1_219_000.0),
              nm["students"][1]: (45.0, 0.176, 5_690.0)}
    return {
        "generated_at": "2026-11-23T07:00:00+00:00",
        "command": ["kdaudit", "audit", "audit.yaml", "--out", nm["path"]],
        "host": {"python": "3.11.9", "platform": "Linux-x86_64", "cpu_count": 2},
        "wall_time_s": {"total_s": 12.5, "sections_s": {f"{nm['students'][0]}/agreement": 0.2}},
        "cost": {k: {"batch_size": 256, "n_batches": 20, "device": "cpu", "latency_ms_median": v[0],
                     "latency_ms_p90": v[0] * 1.2, "latency_ms_per_row": v[1], "throughput_rows_per_s": v[2]}
                 for k, v in timing.items()},
    }
