"""The one base of every streaming accumulator: states declared with how they merge, and generic ``merge``,
``reset``, ``state_dict`` and ``load_state_dict`` built from those declarations.

An accumulator's state is whatever its ``update`` adds rows into. Declaring it once, with its merge rule, is what
lets shards computed anywhere (another process, another machine: the executors of the engine) be combined exactly,
checkpointed and restored, without each family writing (and getting subtly wrong) its own ``merge``:

====================  ==================================================================================
rule                  merge of ``self.x`` with ``other.x``
====================  ==================================================================================
``SUM``               addition: numbers, arrays, or objects with their own ``merge`` (``BlockStats``)
``ALL``               logical and, element by element (``[True, False]`` flags)
``SAME``              must be equal; unset (None, empty) on one side takes the other's (a first chunk's)
``KEYED``             a dict of mergeable objects: shared keys merge, others are copied in
====================  ==================================================================================

``merge_key`` names the options that must agree for two accumulators to merge (class counts, bin counts, the
bootstrap's block count...): a mismatch raises before anything changes.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, ClassVar, Mapping

import numpy as np

from kdaudit._exceptions import invalid_argument

__all__ = ["ALL", "Accumulator", "KEYED", "SAME", "SUM", "finish"]

SUM, ALL, SAME, KEYED = "sum", "all", "same", "keyed"
_RULES = (SUM, ALL, SAME, KEYED)


class Accumulator:
    """Base of the streaming accumulators (``update`` adds rows, ``compute`` gives the result).

    Subclasses declare :attr:`states` and :attr:`merge_key`; nothing else. (The constructor's arguments are recorded
    so that :meth:`reset` can rebuild the empty state.)
    """

    #: state attribute -> merge rule (SUM, ALL, SAME or KEYED)
    states: ClassVar[Mapping[str, str]] = {}
    #: attributes (options) that must be equal for two accumulators to merge; ``bootstrap`` compares its blocks
    merge_key: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, rule in cls.states.items():
            if rule not in _RULES:
                raise TypeError(f"{cls.__name__}.states[{name!r}] = {rule!r}; expected one of {_RULES}")
        if "__init__" in cls.__dict__:
            init = cls.__dict__["__init__"]

            @functools.wraps(init)
            def recording_init(self: Any, *args: Any, **kw: Any) -> None:
                # the constructor's arguments, kept so that reset() can rebuild the empty state
                if "_init_args" not in self.__dict__:
                    self.__dict__["_init_args"] = (args, dict(kw))
                init(self, *args, **kw)

            cls.__init__ = recording_init  # type: ignore[method-assign]

    # -- merging -------------------------------------------------------------------------------------------
    def _key(self) -> tuple[Any, ...]:
        out = []
        for name in self.merge_key:
            value = getattr(self, name)
            out.append(value.n_blocks if name == "bootstrap" else value)
        return tuple(out)

    def merge(self, other: Accumulator) -> Accumulator:
        """Add ``other``'s rows to this accumulator (same class and options); returns self.

        Every check runs before any state changes, so a refused merge leaves both accumulators as they were.
        """
        name = type(self).__name__
        if type(other) is not type(self) or self._key() != other._key():
            raise invalid_argument("other", type(other).__name__, f"a {name} with the same options "
                                   f"({', '.join(self.merge_key)})")
        for attr, rule in self.states.items():
            mine, theirs = getattr(self, attr), getattr(other, attr)
            if rule == SAME and not _unset(mine) and not _unset(theirs) and not _equal(mine, theirs):
                raise invalid_argument("other", f"a {name} with {attr.lstrip('_')} = {theirs!r}",
                                       f"{attr.lstrip('_')} = {mine!r}, as in this one")
        for attr, rule in self.states.items():
            mine, theirs = getattr(self, attr), getattr(other, attr)
            if rule == SUM:
                if hasattr(mine, "merge"):
                    mine.merge(theirs)
                else:
                    setattr(self, attr, mine + theirs)
            elif rule == ALL:
                setattr(self, attr, [bool(a and b) for a, b in zip(mine, theirs)] if isinstance(mine, list)
                        else bool(mine and theirs))
            elif rule == SAME:
                if _unset(mine):
                    setattr(self, attr, copy.deepcopy(theirs))
            else:  # KEYED
                for key, value in theirs.items():
                    if key in mine:
                        mine[key].merge(value)
                    else:
                        mine[key] = copy.deepcopy(value)
        return self

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A deep copy of the declared state (arrays, numbers and the metrics' own state objects; picklable)."""
        return {attr: copy.deepcopy(getattr(self, attr)) for attr in self.states}

    def load_state_dict(self, state: Mapping[str, Any]) -> Accumulator:
        """Replace the declared state by ``state`` (from :meth:`state_dict` of an accumulator with the same
        options); returns self."""
        missing = sorted(set(self.states) - set(state))
        extra = sorted(set(state) - set(self.states))
        if missing or extra:
            raise invalid_argument("state", f"keys missing {missing}, unknown {extra}",
                                   f"the keys of {type(self).__name__}.state_dict(): {sorted(self.states)}")
        for attr in self.states:
            setattr(self, attr, copy.deepcopy(state[attr]))
        return self

    def reset(self) -> Accumulator:
        """Forget every row added (the options stay); returns self."""
        args, kwargs = self.__dict__["_init_args"]
        return self.load_state_dict(type(self)(*args, **kwargs).state_dict())


def finish(fold: Any) -> Any:
    """A fold's result: the accumulator's ``compute()``, or the result a section gave before reading a row (its
    "unavailable" result)."""
    return fold.compute() if isinstance(fold, Accumulator) else fold


def _unset(value: Any) -> bool:
    """Not set yet: None, or an empty container (a state a first chunk fills)."""
    return value is None or (isinstance(value, (dict, list, tuple)) and len(value) == 0)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)
