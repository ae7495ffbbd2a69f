"""The audit report: one self-contained HTML file rendered from an audit's results (computes nothing).

``render_html(results, run_info=...)`` returns the HTML text; ``write_html`` writes it atomically. Templates are
jinja2 files under ``kdaudit/report/templates``; pass ``template_dir=`` to override any of them.

The renderer (jinja2, the charts) loads on first use of these names: ``kdaudit gate`` reads the report's formatting
helpers (``kdaudit.report._format``) and must not pay for the renderer.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from kdaudit.report._render import (
        TEMPLATE_DIR,
        VOLATILE_ATTRIBUTE,
        environment,
        render_html,
        volatile,
        write_html,
    )

__all__ = ["TEMPLATE_DIR", "VOLATILE_ATTRIBUTE", "environment", "render_html", "volatile", "write_html"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kdaudit.report import _render

        return getattr(_render, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
