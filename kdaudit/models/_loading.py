"""Safe loading of model files, and wrapping of in-memory models.

Model files handed over by a suspect are untrusted. Python pickle (``.pkl``, ``.joblib``, a torch file holding a
pickled module) runs code while it loads, so it is refused unless the caller passes ``trust=True``. Everything else
loads through formats that cannot run code at load time: torch weights-only unpickling, TorchScript,
``torch.export``, skops (with its untrusted-type check), ONNX, safetensors, numpy/CSV/Parquet arrays.
"""

from __future__ import annotations

import os
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kdaudit._exceptions import KDAuditError, UnsafeModelFileError, invalid_argument
from kdaudit.models._base import ModelAdapter
from kdaudit.models._ensemble import EnsembleModel
from kdaudit.models._hashing import sha256_file

__all__ = ["SAFE_FORMATS", "as_model", "detect_format", "load_model"]

SAFE_FORMATS = ("skops (skops.io.dump) or ONNX for scikit-learn models; a state_dict (torch.save(model."
                "state_dict())), safetensors, TorchScript (torch.jit.save) or torch.export (.pt2) for torch models")

_TORCH_EXTS = {".pt", ".pth", ".bin", ".ckpt", ".tar"}
_PICKLE_EXTS = {".pkl", ".pickle", ".joblib", ".jl", ".sav", ".dill", ".cloudpickle"}
_OUTPUT_EXTS = {".npy", ".npz", ".csv", ".parquet"}
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a model file, by content first and extension second.

    One of "torch", "torchscript", "torch_export", "skops", "onnx", "safetensors", "pickle", "outputs".
    """
    path = Path(path)
    ext = path.suffix.lower()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if "schema.json" in names:
            return "skops"
        if any("/code/" in n for n in names):
            return "torchscript"
        if ext == ".pt2" or any(n.endswith(("serialized_exported_program.json", "/models/model.json"))
                                for n in names):
            return "torch_export"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "outputs"
    if ext in _OUTPUT_EXTS:
        return "outputs"
    if ext == ".onnx":
        return "onnx"
    if ext == ".safetensors":
        return "safetensors"
    if ext in _TORCH_EXTS:
        return "torch"  # the legacy (non-zip) torch format; weights-only unpickling refuses code
    with open(path, "rb") as fh:
        head = fh.read(2)
    if ext in _PICKLE_EXTS or head[:1] == b"\x80":
        return "pickle"
    raise invalid_argument("path", str(path), "a model file: .pt/.pth (torch), TorchScript, .pt2 (torch.export), "
                           ".skops, .onnx, .safetensors, or outputs (.npy, .npz, .csv, .parquet)")


def load_model(path: str | os.PathLike[str], *, name: str | None = None, trust: bool = False, arch: Any = None,
               **kwargs: Any) -> ModelAdapter:
    """Load a model (or precomputed outputs) from a file, without running code from the file.

    Parameters
    ----------
    path : str or Path
    name : str, optional
        Default: the file name without extension.
    trust : bool
        Allow formats that execute code while loading (pickle, joblib, torch files holding pickled modules,
        skops files with types outside skops' trusted set). Only for files from a source you trust.
    arch : torch.nn.Module or callable returning one, optional
        The architecture a weights-only file (state_dict ``.pt``, ``.safetensors``) is loaded into.
    **kwargs
        Passed to the adapter: ``device``, ``precision``, ``output``, ``n_classes``, ``classes`` for torch;
        ``output``, ``output_name`` for ONNX; ``kind``, ``id_column`` for precomputed outputs.

    Raises
    ------
    UnsafeModelFileError
        The file needs pickle (or untrusted skops types) to load and ``trust`` is False.
    KDAuditError
        The file is missing, of an unknown format, or a state_dict comes without ``arch``.
    """
    p = Path(path)
    if not p.is_file():
        raise invalid_argument("path", str(path), "an existing model file")
    model = _load(p, name or p.stem, trust, arch, kwargs)
    model.file_sha256 = sha256_file(p)  # the file as received, for the provenance next to the weights hash
    return model


def _load(p: Path, name: str, trust: bool, arch: Any, kwargs: dict[str, Any]) -> ModelAdapter:
    fmt = detect_format(p)
    if fmt == "outputs":
        from kdaudit.models._precomputed import PrecomputedModel

        return PrecomputedModel.from_file(p, name=name, **kwargs)
    if fmt == "onnx":
        from kdaudit.models._onnx import OnnxModel

        return OnnxModel(p, name=name, **kwargs)
    if fmt == "skops":
        return _load_skops(p, name, trust, kwargs)
    if fmt == "pickle":
        if not trust:
            raise UnsafeModelFileError(
                f"refusing to load {str(p)!r}: it is a Python pickle, and unpickling runs whatever code the file "
                f"names. Ask for the model in a safe format: {SAFE_FORMATS}. Pass trust=True only if you trust "
                "the file's source.")
        with open(p, "rb") as fh:
            if p.suffix.lower() in (".joblib", ".jl"):
                import joblib

                obj = joblib.load(fh)
            else:
                obj = pickle.load(fh)  # noqa: S301 - the caller declared the file trusted
        return as_model(obj, name=name, **kwargs)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        return _torch_from_state_dict(load_file(str(p)), p, name, arch, kwargs)
    from kdaudit.models._torch import TorchModel

    import torch

    if fmt == "torchscript":
        with warnings.catch_warnings():
            # torch deprecates TorchScript for new work; an auditor still has to read the files it receives
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(p), map_location="cpu")
        return TorchModel(module, name=name, kind="torchscript", source=str(p), **kwargs)
    if fmt == "torch_export":
        unsafe = [] if trust else _export_archive_pickles(p)
        if unsafe:
            raise UnsafeModelFileError(
                f"refusing to load {str(p)!r}: this torch.export archive holds parts that torch.export.load "
                f"unpickles with full pickle or runs as native code ({', '.join(unsafe[:5])}"
                f"{', ...' if len(unsafe) > 5 else ''}), which can run code. Ask for {SAFE_FORMATS}. Pass "
                "trust=True only if you trust the file's source.")
        program = torch.export.load(str(p))
        return TorchModel(program.module(), name=name, kind="torch_export", source=str(p), **kwargs)
    # fmt == "torch"
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise UnsafeModelFileError(
                f"refusing to load {str(p)!r}: besides tensors it holds pickled Python objects (a whole module "
                f"or other classes), and unpickling those runs code. Ask for {SAFE_FORMATS}. Pass trust=True "
                f"only if you trust the file's source. (torch said: {str(exc).splitlines()[0][:200]})") from None
        obj = torch.load(str(p), map_location="cpu", weights_only=False)  # noqa: S614 - declared trusted
    if isinstance(obj, torch.nn.Module):
        return TorchModel(obj, name=name, source=str(p), **kwargs)
    sd = _find_state_dict(obj)
    if sd is None:
        raise invalid_argument("path", f"{p.name} holding a {type(obj).__name__}",
                               "a torch file holding a state_dict, a checkpoint dict with a 'state_dict' entry, "
                               "or (with trust=True) a pickled nn.Module")
    return _torch_from_state_dict(sd, p, name, arch, kwargs)


def _export_archive_pickles(p: Path) -> list[str]:
    """Members of a torch.export archive that loading it would unpickle beyond what weights-only allows.

    ``torch.export.load`` reads some payloads (pickled weights and constants, sample inputs, legacy-format state
    dicts) with ``torch.load(weights_only=False)`` or ``pickle.loads``, so an archive is only safe when each of those
    also loads weights-only; opaque/custom objects and AOTInductor libraries never are.
    """
    import io
    import json

    import torch

    suspect: list[str] = []
    to_check: set[str] = set()
    with zipfile.ZipFile(p) as zf:
        names = zf.namelist()
        for n in names:
            base = n.rsplit("/", 1)[-1]
            if "data/aotinductor/" in n or base.startswith(("opaque_obj_", "custom_obj_")):
                suspect.append(n)
            elif n.endswith(".pt") or base in ("serialized_state_dict.json", "serialized_constants.json"):
                to_check.add(n)
            elif n.endswith(("_weights_config.json", "_constants_config.json")):
                folder = n.rsplit("/", 1)[0] if "/" in n else ""
                try:
                    config = json.loads(zf.read(n))["config"]
                    pickled = [m["path_name"] for m in config.values() if m.get("use_pickle")]
                except (ValueError, KeyError, TypeError, AttributeError):
                    suspect.append(n)  # unreadable: torch would fail on it anyway, refuse rather than guess
                    continue
                to_check.update(f"{folder}/{name}" if folder else name for name in pickled)
        for n in sorted(to_check):
            if n in names and zf.getinfo(n).file_size == 0:
                continue  # an empty payload is read as {} without unpickling
            try:
                torch.load(io.BytesIO(zf.read(n)), map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - anything weights-only refuses (or a missing member) is suspect
                suspect.append(n)
    return suspect


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


def _torch_from_state_dict(sd: dict[str, Any], p: Path, name: str, arch: Any, kwargs: dict[str, Any]
                           ) -> ModelAdapter:
    import torch

    from kdaudit.models._torch import TorchModel

    if arch is None:
        raise invalid_argument("arch", None, f"an nn.Module (or a function returning one) to load the weights in "
                               f"{p.name} into: the file holds a state_dict ({len(sd)} tensors), not an "
                               "architecture")
    module = arch if isinstance(arch, torch.nn.Module) else arch()
    if not isinstance(module, torch.nn.Module):
        raise invalid_argument("arch", type(module).__name__, "an nn.Module or a function returning one")
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise KDAuditError(f"argument 'arch' got a {type(module).__name__} that does not match the weights in "
                           f"{p.name}: {str(exc)[:500]}") from None
    return TorchModel(module, name=name, source=str(p), **kwargs)


def _load_skops(p: Path, name: str, trust: bool, kwargs: dict[str, Any]) -> ModelAdapter:
    import skops.io as sio

    from kdaudit.models._sklearn import SklearnModel

    untrusted = sio.get_untrusted_types(file=str(p))
    if untrusted and not trust:
        raise UnsafeModelFileError(
            f"refusing to load {str(p)!r}: it contains types skops does not trust by default "
            f"({', '.join(untrusted[:8])}{', ...' if len(untrusted) > 8 else ''}); building them may run their "
            "code. Inspect them, then pass trust=True if you trust the file's source.")
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
