"""Small model factories for demos, tests and lineage zoos (seeded, so a zoo can be rebuilt exactly)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from kdaudit._exceptions import invalid_argument

__all__ = ["mlp", "small_cnn"]


def _seeded(seed: int | None, build: Any) -> nn.Module:
    if seed is None:
        return build()
    # fork_rng keeps the caller's global RNG untouched: building a seeded model has no side effects.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_argument(name, value, "an integer >= 1")
    return value


def mlp(in_features: int, n_classes: int, *, hidden: Sequence[int] = (64,), dropout: float = 0.0,
        seed: int | None = None) -> nn.Sequential:
    """A multilayer perceptron returning logits; inputs of any shape are flattened first.

    Parameters
    ----------
    in_features : int
        Number of input values per row after flattening (e.g. 64 for 8x8 digits).
    n_classes : int
    hidden : sequence of int, default (64,)
        Widths of the hidden layers (ReLU); ``()`` gives a linear model (multinomial logistic regression).
    dropout : float, default 0.0
        Dropout after each hidden layer.
    seed : int, optional
        Seed for the initial weights (the global RNG is left as it was).

    Examples
    --------
    >>> from kdaudit.distill import mlp
    >>> mlp(64, 10, hidden=(32,), seed=0)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    _check_positive_int("in_features", in_features)
    _check_positive_int("n_classes", n_classes)
    widths = [_check_positive_int("hidden", int(h) if isinstance(h, np.integer) else h) for h in hidden]
    if not 0.0 <= dropout < 1.0:
        raise invalid_argument("dropout", dropout, "a probability in [0, 1)")

    def build() -> nn.Sequential:
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in widths:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_classes))
        return nn.Sequential(*layers)

    return _seeded(seed, build)


def small_cnn(n_classes: int, *, in_channels: int = 1, width: int = 16, seed: int | None = None) -> nn.Sequential:
    """A two-block convolutional network returning logits, for small images of any size (8x8 digits, 28x28 MNIST).

    ``conv3x3(width) - ReLU - maxpool2 - conv3x3(2 width) - ReLU - adaptive avgpool to 4x4 - linear``.

    Parameters
    ----------
    n_classes : int
    in_channels : int, default 1
    width : int, default 16
        Channels of the first convolution (the second has twice as many).
    seed : int, optional
        Seed for the initial weights (the global RNG is left as it was).

    Examples
    --------
    >>> from kdaudit.distill import small_cnn
    >>> small_cnn(10, width=8, seed=0)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    _check_positive_int("n_classes", n_classes)
    _check_positive_int("in_channels", in_channels)
    _check_positive_int("width", width)

    def build() -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1), nn.ReLU(),
            # a fixed 4x4 grid keeps the classifier's size independent of the image size (identity for 8x8
            # digits; 14x14 MNIST maps are averaged down, coarser grids cost accuracy)
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(32 * width, n_classes),
        )

    return _seeded(seed, build)
