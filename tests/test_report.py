"""The HTML report: rendered only from the results dict, escaped, self-contained, deterministic, small and fast."""

from __future__ import annotations

import copy
import hashlib
import html as html_lib
import re
from html.parser import HTMLParser

import jinja2
import pytest
from _report_fixture import EVIL, PAYLOADS, make_results, make_run_info
from markupsafe import escape

from kdaudit._exceptions import KDAuditError
from kdaudit._io import canonical_json
from kdaudit.report import TEMPLATE_DIR, render_html, write_html
from kdaudit.report._format import fmt_interval, fmt_number

FIXED_TIME = "2026-11-23T07:00:00+00:00"


@pytest.fixture(scope="module")
def results():
    return make_results()


@pytest.fixture(scope="module")
def evil_results():
    return make_results(names=EVIL)


@pytest.fixture(scope="module")
def page(results):
    return render_html(results, run_info=make_run_info(), generated_at=FIXED_TIME)


@pytest.fixture(scope="module")
def evil_page(evil_results):
    return render_html(evil_results, run_info=make_run_info(EVIL), generated_at=FIXED_TIME)


class _Tags(HTMLParser):
    """Every start tag and attribute name of a document, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend((tag, k, v) for k, v in attrs)

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    p.close()
    return p


# ------------------------------------------------------------------------------------------------------ content
def test_report_has_every_section_and_verdict(results, page):
    assert page.startswith("<!DOCTYPE html>")
    for anchor in ("summary", "models-data", "cost", "methodology", "reproducibility"):
        assert f'id="{anchor}"' in page
    for title in ("Agreement with the teacher", "Calibration", "Bias transfer", "Error fingerprints", "Lineage"):
        assert title in page
    label = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}[results["verdict"]]
    assert f'<div class="verdict-label">{label}</div>' in page
    assert results["data"]["sha256"] in page
    for m in results["models"]:
        assert m["sha256"] in page  # full hashes in the reproducibility section


def test_headline_numbers_come_from_the_results_in_plain_words(results):
    comp = results["comparisons"][0]
    e = comp["agreement"]["headline"]["top1_agreement"]
    page = render_html(results, generated_at=FIXED_TIME, charts=False)
    expected = (f"The student predicts the same class as the teacher on {fmt_number(e['value'], 'percent')} "
                f"of rows ({fmt_interval(e, 'percent')}).")
    assert str(escape(expected)) in page
    assert re.search(r"\(95% CI \d+\.\d–\d+\.\d%\)", expected)
    # Change the stored number: the report follows it, so it shows and does not recompute metrics.
    altered = copy.deepcopy(results)
    altered["comparisons"][0]["agreement"]["headline"]["top1_agreement"].update(value=0.123456, low=0.1, high=0.15)
    page2 = render_html(altered, generated_at=FIXED_TIME, charts=False)
    assert "on 12.3% of rows (95% CI 10.0–15.0%)" in page2


def test_the_summary_reads_the_rows_the_policy_judged(results):
    """A finding on a number outside the headline (a count at the top level of a section) gets its summary sentence:
    the report reads the same tidy rows as the policy."""
    from kdaudit.policy import gate

    altered = copy.deepcopy(results)
    findings = gate(altered, {"rules": [{"metric": "agreement.n_rows", "min": 10}]}).findings
    altered["findings"] = [f.to_dict() for f in findings]
    page = render_html(altered, generated_at=FIXED_TIME, charts=False)
    n = altered["comparisons"][0]["agreement"]["n_rows"]
    shown = re.findall(r"<li>N rows: ([\d,.]+)\.</li>", page)
    assert findings[0].value == n and [float(x.replace(",", "")) for x in shown] == [n, n]  # both students


def test_failed_and_warned_findings_are_listed_with_their_messages(results, page):
    bad = [f for f in results["findings"] if f["status"] in ("fail", "warn")]
    assert bad, "the fixture should exercise failing and warning rules"
    text = html_lib.unescape(page)
    for f in bad:
        assert f["message"] in text


def test_unavailable_sections_show_the_reason(results, page):
    comp = results["comparisons"][1]
    assert comp["calibration"]["available"] is False
    assert str(escape(comp["calibration"]["reason"])) in page
    assert "no reference models were given" in page


def test_small_groups_are_flagged(results, page):
    small = [g for fd in results["comparisons"][0]["bias"]["features"].values() for g in fd["groups"]
             if not g["reliable"]]
    assert small
    words = {"small_group": "small", "few_positives": "few positives", "few_negatives": "few negatives"}
    for g in small:
        # The mark says why: a large group with few positive rows must not be called "small".
        tag = ", ".join(words[f] for f in g["flags"])
        assert f"{escape(g['group'])} ({tag})" in page
        if "small_group" not in g["flags"]:
            assert f"{escape(g['group'])} (small)" not in page
    assert 'class="flag">small</span>' in page
    # A large group marked only for its few positive rows is called that, here and in the feature's summary line.
    altered = copy.deepcopy(results)
    fd = next(v for v in altered["comparisons"][0]["bias"]["features"].values()
              if any(not g["reliable"] for g in v["groups"]))
    g = next(g for g in fd["groups"] if not g["reliable"])
    g["flags"] = ["few_positives"]
    page2 = render_html(altered, generated_at=FIXED_TIME, charts=False)
    assert f"{escape(g['group'])} (few positives)" in page2
    assert f"{escape(g['group'])} (small)" not in page2
    assert "too few positive or negative rows" in page2


def test_methodology_lists_definitions_formulas_and_rules(results, page):
    text = html_lib.unescape(page)
    for key in ("agreement.top1_agreement", "calibration.ece_change", "bias.dp_amplification"):
        d = results["definitions"][key]
        assert d["formula"] in text
        assert d["label"] in text
    for rule in results["policy"]["rules"]:
        assert rule["metric"] in text
    assert results["settings"]["bootstrap"]["method"] in text
    assert "the whole interval is at or above t" in text


def test_reproducibility_has_config_command_versions_and_results_hash(results, page):
    run_info = make_run_info()
    text = html_lib.unescape(page)
    assert " ".join(run_info["command"]) in text
    assert "teacher-gbm" in text and "seed: 0" in text  # the YAML dump of the config
    for pkg, version in results["provenance"]["versions"].items():
        assert f"<td>{pkg}</td><td>{version}</td>" in page
    digest = hashlib.sha256(canonical_json(results).encode("utf-8")).hexdigest()
    assert digest in page
    given = render_html(results, run_info={"results_sha256": "ab" * 32}, generated_at=FIXED_TIME, charts=False)
    assert "ab" * 32 in given and digest not in given


def test_measured_cost_is_marked_and_taken_from_run_info(results, page):
    assert "measured at generation time" in page
    student = results["comparisons"][0]["student"]
    assert f"Cost of {student} relative to the teacher" in page
    measured = make_run_info()["cost"][student]
    assert f"{measured['latency_ms_per_row']:.3g} ms" in page
    assert f"{measured['throughput_rows_per_s']:,.0f} rows/s" in page
    without = render_html(results, generated_at=FIXED_TIME, charts=False)
    assert "were not measured for this report" in without


# ------------------------------------------------------------------------------------------- self-contained
def test_no_scripts_no_external_resources(page):
    parsed = _parse(page)
    assert not {"script", "link", "img", "iframe", "object", "embed", "base"} & set(parsed.tags)
    for tag, attr, value in parsed.attrs:
        assert not attr.startswith("on"), (tag, attr)
        if attr in ("src", "href", "xlink:href", "action"):
            assert value is not None and value.startswith("#"), (tag, attr, value)
    assert "@import" not in page
    assert not re.search(r"url\((?!#)", page)


def test_charts_are_inline_svg_with_text_alternatives_and_unique_ids(page):
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) >= 8
    for svg in svgs:
        assert 'role="img"' in svg
        assert re.search(r"<title id=\"[^\"]+\">[^<]+</title><desc id=\"[^\"]+\">[^<]+</desc>", svg)
        assert "<?xml" not in svg and "<metadata" not in svg
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    # Every in-document reference points at an id that exists.
    for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', page):
        assert ref in ids


def test_print_css_breaks_sections_and_keeps_tables_whole(page):
    style = page[page.index("<style>"):page.index("</style>")]
    assert "@media print" in style and "@page" in style
    assert "break-before: page" in style
    assert "break-inside: avoid" in style
    assert "display: table-header-group" in style


# ------------------------------------------------------------------------------------------------- escaping
def test_user_strings_are_escaped_everywhere(evil_page):
    page = evil_page
    for payload in PAYLOADS:
        assert payload not in page
    assert str(escape(PAYLOADS[0])) in page
    assert "<b>bold</b>" not in page and "<i>" not in page
    parsed = _parse(page)
    assert not {"script", "img", "b", "i", "iframe"} & set(parsed.tags)
    assert not [a for _, a, _ in parsed.attrs if a.startswith("on")]
    text = "".join(parsed.text)
    # The names reach the reader intact, as text: in tables, headings, chart labels and the config dump.
    assert text.count(EVIL["teacher"]) >= 3
    assert EVIL["students"][0] in text
    for group in EVIL["sex"]:
        assert group in text
    assert EVIL["path"] in text


def test_escaped_names_do_not_break_charts(evil_page):
    page = evil_page
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) >= 6
    # "$x$" would be mathtext to matplotlib; it must come out literally.
    assert "$x$ &amp; &lt;i&gt;" in page


# ---------------------------------------------------------------------------------------------- determinism
def test_rendering_is_deterministic_but_for_the_timestamp(results, page):
    run_info = make_run_info()
    assert render_html(results, run_info=run_info, generated_at=FIXED_TIME) == page  # SVG charts included
    a = render_html(results, run_info=run_info, generated_at=FIXED_TIME, charts=False)
    c = render_html(results, run_info=run_info, generated_at="2030-01-01T00:00:00+00:00", charts=False)
    assert c != a
    assert c.replace("2030-01-01T00:00:00+00:00", FIXED_TIME) == a


def test_generated_at_defaults_to_run_info_then_now(results):
    page = render_html(results, run_info={"generated_at": "2001-02-03T04:05:06+00:00"}, charts=False)
    assert "2001-02-03T04:05:06+00:00" in page
    page = render_html(results, charts=False)
    assert re.search(r"generated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", page)


# ---------------------------------------------------------------------------------------------- speed, size
def test_report_is_small(page):
    # Issue 4's size target; the render-time target lives in benchmarks/report.py, not in a timed test.
    assert len(page.encode("utf-8")) < 1_500_000


# ------------------------------------------------------------------------------------- templates and inputs
def test_template_override_via_template_dir(tmp_path, evil_results):
    (tmp_path / "summary.html.j2").write_text('<section id="summary"><p class="mine">custom {{ teacher }}</p>'
                                              "</section>", encoding="utf-8")
    page = render_html(evil_results, generated_at=FIXED_TIME, template_dir=tmp_path, charts=False)
    assert '<p class="mine">custom teacher &lt;script&gt;' in page  # overrides are autoescaped too
    assert "<h2>Executive summary</h2>" not in page
    assert 'id="methodology"' in page  # the other templates still come from the package
    default = render_html(evil_results, generated_at=FIXED_TIME, charts=False)
    assert "<h2>Executive summary</h2>" in default  # an override does not leak into later renders


def test_strict_undefined_in_templates(tmp_path, results):
    (tmp_path / "cost.html.j2").write_text("{{ no_such_value }}", encoding="utf-8")
    with pytest.raises(jinja2.UndefinedError):
        render_html(results, template_dir=tmp_path, charts=False)


def test_packaged_templates_exist():
    names = {p.name for p in TEMPLATE_DIR.iterdir()}
    assert {"report.html.j2", "macros.html.j2", "style.css.j2", "summary.html.j2"} <= names


def test_bad_arguments_raise_clear_errors(results, tmp_path):
    with pytest.raises(KDAuditError, match="results"):
        render_html([1, 2, 3])
    with pytest.raises(KDAuditError, match="run_info"):
        render_html(results, run_info="yesterday")
    with pytest.raises(KDAuditError, match="template_dir"):
        render_html(results, template_dir=tmp_path / "missing")


def test_minimal_results_render_without_optional_parts():
    page = render_html({"comparisons": [{"student": "s", "agreement": {"available": False,
                                                                       "reason": "no labels"}}]},
                       generated_at=FIXED_TIME)
    assert "NOT JUDGED" in page and "no labels" in page
    assert "No policy was applied" in page


def test_write_html_writes_the_rendered_page(results, tmp_path):
    path = write_html(results, tmp_path / "out" / "report.html", generated_at=FIXED_TIME, charts=False)
    assert path.read_text(encoding="utf-8") == render_html(results, generated_at=FIXED_TIME, charts=False)


def test_report_of_a_real_audit(tmp_path):
    """End to end: kdaudit.audit on small scikit-learn models, saved with its report (the shapes are the real ones)."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    from kdaudit._audit import audit  # also kdaudit.audit once the package exports it
    from kdaudit.data import AuditData

    rng = np.random.default_rng(0)
    n = 600
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    sensitive = pd.DataFrame({"sex": np.where(rng.random(n) < 0.4, PAYLOADS[1], "M")})
    data = AuditData(X, y_true=y, sensitive=sensitive, classes=(PAYLOADS[0], "yes"), name="toy")
    teacher = LogisticRegression().fit(X, y)
    student = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    res = audit(teacher, {"tree": student}, data, n_replicates=50, progress=False,
                sections=("agreement", "calibration", "bias", "fingerprint", "cost"))
    paths = res.save(tmp_path)
    page = paths["report"].read_text(encoding="utf-8")
    assert PAYLOADS[0] not in page and PAYLOADS[1] not in page
    assert str(escape(PAYLOADS[0])) in page
    assert f'<div class="verdict-label">{res.verdict.upper()}</div>' in page
    e = res.results["comparisons"][0]["agreement"]["headline"]["top1_agreement"]
    assert f"same class as the teacher on {fmt_number(e['value'], 'percent')} of rows" in page
    assert "Reliability diagram" in page and "Group rates" in page
    assert hashlib.sha256(paths["results"].read_bytes()).hexdigest() in page


def test_number_formatting_in_plain_words():
    from kdaudit.report._format import fmt_bytes, fmt_estimate, metric_kind

    e = {"value": 0.9123, "low": 0.9081, "high": 0.9162, "level": 0.95, "method": "bootstrap"}
    assert fmt_estimate(e, "percent") == "91.2% (95% CI 90.8–91.6%)"
    # Intervals that cross zero say "to": "−0.03–0.19" would read as a range of two negative numbers.
    assert fmt_estimate({"value": 0.087, "low": -0.026, "high": 0.194}, "decimal") == "0.087 (95% CI −0.026 to 0.194)"
    assert fmt_estimate({"value": 0.5, "low": None, "high": None}) == "0.500"
    assert fmt_number(None) == "n/a" and fmt_number(float("nan"), "percent") == "n/a"
    assert fmt_number(3e-7, "p") == "< 0.0001" and fmt_number(0.0512, "p") == "0.0512"
    assert fmt_number(-0.000197) == "−0.00020"
    assert fmt_bytes(4_821_376) == "4.8 MB"
    assert [metric_kind(k) for k in ("top1_agreement", "ece_change", "dp_amplification_p_value", "size_ratio",
                                     "group_selection_rate", "kl_divergence")] == \
        ["percent", "decimal", "p", "percent", "percent", "decimal"]
    assert metric_kind("anything", {"unit": "%"}) == "percent"


def test_rendering_is_identical_across_processes(results, tmp_path):
    """SVG ids, hash salts and set orders must not depend on the process (PYTHONHASHSEED differs)."""
    import json
    import os
    import subprocess
    import sys

    results = dict(results, comparisons=results["comparisons"][:1])  # one student's charts suffice
    page = render_html(results, run_info=make_run_info(), generated_at=FIXED_TIME)
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    (tmp_path / "run.json").write_text(json.dumps(make_run_info()), encoding="utf-8")
    code = ("import json, sys; from kdaudit.report import render_html; "
            "r = json.load(open(sys.argv[1])); ri = json.load(open(sys.argv[2])); "
            f"sys.stdout.write(render_html(r, run_info=ri, generated_at={FIXED_TIME!r}))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "results.json"), str(tmp_path / "run.json")],
                         capture_output=True, env=env, check=True)
    assert out.stdout.decode("utf-8") == page


def test_unexpected_shapes_are_shown_not_fatal(results):
    """Corrupt stored values at random: the report still renders (a section it cannot lay out is shown as stored)."""
    import random

    def paths(o, p=()):
        yield p
        if isinstance(o, dict):
            for k, v in o.items():
                yield from paths(v, p + (k,))
        elif isinstance(o, list):
            for i, v in enumerate(o[:2]):
                yield from paths(v, p + (i,))

    all_paths = [p for p in paths(results) if p]
    rng = random.Random(0)
    for _ in range(40):
        r = copy.deepcopy(results)
        for _ in range(rng.randint(1, 3)):
            *parent, last = rng.choice(all_paths)
            try:
                target = r
                for k in parent:
                    target = target[k]
                target[last] = rng.choice([None, "x", 3, [], {}, {"value": None}, -1.5, True])
            except (KeyError, IndexError, TypeError):
                pass  # an earlier mutation removed the path
        assert render_html(r, generated_at=FIXED_TIME, charts=False).startswith("<!DOCTYPE html>")
    broken = copy.deepcopy(results)
    broken["comparisons"][0]["agreement"]["per_class"]["by_true_class"] = {"weight": [1, 2], "agreement": 7}
    page = render_html(broken, generated_at=FIXED_TIME, charts=False)
    assert "Shown as stored" in page and "&#34;agreement&#34;: 7" in page
    assert "Calibration" in page  # the other sections are laid out as usual


# ------------------------------------------------------------------------------------- hand-written SVG charts
def _ticks_and_marks(svg: str) -> tuple[list[tuple[float, float]], list[float]]:
    """(x, value) of each numeric tick label and the x of each marker circle in a hand-written chart."""
    ticks = [(float(x), float(v.replace(",", "").rstrip("%")))
             for x, v in re.findall(r'<text x="([\d.]+)" y="[\d.]+" font-size="10.5" fill="#555555" '
                                    r'text-anchor="middle"[^>]*>(-?[\d.,]+%?)</text>', svg)]
    # Legend swatches sit in the top 20 px; markers below.
    marks = [float(x) for x, y in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg) if float(y) > 20]
    return ticks, marks


def test_hand_drawn_interval_chart_puts_each_marker_at_its_value():
    from kdaudit.report import _charts

    est = [{"value": v, "low": v - 0.05, "high": v + 0.04} for v in (0.12, 0.37, 0.81)]
    panels = [{"metric": "Selection rate", "percent": True,
               "rows": [{"label": f"g{i}", "small": i == 2, "teacher": e, "student": None}
                        for i, e in enumerate(est)]}]
    chart = _charts.group_interval_chart(panels, ids=_charts.ChartIds(), title="t")
    ticks, marks = _ticks_and_marks(str(chart.svg))
    assert len(ticks) >= 3 and len(marks) == 3
    (x0, v0), (x1, v1) = ticks[0], ticks[-1]
    values = [v0 + (x - x0) * (v1 - v0) / (x1 - x0) for x in marks]
    assert values == pytest.approx([12.0, 37.0, 81.0], abs=0.3)  # percent panel: value x 100
    assert 'fill="#ffffff"' in str(chart.svg)  # the small group is hollow
    assert "g2 (small)" in str(chart.svg) and "teacher 81 [76, 85]" in chart.description


def test_hand_drawn_cost_chart_bars_match_the_ratios():
    from kdaudit.report import _charts

    items = [{"label": "Parameters", "ratio": 0.083}, {"label": "Latency <per row>", "ratio": 0.25}]
    chart = _charts.cost_chart(items, ids=_charts.ChartIds(), title="Cost", student="s & t")
    svg = str(chart.svg)
    ticks, _ = _ticks_and_marks(svg)
    (x0, v0), (x1, v1) = ticks[0], ticks[-1]
    bars = [(float(x), float(w)) for x, w in re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)]
    assert [v0 + w * (v1 - v0) / (x1 - x0) for _, w in bars] == pytest.approx([8.3, 25.0], abs=0.2)
    assert "8.3%" in svg and "25.0%" in svg
    assert "Latency &lt;per row&gt;" in svg and "s &amp; t as % of the teacher" in svg


def test_bias_chart_and_its_table_show_the_same_numbers(results, page):
    """Every group's point value in the results appears in the chart's text alternative and in the table."""
    import html

    comp = results["comparisons"][0]
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    chart = next(s for s in svgs if "Group rates of the teacher" in s and escape(comp["student"]) in s)
    desc = html.unescape(re.search(r"<desc[^>]*>(.*?)</desc>", chart, flags=re.S).group(1))
    g = next(g for fd in comp["bias"]["features"].values() for g in fd["groups"] if g["reliable"])
    v = g["student"]["group_selection_rate"]["value"] * 100
    assert f"student {v:.3g}" in desc
    assert f"{v:.1f}%" in page
    n_marks = sum(1 for fd in comp["bias"]["features"].values() for g in fd["groups"] for r in ("teacher", "student")
                  for k in ("group_selection_rate", "group_tpr", "group_accuracy")
                  if (g.get(r) or {}).get(k) and g[r][k].get("value") is not None)
    assert len(_ticks_and_marks(chart)[1]) == n_marks


# ------------------------------------------------------------------------------------- volatile (run) content
def _volatile_names(page):
    names = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if dict(attrs).get("data-volatile") is not None:
                names.append((tag, dict(attrs)["data-volatile"]))

    P().feed(page)
    return names


def test_run_measurements_are_marked_volatile(results, page):
    marked = _volatile_names(page)
    names = {n for _, n in marked}
    assert {"generated-at", "command-line", "latency-per-row", "latency-per-batch", "throughput", "run-record",
            "measured-speed", "cost-conditions"} <= names
    run_info = make_run_info()
    # each measured value sits inside its marked element, exactly as measured
    student = results["comparisons"][0]["student"]
    per_row = f"{run_info['cost'][student]['latency_ms_per_row']:.3g} ms"
    assert f'data-volatile="latency-per-row">{per_row}</span>' in page
    assert f'data-volatile="generated-at">generated {FIXED_TIME}</span>' in page
    assert re.search(r'<div class="volatile" data-volatile="run-record">\s*<div class="table-wrap">', page)
    # the reader is told what the marking means, next to the run record
    repro = page[page.index('id="reproducibility"'):]
    note = repro[repro.index("volatile-note"):repro.index('data-volatile="run-record"')]
    assert "measurements of this run" in note and "results.json" in note
    # without run info only the clock remains; nothing from results.json is ever marked
    bare = render_html(results, generated_at=FIXED_TIME, charts=False)
    assert "run-record" not in {n for _, n in _volatile_names(bare)}
    assert "measured-speed" not in {n for _, n in _volatile_names(bare)}
    digest = hashlib.sha256(canonical_json(results).encode("utf-8")).hexdigest()
    for tag, _ in marked:
        assert tag in ("span", "div")
    assert not any(digest in m for m in re.findall(r'data-volatile="[^"]*">([^<]*)<', page))


def test_volatile_filter_escapes_and_checks_its_tag():
    from kdaudit.report import VOLATILE_ATTRIBUTE, environment, volatile

    assert VOLATILE_ATTRIBUTE == "data-volatile"
    out = volatile("<b>1 ms</b>", 'x"y')
    assert out == '<span class="volatile" data-volatile="x&#34;y">&lt;b&gt;1 ms&lt;/b&gt;</span>'
    # a block filter keeps the template's own markup and escapes the values inside it
    t = environment().from_string('{% filter volatile("rec", tag="div") %}<p>{{ v }}</p>{% endfilter %}')
    assert t.render(v="<i>") == '<div class="volatile" data-volatile="rec"><p>&lt;i&gt;</p></div>'
    with pytest.raises(KDAuditError, match="tag"):
        volatile("x", "a", tag="script")


def test_evil_command_line_is_escaped_inside_its_volatile_block(evil_page):
    block = evil_page[evil_page.index('data-volatile="command-line"'):]
    block = block[:block.index("</div>")]
    assert "<img" not in block and "&lt;img src=x onerror" in block


# ------------------------------------------------------------------------------------------- finding statuses
def test_info_findings_get_a_note_badge(results):
    altered = copy.deepcopy(results)
    student = altered["comparisons"][0]["student"]
    altered["findings"].append({
        "rule": "bias.group_accuracy_change", "metric": "bias.group_accuracy_change", "student": student,
        "status": "info", "value": None, "low": None, "high": None, "threshold": "max 0.05",
        "message": "2 groups too small to support a claim, not judged (a, b)", "level": "error",
        "group": "small groups"})
    page = render_html(altered, generated_at=FIXED_TIME, charts=False)
    row = re.search(r'<tr class="row-info">(.*?)</tr>', page)
    assert row is not None, "the info finding has no row of its own"
    assert '<span class="badge badge-info">Note</span>' in row.group(1)
    assert "too small to support a claim" in row.group(1)
    assert ".badge-info {" in page  # styled, not the fallback look
    assert "1 note" in html_lib.unescape(page)  # counted in the verdict line
    # a note never changes a verdict: the same findings without it give the same verdict labels
    before = re.findall(r'class="verdict-label">([^<]*)<', render_html(results, generated_at=FIXED_TIME,
                                                                        charts=False))
    assert re.findall(r'class="verdict-label">([^<]*)<', page) == before
    # the badge vocabulary: every policy status has its own label
    from kdaudit.policy import STATUSES
    from kdaudit.report._common import _STATUS_TEXT, _status

    assert {_status(s) for s in STATUSES} == set(STATUSES)
    assert all(_STATUS_TEXT[s] for s in STATUSES)


def test_lineage_positive_controls_are_shown_and_escaped(page, evil_page, results, evil_results):
    pc = results["comparisons"][0]["lineage"]["positive_controls"]
    text = html_lib.unescape(page)
    assert "Power for this teacher (positive controls found)" in text and "4 of 5 (95% interval 0.28 to 1.00)" in text
    assert "Each positive control tested as if it were the suspect" in text and escape(pc["names"][2]) in page
    assert "says little" not in text  # 4 of 5 found: the note about a weak test is not shown
    for payload in PAYLOADS:  # names carry the suspect's (hostile) name: escaped like every user string
        assert payload not in evil_page
    assert str(escape(evil_results["comparisons"][0]["lineage"]["positive_controls"]["names"][0])) in evil_page


def test_lineage_negative_controls_are_shown_and_escaped(page, evil_page, results, evil_results):
    nc = results["comparisons"][0]["lineage"]["negative_controls"]
    assert "Negative controls" in page and "1 of 4 (a calibrated test: about 0.05)" in page
    assert "binomial p = 0.185" in page and "Each negative control tested as if it were the suspect" in page
    assert escape(nc["names"][1]) in page
    for payload in PAYLOADS:  # control names carry the suspect's (hostile) name: escaped like every user string
        assert payload not in evil_page
    assert str(escape(evil_results["comparisons"][0]["lineage"]["negative_controls"]["names"][0])) in evil_page
