"""Named architectures that weights-only files (state_dicts, safetensors) are loaded into.

A config file names the architecture as a string. Resolving any importable ``"module:callable"`` would let a
config run any function (``"os:system"``), so a name resolves through this registry; a dotted path is accepted
only for a model its caller declared trusted. Either way the built object must be a ``torch.nn.Module`` before any
weights are loaded into it.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable, Mapping

from kdaudit._exceptions import KDAuditError, invalid_argument

__all__ = ["architecture_names", "build_architecture", "is_registered", "register_architecture"]

_REGISTRY: dict[str, Callable[..., Any]] = {}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _builtins() -> dict[str, Callable[..., Any]]:
    # imported on first use: the networks import torch
    from kdaudit.models._networks import mlp, small_cnn

    return {"mlp": mlp, "small_cnn": small_cnn}


# The same built-ins under the dotted paths earlier configs used; they resolve without trust.
_ALIASES = {"kdaudit.distill:mlp": "mlp", "kdaudit.distill:small_cnn": "small_cnn",
            "kdaudit.distill._architectures:mlp": "mlp", "kdaudit.distill._architectures:small_cnn": "small_cnn"}


def register_architecture(name: str, factory: Callable[..., Any], *, replace: bool = False) -> None:
    """Make ``factory`` available as ``arch: name`` in configs and ``load_model(..., arch="name")``.

    Parameters
    ----------
    name : str
        Letters, digits, ``_``, ``.`` and ``-`` (no colon: a colon marks a dotted import path).
    factory : callable
        Called with the model's ``arch_kwargs``; must return a ``torch.nn.Module``.
    replace : bool
        Allow replacing an architecture registered under the same name.

    Examples
    --------
    >>> import torch
    >>> register_architecture("linear4x3", lambda: torch.nn.Linear(4, 3), replace=True)
    >>> "linear4x3" in architecture_names()
    True
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise invalid_argument("name", name, "a name of letters, digits, '_', '.' and '-' (no colon)")
    if not callable(factory):
        raise invalid_argument("factory", type(factory).__name__, "a callable returning a torch.nn.Module")
    if not _REGISTRY:
        _REGISTRY.update(_builtins())
    if name in _REGISTRY and not replace and _REGISTRY[name] is not factory:
        raise invalid_argument("name", name, f"a name not registered yet (pass replace=True to replace {name!r})")
    _REGISTRY[name] = factory


def architecture_names() -> tuple[str, ...]:
    """The registered architecture names, sorted."""
    if not _REGISTRY:
        _REGISTRY.update(_builtins())
    return tuple(sorted(_REGISTRY))


def is_registered(spec: str) -> bool:
    """``spec`` names a registered architecture (or one of the built-ins' former import paths)."""
    architecture_names()
    return _ALIASES.get(spec, spec) in _REGISTRY


def build_architecture(arch: Any, kwargs: Mapping[str, Any] | None = None, *, trust: bool = False,
                       what: str = "arch") -> Any:
    """The ``torch.nn.Module`` that ``arch`` names or builds.

    ``arch`` is an ``nn.Module`` (used as is), a callable (the caller's own code, called with ``kwargs``), a
    registered name, or, only with ``trust``, an import path ``"package.module:callable"``.
    """
    import torch

    kwargs = dict(kwargs or {})
    if isinstance(arch, torch.nn.Module):
        if kwargs:
            raise invalid_argument("arch_kwargs", kwargs, "nothing when arch is already a module")
        return arch
    if isinstance(arch, str):
        factory = _resolve(arch, trust=trust, what=what)
        label = arch
    elif callable(arch):
        factory, label = arch, getattr(arch, "__name__", type(arch).__name__)
    else:
        raise invalid_argument(what, type(arch).__name__, "an nn.Module, a callable returning one, or a "
                               "registered architecture name")
    try:
        module = factory(**kwargs)
    except TypeError as exc:  # a wrong or missing constructor argument
        raise KDAuditError(f"argument 'arch_kwargs' got {kwargs!r}; expected the arguments of {label!r} "
                           f"({exc})") from None
    if not isinstance(module, torch.nn.Module):
        raise invalid_argument(what, f"{label!r} returning a {type(module).__name__}",
                               "an architecture that builds a torch.nn.Module")
    return module


def _resolve(spec: str, *, trust: bool, what: str) -> Callable[..., Any]:
    names = architecture_names()
    key = _ALIASES.get(spec, spec)
    if key in _REGISTRY:
        return _REGISTRY[key]
    if ":" not in spec:
        from kdaudit._exceptions import did_you_mean

        raise invalid_argument(what, spec, f"a registered architecture ({', '.join(names)}; add your own with "
                               f"kdaudit.models.register_architecture){did_you_mean(spec, names)}")
    if not trust:
        raise invalid_argument(what, spec, f"a registered architecture ({', '.join(names)}); an import path "
                               "'package.module:callable' runs code named by the file's sender, so it is accepted "
                               "only for a trusted model (trust=True in Python, 'trust: true' on the model in a "
                               "config), or register the architecture with kdaudit.models.register_architecture")
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise invalid_argument(what, spec, f"an importable 'package.module:callable' ({exc})") from None
    if not callable(obj):
        raise invalid_argument(what, spec, "a callable returning a torch.nn.Module")
    return obj
