"""The audit report: one self-contained HTML file rendered from an audit's results (computes nothing).

``render_html(results, run_info=...)`` returns the HTML text; ``write_html`` writes it atomically. Templates are
jinja2 files under ``kdaudit/report/templates``; pass ``template_dir=`` to override any of them.
"""

from kdaudit.report._render import (
    TEMPLATE_DIR,
    VOLATILE_ATTRIBUTE,
    environment,
    render_html,
    volatile,
    write_html,
)

__all__ = ["TEMPLATE_DIR", "VOLATILE_ATTRIBUTE", "environment", "render_html", "volatile", "write_html"]
