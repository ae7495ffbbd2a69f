"""ONNX models through onnxruntime."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from kdaudit._exceptions import invalid_argument
from kdaudit._io import recorded_path
from kdaudit.models._base import Access, ModelAdapter
from kdaudit.models._hashing import sha256_file

__all__ = ["OnnxModel"]

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}


class OnnxModel(ModelAdapter):
    """An ONNX file run by onnxruntime (CPU, or CUDA when ``device="cuda"`` and the provider exists).

    Parameters
    ----------
    path : str or Path
    name : str, optional
        Default: the file name without extension.
    output : {"logits", "probabilities"}
        What the model's probability-like output holds. Models converted with skl2onnx (use
        ``options={"zipmap": False}``) output probabilities; networks exported from torch output logits.
    output_name : str, optional
        Which graph output to read. Default: the first float output of rank 2.
    classes : sequence of str, optional
    """

    kind = "onnx"

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None, output: str = "logits",
                 output_name: str | None = None, classes: Any = None, n_classes: int | None = None,
                 device: str = "cpu") -> None:
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - the extra is installed in CI
            raise ImportError("OnnxModel needs onnxruntime: pip install 'kdaudit[onnx]'") from None
        path = Path(path)
        if not path.is_file():
            raise invalid_argument("path", str(path), "an existing .onnx file")
        if output not in ("logits", "probabilities"):
            raise invalid_argument("output", output, '"logits" or "probabilities"')
        providers = ["CPUExecutionProvider"]
        dev = str(device)
        if dev != "cpu" and not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise invalid_argument("device", device, '"cpu", "cuda" or "cuda:<index>" for an ONNX model')
        if dev.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise invalid_argument("device", device, '"cpu" (onnxruntime has no CUDA provider here)')
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(dev[5:] or 0)}))
        _check_external_data(path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # nothing registers custom-op libraries (SessionOptions.register_custom_ops_library), so a graph can only
        # use onnxruntime's built-in kernels; an unknown op fails to load instead of running native code
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.path = path
        self.name = name or path.stem
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self._input_dtype = _ORT_DTYPES.get(inp.type, np.float32)
        outs = self.session.get_outputs()
        if output_name is None:
            cands = [o for o in outs if o.type in ("tensor(float)", "tensor(double)", "tensor(float16)")
                     and len(o.shape or []) == 2]
            if not cands:
                raise invalid_argument("path", str(path),
                                       "an ONNX model with a float (n, n_classes) output (for skl2onnx "
                                       "models, convert with options={'zipmap': False})")
            output_name = cands[0].name
        elif output_name not in [o.name for o in outs]:
            raise invalid_argument("output_name", output_name, f"one of {[o.name for o in outs]}")
        self._output_name = output_name
        shape = next(o.shape for o in outs if o.name == output_name)
        self.classes = None if classes is None else tuple(str(c) for c in classes)
        if n_classes is None:
            n_classes = len(self.classes) if self.classes is not None else (
                shape[1] if isinstance(shape[1], int) else 0)
        self.n_classes = int(n_classes)
        self.output = output
        self.access = Access.PROBABILITIES
        self.query_count = 0
        self._sha: str | None = None

    def predict(self, X: Any) -> np.ndarray:
        if hasattr(X, "detach"):
            X = X.detach().cpu().numpy()
        elif hasattr(X, "to_numpy"):
            X = X.to_numpy()
        x = np.ascontiguousarray(X, dtype=self._input_dtype)
        out = self.session.run([self._output_name], {self._input_name: x})[0]
        self.query_count += int(x.shape[0])
        return np.asarray(out, dtype=np.float32)

    def fingerprint(self) -> str:
        if self._sha is None:  # the file is read-only for the session's lifetime
            self._sha = sha256_file(self.path)
        return self._sha

    def n_parameters(self) -> int | None:
        try:
            import onnx
        except ImportError:  # pragma: no cover
            return None
        model = onnx.load(str(self.path), load_external_data=False)
        return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))

    def size_bytes(self) -> int:
        return int(self.path.stat().st_size)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"source": recorded_path(self.path), "output": self.output})
        return d

    def __repr__(self) -> str:
        return f"OnnxModel(name={self.name!r}, path={str(self.path)!r})"


def _check_external_data(path: Path) -> None:
    """Refuse tensors stored outside the model file anywhere but inside the model's own folder.

    ONNX lets a tensor's bytes live in another file named by the model; a hostile model could name any file the
    auditor can read (``/etc/...``, ``../../secrets``) and have it read as weights.
    """
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnxruntime then checks as it loads
        return
    model = onnx.load(str(path), load_external_data=False)
    folder = path.resolve().parent
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or os.path.isabs(location) or (target != folder and folder not in target.parents):
            raise invalid_argument("path", f"{path.name} with tensor {tensor.name!r} stored in {location!r}",
                                   "an ONNX model whose external data files lie inside its own folder")


def _tensors(graph: Any) -> Any:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)
