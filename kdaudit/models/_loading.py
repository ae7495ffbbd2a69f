"""Loading of model files that may come from a hostile party, and wrapping of in-memory models.

What a file may do is decided by its format, detected from its content (never from its name):

====================================  ==========================================================================
format                                untrusted (the default)
====================================  ==========================================================================
pickle (.pkl, .joblib, ...), a torch  refused: unpickling runs whatever code the file names
file holding pickled objects
TorchScript (``torch.jit.save``)      refused: ``torch.jit.load`` runs the archive's compiled ``__setstate__``
                                      methods, which can write files (``torch.save``) on load
torch.export archive (``.pt2``)       refused: ``torch.export.load`` unpickles constants and opaque objects and
                                      may load native code (AOTInductor)
state_dict (``torch.save``) or        loaded: tensors only (torch's weights-only unpickler), into an
safetensors, with ``arch``            architecture from the registry (:func:`register_architecture`)
ONNX                                  loaded: onnxruntime, no custom-op libraries, external data only inside
                                      the model's folder
skops                                 loaded when every type is in skops' trusted set, else refused
outputs (.npy/.npz/.csv/.parquet)     loaded: plain arrays only (no pickle), within the read limits
====================================  ==========================================================================

``trust=True`` (``trust: true`` on a model in a config; ``--trust-<role>`` on the command line) allows the
refused formats for that one model: only for files from a source you trust.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from kdaudit._exceptions import KDAuditError, UnsafeModelFileError, invalid_argument
from kdaudit.models._base import ModelAdapter
from kdaudit.models._ensemble import EnsembleModel
from kdaudit.models._hashing import sha256_file

__all__ = ["SAFE_FORMATS", "as_model", "detect_format", "load_model"]

SAFE_FORMATS = ("skops (skops.io.dump) or ONNX for scikit-learn models; a state_dict (torch.save(model."
                "state_dict())) or safetensors with a registered architecture, or ONNX, for torch models")

_TORCH_EXTS = {".pt", ".pth", ".bin", ".ckpt", ".tar"}
_PICKLE_EXTS = {".pkl", ".pickle", ".joblib", ".jl", ".sav", ".dill", ".cloudpickle"}
_OUTPUT_EXTS = {".npy", ".npz", ".csv", ".parquet"}
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")

#: What each format is, for messages.
FORMAT_NAMES = {
    "torch": "a torch state_dict file (torch.save)",
    "torchscript": "a TorchScript archive (torch.jit.save)",
    "torch_export": "a torch.export archive (torch.export.save, .pt2)",
    "skops": "a skops file (skops.io.dump)",
    "onnx": "an ONNX model",
    "safetensors": "a safetensors file",
    "pickle": "a Python pickle",
    "outputs": "precomputed outputs (.npy, .npz, .csv or .parquet)",
}
#: Formats whose loading can run code or touch the file system: refused unless the model is trusted.
CODE_FORMATS = ("pickle", "torchscript", "torch_export")
_WHY = {
    "pickle": "unpickling runs whatever code the file names",
    "torchscript": "torch.jit.load runs the archive's compiled methods (such as __setstate__), which can run "
                   "code and write files while the file loads",
    "torch_export": "torch.export.load unpickles parts of the archive (constants, opaque objects, sample inputs) "
                    "and can load native libraries, which runs code",
}


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a model file, from its content (the extension only tells formats without a signature apart).

    One of "torch", "torchscript", "torch_export", "skops", "onnx", "safetensors", "pickle", "outputs".

    Archive member names are compared case-insensitively, as torch's own archive reader does: an archive cannot
    pass for another format by changing letter case.
    """
    path = Path(path)
    ext = path.suffix.lower()
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(16)
        is_zip = zipfile.is_zipfile(path)
        names = []
        if is_zip:
            with zipfile.ZipFile(path) as zf:
                names = [n.lower().replace("\\", "/") for n in zf.namelist()]
    except (OSError, zipfile.BadZipFile) as exc:
        raise KDAuditError(f"model file {str(path)!r} could not be read: {type(exc).__name__}: {exc}") from None
    if is_zip:
        base = {n.rsplit("/", 1)[-1] for n in names}
        if any(n == "schema.json" for n in names):
            return "skops"
        if ext == ".pt2" or any(("archive_format" in base, "serialized_exported_program.json" in base,
                                 any("/aotinductor/" in n or n.startswith("aotinductor/") for n in names),
                                 any("/models/" in n and n.endswith(".json") for n in names))):
            return "torch_export"
        # TorchScript: <folder>/constants.pkl and compiled code under <folder>/code/ (the folder is named after the
        # file, so a torch.save file called code.pt is not mistaken for one)
        if "constants.pkl" in base or any(n.split("/")[1:2] == ["code"] for n in names if n.count("/") >= 2):
            return "torchscript"
        if "data.pkl" in base:
            return "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "outputs"
        raise invalid_argument("path", str(path), "a model file; this zip archive is none of TorchScript, "
                               "torch.export, a torch state_dict, skops or .npz outputs")
    if _is_safetensors(head, size):
        return "safetensors"
    if head.startswith(b"\x93NUMPY") or head.startswith(b"PAR1") or ext in (".csv", ".parquet"):
        return "outputs"
    if ext == ".onnx":
        return "onnx"  # protobuf has no signature
    if ext in _TORCH_EXTS:
        return "torch"  # the legacy (non-zip) torch format; weights-only unpickling refuses code
    if ext in _PICKLE_EXTS or head[:1] == b"\x80":
        return "pickle"
    if ext in _OUTPUT_EXTS or ext == ".safetensors":
        raise invalid_argument("path", str(path), f"a valid {ext} file (its content does not match the name)")
    raise invalid_argument("path", str(path), "a model file: .pt/.pth (torch state_dict), .safetensors, .onnx, "
                           ".skops, or outputs (.npy, .npz, .csv, .parquet); with trust, also TorchScript, .pt2 "
                           "(torch.export) and pickle")


def _is_safetensors(head: bytes, size: int) -> bool:
    # 8-byte little-endian header length, then a JSON header
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def load_model(path: str | os.PathLike[str], *, name: str | None = None, trust: bool = False, arch: Any = None,
               arch_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> ModelAdapter:
    """Load a model (or precomputed outputs) from a file, without running code from the file.

    Parameters
    ----------
    path : str or Path
    name : str, optional
        Default: the file name without extension.
    trust : bool
        This one file comes from a source you trust: allow the formats that run code while loading (pickle,
        TorchScript, torch.export archives, skops files with types outside skops' trusted set) and an ``arch``
        given as an import path. See the module docstring for what each format may do.
    arch : torch.nn.Module, callable returning one, or str, optional
        The architecture a weights-only file (state_dict ``.pt``, ``.safetensors``) is loaded into: a module, your
        own factory function, a registered name (:func:`~kdaudit.models.register_architecture`; built in: "mlp",
        "small_cnn"), or, only with ``trust``, ``"package.module:callable"``.
    arch_kwargs : dict, optional
        Arguments of the architecture's factory.
    **kwargs
        Passed to the adapter: ``device``, ``precision``, ``output``, ``n_classes``, ``classes`` for torch;
        ``output``, ``output_name``, ``device`` for ONNX; ``kind``, ``id_column`` for precomputed outputs.

    Raises
    ------
    UnsafeModelFileError
        The file's format can run code on load (see above) and ``trust`` is False; the message names the file, the
        detected format and how to trust it.
    KDAuditError
        The file is missing, malformed, of an unknown format, or a state_dict comes without a usable ``arch``.
    """
    hint = kwargs.pop("_trust_hint", "trust=True")
    p = Path(path)
    if not p.is_file():
        raise invalid_argument("path", str(path), "an existing model file")
    fmt = detect_format(p)
    if fmt in CODE_FORMATS and not trust:
        raise _unsafe(p, fmt, _WHY[fmt], hint)
    with _readable(p, fmt):
        model = _load(p, fmt, name or p.stem, trust, arch, arch_kwargs, kwargs, hint)
    model.file_sha256 = sha256_file(p)  # the file as received, for the provenance next to the weights hash
    model.file_size_bytes = p.stat().st_size  # on disk; size_bytes() is the weights in memory
    return model


def _unsafe(p: Path, fmt: str, why: str, hint: str) -> UnsafeModelFileError:
    return UnsafeModelFileError(
        f"refusing to load {str(p)!r}: it is {FORMAT_NAMES[fmt]}, and {why}. Ask for the model in a safe format: "
        f"{SAFE_FORMATS}. Only if you trust this file's source, allow it with {hint}.")


@contextlib.contextmanager
def _readable(p: Path, fmt: str) -> Iterator[None]:
    """Any failure of a third-party reader on a malformed file becomes a KDAuditError naming the file."""
    try:
        yield
    except KDAuditError:
        raise
    except (ImportError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - readers raise anything on hostile bytes (protobuf, safetensors, ...)
        text = " ".join(str(exc).split())
        raise KDAuditError(f"model file {str(p)!r} could not be loaded as {FORMAT_NAMES[fmt]}: "
                           f"{type(exc).__name__}: {text[:300]}") from None


def _load(p: Path, fmt: str, name: str, trust: bool, arch: Any, arch_kwargs: Any, kwargs: dict[str, Any],
          hint: str) -> ModelAdapter:
    if fmt == "outputs":
        from kdaudit.models._precomputed import PrecomputedModel

        return PrecomputedModel.from_file(p, name=name, **kwargs)
    if fmt == "onnx":
        from kdaudit.models._onnx import OnnxModel

        return OnnxModel(p, name=name, **kwargs)
    if fmt == "skops":
        return _load_skops(p, name, trust, kwargs, hint)
    if fmt == "pickle":  # trusted (checked by the caller)
        with open(p, "rb") as fh:
            if p.suffix.lower() in (".joblib", ".jl"):
                import joblib

                obj = joblib.load(fh)
            else:
                obj = pickle.load(fh)  # noqa: S301 - the caller declared the file trusted
        return as_model(obj, name=name, **kwargs)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        return _torch_from_state_dict(load_file(str(p)), p, name, arch, arch_kwargs, trust, kwargs)
    import torch

    from kdaudit.models._torch import TorchModel

    if fmt == "torchscript":  # trusted
        with warnings.catch_warnings():
            # torch deprecates TorchScript for new work; an auditor still has to read the files it receives
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(p), map_location="cpu")
        return TorchModel(module, name=name, kind="torchscript", source=str(p), **kwargs)
    if fmt == "torch_export":  # trusted
        program = torch.export.load(str(p))
        return TorchModel(program.module(), name=name, kind="torch_export", source=str(p), **kwargs)
    # fmt == "torch": tensors through the weights-only unpickler
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise UnsafeModelFileError(
                f"refusing to load {str(p)!r}: it is a torch file that besides tensors holds pickled Python "
                f"objects (a whole module or other classes), and unpickling those runs code. Ask for the model in "
                f"a safe format: {SAFE_FORMATS}. Only if you trust this file's source, allow it with {hint}. "
                f"(torch said: {str(exc).splitlines()[0][:200]})") from None
        obj = torch.load(str(p), map_location="cpu", weights_only=False)  # noqa: S614 - declared trusted
    if isinstance(obj, torch.nn.Module):
        return TorchModel(obj, name=name, source=str(p), **kwargs)
    sd = _find_state_dict(obj)
    if sd is None:
        raise invalid_argument("path", f"{p.name} holding a {type(obj).__name__}",
                               "a torch file holding a state_dict, a checkpoint dict with a 'state_dict' entry, "
                               "or (with trust) a pickled nn.Module")
    return _torch_from_state_dict(sd, p, name, arch, arch_kwargs, trust, kwargs)


def _find_state_dict(obj: Any) -> dict[str, Any] | None:
    import torch

    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in _STATE_DICT_KEYS:
            if key in obj:
                found = _find_state_dict(obj[key])
                if found is not None:
                    return found
    return None


def _torch_from_state_dict(sd: dict[str, Any], p: Path, name: str, arch: Any, arch_kwargs: Any, trust: bool,
                           kwargs: dict[str, Any]) -> ModelAdapter:
    from kdaudit.models._architectures import build_architecture
    from kdaudit.models._torch import TorchModel

    if arch is None:
        raise invalid_argument("arch", None, f"an nn.Module, a function returning one, or a registered "
                               f"architecture name, to load the weights in {p.name} into: the file holds a "
                               f"state_dict ({len(sd)} tensors), not an architecture")
    module = build_architecture(arch, arch_kwargs, trust=trust)  # checked to be an nn.Module first
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise KDAuditError(f"argument 'arch' got a {type(module).__name__} that does not match the weights in "
                           f"{p.name}: {str(exc)[:500]}") from None
    return TorchModel(module, name=name, source=str(p), **kwargs)


def _load_skops(p: Path, name: str, trust: bool, kwargs: dict[str, Any], hint: str) -> ModelAdapter:
    import skops.io as sio

    from kdaudit.models._sklearn import SklearnModel

    untrusted = sio.get_untrusted_types(file=str(p))
    if untrusted and not trust:
        raise UnsafeModelFileError(
            f"refusing to load {str(p)!r}: it is {FORMAT_NAMES['skops']} containing types skops does not trust by "
            f"default ({', '.join(untrusted[:8])}{', ...' if len(untrusted) > 8 else ''}); building them may run "
            f"their code. Inspect them; only if you trust this file's source, allow it with {hint}.")
    est = sio.load(str(p), trusted=untrusted or None)
    return SklearnModel(est, name=name, source=str(p), **kwargs)


def as_model(obj: Any, *, name: str | None = None, **kwargs: Any) -> ModelAdapter:
    """Wrap ``obj`` in the matching adapter.

    ============================================  ==================================
    ``obj``                                       adapter
    ============================================  ==================================
    a ``ModelAdapter``                            itself (renamed when ``name`` is given)
    ``torch.nn.Module`` (incl. TorchScript)       :class:`TorchModel`
    fitted scikit-learn classifier                :class:`SklearnModel`
    str or path                                   :func:`load_model` (untrusted)
    numpy array                                   :class:`PrecomputedModel`
    list or tuple of models                       :class:`EnsembleModel`
    other callable                                :class:`BlackBoxModel` (give ``n_classes=``)
    ============================================  ==================================
    """
    if isinstance(obj, ModelAdapter):
        if name is not None:
            obj.name = name
        return obj
    torch = sys.modules.get("torch")  # an nn.Module can only exist if torch is already imported
    if torch is not None and isinstance(obj, torch.nn.Module):
        from kdaudit.models._torch import TorchModel

        return TorchModel(obj, name=name, **kwargs)
    if isinstance(obj, (str, os.PathLike)):
        return load_model(obj, name=name, **kwargs)
    if hasattr(obj, "predict_proba") or hasattr(obj, "decision_function"):  # SklearnModel checks it is fitted
        from kdaudit.models._sklearn import SklearnModel

        return SklearnModel(obj, name=name, **kwargs)
    if isinstance(obj, np.ndarray):
        from kdaudit.models._precomputed import PrecomputedModel

        return PrecomputedModel(obj, name=name or "precomputed", **kwargs)
    if isinstance(obj, (list, tuple)):
        return EnsembleModel(obj, name=name or "ensemble", **kwargs)
    if callable(obj):
        from kdaudit.models._blackbox import BlackBoxModel

        if "n_classes" not in kwargs:
            raise invalid_argument("n_classes", None, "the number of classes, to wrap a callable as a black box")
        return BlackBoxModel(obj, name=name or getattr(obj, "__name__", "blackbox"), **kwargs)
    raise invalid_argument("model", type(obj).__name__,
                           "a ModelAdapter, torch.nn.Module, fitted scikit-learn classifier, model file path, "
                           "numpy array of outputs, list of models (ensemble) or callable")


EnsembleModel.wrap_member = staticmethod(as_model)  # an ensemble's raw members are wrapped like any model
