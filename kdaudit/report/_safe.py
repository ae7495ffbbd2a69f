"""User strings made safe to show: control characters and unbalanced bidi controls removed, long names shortened.

Escaping (jinja2 autoescape, markupsafe) stops markup; this stops what escaping lets through: a NUL or other control
character that browsers and parsers treat inconsistently, a right-to-left override that reorders the text after it
(a model named ``"safe\\u202egnp.exe"``), and a 100,000-character model name repeated in every table. Only the display
changes: results.json keeps every string whole.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

__all__ = ["MAX_NAME_CHARS", "MAX_TEXT_CHARS", "display_safe", "safe_text"]

#: Longest model or student name shown; longer ones are cut, with a hash so that two cut names stay distinct.
MAX_NAME_CHARS = 120
#: Longest other string shown (our own longest texts, methodology notes, are about 3,000 characters).
MAX_TEXT_CHARS = 8000

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_OPEN = {"\u202a": "\u202c", "\u202b": "\u202c", "\u202d": "\u202c", "\u202e": "\u202c",  # embeddings, overrides
         "\u2066": "\u2069", "\u2067": "\u2069", "\u2068": "\u2069"}  # isolates
_CLOSE = {"\u202c", "\u2069"}


def safe_text(text: str, *, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` without control characters (tab and newlines kept) or unmatched bidi controls, at most ``limit``
    characters."""
    text = _CONTROL.sub("", text)
    if any(c in _OPEN or c in _CLOSE for c in text):
        text = _balance_bidi(text)
    if len(text) > limit:
        text = _shorten(text, limit)
    return text


def _balance_bidi(text: str) -> str:
    """Drop every bidi opener without its closer and every closer without its opener (a stack, as the Unicode
    bidirectional algorithm pairs them), so no override leaks past the string into the page."""
    keep = [True] * len(text)
    stack: list[int] = []
    for i, c in enumerate(text):
        if c in _OPEN:
            stack.append(i)
        elif c in _CLOSE:
            if stack and _OPEN[text[stack[-1]]] == c:
                stack.pop()
            else:
                keep[i] = False
    for i in stack:
        keep[i] = False
    return "".join(c for c, k in zip(text, keep) if k)


def _shorten(text: str, limit: int) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    tail = f"\u2026 [{len(text):,} characters, sha256 {digest}]"
    return text[: max(limit - len(tail), 1)] + tail


def display_safe(results: Any, names: set[str] | None = None) -> Any:
    """A copy of ``results`` (and nested values) fit for display: :func:`safe_text` on every string, and model names
    longer than :data:`MAX_NAME_CHARS` shortened the same way wherever they appear (also inside messages)."""
    if names is None:
        names = set()
        _collect_names(results, names)
    long_names = {n: _shorten(safe_text(n, limit=10**9), MAX_NAME_CHARS)
                  for n in names if len(n) > MAX_NAME_CHARS}
    return _walk(results, long_names)


def _collect_names(x: Any, out: set[str]) -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            if k in ("name", "student", "teacher", "suspect") and isinstance(v, str):
                out.add(v)
            _collect_names(v, out)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _collect_names(v, out)


def _walk(x: Any, long_names: dict[str, str]) -> Any:
    if isinstance(x, str):
        if long_names:
            for name in sorted(long_names, key=len, reverse=True):
                if name in x:
                    x = x.replace(name, long_names[name])
        return safe_text(x)
    if isinstance(x, dict):
        return {(_walk(k, long_names) if isinstance(k, str) else k): _walk(v, long_names) for k, v in x.items()}
    if isinstance(x, list):
        return [_walk(v, long_names) for v in x]
    if isinstance(x, tuple):
        return tuple(_walk(v, long_names) for v in x)
    return x
