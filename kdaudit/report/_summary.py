"""The compact HTML summary of an audit (Jupyter's ``AuditResult._repr_html_``): verdict, findings counts and the
headline numbers with their intervals, rendered from results.json alone like the full report.

User strings (model, data and student names, messages) are escaped. The audit hands down which headline keys each
section prefers (its ``summary_keys``); the report imports no section code.
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

from kdaudit._rows import result_rows, section_definitions

__all__ = ["summary_html"]

_STATUSES = ("info", "pass", "skipped", "warn", "fail")
_COLOUR = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}


def summary_html(results: Mapping[str, Any], *, sections: Sequence[tuple[str, Sequence[str]]] | None = None,
                 max_keys: int = 4, max_findings: int = 10) -> str:
    """A compact HTML summary of an audit's results.

    Parameters
    ----------
    results : mapping
        The content of results.json.
    sections : sequence of (name, preferred headline keys), optional
        The sections to show, in order, each with the headline keys it shows first. None: every section a
        comparison holds, in the order stored, with its first headline keys.
    max_keys : int
        Headline numbers shown per section.
    max_findings : int
        Failed and warning findings listed below the table.
    """
    e = html.escape
    findings = [f for f in results.get("findings") or [] if isinstance(f, Mapping)]
    counts = {s: sum(f.get("status") == s for f in findings) for s in _STATUSES}
    verdict = str(results.get("verdict", ""))
    teacher = next((str(m.get("name")) for m in results.get("models") or []
                    if isinstance(m, Mapping) and m.get("role") == "teacher"), "")
    data = results.get("data") if isinstance(results.get("data"), Mapping) else {}
    colour = _COLOUR.get(verdict, "#57606a")
    parts = [
        '<div class="kdaudit-summary">',
        f"<p><strong>kdaudit audit</strong> of teacher <code>{e(teacher)}</code> on "
        f"<code>{e(str(data.get('name', '')))}</code> "
        f"({int(data.get('n_rows', 0)):,} rows): verdict "
        f'<strong style="color:{colour}">{e(verdict.upper())}</strong> '
        f"({counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail, {counts['skipped']} skipped, "
        f"{counts['info']} notes)</p>",
        "<table><thead><tr><th>student</th><th>section</th><th>metric</th><th>value [95% CI]</th></tr></thead>"
        "<tbody>",
    ]
    defs = results.get("definitions") if isinstance(results.get("definitions"), Mapping) else {}
    for comp in results.get("comparisons") or []:
        student = e(str(comp.get("student")))
        order = sections if sections is not None else [(k, ()) for k, v in comp.items() if isinstance(v, Mapping)]
        for section, preferred in order:
            sec = comp.get(section)
            if not isinstance(sec, Mapping):
                continue
            if not sec.get("available", True):
                parts.append(f"<tr><td>{student}</td><td>{e(section)}</td><td colspan=2>"
                             f"unavailable: {e(str(sec.get('reason') or ''))}</td></tr>")
                continue
            if section == "lineage" and sec.get("verdict"):
                parts.append(f"<tr><td>{student}</td><td>lineage</td><td>verdict</td>"
                             f"<td>{e(str(sec['verdict']))}</td></tr>")
            headline = sec.get("headline") if isinstance(sec.get("headline"), Mapping) else {}
            # the headline's tidy rows, as the policy and to_frame read them
            rows = {r.metric: r for r in result_rows(section, sec, section_definitions(defs, section))
                    if not r.group and r.metric in headline}
            keys = [k for k in preferred if k in rows] or sorted(rows)
            for key in keys[:max_keys]:
                label = (defs.get(f"{section}.{key}") or {}).get("label", key)
                parts.append(f"<tr><td>{student}</td><td>{e(section)}</td>"
                             f'<td title="{e(section + "." + key)}">{e(str(label))}</td>'
                             f'<td>{e(f"{rows[key].estimate:.4f}")}</td></tr>')
    parts.append("</tbody></table>")
    bad = [f for f in findings if f.get("status") in ("fail", "warn")]
    if bad:
        parts.append("<ul>" + "".join(f"<li><strong>{e(str(f.get('status')))}</strong>: "
                                      f"{e(str(f.get('message')))}</li>" for f in bad[:max_findings]) + "</ul>")
    parts.append("</div>")
    return "".join(parts)
