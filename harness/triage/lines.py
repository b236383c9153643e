"""Lines of a text file as a user pasted it: CRLF, lone CR, a BOM and pasted ``&nbsp;`` tolerated."""

from __future__ import annotations

import re


def split_lines(text: str) -> list[tuple[int, str]]:
    """(1-based number, line) for each line of ``text``."""
    text = text.lstrip("\ufeff").replace("\u00a0", " ")
    return list(enumerate(re.split(r"\r\n|\r|\n", text), 1))
