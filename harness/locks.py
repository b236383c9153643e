"""One harness per card at a time: an advisory lock per host and card.

Two harnesses stressing the same card measure each other (heat, memory, the fans), so both runs
are invalid. Each card's lock is a ``flock`` on a small file under the lock folder
(``$BURNIN_LOCK_DIR``, else ``<tmp>/burnin-locks``): the kernel drops it when the holder exits,
however it exits, so a crashed harness never leaves a stale lock behind. The file says who holds
it, so the second harness can tell the user.

With a room store (PostgreSQL) the cards are also locked there (``harness.db.postgres.StoreLocks``:
an advisory lock per card, by serial and by host/slot), so two controllers on two machines that
share the store cannot run the same card either.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.errors import HarnessUnavailable

try:
    import fcntl
except ImportError:  # Windows: no flock; cards are not locked there
    fcntl = None  # type: ignore[assignment]


def lock_dir() -> Path:
    env = os.environ.get("BURNIN_LOCK_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "burnin-locks"


def lock_name(host: str, slot: int, backend: str, serial: str | None) -> str:
    """A real card is its host's slot; a simulated card is its serial (two racks may simulate slot 0)."""
    raw = f"{host}-mock-{serial}" if backend == "mock" and serial else f"{host}-slot{slot}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:200] + ".lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another burnin"
    return (f"pid {info.get('pid')} ({info.get('user')}@{info.get('host')}, since {info.get('since')}: "
            f"{info.get('command')})")


class CardLocks:
    """The locks of one run's cards, held until ``release`` (or the process ends)."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._room: Any = None  # StoreLocks of a room store

    def acquire(self, names: Iterable[tuple[str, str]], what: dict[str, Any] | None = None) -> None:
        """Lock every (label, lock name); HarnessUnavailable naming the holder if one is taken."""
        if fcntl is None:
            return
        folder = lock_dir()
        try:
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError):
                    folder.chmod(0o1777)  # shared by every user of the bench, like /tmp
        except OSError as e:
            raise HarnessUnavailable(f"{folder}: cannot create the card lock folder: {e.strerror}") from None
        info = {"pid": os.getpid(), "user": _user(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": _command(), **(what or {})}
        taken: set[str] = set()
        for label, name in names:
            if name in taken:
                continue
            taken.add(name)
            path = folder / name
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                self.release()
                raise HarnessUnavailable(f"{path}: cannot open the lock of {label}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self.release()
                raise HarnessUnavailable(
                    f"{label} is being tested by {_holder(path)}; one harness per card "
                    f"(lock {path})") from None
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666)
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
            self._fds.append(fd)

    def release(self) -> None:
        if self._room is not None:
            self._room.release()
            self._room = None
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop())

    def __enter__(self) -> CardLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _command() -> str:
    """This harness's command line, as the next one is told it (a database password masked)."""
    from harness.db.target import mask

    return mask(" ".join(["burnin", *sys.argv[1:]]))[:300]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in a container is fine
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


def _label(c: Any) -> str:
    return f"card {c.key} ({c.locator.get('serial') or c.backend})"


def room_lock_names(c: Any) -> list[str]:
    """A card's names in the room store: its serial (a card is its serial wherever it sits) and,
    for a real card, its slot on this machine ("local" is a different machine on each bench)."""
    here = socket.gethostname()
    host = here if c.host in ("local", "localhost") else c.host
    names = [f"serial:{c.locator['serial']}"] if c.locator.get("serial") else []
    if c.backend != "mock":
        names.append(f"slot:{host}/{c.slot}")
    return names or [f"slot:{host}/{c.backend}/{c.key}"]


def lock_cards(cards: Iterable[Any], db: Any = None) -> CardLocks:
    """Lock a run's cards (CardSlot-like: host, slot, backend, locator, key) on this machine and,
    when ``db`` is a room store's URL, in the store too."""
    cards = list(cards)
    locks = CardLocks()
    locks.acquire((_label(c), lock_name(c.host, c.slot, c.backend, c.locator.get("serial"))) for c in cards)
    if db is not None and hasattr(db, "url"):
        from harness.db.postgres import StoreLocks

        try:
            room = StoreLocks(db)
            info = {"pid": os.getpid(), "user": _user(), "host": socket.gethostname(),
                    "command": _command()}
            holder = (f"pid {info['pid']} ({info['user']}@{info['host']}: {info['command']})")
            room.acquire([(_label(c), n) for c in cards for n in room_lock_names(c)], holder,
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        except BaseException:
            locks.release()
            raise
        locks._room = room
    return locks
