"""Tidy rows: the one reading of a section's stored result that every reader shares.

A section's result, as results.json stores it, is read into :class:`Row` objects (section, metric, group, estimate,
which direction is better, definition, whether the group is large enough to judge) by :func:`result_rows`, and by
nothing else: :meth:`kdaudit.sections.Section.rows`, ``AuditResult.to_frame``, the policy and the gate (which read a
results.json from any machine, with no section code installed) all call it. A section therefore shapes its result
into the layout below rather than teaching each reader a new one:

* ``headline: {metric: estimate}``: whole-data numbers (``group == ""``);
* numbers and estimates at the top level of the result (a p-value, a count): whole-data numbers too, after the
  headline's (a headline key wins);
* ``by_group: {metric: {group: estimate}}``: one number per group;
* ``features: {feature: {"disparities": {...}, "groups": [...]}}`` (the bias layout): per-feature disparities, named
  as the headline numbers they break down (``dp_amplification`` of feature ``sex``), and per-group values
  (``group_accuracy`` is the student's, ``group_accuracy_teacher`` the teacher's, ``group_accuracy_change`` the
  student's minus the teacher's), with groups flagged unreliable (too small) marked ``reliable=False``.

Each row also says which **quantity** it measures and which **part** of a teacher-to-student comparison it is
(``"teacher"``, ``"student"``, ``"change"``, ``"p_value"``, or ``""`` for a number on its own), so a reader lays out
"teacher, student, change" side by side without knowing any metric's name. In a headline, the parts are named
``teacher_<q>`` / ``student_<q>`` (or ``<q>_teacher`` / ``<q>_student``), the change ``<q>_change`` (or, for a
``<q>_difference``, ``<q>_amplification``) and its test ``<change>_p_value``; the naming is read here, once, and
only where both the teacher's and the student's number are present (a ``<q>_change`` or ``<q>_amplification`` alone is
still a ``"change"`` of ``<q>``).

An estimate is an ``Estimate`` dict (``value``, ``low``, ``high``, ``method``, ``level``) or a plain number. Nothing
here trusts the input: a value that is not a number reads as NaN (which the policy refuses to judge), never as an
exception. This module is foundation: it imports no numpy, so the gate stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from kdaudit._estimate import Estimate

__all__ = ["Row", "as_estimate", "result_rows", "section_definitions"]

# the parts of one disparity entry, and the row metric each is named by: a ``*_difference`` disparity's
# amplification (student minus teacher) is the ``*_amplification`` the headline reports for the worst feature
_DIFFERENCE = "_difference"
_DISPARITY_PARTS = ("teacher", "student", "amplification", "change", "p_value")
_PART_OF = {"amplification": "change", "change": "change", "teacher": "teacher", "student": "student",
            "p_value": "p_value"}
_ROLES = ("teacher", "student")
_GROUP_MODELS = ("student", "teacher", "change")


@dataclass(frozen=True)
class Row:
    """One number of a section's result, in the tidy form every reader shares.

    Attributes
    ----------
    section : str
    metric : str
        The name a policy rule gives after the section (``"top1_agreement"``, ``"dp_amplification"``,
        ``"group_accuracy_change"``).
    group : str
        ``""`` for a whole-data number, ``"feature"`` for a per-feature one, ``"feature=group"`` for a per-group one
        (or a ``by_group`` table's own group label).
    estimate : Estimate
        The number and its interval as stored (``method`` None where the result gave a plain number).
    higher_is_better : bool or None
    definition : str
        The formula (else the description) of the metric's definition.
    reliable : bool
        False for a group the section flagged too small to support a claim (the policy does not judge it).
    quantity : str
        What the number measures, shared by the parts of one comparison (``"ece"`` for ``teacher_ece``,
        ``student_ece`` and ``ece_change``); ``""`` means the metric itself.
    part : str
        ``"teacher"``, ``"student"``, ``"change"`` (student minus teacher, or amplification), ``"p_value"`` (of the
        change), or ``""`` for a number that is not part of a teacher-to-student comparison.
    """

    section: str
    metric: str
    group: str
    estimate: Estimate
    higher_is_better: bool | None = None
    definition: str = ""
    reliable: bool = True
    quantity: str = ""
    part: str = ""

    def to_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {"section": self.section, "metric": self.metric, "group": self.group, "value": e.value,
                "low": e.low, "high": e.high, "method": e.method, "level": e.level,
                "higher_is_better": self.higher_is_better, "definition": self.definition,
                "reliable": self.reliable, "quantity": self.quantity or self.metric, "part": self.part}


def _num(v: Any) -> float:
    """A number from results.json; None (how NaN is written) and anything non-numeric become NaN."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return math.nan
    try:
        return float(v)
    except OverflowError:  # an int too large for a float
        return math.inf


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_estimate(x: Any) -> bool:
    """An estimate as stored: an Estimate, an Estimate dict (it has a ``value``) or a plain number."""
    return isinstance(x, Estimate) or _is_number(x) or (isinstance(x, Mapping) and "value" in x)


def as_estimate(x: Any) -> Estimate:
    """An :class:`Estimate` from an Estimate, an Estimate dict or a plain number; anything else reads as NaN.

    A plain number has no interval and no method (``method`` None); a dict keeps its ``method`` as stored.
    """
    if isinstance(x, Estimate):
        return x
    if isinstance(x, Mapping):
        level = x.get("level", 0.95)
        return Estimate(_num(x.get("value")), _num(x.get("low")), _num(x.get("high")), x.get("method"),
                        level if _is_number(level) else math.nan)
    return Estimate(_num(x), method=None)  # type: ignore[arg-type]


def section_definitions(definitions: Any, section: str) -> dict[str, Mapping[str, Any]]:
    """``metric -> definition`` of one section, from results.json's ``definitions`` (``"section.metric" -> ...``)."""
    prefix = section + "."
    if not isinstance(definitions, Mapping):
        return {}
    return {k[len(prefix):]: v for k, v in definitions.items()
            if isinstance(k, str) and k.startswith(prefix) and isinstance(v, Mapping)}


def _disparity_metric(key: str, part: str) -> str:
    amplification = key[: -len(_DIFFERENCE)] + "_amplification" if key.endswith(_DIFFERENCE) else ""
    if part == "amplification" and amplification:
        return amplification
    if part == "p_value" and amplification:
        return amplification + "_p_value"  # the test of the amplification, named as the headline names it
    return f"{key}_{part}"


def _role_of(key: str) -> tuple[str, str] | None:
    for role in _ROLES:
        if key.startswith(role + "_"):
            return key[len(role) + 1:], role
        if key.endswith("_" + role):
            return key[: -len(role) - 1], role
    return None


def _headline_parts(keys: list[str]) -> dict[str, tuple[str, str]]:
    """``key -> (quantity, part)`` of the headline keys that form a teacher / student / change comparison."""
    bases: dict[str, dict[str, str]] = {}
    for key in keys:
        r = _role_of(key)
        if r:
            bases.setdefault(r[0], {})[r[1]] = key
    for key in keys:
        if _role_of(key):
            continue
        for suffix in ("_change", _DIFFERENCE):
            if key.endswith(suffix) and key[: -len(suffix)] in bases:
                bases[key[: -len(suffix)]].setdefault("change", key)
        if key.endswith("_amplification") and key[: -len("_amplification")] + _DIFFERENCE in bases:
            bases[key[: -len("_amplification")] + _DIFFERENCE].setdefault("change", key)
    out: dict[str, tuple[str, str]] = {}
    for key in keys:  # a change on its own (no models' numbers beside it) is still a change
        for suffix in ("_change", "_amplification"):
            if key.endswith(suffix) and len(key) > len(suffix):
                out[key] = (key[: -len(suffix)], "change")
    for base, parts in bases.items():
        if not all(r in parts for r in _ROLES):
            continue  # a comparison needs both models' numbers
        if parts.get("change") and parts["change"] + "_p_value" in keys:
            parts["p_value"] = parts["change"] + "_p_value"
        out.update({key: (base, part) for part, key in parts.items()})
    return out


def result_rows(section: str, result: Any, definitions: Mapping[str, Mapping[str, Any]] | None = None
                ) -> list[Row]:
    """The tidy rows of one section's stored result (see the module's docstring for the layout read).

    Parameters
    ----------
    section : str
        The section's name.
    result : mapping
        The section's entry of one comparison in results.json. An unavailable section has no rows.
    definitions : mapping, optional
        ``metric -> {"higher_is_better", "formula", "description", ...}`` of the section's metrics.
    """
    if not isinstance(result, Mapping) or result.get("available", True) is not True:
        return []
    defs = definitions or {}

    def row(metric: str, group: str, est: Any, base: str | None = None, reliable: bool = True,
            quantity: str = "", part: str = "") -> Row:
        d = defs.get(metric) or (defs.get(base) if base else None) or {}
        hib = d.get("higher_is_better")
        return Row(section, metric, group, as_estimate(est), hib if isinstance(hib, bool) else None,
                   str(d.get("formula") or d.get("description") or ""), reliable, quantity, part)

    out: list[Row] = []
    headline = result.get("headline")
    headline = headline if isinstance(headline, Mapping) else {}
    parts = _headline_parts([str(k) for k in headline])
    for key in sorted(headline, key=str):
        out.append(row(str(key), "", headline[key], None, True, *parts.get(str(key), ("", ""))))
    for key in sorted(result, key=str):
        if key not in headline and key not in ("headline", "by_group", "features", "available") \
                and _is_estimate(result[key]):
            out.append(row(str(key), "", result[key]))
    by_group = result.get("by_group")
    for key, groups in sorted(by_group.items()) if isinstance(by_group, Mapping) else ():
        if isinstance(groups, Mapping):
            for group in sorted(groups, key=str):
                out.append(row(str(key), str(group), groups[group]))
    features = result.get("features")
    for fname, feat in sorted(features.items()) if isinstance(features, Mapping) else ():
        if not isinstance(feat, Mapping):
            continue
        disparities = feat.get("disparities")
        for dkey, entry in sorted(disparities.items()) if isinstance(disparities, Mapping) else ():
            for part in _DISPARITY_PARTS if isinstance(entry, Mapping) else ():
                if entry.get(part) is not None:
                    out.append(row(_disparity_metric(str(dkey), part), str(fname), entry[part], str(dkey), True,
                                   str(dkey), _PART_OF[part]))
        for g in feat.get("groups") or []:
            if not isinstance(g, Mapping):
                continue
            label, reliable = f"{fname}={g.get('group')}", bool(g.get("reliable", True))
            for model in _GROUP_MODELS:
                values = g.get(model)
                for k in sorted(values, key=str) if isinstance(values, Mapping) else ():
                    if values[k] is not None:
                        name = str(k) if model == "student" else f"{k}_{model}"
                        out.append(row(name, label, values[k], str(k), reliable, str(k), model))
            if g.get("group_agreement") is not None:
                out.append(row("group_agreement", label, g["group_agreement"], None, reliable))
    return out
