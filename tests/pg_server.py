"""A real PostgreSQL server for the tests, started by the tests themselves (no root, no service).

pgserver (PostgreSQL binaries from pip) first; else the distribution's binaries (Debian's
postgresql package: initdb in a temporary folder, a unix socket, no TCP). ``.ci/run`` installs
pgserver, so CI always runs these tests; they skip, saying why, only where neither exists.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote


def _debian_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


@contextlib.contextmanager
def _pgserver(folder: Path) -> Iterator[str]:
    import pgserver  # type: ignore[import-not-found, unused-ignore]

    srv = pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield str(srv.get_uri())
    finally:
        srv.cleanup()


@contextlib.contextmanager
def _distribution(folder: Path, bindir: Path) -> Iterator[str]:
    """initdb + pg_ctl from the distribution; as root, the server runs as an unprivileged user."""
    data, sock = folder / "data", folder / "sock"
    sock.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = "postgres"
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            user, pw = "nobody", pwd.getpwnam("nobody")
        data.mkdir(mode=0o700)
        for p in (folder, data, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        for parent in folder.parents:  # let the server's user reach its folder
            with contextlib.suppress(OSError):
                parent.chmod(parent.stat().st_mode | 0o011)
        run_as = ["runuser", "-u", user, "--"]
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                    "-o", f"-k {sock} -h '' -F", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@/postgres?host={quote(str(sock))}"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)


@contextlib.contextmanager
def postgres_server(folder: Path) -> Iterator[str]:
    """A running server's admin URL; raises LookupError when no PostgreSQL can be started here."""
    try:
        import pgserver  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        bindir = _debian_bin()
        if bindir is None:
            raise LookupError("no PostgreSQL here: pip install pgserver (or apt-get install postgresql)") from None
        with _distribution(folder, bindir) as url:
            yield url
        return
    with _pgserver(folder) as url:
        yield url


def new_database(admin_url: str, prefix: str) -> str:
    """Create a fresh, empty database on the server; its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}".lower()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = admin_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
