"""sha256 fingerprints of files, arrays and torch weights (the identity of a model in provenance and caches)."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Iterable

import numpy as np

__all__ = ["sha256_arrays", "sha256_file", "sha256_snapshot", "sha256_state_dict", "snapshot_state_dict", "tensor_items"]

_FILE_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_FILE_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_arrays(named: Iterable[tuple[str, Any]]) -> str:
    """sha256 over (name, dtype, shape, bytes) of numpy arrays, in the order given."""
    h = hashlib.sha256()
    for key, arr in named:
        a = np.ascontiguousarray(arr)
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
    return h.hexdigest()


def snapshot_state_dict(state_dict: Any) -> list[tuple[str, str, Any]]:
    """Host copy of a state_dict as (key, header, bytes) triples, fetched from a GPU in one transfer.

    Taking the snapshot is quick (one device->host copy); hashing it can then run in a background thread while
    the device computes.
    """
    import torch

    entries: list[tuple[str, str, Any]] = []
    on_device: list[tuple[int, Any]] = []
    for key, t in tensor_items(state_dict.items()):
        if not isinstance(t, torch.Tensor):
            entries.append((key, f"{t!r}", b""))
            continue
        t = t.detach()
        header = f"{t.dtype}|{tuple(t.shape)}"
        # a byte view, so bf16/fp8 tensors (no numpy dtype) hash the same way as the rest
        flat = t.contiguous().reshape(-1).view(torch.uint8) if t.numel() else None
        if flat is not None and flat.device.type != "cpu":
            on_device.append((len(entries), flat))
            flat = None
        entries.append((key, header, b"" if flat is None else flat.numpy()))
    if on_device:
        host = torch.cat([f for _, f in on_device]).cpu().numpy()
        offset = 0
        for idx, f in on_device:
            key, header, _ = entries[idx]
            entries[idx] = (key, header, host[offset:offset + f.numel()])
            offset += f.numel()
    return entries


def tensor_items(items: Iterable[tuple[str, Any]]) -> Iterable[tuple[str, Any]]:
    """Flatten a state_dict into (key, plain tensor or scalar) pairs.

    Dynamically quantized layers keep their weights as packed params (a tuple holding a quantized tensor), whose
    repr is truncated: hashing the repr would give two different int8 models one fingerprint (and one cache entry).
    Tuples are expanded and quantized tensors hashed as their integer values plus scales and zero points.
    """
    import torch

    for key, value in items:
        if isinstance(value, (tuple, list)):
            yield from tensor_items((f"{key}.{i}", v) for i, v in enumerate(value))
        elif isinstance(value, torch.Tensor) and value.is_quantized:
            yield f"{key}.int_repr", value.int_repr()
            if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                yield f"{key}.q_scale", float(value.q_scale())
                yield f"{key}.q_zero_point", int(value.q_zero_point())
            else:
                yield f"{key}.q_per_channel_scales", value.q_per_channel_scales()
                yield f"{key}.q_per_channel_zero_points", value.q_per_channel_zero_points()
                yield f"{key}.q_per_channel_axis", int(value.q_per_channel_axis())
        else:
            yield key, value


def sha256_snapshot(entries: list[tuple[str, str, Any]]) -> str:
    h = hashlib.sha256()
    for key, header, data in entries:
        h.update(f"{key}|{header}|".encode())
        if len(data):
            h.update(data.data if hasattr(data, "data") else data)
    return h.hexdigest()


def sha256_state_dict(state_dict: Any) -> str:
    """sha256 of a torch state_dict: every tensor's key, dtype, shape and bytes, in key order.

    The hash depends on the weights only, so the same network saved as a state_dict, a pickled module or
    TorchScript gets the same fingerprint.
    """
    return sha256_snapshot(snapshot_state_dict(state_dict))
