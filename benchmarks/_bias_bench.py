"""Bias-transfer section vs fairlearn ``MetricFrame`` on the same inputs.

fairlearn computes accuracy, selection rate, TPR and FPR by a 4-level group for the teacher and for the student (two
``MetricFrame`` objects, point values only). kdaudit's ``bias_section`` computes the same group values plus per-group
ECE and agreement, disparities, 1,000-replicate paired intervals and a 999-permutation amplification test. The values
both produce are checked equal before timings are reported.

Run standalone: ``python benchmarks/_bias_bench.py [n_rows]``; prints a JSON dict.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
import pandas as pd


def _inputs(n_rows: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(["a", "b", "c", "d"]), n_rows, p=[0.4, 0.3, 0.2, 0.1])
    y = rng.integers(0, 2, n_rows)
    shift = np.searchsorted(np.array(["a", "b", "c", "d"]), group) * 0.1
    p1_t = np.clip(0.25 + 0.5 * y + shift - 0.15 + rng.normal(0, 0.2, n_rows), 0, 1).astype(np.float32)
    p1_s = np.clip(p1_t + rng.normal(0, 0.1, n_rows), 0, 1).astype(np.float32)
    return {
        "y": y,
        "p_teacher": np.stack([1 - p1_t, p1_t], axis=1),
        "p_student": np.stack([1 - p1_s, p1_s], axis=1),
        "sensitive": pd.DataFrame({"group": group}),
        "ids": np.arange(n_rows),
    }


def _fairlearn(data: dict[str, Any]) -> tuple[float, dict[str, pd.DataFrame]]:
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    metrics = {"accuracy": accuracy_score, "selection_rate": selection_rate, "tpr": true_positive_rate,
               "fpr": false_positive_rate}
    frames = {}
    start = time.perf_counter()
    for model in ("teacher", "student"):
        pred = data[f"p_{model}"].argmax(axis=1)
        frames[model] = MetricFrame(metrics=metrics, y_true=data["y"], y_pred=pred,
                                    sensitive_features=data["sensitive"]["group"]).by_group
    return time.perf_counter() - start, frames


def _kdaudit(data: dict[str, Any], n_replicates: int, n_permutations: int) -> tuple[float, Any]:
    from kdaudit.metrics._bias import bias_section
    from kdaudit.metrics._resampling import Bootstrap

    start = time.perf_counter()
    result = bias_section(data["y"], data["p_teacher"], data["p_student"], ids=data["ids"],
                          sensitive=data["sensitive"], bootstrap=Bootstrap(n_replicates=n_replicates),
                          n_permutations=n_permutations)
    return time.perf_counter() - start, result


def run(n_rows: int = 1_000_000) -> dict[str, Any]:
    """Time fairlearn and kdaudit on the same ``n_rows`` rows; raise if their values differ."""
    data = _inputs(n_rows)
    t_fair, frames = _fairlearn(data)
    t_point, _ = _kdaudit(data, 0, 0)
    t_full, result = _kdaudit(data, 1000, 999)

    names = {"accuracy": "group_accuracy", "selection_rate": "group_selection_rate", "tpr": "group_tpr",
             "fpr": "group_fpr"}
    max_abs_diff = 0.0
    groups = result.features["group"]["groups"]
    for model, frame in frames.items():
        assert [g["group"] for g in groups] == [str(i) for i in frame.index], "group order differs"
        for theirs, ours in names.items():
            mine = np.array([g[model][ours].value for g in groups])
            max_abs_diff = max(max_abs_diff, float(np.max(np.abs(mine - frame[theirs].to_numpy(dtype=float)))))
        dp = frame["selection_rate"].max() - frame["selection_rate"].min()
        eo = max(frame["tpr"].max() - frame["tpr"].min(), frame["fpr"].max() - frame["fpr"].min())
        disp = result.features["group"]["disparities"]
        max_abs_diff = max(max_abs_diff, abs(disp["dp_difference"][model].value - dp),
                           abs(disp["eo_difference"][model].value - eo))
    if max_abs_diff > 1e-9:
        raise AssertionError(f"kdaudit and fairlearn disagree by {max_abs_diff}")
    return {
        "n_rows": n_rows,
        "n_groups": 4,
        "fairlearn_metricframe_s": round(t_fair, 3),
        "kdaudit_section_point_s": round(t_point, 3),
        "kdaudit_section_full_s": round(t_full, 3),
        "speedup_point": round(t_fair / t_point, 1),
        "speedup_full": round(t_fair / t_full, 1),
        "max_abs_diff": max_abs_diff,
        "note": "fairlearn: 4 metrics x teacher and student, point values; kdaudit full: the same values plus ECE, "
                "agreement, disparities, 1000 paired bootstrap replicates and a 999-permutation test",
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000), indent=2))
