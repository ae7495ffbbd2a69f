"""kdaudit: audit knowledge-distilled models against their teachers.

The public API, one place each:

* data: :class:`AuditData`, loaders in :mod:`kdaudit.data`;
* models: :func:`load_model` (safe by default), :func:`as_model`, adapters in :mod:`kdaudit.models`;
* harness: :func:`kdaudit.harness.run` runs every model over identical rows;
* metrics: :mod:`kdaudit.metrics` (functions and mergeable accumulators, :class:`Bootstrap` intervals);
* sections: :mod:`kdaudit.sections` (the registry of audit sections, entry-point group ``kdaudit.sections``);
* lineage: :func:`lineage_test`, :mod:`kdaudit.lineage`;
* distillation: :func:`distill` (Hinton KD through the harness) and its helpers on the same name;
* audits: :func:`audit` returns an :class:`AuditResult` (JSON, HTML report, DataFrame, gate findings).

``import kdaudit`` is light: torch, scipy and scikit-learn load on first use of a name that needs them, so
``kdaudit --help`` and ``kdaudit gate`` never load them.
"""

import sys as _sys
import types as _types
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

from kdaudit._version import __version__

# attribute -> the module that defines it, imported on first use
_LAZY = {
    "AuditData": "kdaudit.data",
    "AuditResult": "kdaudit._audit",
    "Bootstrap": "kdaudit.metrics._resampling",
    "as_model": "kdaudit.models",
    "audit": "kdaudit._audit",
    "distill": "kdaudit.distill._train",
    "lineage_test": "kdaudit.lineage",
    "load_model": "kdaudit.models",
}
# Documented functions that share their name with a subpackage. Importing a subpackage makes Python bind it on its
# parent (``setattr(kdaudit, "distill", <module kdaudit.distill>)``), which would replace the documented function
# ``kdaudit.distill``; the module class below keeps the function. The subpackage stays importable
# (``from kdaudit.distill import mlp``, ``import kdaudit.distill._train``): imports resolve through sys.modules.
_FUNCTIONS_OVER_SUBPACKAGES = frozenset({"distill"})


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        import importlib

        # a subpackage not imported yet (``kdaudit.harness``, ``kdaudit.metrics``...) loads on first access
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(_types.ModuleType):
    """The ``kdaudit`` module: a documented function is never replaced by the subpackage of the same name."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FUNCTIONS_OVER_SUBPACKAGES and isinstance(value, _types.ModuleType):
            return  # the import system binding the subpackage: the function keeps the name
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

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
