"""Issue 23, hardening item 6: the card locks cannot be turned against the host.

Each test plants what an attacker sharing the lock folder could (a symlink or hard link under a
lock's name, a FIFO, a folder of someone else's or writable by all) and checks that the victim
file is untouched and the run is refused with one line, or goes on safely.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness import locks
from harness.errors import HarnessUnavailable
from harness.locks import CardLocks, folder_problem, lock_dir

NAME = "local-slot0.lock"


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "locks"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("BURNIN_LOCK_DIR", str(d))
    return d


def _victim(tmp_path: Path) -> Path:
    v = tmp_path / "precious"
    v.write_text("do not touch\n")
    v.chmod(0o600)
    return v


def _untouched(v: Path) -> None:
    assert v.read_text() == "do not touch\n"
    assert stat.S_IMODE(v.stat().st_mode) == 0o600


def test_a_symlink_under_a_locks_name_is_refused_and_its_target_untouched(folder, tmp_path):
    victim = _victim(tmp_path)
    (folder / NAME).symlink_to(victim)
    with pytest.raises(HarnessUnavailable) as e:
        CardLocks().acquire([("card local/0", NAME)])
    assert "symbolic link" in str(e.value) and NAME in str(e.value) and "\n" not in str(e.value)
    _untouched(victim)


def test_a_hard_link_under_a_locks_name_is_replaced_not_written(folder, tmp_path):
    """A stale lock file (here: a link to a private file) is never truncated, chmod-ed or written:
    its name is replaced by a new lock file of this process."""
    victim = _victim(tmp_path)
    os.link(victim, folder / NAME)
    held = CardLocks()
    held.acquire([("card local/0", NAME)])
    try:
        _untouched(victim)
        lock = folder / NAME
        assert lock.stat().st_ino != victim.stat().st_ino
        assert f'"pid": {os.getpid()}' in lock.read_text()
        assert stat.S_IMODE(lock.stat().st_mode) == 0o644 & ~_umask()
    finally:
        held.release()
    assert not (folder / NAME).exists()  # the name goes with the lock
    _untouched(victim)


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_a_fifo_under_a_locks_name_is_refused_without_hanging(folder):
    os.mkfifo(folder / NAME)
    with pytest.raises(HarnessUnavailable) as e:
        CardLocks().acquire([("card local/0", NAME)])
    assert "not a regular file" in str(e.value)


def test_a_held_lock_names_its_holder_and_a_second_is_refused(folder):
    first = CardLocks()
    first.acquire([("card local/0", NAME)], what={"command": "burnin run r.toml\x1b[2J"})
    try:
        with pytest.raises(HarnessUnavailable) as e:
            CardLocks().acquire([("card local/0", NAME)])
        msg = str(e.value)
        assert f"pid {os.getpid()}" in msg and "one harness per card" in msg
        assert "\x1b" not in msg and "\\x1b[2J" in msg  # the holder's command shown, not obeyed
    finally:
        first.release()
    again = CardLocks()
    again.acquire([("card local/0", NAME)])  # free once released
    again.release()


def test_another_users_stale_file_in_a_shared_folder_is_locked_as_it_is(tmp_path, monkeypatch):
    """In a shared sticky folder (the real /tmp: root's, mode 1777), a lock file another user left
    (simulated: this process plays a uid that does not own it; mode 0444, so a non-root user can
    only open it read-only) is flocked without being written, chmod-ed or removed, and still
    keeps a second harness off the card."""
    monkeypatch.setenv("BURNIN_LOCK_DIR", "/tmp")
    monkeypatch.setattr(locks, "_uid", lambda: os.geteuid() + 4243)
    name = f"burnin-test-{os.getpid()}-{tmp_path.name}.lock"
    lock = Path("/tmp") / name
    lock.write_text('{"pid": 1, "user": "someone"}')
    lock.chmod(0o444)
    try:
        held = CardLocks()
        held.acquire([("card local/0", name)])
        with pytest.raises(HarnessUnavailable) as e:
            CardLocks().acquire([("card local/0", name)])
        assert "someone" in str(e.value)
        held.release()
        assert lock.read_text() == '{"pid": 1, "user": "someone"}'
        assert stat.S_IMODE(lock.stat().st_mode) == 0o444
    finally:
        lock.unlink()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_a_lock_folder_writable_by_others_without_the_sticky_bit_is_refused(folder, mode):
    folder.chmod(mode)
    with pytest.raises(HarnessUnavailable) as e:
        CardLocks().acquire([("card local/0", NAME)])
    msg = str(e.value)
    assert "without the sticky bit" in msg and str(folder) in msg and "BURNIN_LOCK_DIR" in msg
    assert list(folder.iterdir()) == []


def test_a_lock_folder_of_another_user_is_refused(folder, monkeypatch):
    if os.geteuid() == 0:
        os.chown(folder, 4242, 4242)
    else:
        monkeypatch.setattr(locks, "_uid", lambda: os.geteuid() + 1)
    with pytest.raises(HarnessUnavailable) as e:
        CardLocks().acquire([("card local/0", NAME)])
    assert "owned by another user" in str(e.value) and list(folder.iterdir()) == []


def test_a_symlinked_lock_folder_is_refused(tmp_path, monkeypatch):
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    link = tmp_path / "locks"
    link.symlink_to(real)
    monkeypatch.setenv("BURNIN_LOCK_DIR", str(link))
    with pytest.raises(HarnessUnavailable) as e:
        CardLocks().acquire([("card local/0", NAME)])
    assert "symbolic link" in str(e.value)
    assert list(real.iterdir()) == []


def test_a_sticky_shared_folder_is_accepted():
    st = os.stat("/tmp")
    assert st.st_mode & stat.S_ISVTX
    assert folder_problem(st, os.geteuid()) is None
    fake = os.stat_result((stat.S_IFDIR | 0o1770, 0, 0, 2, 0, 0, 0, 0, 0, 0))
    assert folder_problem(fake, 1000) is None  # root's 1770 folder: one harness per card across users


def test_the_default_folder_is_per_user_and_private(tmp_path, monkeypatch):
    monkeypatch.delenv("BURNIN_LOCK_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    d = lock_dir()
    assert d == tmp_path / f"burnin-locks-{os.geteuid()}"
    held = CardLocks()
    held.acquire([("card local/0", NAME)])
    held.release()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700 & ~_umask()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert lock_dir() == runtime / "burnin-locks"
    monkeypatch.setenv("BURNIN_LOCK_DIR", str(tmp_path / "mine"))
    assert lock_dir() == tmp_path / "mine"
