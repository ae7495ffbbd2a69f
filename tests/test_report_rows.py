"""The report shows every number of a section from its tidy rows (:func:`kdaudit._rows.result_rows`), through one
layout that built-in sections and sections registered from outside kdaudit share; no report module reads a
built-in section's metric out of a results mapping by its name."""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import torch
from _report_fixture import make_results, make_run_info
from test_plugins import _data, _net, toy_installed  # noqa: F401  (a fixture, used by name)

import kdaudit.report as report_pkg
from kdaudit._audit import audit
from kdaudit._rows import result_rows
from kdaudit.report import render_html
from kdaudit.report._common import _Definitions
from kdaudit.report._sections import SectionContext, render_section
from kdaudit.report._charts import ChartIds
from kdaudit.sections import registry

torch.set_num_threads(1)


def _section_html(page: str, title: str) -> str:
    start = page.index(f"<h3>{title} ")
    return page[start:page.index("</section>", start)]


def _cells(table) -> list[list[tuple[str, str]]]:
    return [[(c.text, c.sub) for c in row] for row in table.rows]


def test_a_plugin_sections_rows_render_in_the_report_with_interval_and_direction(toy_installed, tmp_path):
    result = audit(_net(0), {"student": _net(1)}, _data(n=300), sections=["agreement", "toy"], n_replicates=50,
                   seed=0, progress=False, measure_cost=False)
    r = result.to_dict()
    toy = r["comparisons"][0]["toy"]
    row = next(x for x in result_rows("toy", toy) if x.metric == "confidence_gap")
    page = result.save(tmp_path / "out")["report"].read_text(encoding="utf-8")
    html = _section_html(page, "Toy")
    # one row of the headline table: label, estimate, its interval, and the direction from the definition
    m = re.search(r"<tr><td[^>]*>Confidence gap</td>(.*?)</tr>", html, re.S)
    assert m, html[:2000]
    cells = m.group(1)
    assert f"{row.estimate.value:.3f}".replace("-", "−") in cells
    assert "95% CI" in cells and "Lower is better." in cells  # higher_is_better False, from the toy's definition


def test_built_in_and_outside_sections_share_one_layout():
    """The same stored result renders to the same headline tables whether a built-in section or a section the
    report has never heard of holds it: no section-specific code decides how numbers are shown."""
    results = make_results()
    comp = results["comparisons"][0]
    defs_in = results["definitions"]
    for name in ("agreement", "calibration", "fingerprint"):
        if name not in comp:
            continue
        outside = f"plugin_{name}"
        r = copy.deepcopy(results)
        r["definitions"] = {**defs_in, **{k.replace(f"{name}.", f"{outside}.", 1): v for k, v in defs_in.items()
                                          if k.startswith(f"{name}.")}}
        sec = {"available": True, "headline": comp[name]["headline"]}

        def tables(section):
            ctx = SectionContext(student="s", teacher="t", classes=["a", "b", "c"], defs=_Definitions(r),
                                 ids=ChartIds(), with_charts=False, definitions=r["definitions"])
            blocks = render_section(section, sec, ctx, [])["blocks"]
            return [_cells(b["table"]) for b in blocks if b.get("kind") == "table"]

        assert tables(name) and tables(name) == tables(outside)


def test_by_group_rows_of_an_outside_section_are_one_table_with_intervals():
    results = make_results()
    est = {"value": 0.2, "low": 0.1, "high": 0.3, "method": "bootstrap", "level": 0.95}
    small = {"value": 0.5, "low": 0.0, "high": 0.9, "method": "bootstrap", "level": 0.95}
    for comp in results["comparisons"]:
        comp["drift"] = {"available": True, "headline": {"drift": est},
                         "by_group": {"drift": {"north": est, "age=young": small}}}
    results["definitions"]["drift.drift"] = {"label": "Drift", "formula": "d", "higher_is_better": False,
                                             "description": "A made-up metric."}
    page = render_html(results, run_info=make_run_info(), generated_at="x")
    html = _section_html(page, "Drift")
    table = html[html.index("<caption>By group</caption>"):html.index("</table>", html.index("By group"))]
    assert "north" in table and "age=young" in table and "95% CI 0.100–0.300" in table
    assert table.count("Lower is better.") == 2


# ------------------------------------------------------------------------------------------------- static check
#: Names that a report module may read from a mapping although a built-in section also calls a metric so, because
#: they name something else there (each a documented detail field or part of the row schema, ARCHITECTURE.md).
_NOT_METRIC_READS = {
    "p_value",  # a tidy row's part ("p_value" of a change), and the negative controls' uncalibrated p-value detail
    "chrf",  # one generation example's score (lm_generation's examples detail)
}


def _builtin_metric_names() -> set[str]:
    names: set[str] = set()
    for section in registry().values():
        names |= set(section.definitions())
    return names - _NOT_METRIC_READS


def test_no_report_module_reads_a_built_in_metric_by_name():
    """Numbers reach the report through the tidy rows: no ``x.get("ece_change")`` or ``x["top1_agreement"]``
    anywhere in kdaudit/report (a lookup of a tidy row by a named metric, for a figure that shows one named number,
    goes through ``row_of`` and is allowed)."""
    names = _builtin_metric_names()
    assert {"top1_agreement", "ece_change", "dp_amplification", "error_consistency"} <= names
    offenders = []
    for path in sorted(Path(report_pkg.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            literal = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "get", "pop", "setdefault") and node.args and isinstance(node.args[0], ast.Constant):
                literal = node.args[0].value
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                    and isinstance(node.slice, ast.Constant):
                literal = node.slice.value
            if isinstance(literal, str) and literal in names:
                offenders.append(f"{path.name}:{node.lineno}: {literal}")
    assert not offenders, offenders


def test_no_suffix_parsing_of_metric_names_in_the_report():
    """Which numbers pair up as teacher / student / change is the rows' ``quantity`` and ``part``; the report does
    not take metric names apart (no ``endswith("_change")`` and the like)."""
    offenders = []
    for path in sorted(Path(report_pkg.__file__).parent.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for pattern in (r'endswith\(\(?"_(change|amplification|difference|teacher|student)',
                        r'startswith\(\(?"(teacher|student)_', r"_SUMMARY_KEYS"):
            for m in re.finditer(pattern, text):
                offenders.append(f"{path.name}: {m.group(0)}")
    assert not offenders, offenders
