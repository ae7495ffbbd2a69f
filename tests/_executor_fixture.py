"""Shared pieces of the executor tests: small audit data, models, sharded parquet, and a results comparison."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from kdaudit import AuditData
from kdaudit._io import canonical_json
from kdaudit.models import ModelAdapter

KW = dict(n_replicates=40, seed=3, progress=False, measure_cost=False,
          sections=["agreement", "calibration", "bias", "fingerprint"])


def make_data(n=2400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    logits = X @ rng.normal(size=(5, 3))
    y = (logits + rng.gumbel(size=logits.shape)).argmax(1)
    sens = pd.DataFrame({"grp": np.where(rng.random(n) < 0.4, "a", "b"),
                         "age": rng.choice(["young", "old"], size=n)})
    ids = rng.permutation(10 * n)[:n]  # arbitrary, non-contiguous ids
    return AuditData(X, y_true=y, sensitive=sens, ids=ids, classes=("x", "y", "z"), name="synthetic")


def fit_models(data):
    from sklearn.linear_model import LogisticRegression

    teacher = LogisticRegression(max_iter=500).fit(data.X, data.y_true)
    student = LogisticRegression(C=0.02, max_iter=500).fit(data.X[:, :3] @ np.ones((3, 5), np.float32) / 3,
                                                           data.y_true)
    close = LogisticRegression(C=0.05, max_iter=500).fit(data.X, data.y_true)
    return teacher, {"weak": student, "close": close}


def results_text(result):
    return canonical_json(result.results)


class DieOnce(ModelAdapter):
    """Wraps a model; the first time it sees ``trigger_id`` in a worker process other than ``driver_pid``, it kills
    that process (as a crashed node would), leaving a marker file so that the retry runs through."""

    def __init__(self, inner, *, trigger_id, marker, driver_pid):
        self.inner, self.trigger_id, self.marker, self.driver_pid = inner, trigger_id, str(marker), driver_pid
        for attr in ("name", "n_classes", "classes", "access", "top_k", "output", "kind"):
            setattr(self, attr, getattr(inner, attr))

    def predict(self, X):
        return self.inner.predict(X)

    def predict_batch(self, X, *, ids=None, rows=None):
        if (ids is not None and self.trigger_id in set(np.asarray(ids).tolist()) and os.getpid() != self.driver_pid
                and not os.path.exists(self.marker)):
            with open(self.marker, "w") as fh:
                fh.write(str(os.getpid()))
            os._exit(1)
        return self.inner.predict_batch(X, ids=ids, rows=rows)

    @property
    def query_count(self):
        return self.inner.query_count

    def fingerprint(self):
        return self.inner.fingerprint()

    def n_parameters(self):
        return self.inner.n_parameters()

    def size_bytes(self):
        return self.inner.size_bytes()


def write_shards(data, teacher_probs, student_probs, directory, *, n_files=3, row_group=300):
    """The audit rows and both models' outputs as ``n_files`` parquet shards of ``row_group``-row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    n = len(data)
    cuts = np.linspace(0, n, n_files + 1).astype(int)
    for i in range(n_files):
        a, b = cuts[i], cuts[i + 1]
        c = teacher_probs.shape[1]
        table = pa.table({
            "id": data.ids[a:b],
            "label": data.y_true[a:b],
            "grp": data.sensitive["grp"].to_numpy()[a:b],
            "age": data.sensitive["age"].to_numpy()[a:b],
            "p_teacher": pa.FixedSizeListArray.from_arrays(pa.array(teacher_probs[a:b].ravel()), c),
            "p_student": pa.FixedSizeListArray.from_arrays(pa.array(student_probs[a:b].ravel()), c),
        })
        pq.write_table(table, os.path.join(directory, f"part-{i:03d}.parquet"), row_group_size=row_group)
    return directory
