"""PyTorch modules (eager, TorchScript, torch.export) behind the model protocol."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit._io import recorded_path
from kdaudit.models._base import Access, ModelAdapter
from kdaudit.models._hashing import sha256_snapshot, snapshot_state_dict, tensor_items

__all__ = ["TorchModel", "normalize_precision"]

_PRECISIONS = {
    None: "fp32", "fp32": "fp32", "float32": "fp32",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
}
_OUTPUTS = ("logits", "probabilities")


def normalize_precision(precision: str | None) -> str:
    """Canonical precision name: "fp32" (no autocast), "bf16" or "fp16" (autocast)."""
    key = precision.lower() if isinstance(precision, str) else precision
    if key not in _PRECISIONS:
        raise invalid_argument("precision", precision, 'None, "fp32", "bf16" or "fp16"')
    return _PRECISIONS[key]


_TORCH: Any = None


def _torch() -> Any:
    # imported on first use so that `import kdaudit` stays fast for users without torch models
    global _TORCH
    if _TORCH is None:
        import torch

        _TORCH = torch
    return _TORCH


_QUANT_META = (".q_per_channel_scales", ".q_per_channel_zero_points")


def resolve_device(device: Any) -> Any:
    """``torch.device(device)``, or a KDAuditError when it is malformed or names CUDA on a machine without it."""
    torch = _torch()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise invalid_argument("device", device, '"cpu", "cuda" or "cuda:<index>"') from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise invalid_argument("device", str(device), '"cpu" (CUDA is not available on this machine)')
    return dev


class TorchModel(ModelAdapter):
    """A ``torch.nn.Module`` (eager, TorchScript, or the module of a ``torch.export`` program).

    Runs in eval mode under ``torch.inference_mode`` (the module's train/eval state is restored afterwards), on
    ``device``, optionally under autocast.

    Parameters
    ----------
    module : torch.nn.Module
    name : str, optional
        Default: the module's class name.
    n_classes : int, optional
        Default: the ``out_features`` of the last ``Linear`` layer, or the width of the first output.
    classes : sequence of str, optional
        Class names in output-column order.
    device : str or torch.device
        "cpu", "cuda", "cuda:1", ... The module is moved there (in place, as ``Module.to`` does).
    precision : {None, "fp32", "bf16", "fp16"}
        Mixed precision through ``torch.autocast``; outputs are always returned as float32.
    output : {"logits", "probabilities"}
        What the module's forward returns.
    """

    def __init__(self, module: Any, *, name: str | None = None, n_classes: int | None = None,
                 classes: Any = None, device: Any = "cpu", precision: str | None = None,
                 output: str = "logits", kind: str = "torch", source: str | None = None) -> None:
        torch = _torch()
        if not isinstance(module, torch.nn.Module):
            raise invalid_argument("module", type(module).__name__, "a torch.nn.Module")
        if output not in _OUTPUTS:
            raise invalid_argument("output", output, f"one of {_OUTPUTS}")
        self.module = module
        self.name = name or type(module).__name__
        self.classes = None if classes is None else tuple(str(c) for c in classes)
        if n_classes is None and self.classes is not None:
            n_classes = len(self.classes)
        self._n_classes_declared = n_classes is not None
        self.n_classes = int(n_classes) if n_classes is not None else _infer_n_classes(module)
        self.output = output
        self.kind = kind
        self.access = Access.PROBABILITIES
        self.source = source
        self.query_count = 0
        self.precision = normalize_precision(precision)
        self._fp: tuple[Any, str] | None = None
        self.device = torch.device("cpu")
        self.configure(device=device)

    # -- configuration -------------------------------------------------------------------------------
    def configure(self, *, device: Any = None, precision: str | None = None) -> TorchModel:
        """Move to ``device`` and/or switch precision (None leaves a setting as it is). Returns self."""
        torch = _torch()
        if device is not None:
            dev = resolve_device(device)
            if dev.type == "cuda" and dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())
            if dev != self.device:
                self.module.to(dev)
            self.device = dev
        if precision is not None:
            self.precision = normalize_precision(precision)
        return self

    # -- running -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[TorchModel]:
        """Eval mode and no autograd, entered once around many :meth:`forward_tensor` calls.

        Autocast is entered per forward instead, so models with different precisions can share one session.
        """
        torch = _torch()
        modes = [(m, m.training) for m in self.module.modules()]
        try:
            self.module.eval()
        except NotImplementedError:  # torch.export modules refuse eval(); they are traced in eval mode already
            pass
        try:
            with torch.inference_mode():
                yield self
        finally:
            for m, was_training in modes:
                m.training = was_training

    def _autocast(self) -> Any:
        torch = _torch()
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def input_dtype(self) -> Any:
        """dtype floating inputs are cast to: the module's first floating parameter's, else float32."""
        torch = _torch()
        for p in self.module.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def to_tensor(self, X: Any, *, dtype: Any = None) -> Any:
        """A batch as a CPU (or already on-device) tensor with floating data in ``dtype`` (default:
        :meth:`input_dtype`)."""
        torch = _torch()
        if isinstance(X, torch.Tensor):
            t = X
        else:
            if hasattr(X, "to_numpy"):  # pandas
                X = X.to_numpy()
            arr = np.ascontiguousarray(X)
            if not arr.flags.writeable:  # read-only memmaps: torch wants writable memory; a batch is small
                arr = arr.copy()
            t = torch.from_numpy(arr)
        if t.is_floating_point():
            dt = dtype if dtype is not None else self.input_dtype()
            if t.dtype != dt:
                t = t.to(dt)
        return t

    def to_device(self, t: Any) -> Any:
        """Host -> device copy; from pinned memory and asynchronous on CUDA."""
        if self.device.type == "cuda" and t.device.type == "cpu":
            if not t.is_pinned():
                t = t.pin_memory()
            return t.to(self.device, non_blocking=True)
        return t.to(self.device)

    def forward_tensor(self, x: Any) -> Any:
        """Forward a device tensor inside :meth:`session`; float32 (n, C) output left on the device."""
        torch = _torch()
        with self._autocast():
            out = self.module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        elif isinstance(out, dict):  # e.g. {"logits": ...}
            out = out.get("logits", next(iter(out.values())))
        if not isinstance(out, torch.Tensor):
            raise invalid_argument(f"output of model {self.name!r}", type(out).__name__,
                                   "a tensor of shape (n, n_classes)")
        if out.ndim == 1:  # a single binary logit per row
            out = torch.stack([torch.zeros_like(out), out], dim=1)
        self.query_count += int(out.shape[0])
        return out.float()

    def predict(self, X: Any) -> np.ndarray:
        with self.session():
            out = self.forward_tensor(self.to_device(self.to_tensor(X)))
        return out.cpu().numpy()

    # -- identity and cost ---------------------------------------------------------------------------
    def fingerprint(self) -> str:
        return self.fingerprint_later()()

    def fingerprint_later(self) -> Callable[[], str]:
        """Snapshot the weights now; return a function that hashes the snapshot (safe to call in a thread).

        The hash is remembered while no weight tensor changes (same storage, same in-place version counter),
        so repeated runs over an unchanged model do not rehash it.
        """
        sd = self.module.state_dict()
        torch = _torch()
        sig = tuple((k, t.data_ptr(), t._version, t.device.type) for k, t in sd.items()
                    if isinstance(t, torch.Tensor))
        if self._fp is not None and self._fp[0] == sig:
            known = self._fp[1]
            return lambda: known
        if not sd:  # a module without weights is identified by its code
            import hashlib

            known = hashlib.sha256(repr(self.module).encode()).hexdigest()
            return lambda: known
        snap = snapshot_state_dict(sd)

        def finish() -> str:
            sha = sha256_snapshot(snap)
            self._fp = (sig, sha)
            return sha

        return finish

    def n_parameters(self) -> int:
        torch = _torch()
        # dynamically quantized layers hold weight and bias as packed params, not as nn.Parameters
        packed = sum(t.numel() for k, t in tensor_items(self.module.state_dict().items())
                     if "._packed_params." in k and isinstance(t, torch.Tensor) and not k.endswith(_QUANT_META))
        return int(sum(p.numel() for p in self.module.parameters()) + packed)

    def size_bytes(self) -> int:
        torch = _torch()
        return int(sum(t.numel() * t.element_size() for _, t in tensor_items(self.module.state_dict().items())
                       if isinstance(t, torch.Tensor)))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"device": str(self.device), "precision": self.precision, "output": self.output})
        if self.source:
            d["source"] = recorded_path(self.source)
        return d

    def __repr__(self) -> str:
        return f"TorchModel(name={self.name!r}, kind={self.kind!r}, device={str(self.device)!r}, " \
               f"precision={self.precision!r})"


def _infer_n_classes(module: Any) -> int:
    """out_features of the last layer that declares one; 0 when unknown (the harness reads the output width)."""
    last = 0
    for m in module.modules():
        n = getattr(m, "out_features", None)
        if isinstance(n, int):
            last = n
    return last
