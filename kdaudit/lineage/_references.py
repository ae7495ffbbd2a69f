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

__all__ = ["train_references", "train_shadow_students", "train_student_controls"]


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
    executor : str, engine executor or concurrent.futures.Executor, optional
        Where the references are trained, in parallel; results come back in seed order. An engine executor (the
        audit's: ``"local"``, a :class:`kdaudit.executors.RayExecutor`, or ``"ray"`` once :mod:`kdaudit.executors`
        is imported) trains them as tasks on its workers, as :func:`kdaudit.executors.train_pool` does (``recipe``
        must then be picklable: a module-level function or a ``functools.partial`` of one); anything else with
        ``map(fn, *iterables)`` (a ``ProcessPoolExecutor``) is used as is. ``None`` trains them here, one after the
        other.
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
    from kdaudit.harness._executor import Executor as EngineExecutor, get_executor

    if executor is None:
        pairs = [recipe(s) for s in seed_list]
    elif isinstance(executor, (str, EngineExecutor)):
        # the engine's executors (Ray actors, or here): the recipe is the unit task, a seed the unit
        pairs = list(get_executor(executor).map(recipe, seed_list))
    elif hasattr(executor, "map"):
        pairs = list(executor.map(_train_one, [recipe] * len(seed_list), seed_list))
    else:
        raise invalid_argument("executor", executor, "None, an engine executor ('local', 'ray', a RayExecutor) "
                               "or an executor with map(fn, *iterables)")
    return pairs


class _Extracted:
    """``extract(recipe(seed), seed)``: a sibling of the teacher and the student made from it (picklable, so a
    process pool can run it)."""

    def __init__(self, recipe: Callable[[int], Any], extract: Callable[[Any, int], Any]) -> None:
        self.recipe, self.extract = recipe, extract

    def __call__(self, seed: int) -> Any:
        return self.extract(self.recipe(seed), seed)


def train_student_controls(recipe: Callable[[int], Any], seeds: Iterable[int],
                           extract: Callable[[Any, int], Any], *, executor: Any = None,
                           exclude: Iterable[int] = ()) -> list[Any]:
    """Negative controls made like the suspects the owner fears: one student per seed, extracted from a sibling of
    the teacher that is kept out of the pool.

    ``recipe(seed)`` trains a sibling exactly as the teacher was trained (as for :func:`train_references`, but with
    seeds used by neither the teacher nor any reference); ``extract(sibling, seed)`` makes a student from it the
    way a suspect might have been made (distillation, label-only extraction; vary the ways). The students are
    derived from no pool member, so they are valid negative controls (``lineage_test(..., controls=...)``), and
    they share what any student of the recipe has that the recipe's own models lack: what distillation into a
    student does to a model. Calibrated by them, the test reads the suspect against models of its own kind. On the
    benchmark zoos (``benchmarks/lineage.py --part teacher-power --student-controls 20``), 20 such controls added
    to 20 of other architectures raised the share of students found over 40 teachers of UCI Adult from 0.43 to
    0.63 (probabilities) and from 0.34 to 0.54 (labels), and over 40 teachers of a second Adult recipe that played
    no part in developing them from 0.54 to 0.81 and from 0.55 to 0.71, the false-positive rate over teachers
    staying at 0.04-0.05; over 40 teachers of MNIST-5k from 0.69 to 0.79 and from 0.61 to 0.70 (more label-only
    extractions found), the false-positive rate staying at 0.05. 20 were as good as 40. README, "Lineage: power".

    Parameters
    ----------
    recipe : callable
        ``recipe(seed) -> model``: the teacher's recipe.
    seeds : iterable of int
        One control per seed; none may be the teacher's or a reference's (pass those as ``exclude``).
    extract : callable
        ``extract(sibling, seed) -> model``: the student made from the sibling.
    executor, exclude
        As in :func:`train_references`.

    Returns
    -------
    list
        The students, in seed order.
    """
    if not callable(extract):
        raise invalid_argument("extract", extract, "a callable extract(sibling, seed) -> student model")
    if not callable(recipe):
        raise invalid_argument("recipe", recipe, "a callable recipe(seed) -> trained model")
    return train_references(_Extracted(recipe, extract), seeds, executor=executor, exclude=exclude)


class _Shadow:
    """``extract(models[i], seeds[i])``: the shadow student of pool member ``i`` (picklable, as :class:`_Extracted`)."""

    def __init__(self, models: list[Any], extract: Callable[[Any, int], Any], seeds: list[int]) -> None:
        self.models, self.extract, self.seeds = models, extract, seeds

    def __call__(self, i: int) -> Any:
        return self.extract(self.models[i], self.seeds[i])


def train_shadow_students(models: Iterable[Any], extract: Callable[[Any, int], Any], *,
                          seeds: Iterable[int] | None = None, executor: Any = None) -> list[Any]:
    """One shadow student per pool member, each made from its member the same way: for a suspect whose queries the
    investigator holds.

    A label-only extraction keeps of its teacher mostly what the teacher answered on the rows it was queried on; on
    other rows (the lineage test's probes) that imprint is faint, which is where the member test loses most of its
    power. A vendor whose API logs hold the queries a suspect's maker sent (or an investigator who knows the public
    dataset they came from) can replay them: ``extract(member, seed)`` distils every pool member (the teacher and
    each reference) on those rows as the suspect's maker would have. The suspect is then tested against the pool of
    shadows: ``lineage_test(shadows[0], suspect, probes, references=shadows[1:], controls=...)`` asks whether the
    suspect resembles the teacher's student more than any reference's student. Every member is treated alike, so
    under the null (the suspect derived from no member) the shadows are as exchangeable as their members and the
    rank p-value stays exact; combined with the member test by Bonferroni (``min(1, 2 * min(p_members,
    p_shadows))``), the verdict keeps its level. On MNIST-5k (``benchmarks/lineage_shadows.py``) it found label-only
    extractions the member test missed, but only when the shadows were distilled on the suspects' own query rows:
    on other rows of the same distribution they found no more than the member test. README, "Lineage: power".

    Parameters
    ----------
    models : iterable
        The pool, the teacher first: ``[teacher, *references]`` (models, or whatever ``extract`` accepts).
    extract : callable
        ``extract(member, seed) -> model``: a student of ``member`` made on the suspect's queries (for example
        ``lambda m, s: distill(m, mlp(784, 10, hidden=(96,), seed=s), logged_queries, teacher_access="labels",
        seed=s)``). The same callable for every member.
    seeds : iterable of int, optional
        One distinct seed per member, fixed before the members are seen (default ``0, 1, ...``).
    executor
        As in :func:`train_references`.

    Returns
    -------
    list
        The shadow students, in the members' order.
    """
    if not callable(extract):
        raise invalid_argument("extract", extract, "a callable extract(member, seed) -> student model")
    pool = list(models)
    if len(pool) < 2:
        raise invalid_argument("models", f"{len(pool)} model(s)", "the teacher and at least one reference")
    seed_list = list(range(len(pool))) if seeds is None else list(seeds)
    if len(seed_list) != len(pool):
        raise invalid_argument("seeds", f"{len(seed_list)} seeds", f"one seed per model ({len(pool)})")
    bad = [s for s in seed_list if isinstance(s, bool) or not isinstance(s, int)]
    if bad or len(set(seed_list)) != len(seed_list):
        raise invalid_argument("seeds", bad[0] if bad else seed_list, "distinct integer seeds")
    return train_references(_Shadow(pool, extract, seed_list), range(len(pool)), executor=executor)
