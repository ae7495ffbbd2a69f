"""Black boxes stay on the driver: under an executor with remote workers, a black box (a paid API with a query
budget) is asked here once per row and the workers get its answers."""

from __future__ import annotations

from typing import Any

from kdaudit._exceptions import invalid_argument
from kdaudit.models._base import Access, ModelAdapter

__all__ = ["query_black_boxes_here"]


def query_black_boxes_here(models: list[ModelAdapter], source: Any, *, batch_size: int, cache_dir: Any,
                            seed: int) -> tuple[ModelAdapter, list[ModelAdapter]]:
    """A black box (a paid API with a query budget) is asked here, on the driver, once per row, through the
    harness (its cache resumes an interrupted run); the workers get its answers as a stand-in with its name, kind,
    access and hash. Copies of the black box on every worker would each spend the budget, ask again whatever a
    lost worker had asked, and share no cache."""
    from kdaudit import harness
    from kdaudit.executors._pool import PoolOutputs
    from kdaudit.models import BlackBoxModel

    out = []
    for m in models:
        if not isinstance(m, BlackBoxModel):
            out.append(m)
            continue
        if source.kind != "memory":
            raise invalid_argument("models", m.name, "models the workers can run: a black box's answers on "
                                                     "sharded data would have to be gathered here (ask it once, "
                                                     "store its answers as a column, and use a ColumnModel)")
        run = harness.run([m], source.data, batch_size=batch_size, cache_dir=cache_dir, seed=seed, progress=False)
        o = run.outputs[m.name]
        labels = m.access == Access.LABELS
        stand_in = PoolOutputs(o.labels if labels else o.probs, ids=source.data.ids, like=m.describe(),
                               output="labels" if labels else "probabilities")
        stand_in.access, stand_in.top_k, stand_in.n_classes = m.access, m.top_k, m.n_classes
        out.append(stand_in)
    return out[0], out[1:]
