"""The Ray executor: units run in a pool of Ray actors, results come back in unit order (see ``_base``)."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

from kdaudit._exceptions import KDAuditError, invalid_argument
from kdaudit.executors._base import Executor, UnitTask, setup
from kdaudit.harness._executor import register_executor

__all__ = ["PIP_LINE", "RayExecutor", "import_ray"]

#: The install line a missing Ray points to (the optional extra pins a Ray with Ray Data).
PIP_LINE = 'pip install "kdaudit[ray]"'


def import_ray() -> Any:
    """``import ray``, or a KDAuditError that gives the exact pip line."""
    try:
        import ray
    except ImportError as exc:
        raise KDAuditError(f"the Ray executor needs Ray, which is not installed ({exc}); install it with: "
                           f"{PIP_LINE}") from None
    return ray


class _Worker:
    """One actor of the pool. It receives a task once per job (by reference, so a restarted actor fetches it again
    from the object store), sets it up (models built or unpickled here), then runs unit after unit."""

    def __init__(self) -> None:
        self.key: Any = None
        self.task: Any = None

    def run(self, key: Any, task_box: list[Any], unit: Any) -> Any:
        if key != self.key:
            import ray

            task = ray.get(task_box[0])  # boxed: Ray passes a nested reference as is, so it is fetched only here
            setup(task)
            self.key, self.task = key, task
        return self.task(unit)


def _check_number(name: str, value: Any, minimum: float, *, integer: bool, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        raise invalid_argument(name, value, f"{'an integer' if integer else 'a number'} >= {minimum}"
                                            + (" or None" if allow_none else ""))


class RayExecutor(Executor):
    """Units run in a pool of Ray actors; each actor builds the task's models once and then runs unit after unit.

    Parameters
    ----------
    address : str, optional
        A running cluster (``"auto"``, ``"ray://head:10001"``, ``"10.0.0.5:6379"``). None: connect to the Ray
        instance this process already started, else start a local one (``ray.init()``).
    num_actors : int, optional
        Actors in the pool. Default: as many as the cluster's CPUs allow at ``num_cpus_per_actor`` each (GPUs at
        ``num_gpus_per_actor`` each, when that is set), at most one per unit.
    num_cpus_per_actor, num_gpus_per_actor : float
        Resources each actor reserves; ``num_gpus_per_actor=1`` puts each actor on its own GPU (then pass
        ``device="cuda"`` to the audit).
    batch_size : int, optional
        The harness batch size in the actors (default: the audit's ``batch_size``). Results are identical to a
        local run with the same batch size: a batch is part of what fixes a model's floating-point outputs.
    runtime_env : mapping, optional
        Ray runtime environment for a cluster whose nodes lack kdaudit or the model code (``{"pip": [...]}``,
        ``{"working_dir": "."}``); given to ``ray.init``.
    max_restarts, max_task_retries : int
        A dead actor is restarted up to ``max_restarts`` times, and the units it was running are run again up to
        ``max_task_retries`` times (Ray's actor fault tolerance). A unit's result is a pure function of the unit, so a
        retry changes nothing in the results.
    in_flight_per_actor : int
        Units queued on each actor at once (2 keeps an actor busy while the driver merges; more only holds more
        states in the object store). A lost actor costs at most this many units of work.
    init_options : mapping, optional
        Further ``ray.init`` arguments when this executor starts Ray (e.g. ``{"num_cpus": 2}`` for a local test).
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, num_actors: int | None = None,
                 num_cpus_per_actor: float = 1, num_gpus_per_actor: float = 0, batch_size: int | None = None,
                 runtime_env: Mapping[str, Any] | None = None, max_restarts: int = 3, max_task_retries: int = 3,
                 in_flight_per_actor: int = 2, init_options: Mapping[str, Any] | None = None) -> None:
        if address is not None and (not isinstance(address, str) or not address):
            raise invalid_argument("address", address, "a Ray address such as 'auto' or 'ray://head:10001', or None")
        _check_number("num_actors", num_actors, 1, integer=True, allow_none=True)
        _check_number("num_cpus_per_actor", num_cpus_per_actor, 0, integer=False)
        _check_number("num_gpus_per_actor", num_gpus_per_actor, 0, integer=False)
        _check_number("batch_size", batch_size, 1, integer=True, allow_none=True)
        _check_number("max_restarts", max_restarts, 0, integer=True)
        _check_number("max_task_retries", max_task_retries, 0, integer=True)
        _check_number("in_flight_per_actor", in_flight_per_actor, 1, integer=True)
        for key, value in (("runtime_env", runtime_env), ("init_options", init_options)):
            if value is not None and not isinstance(value, Mapping):
                raise invalid_argument(key, value, "a mapping or None")
        self.address = address
        self.num_actors = num_actors
        self.num_cpus_per_actor = num_cpus_per_actor
        self.num_gpus_per_actor = num_gpus_per_actor
        self.batch_size = batch_size
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self.in_flight_per_actor = in_flight_per_actor
        self.init_options = dict(init_options or {})
        self._actors: list[Any] = []
        self._jobs = 0
        self.last_actors_used: set[int] = set()  # actors that returned a result (of any job): for tests, run.json

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "address": self.address, "num_actors": self.num_actors,
                "num_cpus_per_actor": self.num_cpus_per_actor, "num_gpus_per_actor": self.num_gpus_per_actor,
                "batch_size": self.batch_size, "max_restarts": self.max_restarts,
                "max_task_retries": self.max_task_retries, "in_flight_per_actor": self.in_flight_per_actor}

    def _connect(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            options = dict(self.init_options)
            if self.runtime_env:
                options["runtime_env"] = self.runtime_env
            ray.init(address=self.address, **options)
        return ray

    def _pool_size(self, ray: Any) -> int:
        res = ray.cluster_resources()
        fits = [res.get("CPU", 0.0) / self.num_cpus_per_actor] if self.num_cpus_per_actor else []
        if self.num_gpus_per_actor:
            fits.append(res.get("GPU", 0.0) / self.num_gpus_per_actor)
        capacity = int(min(fits) + 1e-9) if fits else (self.num_actors or 1)
        if capacity < 1 or (self.num_actors is not None and self.num_actors > capacity):
            # Actors that cannot be placed would hold their units forever: refuse instead of hanging.
            raise invalid_argument("num_actors", self.num_actors if self.num_actors is not None else "default",
                                   f"at most {capacity} actor(s): the cluster has {res.get('CPU', 0.0):g} CPU(s) "
                                   f"and {res.get('GPU', 0.0):g} GPU(s), and each actor reserves "
                                   f"{self.num_cpus_per_actor:g} CPU(s) and {self.num_gpus_per_actor:g} GPU(s) "
                                   "(lower num_cpus_per_actor, or add nodes)")
        return self.num_actors or capacity

    def map(self, task: UnitTask, units: Sequence[Any]) -> Iterator[Any]:
        units = list(units)
        if not units:
            return
        ray = self._connect()
        actors = self._pool(ray)
        self._jobs += 1
        box = [ray.put(task)]  # in the object store once; every actor (and every restart) reads it from there
        yield from self._ordered(ray, actors, units, (id(self), self._jobs), box)

    def _pool(self, ray: Any) -> list[Any]:
        """The actors, started on first use and kept for the next jobs (their imports are paid once)."""
        if not self._actors:
            actor_cls = ray.remote(_Worker).options(
                num_cpus=self.num_cpus_per_actor, num_gpus=self.num_gpus_per_actor, max_restarts=self.max_restarts,
                max_task_retries=self.max_task_retries)
            self._actors = [actor_cls.remote() for _ in range(self._pool_size(ray))]
        return self._actors

    def close(self) -> None:
        """Stop the actors (a later job starts new ones); Ray itself stays up."""
        if self._actors:
            ray = import_ray()
            for a in self._actors:
                ray.kill(a)
        self._actors = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: Ray may already be gone
            pass

    def _ordered(self, ray: Any, actors: list[Any], units: list[Any], key: Any, box: list[Any]) -> Iterator[Any]:
        """Keep every actor fed, and yield results in unit order (a result that arrives early waits its turn)."""
        pending: dict[Any, tuple[int, int]] = {}
        load = [0] * len(actors)
        done_early: dict[int, Any] = {}
        submitted = emitted = 0
        while emitted < len(units):
            while submitted < len(units) and min(load) < self.in_flight_per_actor:
                a = load.index(min(load))
                pending[actors[a].run.remote(key, box, units[submitted])] = (submitted, a)
                load[a] += 1
                submitted += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pos, a = pending.pop(ref)
                load[a] -= 1
                self.last_actors_used.add(a)
                done_early[pos] = _get(ray, ref, pos)
            while emitted in done_early:
                yield done_early.pop(emitted)
                emitted += 1


def _get(ray: Any, ref: Any, pos: int) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):  # the task's own error (a KDAuditError names the bad input): raise it as is
            raise cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        raise KDAuditError(f"unit {pos} was lost with its worker after every retry (max_restarts and "
                           f"max_task_retries exhausted): {exc}") from None


# the one registry of executors by name: audit(executor="ray"), a config file's executor block and --executor build
# the Ray executor through it (kdaudit.harness.get_executor)
register_executor("ray", RayExecutor)
