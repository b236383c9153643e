"""One harness per card at a time: an advisory lock per host and card.

Two harnesses stressing the same card measure each other (heat, memory, the fans), so both runs
are invalid. Each card's lock is a ``flock`` on a small file in the lock folder: the kernel drops
it when the holder exits, however it exits, so a crashed harness never leaves a stale lock
behind. The file says who holds it, so the second harness can tell the user.

The lock folder must not become a way to attack the host: a planted symlink would make a run
write (or empty) any file its user can write. So:

- the folder is ``$BURNIN_LOCK_DIR``, else ``$XDG_RUNTIME_DIR/burnin-locks``, else a per-user
  folder ``<tmp>/burnin-locks-<uid>``; one this process creates gets mode 0700;
- the folder must be a real folder (not a symlink) owned by this user or root, and not writable
  by others unless sticky (a system folder shared by every user of a bench, mode 1777 or 1770,
  keeps "one harness per card" across users);
- lock files are opened relative to the folder's descriptor with O_NOFOLLOW (a symlink is
  refused) and O_NONBLOCK (a FIFO cannot hang the run), and must be regular files;
- only a file this process created (O_EXCL) is ever written; one left by an earlier run is locked,
  then replaced by a fresh one (unlinking a name never changes the file behind it), or, when
  another user owns it, locked as it is without writing; nothing is chmod-ed or truncated;
- every lock is taken as "flock, then check the name still points at the locked file", and the
  name of a file this process created is removed on release (while still locked), so replacing a
  stale file never lets two harnesses hold one card.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from drivers.registry import is_simulated
from harness.db.target import mask
from harness.errors import HarnessUnavailable
from harness.views.safe import line

try:
    import fcntl
except ImportError:  # Windows: no flock; cards are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_FILE_MODE = 0o644  # others may read who holds it, and flock it read-only (a shared folder)
OPEN_TRIES = 8  # a lock file replaced under us this many times in a row: give up, say so
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def _uid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1


def lock_dir() -> Path:
    """``$BURNIN_LOCK_DIR``, else ``$XDG_RUNTIME_DIR/burnin-locks``, else ``<tmp>/burnin-locks-<uid>``."""
    env = os.environ.get("BURNIN_LOCK_DIR")
    if env:
        return Path(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_absolute() and Path(runtime).is_dir():
        return Path(runtime) / "burnin-locks"
    return Path(tempfile.gettempdir()) / f"burnin-locks-{_uid()}"


def lock_name(host: str, slot: int, backend: str, serial: str | None) -> str:
    """A real card is its host's slot; a simulated card is its serial (two racks may simulate slot 0)."""
    raw = f"{host}-mock-{serial}" if is_simulated(backend) and serial else f"{host}-slot{slot}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:200] + ".lock"


def folder_problem(st: os.stat_result, uid: int) -> str | None:
    """Why a lock folder with this status is unsafe to keep locks in, or None."""
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    if st.st_uid not in (uid, 0):
        return f"owned by another user (uid {st.st_uid}), who could swap the lock files"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return (f"writable by others without the sticky bit (mode {stat.S_IMODE(st.st_mode):04o}); "
                "a shared lock folder needs mode 1777 or 1770")
    return None


def open_lock_dir(folder: Path) -> int:
    """A descriptor of the lock folder, created (mode 0700) if missing and checked: HarnessUnavailable
    with one line naming the folder when it cannot be used safely."""
    try:
        folder.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise HarnessUnavailable(f"{folder}: cannot create the card lock folder: {e.strerror}") from None
    try:
        fd = os.open(folder, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
    except OSError as e:
        why = "a symbolic link (refused)" if os.path.islink(folder) else (e.strerror or str(e))
        raise HarnessUnavailable(f"{folder}: cannot use as the card lock folder: {why}") from None
    problem = folder_problem(os.fstat(fd), _uid())
    if problem:
        os.close(fd)
        raise HarnessUnavailable(f"{folder}: refused as the card lock folder: {problem} "
                                 "(set BURNIN_LOCK_DIR to a folder of your own)")
    return fd


def _holder(dir_fd: int, name: str) -> str:
    info: Any = {}
    with contextlib.suppress(OSError, ValueError):
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK, dir_fd=dir_fd)
        try:
            info = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
        finally:
            os.close(fd)
    if not isinstance(info, dict) or not info:
        return "another burnin"
    return line(f"pid {info.get('pid')} ({info.get('user')}@{info.get('host')}, since {info.get('since')}: "
                f"{info.get('command')})", 400)


class _Taken(Exception):
    """Another process holds this lock."""


class CardLocks:
    """The locks of one run's cards, held until ``release`` (or the process ends)."""

    def __init__(self) -> None:
        self._held: list[tuple[int, str, bool]] = []  # (fd, name, whether this process created the file)
        self._room: Any = None  # the room store's locks (harness.db.postgres.StoreLocks), if any
        self._dir_fd: int | None = None
        self.folder: Path | None = None

    def acquire(self, names: Iterable[tuple[str, str]], what: dict[str, Any] | None = None) -> None:
        """Lock every (label, lock name); HarnessUnavailable naming the holder if one is taken."""
        if fcntl is None:
            return
        folder = lock_dir()
        if self._dir_fd is None:
            self._dir_fd = open_lock_dir(folder)
            self.folder = folder
        info = json.dumps({"pid": os.getpid(), "user": _user(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "command": _command(), **(what or {})}).encode()
        taken: set[str] = set()
        for label, name in names:
            if name in taken:
                continue
            taken.add(name)
            try:
                fd, ours = self._lock_one(name, info)
            except _Taken:
                holder = _holder(self._dir_fd, name)
                self.release()
                raise HarnessUnavailable(f"{label} is being tested by {holder}; one harness per card "
                                         f"(lock {folder / name})") from None
            except OSError as e:
                self.release()
                raise HarnessUnavailable(f"{folder / name}: cannot take the lock of {label}: "
                                         f"{e.strerror or e}") from None
            self._held.append((fd, name, ours))

    def _lock_one(self, name: str, info: bytes) -> tuple[int, bool]:
        """The descriptor of ``name``, locked and still the file the name points at, and whether
        this process created that file."""
        assert self._dir_fd is not None
        d = self._dir_fd
        for _ in range(OPEN_TRIES):
            created = True
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _NONBLOCK, LOCK_FILE_MODE,
                             dir_fd=d)
            except FileExistsError:
                created = False
                fd = self._open_existing(name)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(0, "not a regular file (refused)")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise _Taken() from None
                if not self._still_named(name, st):
                    os.close(fd)
                    continue  # replaced between open and flock: try the file that is there now
                if created:
                    os.write(fd, info)
                    return fd, True
                if st.st_uid == _uid() or _uid() == 0:
                    os.unlink(name, dir_fd=d)  # a stale file: replace it by one of our own
                    os.close(fd)
                    continue
                return fd, False  # another user's stale file in a shared folder: hold it as it is
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
        raise OSError(0, "the lock file keeps being replaced")

    def _open_existing(self, name: str) -> int:
        assert self._dir_fd is not None
        flags = _NOFOLLOW | _NONBLOCK
        try:
            return os.open(name, os.O_RDWR | flags, dir_fd=self._dir_fd)
        except PermissionError:
            return os.open(name, os.O_RDONLY | flags, dir_fd=self._dir_fd)  # flock needs no write access
        except OSError as e:
            if _is_link(self._dir_fd, name):
                raise OSError(e.errno, "a symbolic link (refused)") from None
            raise

    def _still_named(self, name: str, st: os.stat_result) -> bool:
        try:
            now = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)

    def release(self) -> None:
        """Drop every lock; remove each lock's name first (while still holding it), so no one is
        left holding a file no name points at."""
        if self._room is not None:
            self._room.release()
            self._room = None
        while self._held:
            fd, name, ours = self._held.pop()
            with contextlib.suppress(OSError):
                if ours and self._still_named(name, os.fstat(fd)):
                    os.unlink(name, dir_fd=self._dir_fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._dir_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._dir_fd)
            self._dir_fd = None

    def __enter__(self) -> CardLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in a container is fine
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


def _command() -> str:
    """This harness's command line, as the next one is told it (a database password masked)."""
    return mask(" ".join(["burnin", *sys.argv[1:]]))[:300]


def _label(c: Any) -> str:
    return f"card {c.key} ({c.locator.get('serial') or c.backend})"


def room_lock_names(c: Any) -> list[str]:
    """A card's names in the room store: its serial (a card is its serial wherever it sits) and,
    for a real card, its slot on this machine ("local" is a different machine on each bench)."""
    here = socket.gethostname()
    host = here if c.host in ("local", "localhost") else c.host
    names = [f"serial:{c.locator['serial']}"] if c.locator.get("serial") else []
    if not is_simulated(c.backend):
        names.append(f"slot:{host}/{c.slot}")
    return names or [f"slot:{host}/{c.backend}/{c.key}"]


def lock_cards(cards: Iterable[Any], db: Any = None) -> CardLocks:
    """Lock a run's cards (CardSlot-like: host, slot, backend, locator, key) on this machine and,
    when ``db`` is a room store's URL, in the store too (an advisory lock per card there, so two
    controllers on two machines that share the store cannot run the same card either)."""
    cards = list(cards)
    locks = CardLocks()
    locks.acquire((_label(c), lock_name(c.host, c.slot, c.backend, c.locator.get("serial"))) for c in cards)
    if db is not None and hasattr(db, "url"):
        from harness.db.postgres import StoreLocks

        try:
            room = StoreLocks(db)
            holder = f"pid {os.getpid()} ({_user()}@{socket.gethostname()}: {_command()})"
            room.acquire([(_label(c), n) for c in cards for n in room_lock_names(c)], holder,
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        except BaseException:
            locks.release()
            raise
        locks._room = room
    return locks
