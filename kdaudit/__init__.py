"""kdaudit: audit knowledge-distilled models against their teachers."""

from kdaudit._estimate import Estimate
from kdaudit._exceptions import (
    ConfigError,
    KDAuditError,
    ModelExecutionError,
    QueryBudgetExceededError,
    UnsafeModelFileError,
)
from kdaudit.data._audit_data import AuditData

__version__ = "0.1.0"

__all__ = [
    "AuditData",
    "ConfigError",
    "Estimate",
    "KDAuditError",
    "ModelExecutionError",
    "QueryBudgetExceededError",
    "UnsafeModelFileError",
    "__version__",
]
