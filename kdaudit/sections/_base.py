"""What a section is: its name and order, its options (one schema for the API, the config file and the CLI), what it
needs from the models, how it computes, and the tidy rows its result reads as.

A section compares one teacher with one student. The audit asks every chosen section, for every student, whether
it can run on what the two models reveal (:meth:`Section.skip_reason`, one rule for all sections); a section that
cannot is reported unavailable with that reason instead of failing the audit.

This module imports nothing heavy (no numpy at import time beyond what the foundation needs, no torch, no scipy):
``import kdaudit.sections`` stays cheap so that the CLI can list and validate sections without loading models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from kdaudit._exceptions import KDAuditError, did_you_mean, invalid_argument
from kdaudit._kinds import Access, OutputKind
from kdaudit._rows import Row, result_rows

__all__ = ["DATA_PARTS", "KIND_OF_ACCESS", "ModelContext", "ModelResults", "Needs", "Option", "Row", "Section",
           "SectionInputs", "check_section", "ordered"]

_ACCESS_RANK = {Access.LABELS: 0, Access.TOP_K: 1, Access.PROBABILITIES: 2}
#: the classifier output kind each access level yields
KIND_OF_ACCESS = {Access.PROBABILITIES: OutputKind.CLASS_PROBS, Access.TOP_K: OutputKind.TOP_K,
                  Access.LABELS: OutputKind.LABELS}
# the kinds a richer kind can serve: full probabilities give top-k and labels, top-k gives labels
# (and a language model that reveals per-token log-probabilities also generates text)
_POORER = {OutputKind.CLASS_PROBS: (OutputKind.TOP_K, OutputKind.LABELS), OutputKind.TOP_K: (OutputKind.LABELS,),
           OutputKind.TOKEN_TOP_K: (OutputKind.TEXT,)}
#: what each named part of the audit data (:attr:`Needs.data`) is, for the skip reason
DATA_PARTS = {"texts": "a prompt set of texts (prompts without choices)",
              "choices": "a multiple-choice prompt set (prompts with choices and answers)"}


@dataclass(frozen=True)
class Option:
    """One option of a section, checked the same way whether it comes from ``audit(section_options=...)``, a config
    file's ``section_options:`` or the CLI's ``--option section.name=value``.

    Attributes
    ----------
    name : str
    type : type
        ``int``, ``float``, ``str`` or ``bool`` (a CLI string is converted to it).
    default : object
        The section function's default (documentation; an unset option is not recorded in results.json).
    help : str
    choices : tuple, optional
    minimum, maximum : float, optional
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def accepted(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(self.type,
                                                                                                  self.type.__name__)
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        return what + (" " + " and ".join(bounds) if bounds else "")

    def check(self, value: Any, where: str, *, error: Any = None) -> Any:
        """The value, converted from a CLI string where needed; a KDAuditError naming ``where`` otherwise."""
        v = value
        if isinstance(v, str) and self.type is not str:
            v = _from_text(v, self.type)
        ok = True
        if self.type is bool:
            ok = isinstance(v, bool)
        elif self.type is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif self.type is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
            v = float(v) if ok else v
        elif self.type is str:
            ok = isinstance(v, str)
        if ok and self.choices is not None:
            ok = v in self.choices
        if ok and self.minimum is not None:
            ok = v >= self.minimum
        if ok and self.maximum is not None:
            ok = v <= self.maximum
        if not ok:
            raise (error or invalid_argument)(where, value, self.accepted())
        return v


def _from_text(text: str, typ: type) -> Any:
    low = text.strip().lower()
    if typ is bool:
        return {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}.get(low, text)
    try:
        return typ(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class Needs:
    """What a section needs to run.

    Attributes
    ----------
    kinds : frozenset of OutputKind
        The output kinds it can consume (any of them). Classifier kinds are ordered: a section that takes
        ``TOP_K`` also takes ``CLASS_PROBS`` (richer outputs serve a poorer need), which ``least_access`` states.
    least_access : Access, optional
        For classifier outputs, the least access both models must give (``LABELS`` < ``TOP_K`` <
        ``PROBABILITIES``).
    labels : bool
        True labels are needed.
    sensitive : bool
        Sensitive features are needed.
    references : bool
        Reference models are needed (lineage).
    data : frozenset of str
        Named parts of the audit data it needs beyond labels and sensitive features (all of them): a
        language-model audit's ``"texts"`` (a prompt set without choices) and ``"choices"`` (a multiple-choice
        set); see :data:`DATA_PARTS`.
    """

    kinds: frozenset[OutputKind] = frozenset({OutputKind.CLASS_PROBS, OutputKind.TOP_K, OutputKind.LABELS})
    least_access: Access | None = Access.LABELS
    labels: bool = False
    sensitive: bool = False
    references: bool = False
    data: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SectionInputs:
    """What the audit knows, before computing, about a teacher/student pair (what :meth:`Section.skip_reason`
    judges)."""

    kinds: tuple[OutputKind, OutputKind]
    access: tuple[Access | None, Access | None]
    has_labels: bool
    has_sensitive: bool
    has_references: bool = False
    names: tuple[str, str] = ("teacher", "student")
    data: frozenset[str] = frozenset()  # the named parts of the data the audit has (Needs.data)


def _quiet(message: str) -> None:
    return None


@dataclass(frozen=True)
class ModelContext:
    """What a section that computes from the models themselves (``stream = False``: cost, lineage) is given, once
    per audit, by :meth:`Section.compute_models`.

    Attributes
    ----------
    teacher : ModelAdapter
    students : tuple of ModelAdapter
        Every audited model the skip rule let through for this section, in the audit's order.
    data : AuditData
        The audit rows the driver holds (all of them in memory; the first unit of a sharded source).
    options : mapping
        The section's options, checked by its schema.
    bootstrap : Bootstrap
        The audit's interval settings (``n_replicates`` reaches every section).
    seed, batch_size, device, precision, cache_dir
        The audit's; one device and precision for every model the section runs (references and controls too).
    references, controls : tuple of models
        Lineage's pool: models exchangeable with the teacher, and negative controls.
    positive_controls : tuple of models
        Lineage's positive controls: students the owner made from the teacher, tested like each student to measure
        the test's power for this teacher (:func:`kdaudit.lineage_test`).
    probes : optional
        Lineage probe inputs (None: the audit rows).
    outputs : Outputs, optional
        The harness's outputs of the audit rows when the audit keeps them (``keep_outputs``), else None; a section
        reads the outputs of models it runs again from the output cache (``cache_dir``) instead.
    measure_cost : bool
        Whether the cost section times the models (timings go to run.json only).
    progress : callable
        ``progress(message)`` reports a step on stderr when the audit shows progress.
    """

    teacher: Any
    students: tuple[Any, ...]
    data: Any
    options: Mapping[str, Any]
    bootstrap: Any
    seed: int = 0
    batch_size: int = 256
    device: Any = "cpu"
    precision: Any = None
    cache_dir: Any = None
    references: tuple[Any, ...] = ()
    controls: tuple[Any, ...] = ()
    positive_controls: tuple[Any, ...] = ()
    probes: Any = None
    outputs: Any = None
    measure_cost: bool = True
    progress: Callable[[str], None] = _quiet


@dataclass
class ModelResults:
    """What :meth:`Section.compute_models` gives back.

    Attributes
    ----------
    by_student : dict
        ``student name -> result`` (a result object or a JSON-able mapping), one per student of the context.
    results : dict
        Entries of results.json's top level the section owns (the cost section's per-model table, ``cost``).
    run_info : dict
        Entries of run.json (wall times, measured latency: what differs between runs, never in results.json).
    timings : dict
        ``"student/section" -> seconds`` for run.json's ``wall_time_s.sections_s``.
    """

    by_student: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class Section:
    """Base of every section. Subclasses set the class attributes; one that computes from rows gives an
    :meth:`accumulator` (and may override :meth:`fold`, how a unit of rows feeds it).

    Attributes
    ----------
    name : str
        The key in results.json, configs, policies (``section.metric``) and the CLI.
    order : int
        Position in results.json and the report (built-ins use 10, 20, ...; a plugin picks its own).
    title : str
    description : str
    needs : Needs
    options : tuple of Option
    summary_keys : tuple of str
        Headline keys a compact summary shows first.
    default : bool
        Runs when an audit names no sections (kdaudit's own do; a plugin opts in, so that installing it does not
        change every audit's results.json).
    stream : bool
        True when the section consumes the harness's row outputs (it then has an accumulator); False for sections
        that work on the models themselves (cost, lineage).
    """

    name: str = ""
    order: int = 1000
    title: str = ""
    description: str = ""
    needs: Needs = Needs()
    options: tuple[Option, ...] = ()
    summary_keys: tuple[str, ...] = ()
    default: bool = False
    stream: bool = True

    # -- options ----------------------------------------------------------------------------------------
    def check_options(self, options: Mapping[str, Any] | None, where: str = "section_options", *,
                      error: Any = None) -> dict[str, Any]:
        """Validate options against :attr:`options` (unknown names get a did-you-mean); returns the checked dict.

        ``error(path, value, accepted)`` builds the exception (a config file's ConfigError names its key path); by
        default a KDAuditError names the argument.
        """
        error = error or invalid_argument
        if options is None:
            return {}
        if not isinstance(options, Mapping):
            raise error(f"{where}.{self.name}", options, "a mapping option -> value")
        by_name = {o.name: o for o in self.options}
        out: dict[str, Any] = {}
        for key, value in options.items():
            opt = by_name.get(str(key))
            if opt is None:
                names = ", ".join(sorted(by_name)) or "none"
                raise error(f"{where}.{self.name}", key, f"an option of the {self.name} section ({names})"
                            + did_you_mean(str(key), by_name))
            out[opt.name] = opt.check(value, f"{where}.{self.name}.{opt.name}", error=error)
        return out

    # -- needs --------------------------------------------------------------------------------------------
    def skip_reason(self, inputs: SectionInputs) -> str | None:
        """Why this section cannot run on these inputs, or None. One rule for every section."""
        needs = self.needs
        for name, kind, access in zip(inputs.names, inputs.kinds, inputs.access):
            if not any(kind == k or k in _POORER.get(kind, ()) for k in needs.kinds):
                takes = ", ".join(sorted(k.value for k in needs.kinds))
                return f"the {self.name} section needs outputs of kind {takes}; {name} gives {kind.value}"
            if needs.least_access is not None and access is not None and \
                    _ACCESS_RANK[access] < _ACCESS_RANK[needs.least_access]:
                return (f"the {self.name} section needs at least {needs.least_access.value} from both models; "
                        f"{name} gives {access.value}")
        if needs.labels and not inputs.has_labels:
            return f"the {self.name} section needs true labels (y_true)"
        if needs.sensitive and not inputs.has_sensitive:
            return f"the {self.name} section needs sensitive features"
        if needs.references and not inputs.has_references:
            return f"the {self.name} section needs reference models"
        missing = sorted(needs.data - inputs.data)
        if missing:
            return f"the {self.name} section needs {DATA_PARTS.get(missing[0], repr(missing[0]))}; none was given"
        return None

    # -- computing ----------------------------------------------------------------------------------------
    def definitions(self) -> Mapping[str, Mapping[str, Any]]:
        """``key -> {"label", "formula", "higher_is_better", "description"}`` of every headline key."""
        return {}

    def accumulator(self, *, n_classes: int, teacher: Any, student: Any, bootstrap: Any,
                    options: Mapping[str, Any]) -> Any:
        """A fresh accumulator for this pair (``update(y_true, p_teacher, p_student, *, ids, sensitive)``, ``merge``,
        ``compute``), or None for a section without one."""
        return None

    def fold(self, *, y_true: Any, teacher: Any, student: Any, ids: Any, sensitive: Any, bootstrap: Any,
             options: Mapping[str, Any]) -> Any:
        """One unit of rows folded into a fresh accumulator, or the section's final result when it finds it cannot
        run on these rows (a result that is not an accumulator is taken as is).

        ``teacher`` and ``student`` are the harness's ``ModelOutputs`` on the unit's rows (``probs``, ``labels``,
        ``logits``, ``access``, ``top_k``, ``n_classes``). The engine merges the units' accumulators in unit order
        and calls ``compute()`` once. Default: :meth:`accumulator` updated with both models' probabilities.
        """
        acc = self.accumulator(n_classes=teacher.n_classes, teacher=teacher, student=student, bootstrap=bootstrap,
                               options=options)
        if acc is None:
            raise NotImplementedError(f"section {self.name!r} has no accumulator (stream = False, or define one)")
        acc.update(y_true, teacher.probs, student.probs, ids=ids, sensitive=sensitive)
        return acc

    def compute_models(self, context: ModelContext) -> ModelResults | None:
        """For a section that works on the models rather than on their outputs row by row (``stream = False``):
        every student's result at once, so that what the students share (the teacher's timing, lineage's reference
        pool) is computed once per audit. None: the section does not compute from these models (a language-model
        section asked of classifiers), and the audit reports it unavailable."""
        return None

    # -- reading -------------------------------------------------------------------------------------------
    def rows(self, result: Mapping[str, Any]) -> list[Row]:
        """Tidy rows of a section result as stored in results.json, read by :func:`kdaudit._rows.result_rows`: the
        one reading that ``AuditResult.to_frame``, the policy and the gate share (its layout: ``headline``, top-level
        numbers, a generic ``by_group: {metric: {group: estimate}}`` table, the bias ``features`` layout). A section
        shapes its result into that layout; it does not override this method (the gate, reading a results.json where
        the section is not installed, could not see the override)."""
        return result_rows(self.name, result, self.definitions())

    def __repr__(self) -> str:
        return f"<section {self.name!r} order={self.order}>"


def check_section(obj: Any, origin: str) -> Section:
    """A registered object as a Section, or a KDAuditError naming where it came from."""
    if isinstance(obj, type) and issubclass(obj, Section):
        obj = obj()
    if not isinstance(obj, Section):
        raise KDAuditError(f"section plugin {origin} gave {type(obj).__name__}; expected a kdaudit.sections.Section "
                           "(subclass or instance)")
    if not obj.name or not obj.name.isidentifier() or obj.name != obj.name.lower():
        raise KDAuditError(f"section plugin {origin} has the name {obj.name!r}; expected a lower-case identifier")
    return obj


def ordered(sections: Iterable[Section]) -> list[Section]:
    return sorted(sections, key=lambda s: (s.order, s.name))


def names_of(sections: Sequence[Section]) -> tuple[str, ...]:
    return tuple(s.name for s in sections)

