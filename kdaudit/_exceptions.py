"""Exceptions raised by kdaudit.

Hierarchy::

    KDAuditError (ValueError)          bad input: names the argument, the value and what is accepted
    ├── UnsafeModelFileError           a model file's format runs code on load (pickle, TorchScript, torch.export)
    ├── QueryBudgetExceededError       a black-box model was asked more than its query budget allows
    ├── ModelExecutionError            a model raised while the harness ran it; carries what was computed
    └── ConfigError                    an audit configuration or policy file is invalid

Every error is a ``ValueError`` so callers that already catch bad-input errors keep working.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = [
    "ConfigError",
    "KDAuditError",
    "ModelExecutionError",
    "QueryBudgetExceededError",
    "UnsafeModelFileError",
    "invalid_argument",
]


class KDAuditError(ValueError):
    """Invalid input or an audit that cannot proceed; the message says what was expected."""


class UnsafeModelFileError(KDAuditError):
    """This file's format can run code while loading (pickle, TorchScript, a torch.export archive, untrusted skops
    types) and the caller did not declare it trusted; the message says how to trust it in the interface in use."""


class QueryBudgetExceededError(KDAuditError):
    """A black-box model was asked for more queries than its budget allows."""

    def __init__(self, message: str, *, used: int = 0, budget: int = 0) -> None:
        super().__init__(message)
        self.used = used
        self.budget = budget


class ModelExecutionError(KDAuditError):
    """A model raised while the harness was running it.

    ``partial`` holds the outputs computed before the failure (also kept in the cache, so a re-run resumes).
    """

    def __init__(self, message: str, *, model: str = "", rows_done: int = 0, partial: Any = None) -> None:
        super().__init__(message)
        self.model = model
        self.rows_done = rows_done
        self.partial = partial


class ConfigError(KDAuditError):
    """An audit configuration or policy file is invalid."""


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid_argument(name: str, value: Any, accepted: str, *, cls: type[KDAuditError] = KDAuditError) -> KDAuditError:
    """Build the standard error: ``argument 'name' got <value>; expected <accepted>``.

    Use as ``raise invalid_argument("n_bins", n_bins, "an integer >= 1")``.
    """
    return cls(f"argument {name!r} got {_short(value)}; expected {accepted}")


def key_error(source: str, noun: str, path: str, value: Any, accepted: str) -> ConfigError:
    """The one shape of every config and policy error: where, which key, the value it got, what is accepted."""
    where = f"{source}: " if source else ""
    return ConfigError(f"{where}{noun} {path!r} got {_short(value)}; expected {accepted}")


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``: appended to an unknown-key message."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""
