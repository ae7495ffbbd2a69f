"""kdaudit: audit knowledge-distilled models against their teachers.

The public API, one place each:

* data: :class:`AuditData`, loaders in :mod:`kdaudit.data`;
* models: :func:`load_model` (safe by default), :func:`as_model`, adapters in :mod:`kdaudit.models`;
* harness: :func:`kdaudit.harness.run` runs every model over identical rows;
* metrics: :mod:`kdaudit.metrics` (functions and mergeable accumulators, :class:`Bootstrap` intervals);
* lineage: :func:`lineage_test`, :mod:`kdaudit.lineage`;
* distillation: :func:`distill` (Hinton KD through the harness) and its helpers on the same name;
* audits: :func:`audit` returns an :class:`AuditResult` (JSON, HTML report, DataFrame, gate findings).
"""

from typing import TYPE_CHECKING, Any

from kdaudit._estimate import Estimate
from kdaudit._exceptions import (
    ConfigError,
    KDAuditError,
    ModelExecutionError,
    QueryBudgetExceededError,
    UnsafeModelFileError,
)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs; at run time these load on first use
    from kdaudit._audit import AuditResult, audit
    from kdaudit.data import AuditData
    from kdaudit.distill import distill
    from kdaudit.lineage import lineage_test
    from kdaudit.metrics import Bootstrap
    from kdaudit.models import as_model, load_model

# The heavy parts (torch, scipy, scikit-learn) load on first use, so ``kdaudit gate`` and ``import kdaudit`` start in
# a fraction of a second: attribute -> module that defines it.
_LAZY = {
    "AuditResult": "kdaudit._audit",
    "audit": "kdaudit._audit",
    "AuditData": "kdaudit.data",
    "distill": "kdaudit.distill",
    "lineage_test": "kdaudit.lineage",
    "Bootstrap": "kdaudit.metrics",
    "as_model": "kdaudit.models",
    "load_model": "kdaudit.models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kdaudit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "AuditData",
    "AuditResult",
    "Bootstrap",
    "ConfigError",
    "Estimate",
    "KDAuditError",
    "ModelExecutionError",
    "QueryBudgetExceededError",
    "UnsafeModelFileError",
    "__version__",
    "as_model",
    "audit",
    "distill",
    "lineage_test",
    "load_model",
]
