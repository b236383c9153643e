"""Device and config strings in every view, shown as what they are.

A serial ``SN-1[/bold]`` is a serial, not Rich markup (read as markup, a stray closing tag
crashes the table after the results are stored, and ``[link=file:///etc/passwd]`` draws a
hyperlink); ESC sequences and newlines in a rack or process name must not reach the terminal
(they clear it, set its title or forge a ``PASS`` row); control characters make a JUnit file
ill-formed XML; ``<script>`` must not render in HTML or Markdown. Each output has one function
here, and every view uses it for every string it did not write itself:

- ``cell`` / ``cells``: a Rich ``Text`` (never parsed as markup), control characters visible,
  cut to ``CELL_MAX``;
- ``line``: one plain line for stderr (error messages), control characters visible;
- ``html``: escaped for HTML (``multiline`` keeps newlines, for ``<pre>`` blocks);
- ``xml``: a string every XML 1.0 parser accepts;
- ``markdown``: literal in CommonMark (no inline HTML, emphasis, links or table breaks).
"""

from __future__ import annotations

from html import escape
from typing import Any

from rich.text import Text

from drivers.text import bounded, clip, visible

CELL_MAX = 1000  # a table cell: longer device text folds into pages of rows otherwise
LINE_MAX = 4000  # an error line

__all__ = ["CELL_MAX", "LINE_MAX", "cell", "cells", "clip", "html", "line", "markdown", "visible", "xml"]


def cell(value: Any, style: str = "", limit: int = CELL_MAX) -> Text:
    """``value`` as a literal Rich Text (``None`` shows as nothing); a ``Text`` passes unchanged
    (it was built here or from literal text already)."""
    if isinstance(value, Text):
        return value
    return Text(bounded(value, limit), style=style)


def cells(*values: Any) -> list[Text]:
    """A table row's cells, each through ``cell``."""
    return [cell(v) for v in values]


def line(value: Any, limit: int = LINE_MAX) -> str:
    """One line of plain text for stderr: newlines and ESC shown as escapes, bounded."""
    return bounded(value, limit)


def html(value: Any, multiline: bool = False) -> str:
    """Text for HTML or SVG (elements and attributes); ``multiline`` keeps newlines and tabs."""
    return escape(visible(value, keep="\n\t" if multiline else ""), quote=True)


def xml(value: Any) -> str:
    """Text every XML 1.0 parser accepts (control characters, lone surrogates, U+FFFE/F made
    visible); the serializer escapes ``<``, ``&`` and quotes."""
    return visible(value)


_MD_SPECIAL = set("\\`*_{}[]<>()#+-.!|~&")


def markdown(value: Any) -> str:
    """Text that CommonMark shows literally: every punctuation character that could start markup
    (inline HTML, emphasis, links, code, a table cell's end) is backslash-escaped."""
    return "".join(f"\\{c}" if c in _MD_SPECIAL else c for c in visible(value))
