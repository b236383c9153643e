"""Reading a user's TOML file safely: configs and plans come from editors, pipelines and typos.

Only a regular file is read (a FIFO would block forever, ``/dev/zero`` would never end), at most
MAX_BYTES of it, as UTF-8 with or without the BOM Windows editors write. Every failure is one
UsageError line naming the file.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from harness.errors import UsageError

MAX_BYTES = 4 << 20  # a rack of thousands of cards is well under a megabyte


def read_text(path: Path, what: str) -> str:
    """The text of a regular file, decoded as UTF-8 (a leading BOM is dropped)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read {what}: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise UsageError(f"{path}: cannot read {what}: {kind}")
    if st.st_size > MAX_BYTES:
        raise UsageError(f"{path}: cannot read {what}: {st.st_size} bytes is more than the {MAX_BYTES} a {what} may have")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise UsageError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise UsageError(f"{path}: cannot read {what}: more than {MAX_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: {what} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file; UsageError with the parser's message (line and column) when invalid."""
    text = read_text(path, what)
    if "\x00" in text:
        raise UsageError(f"{path}: {what} is not text (it contains NUL bytes)")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: invalid TOML: {e}") from None
    except RecursionError:
        raise UsageError(f"{path}: invalid TOML: nested too deeply") from None
