"""Render an audit's results to one self-contained HTML file (jinja2 templates, inline SVG, no JavaScript)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2
import markupsafe

from kdaudit._exceptions import invalid_argument
from kdaudit.report._view import build_context

__all__ = ["TEMPLATE_DIR", "VOLATILE_ATTRIBUTE", "environment", "render_html", "volatile", "write_html"]

#: The packaged templates; copy one into your own directory and pass ``template_dir=`` to override it.
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
_MAIN_TEMPLATE = "report.html.j2"
_LM_TEMPLATE = "lm.html.j2"
_DEFAULT_ENV: list[jinja2.Environment] = []


#: The attribute marking content that comes from the run, not from results.json (see :func:`volatile`).
VOLATILE_ATTRIBUTE = "data-volatile"
_VOLATILE_TAGS = frozenset({"span", "div"})


def volatile(content: Any, what: str, *, tag: str = "span") -> markupsafe.Markup:
    """Wrap ``content`` in an element marked ``data-volatile="what"``.

    Everything the report draws from ``run_info`` or the clock (the generation time, measured latency and throughput,
    the command line, the run record) goes through this one jinja filter, so that two reports of the same results
    differ only inside marked elements; removing their contents must leave identical documents. Plain text is
    escaped; markup built by the template (a ``{% filter volatile(...) %}`` block) is kept as it is.

    Parameters
    ----------
    content : str or Markup
        What to show.
    what : str
        What the value is (``"generated-at"``, ``"latency"``, ``"run-record"``, ...).
    tag : {"span", "div"}
        ``"div"`` for block content (tables, paragraphs, figures).
    """
    if tag not in _VOLATILE_TAGS:
        raise invalid_argument("tag", tag, sorted(_VOLATILE_TAGS))
    return markupsafe.Markup('<{0} class="volatile" {1}="{2}">{3}</{0}>').format(
        markupsafe.Markup(tag), markupsafe.Markup(VOLATILE_ATTRIBUTE), str(what), markupsafe.escape(content))


def _make_environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    # Autoescape everything: model names, class labels, group names and config values are user data.
    # StrictUndefined: a template asking for a value the view does not provide is a bug, not an empty cell.
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["volatile"] = volatile
    return env


def environment(template_dir: str | os.PathLike[str] | None = None) -> jinja2.Environment:
    """The jinja2 environment used to render reports.

    Parameters
    ----------
    template_dir : path, optional
        A directory whose templates take precedence over the packaged ones (same file names, e.g.
        ``summary.html.j2``); templates it does not hold fall back to the packaged ones.
    """
    if template_dir is None:
        if not _DEFAULT_ENV:  # built once: the packaged templates never change while running
            _DEFAULT_ENV.append(_make_environment(jinja2.FileSystemLoader(str(TEMPLATE_DIR))))
        return _DEFAULT_ENV[0]
    path = Path(template_dir)
    if not path.is_dir():
        raise invalid_argument("template_dir", str(template_dir), "an existing directory of jinja2 templates")
    return _make_environment(jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(path)),
                                                  jinja2.FileSystemLoader(str(TEMPLATE_DIR))]))


def render_html(results: Mapping[str, Any], *, run_info: Mapping[str, Any] | None = None,
                generated_at: str | None = None, template_dir: str | os.PathLike[str] | None = None,
                charts: bool = True, summary_keys: Mapping[str, Sequence[str]] | None = None) -> str:
    """Render an audit report as one self-contained HTML document.

    The report is drawn only from ``results`` (the content of results.json) and ``run_info`` (what varies between
    runs: wall times, measured latencies, the command line); it computes no metric.

    Parameters
    ----------
    results : mapping
        The audit results: ``schema``, ``kdaudit_version``, ``data``, ``models``, ``comparisons``, ``cost``,
        ``provenance``, ``config``, ``policy``, ``findings``, ``verdict``, ``definitions``. Missing parts are shown
        as not recorded.
    run_info : mapping, optional
        ``generated_at``, ``command`` (str or argv list), ``results_sha256``, ``cost`` (``{model name: {
        "latency_ms_per_row", "latency_ms_per_batch", "throughput_rows_per_s", ...}}`` measured when generating),
        ``cost_conditions`` (device, batch size, ... of that measurement) and any timings (``wall_time_s``,
        ``stages``), shown in the reproducibility section.
    generated_at : str, optional
        Generation time shown in the report; default ``run_info["generated_at"]``, else now (UTC). Pass a fixed
        value for byte-identical output.
    template_dir : path, optional
        Templates overriding the packaged ones (see :func:`environment`).
    charts : bool
        Draw the SVG charts (their numbers are in tables either way).
    summary_keys : mapping, optional
        ``section -> metric names`` each section prefers in the summary's sentences (its ``Section.summary_keys``,
        ``{n: s.summary_keys for n, s in kdaudit.sections.registry().items()}``). None: the summary puts in words
        only the numbers a policy rule judged.

    Returns
    -------
    str
        The HTML document.
    """
    if not isinstance(results, Mapping):
        raise invalid_argument("results", type(results).__name__, "a mapping (the content of results.json)")
    if run_info is not None and not isinstance(run_info, Mapping):
        raise invalid_argument("run_info", type(run_info).__name__, "a mapping or None")
    from kdaudit.report._safe import display_safe

    lm = results.get("task") == "lm"  # a language-model audit opens with its own scorecard (templates/lm.html.j2)
    template = environment(template_dir).get_template(_LM_TEMPLATE if lm else _MAIN_TEMPLATE)
    results = display_safe(results)  # no control characters, balanced bidi, long names shortened (display only)
    run_info = None if run_info is None else display_safe(run_info)
    context = build_context(results, run_info, generated_at, charts_on=charts, summary_keys=summary_keys)
    if lm:
        from kdaudit.report._lm_view import lm_context

        context["lm"] = lm_context(results, run_info)
    return template.render(**context)


def write_html(results: Mapping[str, Any], path: str | os.PathLike[str], *,
               run_info: Mapping[str, Any] | None = None, generated_at: str | None = None,
               template_dir: str | os.PathLike[str] | None = None, charts: bool = True,
               summary_keys: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Render with :func:`render_html` and write the file atomically; returns its path."""
    from kdaudit._io import atomic_write_text

    html = render_html(results, run_info=run_info, generated_at=generated_at, template_dir=template_dir,
                       charts=charts, summary_keys=summary_keys)
    return atomic_write_text(path, html)
