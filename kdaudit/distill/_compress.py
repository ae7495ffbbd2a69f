"""Post-training transforms a suspect might apply to disguise a distilled student: pruning and int8 quantization."""

from __future__ import annotations

import copy
import numbers
import warnings

import torch
from torch import nn

from kdaudit._exceptions import invalid_argument

__all__ = ["prune", "quantize_int8", "sparsity"]

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, _PRUNABLE)]


def prune(model: nn.Module, amount: float = 0.9) -> nn.Module:
    """Global magnitude pruning: zero the ``amount`` fraction of smallest-magnitude Linear and Conv weights.

    The threshold is global across layers (``torch.nn.utils.prune.global_unstructured`` with L1 magnitude); the
    masks are then made permanent, so the result is a plain module whose weights contain zeros. Biases are kept.
    Pruned in place and returned.

    Parameters
    ----------
    model : torch.nn.Module
    amount : float in [0, 1), default 0.9
    """
    from torch.nn.utils import prune as torch_prune

    if not isinstance(model, nn.Module):
        raise invalid_argument("model", type(model).__name__, "a torch.nn.Module")
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not 0.0 <= amount < 1.0:
        raise invalid_argument("amount", amount, "a fraction in [0, 1)")
    params = _prunable_weights(model)
    if not params:
        raise invalid_argument("model", type(model).__name__, "a module with Linear or Conv layers")
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=float(amount))
    for module, name in params:
        torch_prune.remove(module, name)
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over the model's Linear and Conv layers."""
    weights = [m.weight for m, _ in _prunable_weights(model)]
    if not weights:
        raise invalid_argument("model", type(model).__name__, "a module with Linear or Conv layers")
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the Linear layers (weights int8, activations quantized on the fly).

    Uses ``torch.ao.quantization.quantize_dynamic`` on a copy (the input model is unchanged) and returns the
    quantized copy in eval mode. Conv layers stay float32 (dynamic quantization covers Linear layers only).
    The quantized model runs on CPU and cannot be trained further.
    """
    if not isinstance(model, nn.Module):
        raise invalid_argument("model", type(model).__name__, "a torch.nn.Module")
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise invalid_argument("model", type(model).__name__, "a module with Linear layers to quantize")
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:  # pragma: no cover - depends on the torch build
        raise ImportError("quantize_int8 needs torch.ao.quantization (part of PyTorch 2.x)") from exc
    # Quantize a CPU copy: the source keeps its device, mode and weights.
    source = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        # torch 2.10+ announces the move of eager quantization to torchao; the API still works here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, message=".*quantiz.*")
        quantized = quantize_dynamic(source, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return quantized.eval()
