"""Models behind one protocol: torch, TorchScript, torch.export, scikit-learn, ONNX, black boxes, precomputed
outputs and ensembles; safe loading of model files. Language models: Hugging Face causal LMs (and sequence
classifiers over text), OpenAI-style endpoints and precomputed per-token outputs."""

from kdaudit.models._architectures import architecture_names, register_architecture
from kdaudit.models._base import Access, ModelAdapter
from kdaudit.models._blackbox import BlackBoxModel
from kdaudit.models._endpoint import EndpointError, OpenAIEndpointModel
from kdaudit.models._ensemble import EnsembleModel
from kdaudit.models._hashing import sha256_file
from kdaudit.models._hf import HFCausalLM, HFSequenceClassifier, tokenizer_sha256
from kdaudit.models._journal import QueryJournal
from kdaudit.models._lm_base import LanguageModel, LMAccess
from kdaudit.models._lm_precomputed import PrecomputedLM, save_lm_outputs
from kdaudit.models._loading import SAFE_FORMATS, as_model, detect_format, load_model
from kdaudit.models._onnx import OnnxModel
from kdaudit.models._precomputed import PrecomputedModel
from kdaudit.models._sklearn import SklearnModel
from kdaudit.models._torch import TorchModel

__all__ = [
    "Access",
    "BlackBoxModel",
    "EndpointError",
    "EnsembleModel",
    "HFCausalLM",
    "HFSequenceClassifier",
    "LMAccess",
    "LanguageModel",
    "ModelAdapter",
    "OnnxModel",
    "OpenAIEndpointModel",
    "PrecomputedLM",
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
    "save_lm_outputs",
    "sha256_file",
    "tokenizer_sha256",
]
