"""Review policy and gate: rules judged on confidence intervals, findings in plain words, a CI exit code.

A policy is a list of rules, each on one metric of the audit results (``section.key``, e.g.
``agreement.top1_agreement``) with a ``min`` or a ``max`` threshold. A rule is judged on the *interval*, not only the
point estimate, so an audit on too few rows cannot pass by luck:

* ``min: t`` -- **pass** if the whole interval is at or above t; **warn** if the point estimate is at or above t but
  the interval reaches below; **fail** if the point estimate is below t.
* ``max: t`` -- the mirror image.

A number without an interval (a p-value, an exact parameter count) is judged on its point value (pass or fail). A
rule with ``level: warning`` can at worst warn.

Every rule resolves against the results' **tidy rows** (:func:`kdaudit._rows.result_rows`: section, metric, group,
estimate with its interval, which direction is better), the same rows ``AuditResult.to_frame`` shows, whatever
section made them (kdaudit's own or a plugin's; no metric name is parsed). A rule reads the row of its metric with no
group; a rule with ``per_group: true`` reads the rows of its metric that have one: every sensitive feature for a
disparity (``bias.dp_amplification``), every group for a group metric (``bias.group_agreement``,
``bias.group_accuracy_change``) or a section's ``by_group`` table. Groups the section flagged too small to support a
claim are not judged and one ``info`` finding lists them; a per-group rule on a metric reported only as one number
judges that number. The gate fails closed: a rule that cannot be judged (its section or metric missing, a value that is not a
finite number, an interval with low > high) **fails** (a warning-level rule warns), and :func:`gate` refuses results
of another schema or kdaudit version, or of an audit on too few rows (:func:`check_results`, exit 2). Only a section
the audit itself marked unavailable, with its reason (calibration of a labels-only model), gives a ``skipped``
finding. The verdict is ``fail`` if any finding fails, else ``warn`` if any warns or was skipped, else ``pass``;
``strict`` (``kdaudit gate --strict``) turns warnings and skips into failures.

Policy YAML::

    name: my-review-board
    rules:
      - {metric: agreement.top1_agreement, min: 0.90}
      - {metric: agreement.retained_accuracy, min: 0.97}
      - {metric: calibration.ece_change, max: 0.02, level: warning}
      - {metric: bias.dp_amplification, max: 0.05, per_group: true}
      - {metric: lineage.p_value, max: 0.01}

The shipped defaults are :data:`DEFAULT_POLICY` for classifiers and :data:`DEFAULT_LM_POLICY` for language models
(printed by ``kdaudit gate --show-default-policy [--task lm]``); the gate picks the one of the results' ``task``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from kdaudit._exceptions import ConfigError, key_error
from kdaudit._exceptions import did_you_mean as _did_you_mean
from kdaudit._io import read_yaml_file
from kdaudit._rows import Row, result_rows, section_definitions

__all__ = [
    "DEFAULT_LM_POLICY",
    "DEFAULT_POLICY",
    "Finding",
    "GateResult",
    "MIN_ROWS_TO_JUDGE",
    "Policy",
    "Rule",
    "STATUSES",
    "check_results",
    "default_policy",
    "evaluate_policy",
    "gate",
    "load_policy",
]

#: Finding statuses, best to worst.
STATUSES = ("info", "pass", "skipped", "warn", "fail")
_LEVELS = ("error", "warning")
_RULE_KEYS = ("metric", "min", "max", "level", "per_group", "name", "description", "students")
_POLICY_KEYS = ("name", "description", "rules")
# Sections whose numbers live in ``results["comparisons"][i][section]``.
KNOWN_SECTIONS = ("agreement", "calibration", "bias", "fingerprint", "lineage", "cost", "lm_tokens", "lm_generation",
                  "lm_task", "lm_bias")

DEFAULT_POLICY: dict[str, Any] = {
    "name": "kdaudit-default",
    "description": (
        "A conservative starting point for replacing a teacher by its distilled student: the student keeps 97% of the "
        "teacher's accuracy and agrees with it on 90% of rows, its calibration error grows by at most 0.02, and no "
        "sensitive feature's demographic-parity or equalized-odds gap grows by more than 0.05. Every rule is judged "
        "on the 95% interval. Adapt the thresholds to the stakes of your model."
    ),
    "rules": [
        {"metric": "agreement.retained_accuracy", "min": 0.97,
         "description": "the student keeps at least 97% of the teacher's accuracy"},
        {"metric": "agreement.top1_agreement", "min": 0.90,
         "description": "the student predicts the teacher's class on at least 90% of rows"},
        {"metric": "calibration.ece_change", "max": 0.02,
         "description": "expected calibration error grows by at most 0.02"},
        {"metric": "bias.dp_amplification", "max": 0.05, "per_group": True,
         "description": "no sensitive feature's demographic-parity difference grows by more than 0.05"},
        {"metric": "bias.eo_amplification", "max": 0.05, "per_group": True, "level": "warning",
         "description": "no sensitive feature's equalized-odds difference grows by more than 0.05"},
    ],
}

#: The default policy of a language-model audit (``kdaudit.audit`` on prompt sets).
DEFAULT_LM_POLICY: dict[str, Any] = {
    "name": "kdaudit-default-lm",
    "description": (
        "A conservative starting point for replacing a teacher language model by its distilled student: the student "
        "keeps 95% of the teacher's multiple-choice accuracy and next-token accuracy, is at most 25% more perplexed "
        "on the same texts, its next-token calibration error grows by at most 0.02, and no prompt group's "
        "next-token accuracy gap grows by more than 0.05. Judged on 95% intervals with the prompt as the unit."
    ),
    "rules": [
        {"metric": "lm_task.retained_accuracy", "min": 0.95,
         "description": "the student keeps at least 95% of the teacher's multiple-choice accuracy"},
        {"metric": "lm_tokens.retained_next_token_accuracy", "min": 0.95,
         "description": "the student keeps at least 95% of the teacher's next-token accuracy"},
        {"metric": "lm_tokens.perplexity_ratio", "max": 1.25,
         "description": "the student's perplexity is at most 1.25 times the teacher's on the same texts"},
        {"metric": "lm_tokens.ece_change", "max": 0.02, "level": "warning",
         "description": "next-token calibration error grows by at most 0.02"},
        {"metric": "lm_bias.accuracy_amplification", "max": 0.05, "per_group": True,
         "description": "no prompt group's next-token accuracy gap grows by more than 0.05"},
    ],
}


#: the kinds of audit a results.json may report (its ``task``; classifier results have none)
TASKS = ("classifier", "lm")


def default_policy(task: str | None = None) -> dict[str, Any]:
    """The shipped default policy of an audit's ``task``: :data:`DEFAULT_LM_POLICY` for ``"lm"`` (language models),
    :data:`DEFAULT_POLICY` for ``"classifier"`` or None."""
    if task is None or task == "classifier":
        return DEFAULT_POLICY
    if task == "lm":
        return DEFAULT_LM_POLICY
    raise ConfigError(f"results report task {str(task)[:40]!r}; expected one of {', '.join(map(repr, TASKS))} "
                      "(the default policy depends on it)")


# ----------------------------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """One policy rule on one metric: ``min`` and/or ``max`` threshold, severity ``level``."""

    metric: str
    min: float | None = None
    max: float | None = None
    level: str = "error"
    per_group: bool = False
    name: str | None = None
    description: str | None = None
    students: tuple[str, ...] | None = None

    @property
    def section(self) -> str:
        return self.metric.split(".", 1)[0]

    @property
    def key(self) -> str:
        return self.metric.split(".", 1)[1]

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return f"{self.metric} {' and '.join(parts)}" + (" (each group)" if self.per_group else "")

    @property
    def threshold_text(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"min {self.min:g}")
        if self.max is not None:
            parts.append(f"max {self.max:g}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"metric": self.metric, "level": self.level, "per_group": self.per_group,
                             "min": self.min, "max": self.max, "label": self.label}
        if self.name:
            d["name"] = self.name
        if self.description:
            d["description"] = self.description
        if self.students is not None:
            d["students"] = list(self.students)
        return d

    def judge(self, value: float, low: float, high: float) -> str:
        """Status of this rule for one number: ``pass``, ``warn`` or ``fail`` (before the rule's level applies)."""
        has_interval = not (math.isnan(low) or math.isnan(high))
        status = "pass"
        if self.min is not None:
            if value < self.min:
                status = "fail"
            elif has_interval and low < self.min:
                status = "warn"
        if self.max is not None and status != "fail":
            if value > self.max:
                status = "fail"
            elif has_interval and high > self.max:
                status = "warn"
        if status == "fail" and self.level == "warning":
            status = "warn"
        return status


@dataclass(frozen=True)
class Finding:
    """The outcome of one rule for one student (and one group, for per-group rules)."""

    rule: str
    metric: str
    student: str
    status: str
    value: float | None
    low: float | None
    high: float | None
    threshold: str
    message: str
    level: str = "error"
    group: str | None = None
    method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "metric": self.metric, "student": self.student, "status": self.status,
            "value": self.value, "low": self.low, "high": self.high, "threshold": self.threshold,
            "message": self.message, "level": self.level, "group": self.group, "method": self.method,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        return cls(**{k: d.get(k) for k in ("rule", "metric", "student", "status", "value", "low", "high",
                                             "threshold", "message", "level", "group", "method")})


@dataclass(frozen=True)
class Policy:
    """A named list of :class:`Rule`; build with :func:`load_policy`."""

    rules: tuple[Rule, ...]
    name: str = "policy"
    description: str = ""
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "rules": [r.to_dict() for r in self.rules]}

    def evaluate(self, results: Mapping[str, Any]) -> list[Finding]:
        return evaluate_policy(results, self)


# ------------------------------------------------------------------------------------------------------- loading
def _err(path: str, value: Any, accepted: str, source: str = "") -> ConfigError:
    # ``source`` may carry a key prefix after a "#" ("audit.yaml#policy.") for a policy inlined in a config file
    source, _, prefix = source.partition("#")
    return key_error(source, "config key" if prefix else "policy key", prefix + path, value, accepted)


def _number(x: Any, path: str, source: str) -> float | None:
    if x is None:
        return None
    try:
        value = float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan
    except OverflowError:  # an int too large for a float
        value = math.inf
    if not math.isfinite(value):
        raise _err(path, x, "a finite number", source)
    return value


def _rule_from_dict(d: Any, path: str, source: str, known: tuple[str, ...] = KNOWN_SECTIONS) -> Rule:
    if not isinstance(d, Mapping):
        raise _err(path, d, "a mapping such as {metric: agreement.top1_agreement, min: 0.9}", source)
    for k in d:
        if k not in _RULE_KEYS:
            raise _err(f"{path}.{k}", d[k], f"no such key; accepted keys: {', '.join(_RULE_KEYS)}"
                       + _did_you_mean(str(k), _RULE_KEYS), source)
    metric = d.get("metric")
    if not isinstance(metric, str) or "." not in metric or not metric.split(".", 1)[1]:
        raise _err(f"{path}.metric", metric, "a metric name 'section.key', e.g. 'agreement.top1_agreement'", source)
    section = metric.split(".", 1)[0]
    if section not in known:
        raise _err(f"{path}.metric", metric, f"a section among {', '.join(known)}"
                   + _did_you_mean(section, known), source)
    lo = _number(d.get("min"), f"{path}.min", source)
    hi = _number(d.get("max"), f"{path}.max", source)
    if lo is None and hi is None:
        raise _err(path, dict(d), "a 'min' or a 'max' threshold", source)
    if lo is not None and hi is not None and lo > hi:
        raise _err(f"{path}.min", lo, f"a value <= max ({hi})", source)
    level = d.get("level", "error")
    if level not in _LEVELS:
        raise _err(f"{path}.level", level, "'error' (a violation fails the gate) or 'warning' (it only warns)",
                   source)
    per_group = d.get("per_group", False)
    if not isinstance(per_group, bool):
        raise _err(f"{path}.per_group", per_group, "true or false", source)
    for k in ("name", "description"):
        if d.get(k) is not None and not isinstance(d[k], str):
            raise _err(f"{path}.{k}", d[k], "a string", source)
    students = d.get("students")
    if students is not None:
        if isinstance(students, str):
            students = [students]
        if not isinstance(students, list) or not all(isinstance(s, str) for s in students):
            raise _err(f"{path}.students", students, "a list of student names", source)
        students = tuple(students)
    return Rule(metric=metric, min=lo, max=hi, level=level, per_group=per_group, name=d.get("name"),
                description=d.get("description"), students=students)


def _policy_from_dict(d: Any, source: str = "", known: tuple[str, ...] = KNOWN_SECTIONS) -> Policy:
    if isinstance(d, list):  # a bare list of rules is accepted
        d = {"rules": d}
    if not isinstance(d, Mapping):
        raise _err("(top level)", d, "a mapping with a 'rules' list", source)
    for k in d:
        if k not in _POLICY_KEYS:
            raise _err(str(k), d[k], f"no such key; accepted keys: {', '.join(_POLICY_KEYS)}"
                       + _did_you_mean(str(k), _POLICY_KEYS), source)
    rules = d.get("rules")
    if not isinstance(rules, list) or not rules:
        raise _err("rules", rules, "a non-empty list of rules", source)
    name = d.get("name", "policy")
    if not isinstance(name, str):
        raise _err("name", name, "a string", source)
    description = d.get("description", "") or ""
    if not isinstance(description, str):
        raise _err("description", description, "a string", source)
    parsed = tuple(_rule_from_dict(r, f"rules[{i}]", source, known) for i, r in enumerate(rules))
    return Policy(rules=parsed, name=name, description=description, source=source)


def load_policy(policy: Any = None, *, sections: Iterable[str] = (), _source: str = "") -> Policy:
    """Build a :class:`Policy` from a YAML file path, a mapping, a list of rules, a Policy, or ``None`` (default).

    ``sections`` names sections beyond kdaudit's own that rules may judge (a plugin's, registered under the entry
    point group ``kdaudit.sections``); the audit and the gate pass the sections they know of.

    Raises
    ------
    ConfigError
        When the file is missing or not valid YAML, or a rule is malformed (the message names the key path).
    """
    if policy is None or (isinstance(policy, str) and policy == "default"):
        return _policy_from_dict(DEFAULT_POLICY, "default policy")
    if isinstance(policy, Policy):
        return policy
    known = KNOWN_SECTIONS + tuple(s for s in sections if s not in KNOWN_SECTIONS)
    if isinstance(policy, (str, os.PathLike)):
        path = Path(policy)
        data = read_yaml_file(path, what="policy file", expected="a YAML file with a 'rules' list")
        return _policy_from_dict(data, str(path), known)
    if isinstance(policy, (Mapping, list)):
        return _policy_from_dict(policy, _source, known)
    raise ConfigError(f"policy got {type(policy).__name__}; expected a YAML path, a mapping, a Policy or None")


# ---------------------------------------------------------------------------------------------------- evaluation
class _Rows:
    """The tidy rows (:func:`kdaudit._rows.result_rows`) of every comparison's sections, read once per evaluation.

    Every rule resolves against these rows, whatever section made them (kdaudit's own or a plugin's): a whole-data
    rule reads the row of its metric with no group, a per-group rule the rows of its metric with a group."""

    def __init__(self, results: Mapping[str, Any]) -> None:
        self._defs = results.get("definitions")
        self._cache: dict[tuple[int, str], list[Row]] = {}

    def of(self, index: int, comp: Mapping[str, Any], section: str) -> list[Row]:
        key = (index, section)
        if key not in self._cache:
            self._cache[key] = result_rows(section, comp.get(section), section_definitions(self._defs, section))
        return self._cache[key]


def _known_metrics(rows: _Rows, results: Mapping[str, Any], comparisons: list[Mapping[str, Any]], section: str
                   ) -> tuple[set[str], set[str]]:
    """``(whole-data metrics, per-group metrics)`` the results report for one section (definitions count as
    whole-data metrics: a rule may name a defined metric that this audit happened not to produce)."""
    whole: set[str] = set(section_definitions(results.get("definitions"), section))
    grouped: set[str] = set()
    for i, comp in enumerate(comparisons):
        for r in rows.of(i, comp, section):
            (grouped if r.group else whole).add(r.metric)
    return whole, grouped


def _fmt(x: float, limits: Iterable[float] = ()) -> str:
    # Four significant digits, more where rounding would carry the value across a threshold it is judged by.
    if math.isnan(x):
        return "n/a"
    from kdaudit.report._format import side_digits

    return side_digits(x, list(limits), lambda v, d: f"{v:.{d}g}", float, 4)


def _message(rule: Rule, status: str, value: float, low: float, high: float, student: str,
             group: str | None) -> str:
    # per-group rules name a group as "feature=group"; per-feature disparities name the feature alone
    who = student + ("" if not group else f", group {group}" if "=" in group else f", feature {group}")
    limits = [t for t in (rule.min, rule.max) if t is not None]
    interval = (f" (95% interval {_fmt(low, limits)} to {_fmt(high, limits)})"
                if not (math.isnan(low) or math.isnan(high)) else "")
    num = f"{rule.metric} = {_fmt(value, limits)}{interval}"
    want = []
    if rule.min is not None:
        want.append(f"at least {rule.min:g}")
    if rule.max is not None:
        want.append(f"at most {rule.max:g}")
    want_text = " and ".join(want)
    if status == "pass":
        return f"{who}: {num}; the whole interval is {want_text}."
    if status == "warn":
        if (rule.min is not None and value < rule.min) or (rule.max is not None and value > rule.max):
            return f"{who}: {num} is not {want_text}; this rule only warns."
        return (f"{who}: {num}; the point estimate is {want_text} but the interval is not, so the data cannot "
                "confirm it.")
    return f"{who}: {num} is not {want_text}."


def evaluate_policy(results: Mapping[str, Any], policy: Any = None) -> list[Finding]:
    """Judge every rule of ``policy`` against an audit's results dict (the content of results.json).

    Raises
    ------
    ConfigError
        When a rule names a metric that the results' section does not have (a typo), with a did-you-mean.
    """
    pol = load_policy(policy)
    comparisons = results.get("comparisons")
    if not isinstance(comparisons, list) or not all(isinstance(c, Mapping) for c in comparisons):
        raise ConfigError("results have no 'comparisons' list of mappings; expected the content of a kdaudit "
                          "results.json")
    findings: list[Finding] = []
    rows = _Rows(results)
    for idx, rule in enumerate(pol.rules):
        available = any(isinstance(c.get(rule.section), Mapping) and c[rule.section].get("available", True)
                        for c in comparisons)
        whole, grouped = _known_metrics(rows, results, comparisons, rule.section)
        known = whole | grouped if rule.per_group else whole
        if available and rule.key not in known:
            hint = (f"; {rule.key!r} is reported per group only: add 'per_group: true'" if rule.key in grouped
                    else _did_you_mean(rule.key, known))
            raise ConfigError(f"policy rules[{idx}].metric {rule.metric!r} is not a metric of section "
                              f"{rule.section!r}; known: {', '.join(sorted(known)) or 'none'}" + hint)
        for i, comp in enumerate(comparisons):
            student = str(comp.get("student"))
            if rule.students is not None and student not in rule.students:
                continue
            if comp.get("role", "student") != "student":
                continue  # a control audited beside the student is reported for comparison, never judged
            findings.extend(_judge_rule(rule, comp, student, rows.of(i, comp, rule.section)))
    return findings


def _unjudged(rule: Rule, student: str, why: str, group: str | None = None) -> Finding:
    """A rule that cannot be judged fails (a warning-level rule warns): the gate fails closed, never passes."""
    status = "warn" if rule.level == "warning" else "fail"
    return Finding(rule=rule.label, metric=rule.metric, student=student, status=status, value=None, low=None,
                   high=None, threshold=rule.threshold_text,
                   message=f"{student}: {rule.metric} could not be judged ({why}), so the rule "
                           f"{'warns' if status == 'warn' else 'fails'}", level=rule.level, group=group)


def _skipped(rule: Rule, student: str, why: str, group: str | None = None) -> Finding:
    return Finding(rule=rule.label, metric=rule.metric, student=student, status="skipped", value=None, low=None,
                   high=None, threshold=rule.threshold_text, message=f"{student}: {rule.metric} not judged: {why}",
                   level=rule.level, group=group)


def _finding(rule: Rule, student: str, row: Row, group: str | None) -> Finding:
    e = row.estimate
    value, low, high = e.value, e.low, e.high
    if not math.isfinite(value):
        return _unjudged(rule, student, "its value is missing, not a number or not finite", group)
    if math.isnan(low) != math.isnan(high) or math.isinf(low) or math.isinf(high) or low > high:
        return _unjudged(rule, student, f"its interval [{low}, {high}] is malformed", group)
    status = rule.judge(value, low, high)

    def j(x: float) -> float | None:
        return None if math.isnan(x) else x

    return Finding(rule=rule.label, metric=rule.metric, student=student, status=status, value=value, low=j(low),
                   high=j(high), threshold=rule.threshold_text,
                   message=_message(rule, status, value, low, high, student, group), level=rule.level, group=group,
                   method=e.method)


def _judge_rule(rule: Rule, comp: Mapping[str, Any], student: str, rows: list[Row]) -> list[Finding]:
    """The findings of one rule for one comparison, from the rows of the rule's section."""
    section = comp.get(rule.section)
    if not isinstance(section, Mapping):
        return [_unjudged(rule, student, f"the {rule.section} section is missing from the results")]
    if section.get("available", True) is not True:
        reason = section.get("reason")
        if section.get("available") is False and isinstance(reason, str) and reason.strip():
            # the audit itself stated why the metric does not apply (e.g. calibration of a labels-only model)
            return [_skipped(rule, student, reason)]
        return [_unjudged(rule, student, f"the {rule.section} section is marked unavailable without a reason")]
    mine = [r for r in rows if r.metric == rule.key]
    whole = next((r for r in mine if not r.group), None)
    groups = sorted((r for r in mine if r.group), key=lambda r: r.group)
    if not rule.per_group or not groups:
        # A per-group rule on a metric reported only as one number judges that number.
        if whole is None:
            why = "no per-group values were reported" if rule.per_group else \
                f"{rule.metric} was not reported as a number"
            return [_unjudged(rule, student, why)]
        return [_finding(rule, student, whole, None)]
    out = [_finding(rule, student, r, r.group) for r in groups if r.reliable]
    small = [r.group for r in groups if not r.reliable]
    if small:
        # One finding for all groups too small to support a claim: flagged, not judged as if they could be.
        shown = ", ".join(small[:5]) + (f" and {len(small) - 5} more" if len(small) > 5 else "")
        note = _skipped(rule, student, f"{len(small)} groups too small to support a claim, not judged "
                                       f"({shown})", "small groups")
        out.append(Finding(**{**note.__dict__, "status": "info"}))
    return out


def verdict_of(findings: Iterable[Finding], *, strict: bool = False) -> str:
    """``fail`` if any finding fails (or, with ``strict``, warns or was skipped), else ``warn`` if any warns or was
    skipped, else ``pass``."""
    statuses = {f.status for f in findings}
    if "fail" in statuses or (strict and statuses & {"warn", "skipped"}):
        return "fail"
    if statuses & {"warn", "skipped"}:
        return "warn"
    return "pass"


# ---------------------------------------------------------------------------------------------------------- gate
@dataclass(frozen=True)
class GateResult:
    """Findings, the verdict and the exit code of :func:`gate`."""

    findings: tuple[Finding, ...]
    verdict: str
    strict: bool
    policy: Policy

    @property
    def passed(self) -> bool:
        return self.verdict != "fail"

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def counts(self) -> dict[str, int]:
        return {s: sum(f.status == s for f in self.findings) for s in STATUSES}

    def to_text(self) -> str:
        """A short fixed-width table for a terminal."""
        rows = [("STATUS", "STUDENT", "METRIC", "GROUP", "VALUE [95% CI]", "THRESHOLD")]
        for f in self.findings:
            rows.append((f.status.upper(), f.student, f.metric, f.group or "-", _value_text(f), f.threshold))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        c = self.counts()
        lines.append("")
        lines.append(f"verdict: {self.verdict.upper()}  ({c['pass']} pass, {c['warn']} warn, {c['fail']} fail, "
                     f"{c['skipped']} skipped, {c['info']} notes; policy {self.policy.name!r}"
                     f"{', strict' if self.strict else ''})")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """A Markdown summary for a CI job page (e.g. ``$GITHUB_STEP_SUMMARY``)."""
        icon = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skipped": "SKIPPED", "info": "NOTE"}
        c = self.counts()
        out = [f"## kdaudit gate: {icon[self.verdict]}", "",
               f"Policy {_md(self.policy.name)}{' (strict)' if self.strict else ''}: {c['pass']} pass, "
               f"{c['warn']} warn, {c['fail']} fail, {c['skipped']} skipped.", "",
               "| Status | Student | Metric | Group | Value [95% CI] | Threshold | Finding |",
               "|---|---|---|---|---|---|---|"]
        for f in self.findings:
            out.append(f"| {icon[f.status]} | {_md(f.student)} | {_md(f.metric)} | {_md(f.group or '')} | "
                       f"{_value_text(f)} | {_md(f.threshold)} | {_md(f.message)} |")
        return "\n".join(out) + "\n"


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]()!#~"})


def _md(text: str) -> str:
    """Text for one Markdown table cell, shown as written: nothing in it becomes markup.

    A pipe, a newline or a carriage return would break the row; ``[text](url)`` and ``![alt](url)`` would become a
    link or an image the reader's browser fetches; backticks, emphasis and HTML would restyle or inject markup.
    """
    from kdaudit.report._safe import safe_text

    text = safe_text(str(text).replace("\r\n", " ").replace("\r", " ").replace("\n", " "), limit=2000)
    return (text.translate(_MD_SPECIAL).replace("|", "\\|").replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;"))


def _value_text(f: Finding) -> str:
    if f.value is None:
        return "n/a"
    from kdaudit.report._format import thresholds_in

    limits = thresholds_in(f.threshold)
    if f.low is None or f.high is None:
        return _fmt(f.value, limits)
    return f"{_fmt(f.value, limits)} [{_fmt(f.low, limits)}, {_fmt(f.high, limits)}]"


#: Fewest audit rows the gate judges: on fewer, every bootstrap interval degenerates towards a point.
MIN_ROWS_TO_JUDGE = 10


def check_results(results: Mapping[str, Any]) -> None:
    """Refuse results the gate cannot trust to mean what its rules assume (raises ConfigError: exit 2).

    The schema must be this kdaudit's, the version the same major.minor (metrics may change meaning between
    versions), and the audit must have at least :data:`MIN_ROWS_TO_JUDGE` rows.
    """
    from kdaudit._version import RESULTS_SCHEMA as SCHEMA
    from kdaudit._version import __version__

    schema = results.get("schema")
    if schema != SCHEMA:
        raise ConfigError(f"results have schema {str(schema)[:80]!r}; expected {SCHEMA!r} (a results.json written "
                          "by this version of kdaudit)")
    version = results.get("kdaudit_version")
    if not isinstance(version, str) or version.split(".")[:2] != __version__.split(".")[:2]:
        raise ConfigError(f"results were written by kdaudit {str(version)[:40]!r}; expected kdaudit "
                          f"{'.'.join(__version__.split('.')[:2])}.x, this gate's version (re-run the audit, or gate "
                          "with the kdaudit that wrote them)")
    data = results.get("data")
    n_rows = data.get("n_rows") if isinstance(data, Mapping) else None
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < MIN_ROWS_TO_JUDGE:
        raise ConfigError(f"results report data.n_rows = {str(n_rows)[:40]}; expected an audit of at least "
                          f"{MIN_ROWS_TO_JUDGE} rows (fewer are too few to judge any rule)")
    comparisons = results.get("comparisons")
    if not isinstance(comparisons, list) or not comparisons or not all(
            isinstance(c, Mapping) and isinstance(c.get("student"), str) for c in comparisons):
        raise ConfigError("results have no non-empty 'comparisons' list of mappings with a 'student' name; "
                          "expected the content of a kdaudit results.json")


def gate(results: Any, policy: Any = None, *, strict: bool = False) -> GateResult:
    """Judge audit results against a policy.

    Parameters
    ----------
    results : mapping, AuditResult, or path to results.json
    policy : path, mapping, Policy or None
        ``None`` uses the policy recorded in the results, or, when there is none, the default policy of the
        results' task (:func:`default_policy`: :data:`DEFAULT_LM_POLICY` for a language-model audit, else
        :data:`DEFAULT_POLICY`); ``"default"`` is that default.
    strict : bool
        Count warnings and skipped rules as failures.
    """
    import json

    if hasattr(results, "to_dict") and not isinstance(results, Mapping):
        results = results.to_dict()
    elif isinstance(results, (str, os.PathLike)):
        path = Path(results)
        if not path.is_file():
            raise ConfigError(f"results file {str(path)!r} does not exist; expected a kdaudit results.json")
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(f"results file {str(path)!r} is not valid JSON: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None
    if not isinstance(results, Mapping):
        raise ConfigError(f"results got {type(results).__name__}; expected the content of a kdaudit results.json")
    check_results(results)
    if policy is None and isinstance(results.get("policy"), Mapping) and results["policy"].get("rules"):
        recorded = dict(results["policy"])
        rules = recorded["rules"]
        if isinstance(rules, list):  # a malformed recorded policy gets the usual ConfigError from load_policy
            rules = [{k: v for k, v in r.items() if k != "label"} if isinstance(r, Mapping) else r for r in rules]
        policy = {"name": recorded.get("name", "policy"), "description": recorded.get("description", ""),
                  "rules": rules}
    if policy is None or (isinstance(policy, str) and policy == "default"):
        policy = default_policy(results.get("task"))  # the default of the audit's kind (classifiers, LMs)
    # sections the results hold are judgeable whatever installed them (a plugin's section included)
    held = [k for c in results.get("comparisons") or [] if isinstance(c, Mapping) for k, v in c.items()
            if isinstance(v, Mapping)]
    pol = load_policy(policy, sections=held)
    findings = tuple(evaluate_policy(results, pol))
    return GateResult(findings=findings, verdict=verdict_of(findings, strict=strict), strict=strict, policy=pol)
