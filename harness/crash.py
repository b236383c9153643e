"""A harness crash is not a failed card.

An uncaught exception would exit 1, the code for "some card did not pass", so a script or a CI
job could not tell a bug in burnin from a bad card. It exits ``EXIT_CRASH`` instead: 70, sysexits'
``EX_SOFTWARE`` ("internal software error"), outside the contract's 0-3 and the signals' 128+N.
The user gets one line; the traceback goes to a file of its own (``$XDG_STATE_HOME/burnin/crashes``,
else ``~/.local/state/burnin/crashes``, else the temp folder), never onto the terminal, where it
would bury the results line and may carry device strings.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from drivers.text import bounded, visible

EXIT_CRASH = 70  # sysexits.h EX_SOFTWARE
MESSAGE_MAX = 300


def crash_dir() -> Path:
    """Where tracebacks are kept: the user's state folder (XDG), for a later bug report."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "burnin" / "crashes"


def _write(folder: Path | None, text: str) -> Path:
    """A new file only this user can read (mkstemp: O_EXCL, mode 0600), in ``folder`` or the temp folder."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"crash-{stamp}-{os.getpid()}-", suffix=".txt",
                                dir=None if folder is None else str(folder))
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(text)
    return Path(name)


def save_traceback(exc: BaseException) -> Path | None:
    """Write the traceback (with the command line) to a new file; None when nowhere is writable."""
    text = (f"burnin {' '.join(sys.argv[1:])}\npython {sys.version.split()[0]}, pid {os.getpid()}, "
            f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    text = visible(text, keep="\n\t")  # safe to cat on a terminal too
    for folder in (crash_dir(), None):
        with contextlib.suppress(OSError):
            return _write(folder, text)
    return None


def crash_line(exc: BaseException, saved: Path | None) -> str:
    """The one line the user sees: what broke, that it is burnin's fault, where the traceback is."""
    what = bounded(f"{type(exc).__name__}: {exc}", MESSAGE_MAX)
    where = f"traceback in {saved}" if saved else "the traceback could not be saved (no writable folder)"
    return (f"burnin: internal error, not a card verdict (exit {EXIT_CRASH}): {what}; {where}; "
            "results already measured stay in the results database")
