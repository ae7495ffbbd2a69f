"""Training a pool of reference models from the owner's recipe.

The lineage test's null rests on references that differ from the teacher *only* in the seed: the same architecture,
data, optimiser and schedule (the recipe), another random seed. A recipe written once as a callable
``recipe(seed) -> model`` makes that true by construction, and lets the same code train the teacher itself
(``recipe(teacher_seed)``), the references, and, with an executor, train them in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kdaudit._exceptions import invalid_argument

__all__ = ["train_references"]


def _train_one(recipe: Callable[[int], Any], seed: int) -> Any:
    return recipe(seed)


def train_references(recipe: Callable[[int], Any], seeds: Iterable[int], *, executor: Any = None,
                     exclude: Iterable[int] = ()) -> list[Any]:
    """Train one reference model per seed with the teacher's own recipe.

    Parameters
    ----------
    recipe : callable
        ``recipe(seed) -> model``: builds and trains a model exactly as the teacher was built and trained, with
        ``seed`` as its only source of randomness (initialisation, data order, dropout, subsampling). For example
        ``lambda s: train_control(mlp(91, 2, hidden=(64,), seed=s), train, epochs=5, seed=s)``.
    seeds : iterable of int
        One reference per seed, in this order. 19 references let the exact p-value reach 0.05; 39 or more give the
        rank test a finer resolution (README, "Lineage: power and cost").
    executor : concurrent.futures.Executor, optional
        Anything with ``map(fn, *iterables)`` (a ``ProcessPoolExecutor``, a Ray-backed pool): references are
        trained in parallel; results come back in seed order. ``None`` trains them one after the other.
    exclude : iterable of int, optional
        Seeds that must not be used (the teacher's own seed): a reference with the teacher's seed would be a copy
        of the teacher and break the null.

    Returns
    -------
    list
        The trained models, in seed order.
    """
    if not callable(recipe):
        raise invalid_argument("recipe", recipe, "a callable recipe(seed) -> trained model")
    seed_list = list(seeds)
    bad = [s for s in seed_list if isinstance(s, bool) or not isinstance(s, int)]
    if bad or not seed_list:
        raise invalid_argument("seeds", seed_list if not bad else bad[0], "a non-empty list of integer seeds")
    if len(set(seed_list)) != len(seed_list):
        raise invalid_argument("seeds", seed_list, "distinct seeds (a repeated seed trains the same model twice)")
    clash = sorted(set(seed_list) & set(exclude))
    if clash:
        raise invalid_argument("seeds", clash, "seeds other than the teacher's (exclude=)")
    if executor is None:
        pairs = [recipe(s) for s in seed_list]
    elif hasattr(executor, "map"):
        pairs = list(executor.map(_train_one, [recipe] * len(seed_list), seed_list))
    else:
        raise invalid_argument("executor", executor, "None or an executor with map(fn, *iterables)")
    return pairs
