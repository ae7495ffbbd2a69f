"""Models behind one protocol: torch, TorchScript, torch.export, scikit-learn, ONNX, black boxes, precomputed
outputs and ensembles; safe loading of model files."""

from kdaudit.models._architectures import architecture_names, register_architecture
from kdaudit.models._base import Access, ModelAdapter
from kdaudit.models._blackbox import BlackBoxModel
from kdaudit.models._ensemble import EnsembleModel
from kdaudit.models._hashing import sha256_file
from kdaudit.models._journal import QueryJournal
from kdaudit.models._loading import SAFE_FORMATS, as_model, detect_format, load_model
from kdaudit.models._onnx import OnnxModel
from kdaudit.models._precomputed import PrecomputedModel
from kdaudit.models._sklearn import SklearnModel
from kdaudit.models._torch import TorchModel

__all__ = [
    "Access",
    "BlackBoxModel",
    "EnsembleModel",
    "ModelAdapter",
    "OnnxModel",
    "PrecomputedModel",
    "QueryJournal",
    "SAFE_FORMATS",
    "SklearnModel",
    "TorchModel",
    "architecture_names",
    "as_model",
    "detect_format",
    "load_model",
    "register_architecture",
    "sha256_file",
]
