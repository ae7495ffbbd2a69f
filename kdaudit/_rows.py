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
_DISPARITY_PARTS = ("teacher", "student", "amplification", "change")
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
    """

    section: str
    metric: str
    group: str
    estimate: Estimate
    higher_is_better: bool | None = None
    definition: str = ""
    reliable: bool = True

    def to_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {"section": self.section, "metric": self.metric, "group": self.group, "value": e.value,
                "low": e.low, "high": e.high, "method": e.method, "level": e.level,
                "higher_is_better": self.higher_is_better, "definition": self.definition,
                "reliable": self.reliable}


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
    if part == "amplification" and key.endswith(_DIFFERENCE):
        return key[: -len(_DIFFERENCE)] + "_amplification"
    return f"{key}_{part}"


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

    def row(metric: str, group: str, est: Any, base: str | None = None, reliable: bool = True) -> Row:
        d = defs.get(metric) or (defs.get(base) if base else None) or {}
        hib = d.get("higher_is_better")
        return Row(section, metric, group, as_estimate(est), hib if isinstance(hib, bool) else None,
                   str(d.get("formula") or d.get("description") or ""), reliable)

    out: list[Row] = []
    headline = result.get("headline")
    headline = headline if isinstance(headline, Mapping) else {}
    for key in sorted(headline, key=str):
        out.append(row(str(key), "", headline[key]))
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
                    out.append(row(_disparity_metric(str(dkey), part), str(fname), entry[part], str(dkey)))
        for g in feat.get("groups") or []:
            if not isinstance(g, Mapping):
                continue
            label, reliable = f"{fname}={g.get('group')}", bool(g.get("reliable", True))
            for model in _GROUP_MODELS:
                values = g.get(model)
                for k in sorted(values, key=str) if isinstance(values, Mapping) else ():
                    if values[k] is not None:
                        name = str(k) if model == "student" else f"{k}_{model}"
                        out.append(row(name, label, values[k], str(k), reliable))
            if g.get("group_agreement") is not None:
                out.append(row("group_agreement", label, g["group_agreement"], None, reliable))
    return out
