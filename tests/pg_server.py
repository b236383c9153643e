"""A real PostgreSQL server for the tests, started by the tests themselves (no service, no root
needed): initdb in a temporary folder, a unix socket, no TCP. The binaries come from pgserver
(PostgreSQL from pip) first, else from the distribution (Debian's postgresql package).
``.ci/run`` installs pgserver, so CI always runs these tests; they skip, saying why, only where
neither exists.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
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
def _server(folder: Path, bindir: Path) -> Iterator[str]:
    """initdb + pg_ctl; as root, the server runs as an unprivileged user."""
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
        run_as = ["runuser", "-u", user, "--"]
        reachable = subprocess.run([*run_as, "test", "-x", str(bindir / "initdb"), "-a", "-w", str(data)],
                                   capture_output=True).returncode == 0
        if not reachable:  # let the server's user reach its folder and binaries (traverse only, as pgserver does)
            for parent in (*folder.parents, *bindir.parents):
                with contextlib.suppress(OSError):
                    parent.chmod(parent.stat().st_mode | 0o011)
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                    "-o", f"-k {sock} -h '' -F", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@/postgres?host={quote(str(sock))}"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)


def _binaries() -> Path | None:
    """pgserver's PostgreSQL (pip; found without importing it: its import starts lock files), else
    the distribution's."""
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        bindir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
        if (bindir / "initdb").is_file():
            return bindir
    return _debian_bin()


@contextlib.contextmanager
def postgres_server() -> Iterator[str | None]:
    """A running server's admin URL (None when no PostgreSQL can be started here). Its folder is
    a fresh one under the system's temporary folder, which the server's own user can reach when
    the tests run as root (pytest's own folders are private to their user); no fsync, stopped
    at once at the end: the data is thrown away."""
    bindir = _binaries()
    if bindir is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="burnin-pg-"))
    folder.chmod(0o755)
    try:
        with _server(folder, bindir) as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def new_database(admin_url: str, prefix: str) -> str:
    """Create a fresh, empty database on the server; its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}".lower()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = admin_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
