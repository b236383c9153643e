"""Reading a file a customer sent: whatever its name, encoding or compression.

Only a regular file is read, at most MAX_BYTES (uncompressed). gzip is recognised by its magic
bytes (``nvidia-bug-report.log.gz``); UTF-16 by its BOM (PowerShell's ``>`` writes it); anything
else is decoded as UTF-8 with undecodable bytes replaced, so a log with one stray byte is still
read. A file with NUL bytes left after that is binary: not evidence. Every failure is a
``FileProblem`` with one line saying why.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from pathlib import Path

MAX_BYTES = 64 << 20  # a kernel log of a busy host for weeks; bigger is not a paste


class FileProblem(Exception):
    """A file that cannot be read as evidence; the message says why in a few words."""


def read_evidence(path: Path) -> str:
    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:
        raise FileProblem(getattr(e, "strerror", None) or str(e)) from None
    if stat.S_ISDIR(st.st_mode):
        raise FileProblem("a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem("not a regular file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise FileProblem(e.strerror or str(e)) from None
    if len(data) > MAX_BYTES:
        raise FileProblem(f"larger than {MAX_BYTES >> 20} MiB")
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data)
    return decode(data)


def _gunzip(data: bytes) -> bytes:
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(data, MAX_BYTES + 1)
    except (zlib.error, gzip.BadGzipFile, EOFError) as e:
        raise FileProblem(f"a damaged gzip file ({e})") from None
    if len(out) > MAX_BYTES:
        raise FileProblem(f"larger than {MAX_BYTES >> 20} MiB once uncompressed")
    return out


def decode(data: bytes) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data.decode("utf-16", errors="replace")
    else:
        text = data.decode("utf-8", errors="replace")
    text = text.lstrip("\ufeff")
    if "\x00" in text:
        raise FileProblem("binary data, not text")
    if not text.strip():
        raise FileProblem("empty")
    return text
