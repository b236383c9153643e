"""The embedded results database: one SQLite file (standard library), WAL journal.

Opening checks the file before any card starts: one that is not a burnin database, a damaged
one, one that cannot be written (unless read-only) or one in a folder that does not exist is a
one-line error (UsageError: exit 2; HarnessUnavailable: 3).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.db.schema import ADDED_COLUMNS, SCHEMA_VERSION, TABLE_NAMES, ddl, fill
from harness.db.sql import first_line, is_disk_full
from harness.errors import HarnessUnavailable, UsageError


class SqliteSql:
    dialect = "sqlite"
    run_order = "rowid"

    def __init__(self, path: Path, readonly: bool = False, threads: bool = False) -> None:
        """``threads``: the connection may be used from several threads, one at a time (the
        room server serialises its reads)."""
        self.path = path
        _check_path(path, readonly)
        try:
            if readonly:
                uri = path.resolve().as_uri() + "?mode=ro"
                self.raw = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=not threads)
            else:
                self.raw = sqlite3.connect(str(path), timeout=30.0, check_same_thread=not threads)
        except sqlite3.Error as e:
            raise HarnessUnavailable(f"{path}: cannot open the results database: {first_line(e)}") from None
        self.raw.row_factory = sqlite3.Row
        if readonly:
            try:
                self.raw.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.OperationalError:  # WAL in a folder we may not write: read it as it is
                self.raw.close()
                self.raw = sqlite3.connect(path.resolve().as_uri() + "?immutable=1", uri=True, timeout=30.0,
                                           check_same_thread=not threads)
                self.raw.row_factory = sqlite3.Row
        try:
            self._check_and_init(readonly)
        except sqlite3.DatabaseError as e:
            self.raw.close()
            msg = first_line(e)
            if isinstance(e, sqlite3.OperationalError) and ("readonly" in msg or "read-only" in msg
                                                            or "unable to open" in msg or "locked" in msg):
                raise HarnessUnavailable(f"{path}: cannot write the results database: {msg}") from None
            if is_disk_full(e):
                raise HarnessUnavailable(f"{path}: cannot write the results database: {msg}") from None
            raise UsageError(f"{path}: not a usable burnin results database: {msg}") from None

    def _check_and_init(self, readonly: bool) -> None:
        """Refuse junk and damage before any card starts; create the schema in a new file."""
        db = self.raw
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "runs" not in tables:
            raise sqlite3.DatabaseError(f"it holds other tables ({', '.join(sorted(tables)[:3])}), not burnin results")
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"damaged ({check})")
        if readonly:
            return
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for stmt in ddl("sqlite"):
            if stmt.startswith("CREATE INDEX"):
                continue  # after the columns they index exist
            db.execute(stmt)
        self._add_columns()
        for stmt in ddl("sqlite"):
            if stmt.startswith("CREATE INDEX"):
                db.execute(stmt)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")  # a real write: proves the file is writable
        db.commit()

    def _add_columns(self) -> None:
        """Columns added since the first schema (older databases gain them, empty)."""
        for table, column in ADDED_COLUMNS:
            assert table in TABLE_NAMES
            have = {r[1] for r in self.raw.execute(f"PRAGMA table_info({table})")}
            if column.split()[0] not in have:
                self.raw.execute(f"ALTER TABLE {table} ADD COLUMN {fill(column, 'sqlite')}")

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.raw.execute(sql, tuple(args)).fetchall()]

    def row(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        r = self.raw.execute(sql, tuple(args)).fetchone()
        return dict(r) if r is not None else None

    def run(self, sql: str, args: Sequence[Any] = ()) -> None:
        self.raw.execute(sql, tuple(args))

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.raw.executemany(sql, [tuple(r) for r in rows])

    def insert(self, sql: str, args: Sequence[Any]) -> int:
        return int(self.raw.execute(sql, tuple(args)).lastrowid or 0)

    def columns(self, table: str) -> list[str]:
        return [r["name"] for r in self.rows(f"PRAGMA table_info({table})")]

    @contextmanager
    def tx(self) -> Iterator[None]:
        with self.raw:
            yield

    def close(self) -> None:
        self.raw.close()


def _check_path(p: Path, readonly: bool) -> None:
    if p.exists() and not p.is_file():
        raise UsageError(f"{p}: results database is not a regular file")
    if not p.parent.is_dir():
        raise UsageError(f"{p}: the folder {p.parent} does not exist (results database)")
    if readonly and not p.is_file():
        raise UsageError(f"{p}: no such results database (--db)")
