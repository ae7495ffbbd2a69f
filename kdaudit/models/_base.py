"""The model protocol every adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from kdaudit._kinds import Access  # defined below the models so that the statistics share it

__all__ = ["Access", "ModelAdapter"]


class ModelAdapter(ABC):
    """One model, seen through a uniform interface.

    Attributes
    ----------
    name : str
        Label in reports; unique within an audit.
    n_classes : int
    classes : tuple of str or None
        Class names in output-column order, when the model knows them (checked against the other models').
    access : Access
    top_k : int or None
        k, when ``access`` is ``TOP_K``.
    output : {"logits", "probabilities", "labels"}
        What :meth:`predict` returns.
    kind : str
        Adapter kind for reports ("torch", "torchscript", "sklearn", "onnx", "blackbox", "precomputed", "ensemble").
    query_count : int
        Rows this model has been asked about (what a black-box owner would bill).
    file_sha256 : str or None
        sha256 of the file the model was loaded from (set by ``load_model``), next to :meth:`fingerprint`: what
        ``sha256sum FILE`` prints.
    file_size_bytes : int or None
        Size on disk of that file (set by ``load_model``); :meth:`size_bytes` is the size of the weights in memory.
    """

    name: str
    n_classes: int
    classes: tuple[str, ...] | None = None
    access: Access = Access.PROBABILITIES
    top_k: int | None = None
    output: str = "probabilities"
    kind: str = "model"
    query_count: int = 0
    file_sha256: str | None = None
    file_size_bytes: int | None = None

    @abstractmethod
    def predict(self, X: Any) -> np.ndarray:
        """Outputs for a batch of rows.

        Returns (n, n_classes) logits or probabilities as :attr:`output` says; for ``TOP_K`` access,
        (n, n_classes) probabilities that are zero outside each row's top k; for ``LABELS`` access, (n,) int labels.
        """

    def prepare(self, data: Any) -> None:
        """Called by the harness once before a run over ``data`` (an ``AuditData``); checks alignment.

        Adapters that look rows up by id (precomputed outputs) build their index here.
        """

    def for_rows(self, start: int, stop: int) -> ModelAdapter:
        """This model for rows ``start:stop`` of the audit data, run as a data set of their own (a unit of the
        engine). Adapters whose outputs are aligned with the data by position (precomputed outputs without ids)
        return a view of those rows with the same identity (fingerprint, size); the others return themselves."""
        return self

    def predict_batch(self, X: Any, *, ids: np.ndarray | None = None, rows: tuple[int, int] | None = None
                      ) -> np.ndarray:
        """Outputs for the rows ``X`` of the prepared data, whose sample ids are ``ids`` and whose positions
        are ``rows = (start, stop)``. The harness calls this; the default is :meth:`predict`."""
        return self.predict(X)

    @abstractmethod
    def fingerprint(self) -> str:
        """sha256 of the weights or of the model file."""

    def n_parameters(self) -> int | None:
        return None

    def size_bytes(self) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "access": str(self.access),
            "top_k": self.top_k,
            "n_classes": self.n_classes,
            "classes": list(self.classes) if self.classes is not None else None,
            "sha256": self.fingerprint(),
            "n_parameters": self.n_parameters(),
            "size_bytes": self.size_bytes(),
            **({"file_sha256": self.file_sha256} if self.file_sha256 else {}),
            **({"file_size_bytes": self.file_size_bytes} if self.file_size_bytes is not None else {}),
        }
