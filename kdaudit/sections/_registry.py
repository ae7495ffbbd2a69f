"""The registry of sections: kdaudit's own, then those other packages declare under the entry-point group
``kdaudit.sections``.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."kdaudit.sections"]
    drift = "my_package.sections:DriftSection"

where ``DriftSection`` is a :class:`~kdaudit.sections.Section` subclass (or instance). Once installed, its section
runs in every audit that asks for it (``sections=[..., "drift"]``, a config's ``sections:``), and its numbers appear
in results.json, ``AuditResult.to_frame()``, policy rules (``drift.some_metric``) and the report, with no edit to
kdaudit. The registry is read afresh on each call (a few milliseconds), so there is no global state to go stale.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Iterable, Mapping

from kdaudit._exceptions import KDAuditError, did_you_mean, invalid_argument
from kdaudit.sections._base import Section, check_section, ordered
from kdaudit.sections._builtin import BUILTIN_SECTIONS
from kdaudit.sections._lm import LM_BUILTIN_SECTIONS

__all__ = ["ENTRY_POINT_GROUP", "check_section_options", "definitions_of", "get_section", "registry", "section_names"]

ENTRY_POINT_GROUP = "kdaudit.sections"


def _plugins() -> list[Section]:
    found = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"{ep.name!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP!r})"
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin names itself instead of breaking every audit obscurely
            raise KDAuditError(f"section plugin {origin} failed to load: {type(exc).__name__}: {exc}") from exc
        section = check_section(obj, origin)
        if section.name != ep.name:
            raise KDAuditError(f"section plugin {origin} defines the section {section.name!r}; the entry point's "
                               "name must be the section's name")
        found.append(section)
    return found


def registry(extra: Iterable[Any] = ()) -> dict[str, Section]:
    """Every section, in results order (``order``, then name): built-ins, entry-point plugins, then ``extra``.

    Raises
    ------
    KDAuditError
        Two sections with one name (a plugin cannot replace a built-in silently).
    """
    out: dict[str, Section] = {}
    for i, obj in enumerate([*BUILTIN_SECTIONS, *LM_BUILTIN_SECTIONS, *_plugins(), *extra]):
        section = check_section(obj, f"#{i}")
        if section.name in out:
            raise KDAuditError(f"two sections are named {section.name!r} ({out[section.name]!r} and {section!r}); "
                               "section names must be unique")
        out[section.name] = section
    return {s.name: s for s in ordered(out.values())}


def section_names(extra: Iterable[Any] = ()) -> tuple[str, ...]:
    """Names of every registered section, in results order."""
    return tuple(registry(extra))


def get_section(name: str, sections: Mapping[str, Section] | None = None, *, argument: str = "sections") -> Section:
    """The section called ``name``; a KDAuditError with a did-you-mean otherwise."""
    sections = registry() if sections is None else sections
    try:
        return sections[name]
    except KeyError:
        raise invalid_argument(argument, name, f"section names among {', '.join(sections)}"
                               + did_you_mean(str(name), sections)) from None


def definitions_of(names: Iterable[str], sections: Mapping[str, Section]) -> dict[str, dict[str, Any]]:
    """``"section.key" -> definition`` of every headline key of the named sections (results.json's
    ``definitions``, which the report's methodology reads)."""
    return {f"{name}.{key}": dict(d) for name in names for key, d in sections[name].definitions().items()}


def check_section_options(section_options: Mapping[str, Any] | None, sections: Mapping[str, Section]
                          ) -> dict[str, dict[str, Any]]:
    """``section -> options``, each checked by its section's one schema (what the API's ``section_options``, a
    config's ``section_options:`` and the CLI's ``--option`` all go through)."""
    if section_options is None:
        return {}
    if not isinstance(section_options, Mapping):
        raise invalid_argument("section_options", section_options, "a mapping section -> {option: value}")
    return {name: get_section(name, sections, argument="section_options").check_options(opts)
            for name, opts in section_options.items()}
