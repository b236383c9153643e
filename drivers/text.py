"""Strings a device or a config hands us, made visible and bounded where they enter.

A serial, a model name or a process name is data: a terminal obeys the ESC sequences in it
(clear the screen, set the title, draw a hyperlink), a newline in it forges a line of output, and
a driver may report a 100 kB process name. ``visible`` writes every character that is not
printable as its escape (``\\x1b``, ``\\n``, ``\\u202e``), so what was there can still be read;
``bounded`` also cuts it to a length, saying how much was cut. The harness's views
(``harness/views/safe.py``) build on these.
"""

from __future__ import annotations

from typing import Any

NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
ELLIPSIS = "…"


def _escape(c: str) -> str:
    if c in NAMED:
        return NAMED[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else (f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")


def visible(value: Any, keep: str = "") -> str:
    """``value`` as text with every non-printable character (controls, ESC, newlines, bidi
    overrides, line separators) written as its escape; characters in ``keep`` (e.g. ``"\\n"`` for
    a multi-line block) stay as they are. ``None`` is the empty string."""
    s = "" if value is None else str(value)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() or c in keep else _escape(c) for c in s)


def clip(s: str, limit: int) -> str:
    """``s`` cut to at most ``limit`` characters, ending in ``…(+N)`` when cut."""
    if len(s) <= limit:
        return s
    tail = f"{ELLIPSIS}(+{len(s) - limit})"
    return s[: max(0, limit - len(tail))] + tail


def bounded(value: Any, limit: int, keep: str = "") -> str:
    """``visible(value)`` cut to ``limit`` characters: what a device reported, safe to store and show."""
    return clip(visible(value, keep), limit)
