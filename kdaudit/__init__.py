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

from kdaudit._audit import AuditResult, audit
from kdaudit._estimate import Estimate
from kdaudit._exceptions import (
    ConfigError,
    KDAuditError,
    ModelExecutionError,
    QueryBudgetExceededError,
    UnsafeModelFileError,
)
from kdaudit.data import AuditData
from kdaudit.distill import distill
from kdaudit.lineage import lineage_test
from kdaudit.metrics import Bootstrap
from kdaudit.models import as_model, load_model

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
