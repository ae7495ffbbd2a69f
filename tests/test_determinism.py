"""Same inputs and seed give a byte-identical results.json; the HTML differs only inside ``data-volatile`` elements.

Two real audits are run, one in this process and one in a fresh interpreter (another hash seed, another command
line, other wall times and latencies), and both are saved with ``AuditResult.save``. The reports are compared after
removing the contents of the elements the report marks ``data-volatile`` (the generation time, the measured
latencies, the command line, the run record), found with an HTML parser written here, not the library's own markup
code, so the test checks the marking instead of trusting it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kdaudit import AuditData
from kdaudit._audit import audit
from kdaudit.distill import mlp
from kdaudit.report import render_html

HERE = Path(__file__).resolve().parent
# Elements HTML closes by itself: they never get an end tag, so they must not count as nesting.
VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                  "track", "wbr"})


def make():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 6)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=400) > 0).astype(np.int64)
    sens = pd.DataFrame({"sex": rng.choice(["F", "M"], 400), "age": rng.choice(["young", "old"], 400)})
    data = AuditData(X, y_true=y, sensitive=sens, classes=("no", "yes"), name="det")
    # untrained but seeded networks: deterministic models without spending test time on training
    teacher = mlp(6, 2, hidden=(16,), seed=1)
    students = {"small": mlp(6, 2, hidden=(4,), seed=2), "linear": mlp(6, 2, hidden=(), seed=3)}
    refs = [mlp(6, 2, hidden=(16,), seed=10 + i) for i in range(5)]
    return data, teacher, students, refs


def run_once(out_dir, *, seed=7):
    """One complete audit, saved (results.json, run.json, report.html) to ``out_dir``."""
    torch.set_num_threads(1)
    data, teacher, students, refs = make()
    res = audit(teacher, students, data, n_replicates=100, seed=seed, references=refs, probes=data,
                lineage_options={"n_probes": 100, "p_value_method": "parametric", "n_replicates": 50},
                progress=False)
    res.save(out_dir)
    return res


def run_in_subprocess(out_dir):
    """The same audit in a fresh interpreter, with another hash seed: nothing may leak from this process."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_determinism as t; "
            "t.run_once(sys.argv[2])")
    env = dict(os.environ, PYTHONHASHSEED="12345", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", code, str(HERE), str(out_dir)], check=True, env=env, timeout=300,
                   capture_output=True)


class _Volatile(HTMLParser):
    """Finds ``[start, end)`` character ranges of the contents of elements carrying ``data-volatile``."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.line_starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self.line_starts.append(i + 1)
        self.text = text
        self.ranges, self.names = [], []
        self.depth, self.start = 0, None

    def _offset(self):
        line, col = self.getpos()
        return self.line_starts[line - 1] + col

    def handle_starttag(self, tag, attrs):
        if self.depth:
            if tag not in VOID:
                self.depth += 1
            return
        marked = dict(attrs).get("data-volatile")
        if marked is not None and tag not in VOID:
            self.names.append(marked)
            self.depth = 1
            self.start = self._offset() + len(self.get_starttag_text())

    def handle_endtag(self, tag):
        if self.depth and tag not in VOID:
            self.depth -= 1
            if self.depth == 0:
                self.ranges.append((self.start, self._offset()))


def volatile_parts(page):
    """(names, contents) of the outermost ``data-volatile`` elements, and the page with their contents removed."""
    p = _Volatile(page)
    p.feed(page)
    p.close()
    assert p.depth == 0, "an unclosed data-volatile element"
    kept, contents, pos = [], [], 0
    for a, b in p.ranges:
        kept.append(page[pos:a])
        contents.append(page[a:b])
        pos = b
    kept.append(page[pos:])
    return p.names, contents, "".join(kept)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("det")
    a = run_once(tmp / "a")
    run_in_subprocess(tmp / "b")
    return tmp, a


def test_results_json_is_byte_identical(two_runs):
    tmp, a = two_runs
    assert "lineage" in a.to_dict()["settings"]["sections"]
    assert (tmp / "a" / "results.json").read_bytes() == (tmp / "b" / "results.json").read_bytes()
    # while the run info did change (it holds wall times, measured latencies, the command line)
    ra = json.loads((tmp / "a" / "run.json").read_text(encoding="utf-8"))
    rb = json.loads((tmp / "b" / "run.json").read_text(encoding="utf-8"))
    assert ra["wall_time_s"] != rb["wall_time_s"]
    assert ra["cost"] != rb["cost"]
    assert ra["results_sha256"] == rb["results_sha256"]


def test_html_differs_only_inside_volatile_elements(two_runs):
    tmp, _ = two_runs
    page_a = (tmp / "a" / "report.html").read_text(encoding="utf-8")
    page_b = (tmp / "b" / "report.html").read_text(encoding="utf-8")
    assert page_a != page_b  # the runs' measurements are in the reports...
    names_a, contents_a, rest_a = volatile_parts(page_a)
    names_b, contents_b, rest_b = volatile_parts(page_b)
    assert rest_a == rest_b  # ...and nowhere outside the marked elements
    assert names_a == names_b
    # what is marked: the time stamp, the command line, each measured cost cell, the run record
    assert {"generated-at", "command-line", "latency-per-row", "latency-per-batch", "throughput",
            "run-record", "measured-speed"} <= set(names_a)
    changed = {n for n, x, y in zip(names_a, contents_a, contents_b) if x != y}
    assert {"command-line", "run-record", "latency-per-row"} <= changed
    # the measurements do reach the report: the run record holds the wall time of run.json
    run_b = json.loads((tmp / "b" / "run.json").read_text(encoding="utf-8"))
    record = contents_b[names_b.index("run-record")]
    assert f"{run_b['wall_time_s']['total_s']:,.2f} s" in record or \
        f"{run_b['wall_time_s']['total_s'] * 1000:.3g} ms" in record
    # and the report tells the reader what the marking means
    assert "measurements of this run" in page_a and "deterministic results.json" in page_a


def test_stripping_finds_a_difference_outside_volatile_elements(two_runs):
    # The check above could pass by stripping too much; a change to a stored number must survive stripping.
    _, a = two_runs
    results = a.to_dict()
    page = render_html(results, run_info=a.run_info, charts=False)
    altered = json.loads(json.dumps(results))
    altered["data"]["name"] = "det-altered"
    other = render_html(altered, run_info=a.run_info, charts=False)
    assert volatile_parts(page)[2] != volatile_parts(other)[2]
    # nested markup (a table inside the run record) is removed whole, and nothing else is lost
    _, contents, rest = volatile_parts(page)
    assert "Run record" not in rest and "Results sha256" in rest
    assert len(rest) + sum(map(len, contents)) == len(page)


def test_report_shows_the_sha256_of_results_json(two_runs):
    tmp, _ = two_runs
    digest = hashlib.sha256((tmp / "a" / "results.json").read_bytes()).hexdigest()
    for run in ("a", "b"):
        page = (tmp / run / "report.html").read_text(encoding="utf-8")
        rest = volatile_parts(page)[2]
        assert f'title="{digest}"' in rest  # the header
        assert f'<code class="hash">{digest}</code>' in rest  # the hashes table and the footer
        assert json.loads((tmp / run / "run.json").read_text(encoding="utf-8"))["results_sha256"] == digest


def test_another_seed_changes_intervals_not_points(two_runs):
    _, a = two_runs
    data, teacher, students, _ = make()
    c = audit(teacher, students, data, n_replicates=100, seed=8, sections=["agreement"], progress=False)
    ha = a.to_dict()["comparisons"][0]["agreement"]["headline"]["top1_agreement"]
    hc = c.to_dict()["comparisons"][0]["agreement"]["headline"]["top1_agreement"]
    assert ha["value"] == hc["value"] and (ha["low"], ha["high"]) != (hc["low"], hc["high"])


def test_html_is_byte_identical_when_run_info_and_time_are_held(two_runs):
    tmp, _ = two_runs
    stamp = "2026-01-01T00:00:00+00:00"
    # rendering hides no clock or randomness of its own (SVG ids included): same inputs, same bytes
    results_a, results_b = (json.loads((tmp / r / "results.json").read_text(encoding="utf-8")) for r in "ab")
    run_b = json.loads((tmp / "b" / "run.json").read_text(encoding="utf-8"))
    assert render_html(results_a, run_info=run_b, generated_at=stamp) == \
        render_html(results_b, run_info=run_b, generated_at=stamp)
