"""Bad input gets a KDAuditError naming the argument or model, the value, and what is accepted."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn as nn

from kdaudit import AuditData, KDAuditError, ModelExecutionError
from kdaudit.harness import run
from kdaudit.models import BlackBoxModel, PrecomputedModel, TorchModel

torch.set_num_threads(1)

X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
DATA = AuditData(X, y_true=np.arange(40) % 3)


def net(c=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, c))


def probs(x):
    return scipy.special.softmax(np.asarray(x)[:, :3], axis=1)


class Api:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


def test_mismatched_lengths():
    with pytest.raises(KDAuditError, match=r"'y_true' got '39 labels'; expected one label per row of X \(40\)"):
        AuditData(X, y_true=np.zeros(39, dtype=int))
    short = PrecomputedModel(probs(X[:30]), name="outs")
    with pytest.raises(KDAuditError, match=r"model 'outs'.*30 rows.*\(40\)"):
        run([net(), short], DATA, progress=False)


def test_different_class_counts():
    with pytest.raises(KDAuditError, match=r"student 'student' with 4 classes.*teacher 'teacher' has 3"):
        run({"teacher": net(3), "student": net(4)}, DATA, progress=False)
    # declared counts are compared before any model is queried
    api = Api(probs)
    with pytest.raises(KDAuditError, match=r"student 'api' with 5 classes"):
        run({"teacher": TorchModel(net(3), n_classes=3), "api": BlackBoxModel(api, n_classes=5, name="api")},
            DATA, progress=False)
    assert api.calls == 0


def test_different_class_orders():
    teacher = TorchModel(net(), name="teacher", classes=["cat", "dog", "owl"])
    student = BlackBoxModel(Api(probs), n_classes=3, name="student", classes=["dog", "cat", "owl"])
    with pytest.raises(KDAuditError, match=r"model 'student' with classes \['dog', 'cat', 'owl'\] "
                                           r"\(in a different order\).*\['cat', 'dog', 'owl'\]"):
        run([teacher, student], DATA, progress=False)
    data = AuditData(X, classes=["owl", "dog", "cat"])
    with pytest.raises(KDAuditError, match=r"model 'teacher'.*class order of the data"):
        run([teacher], data, progress=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_outputs(bad):
    def fn(x):
        p = probs(x)
        if len(x) == 40:
            p[7, 1] = bad
        return p

    with pytest.raises(KDAuditError, match=r"outputs of model 'api'.*NaN or inf at row 7 \(sample id 7\)"):
        run([net(), BlackBoxModel(fn, n_classes=3, name="api")], DATA, batch_size=64, progress=False)


def test_probabilities_not_summing_to_one():
    def fn(x):
        p = probs(x)
        p[:, 0] *= 0.5
        return p

    with pytest.raises(KDAuditError, match=r"outputs of model 'half'.*a row summing to 0\.\d+ at row 0.*sum to 1"):
        run([net(), BlackBoxModel(fn, n_classes=3, name="half")], DATA, progress=False)
    # scores passed off as probabilities
    with pytest.raises(KDAuditError, match=r"model 'scores'.*values outside \[0, 1\] at row 0.*kind='logits'"):
        run([PrecomputedModel(np.full((40, 3), 2.0), name="scores")], DATA, progress=False)


def test_labels_out_of_range():
    labels = BlackBoxModel(lambda x: np.full(len(x), 5), n_classes=3, name="labeller", access="labels")
    with pytest.raises(KDAuditError, match=r"outputs of model 'labeller'.*label 5 at row 0.*\[0, 2\]"):
        run([net(), labels], DATA, progress=False)
    data = AuditData(X, y_true=np.arange(40) % 4)  # a 4th class the 3-class teacher cannot predict
    with pytest.raises(KDAuditError, match=r"'y_true' got 'label 3 at row 3'.*\[0, 2\].*teacher 'Sequential'"):
        run([net(3)], data, progress=False)


def test_empty_data():
    with pytest.raises(KDAuditError, match=r"'X' got 'an empty dataset'"):
        AuditData(np.empty((0, 4), dtype=np.float32))
    with pytest.raises(KDAuditError, match=r"'X' got 'an empty dataset'"):
        run([net()], np.empty((0, 4), dtype=np.float32), progress=False)
    with pytest.raises(KDAuditError, match=r"'models' got \[\]"):
        run([], DATA, progress=False)


def test_model_raising_mid_run_keeps_what_was_computed():
    def fn(x):
        if fn.rows >= 20:
            raise ValueError("model server returned 500")
        fn.rows += len(x)
        return probs(x)

    fn.rows = 0
    with pytest.raises(ModelExecutionError, match=r"model 'api' raised ValueError: model server returned 500 "
                                                  r"on rows 20:30 of 40; the 20 rows") as err:
        run([net(), BlackBoxModel(fn, n_classes=3, name="api")], DATA, batch_size=10, progress=False)
    e = err.value
    assert e.model == "api" and e.rows_done == 20
    np.testing.assert_allclose(e.partial["api"].probs, probs(X[:20]), rtol=1e-6)
    assert len(e.partial["Sequential"]) >= 20
    assert isinstance(e.__cause__, ValueError)
