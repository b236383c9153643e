"""The few things the store asks of a database connection, the same for SQLite and PostgreSQL.

SQL is written once, with ``?`` placeholders and the syntax both dialects share (``ON CONFLICT``
upserts, ``IS NOT ?`` for a NULL-safe comparison); the PostgreSQL connection rewrites the
placeholders and that one operator. Rows come back as plain dicts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class DatabaseError(Exception):
    """A PostgreSQL error, carried without the driver's types (psycopg is an optional extra);
    ``sqlstate`` is PostgreSQL's error code. SQLite's own errors (``sqlite3.Error``) pass as they are."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, DatabaseError)


class Sql(Protocol):
    """One connection to the results database."""

    dialect: str  # "sqlite" | "postgresql"
    run_order: str  # the column of ``runs`` that orders runs by when they started (rowid | seq)
    raw: Any  # the driver's connection (SQLite pragmas, tests)

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...
    def row(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None: ...
    def run(self, sql: str, args: Sequence[Any] = ()) -> None: ...
    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def insert(self, sql: str, args: Sequence[Any]) -> int: ...  # the new row's id
    def columns(self, table: str) -> list[str]: ...  # a table's columns, in order
    def tx(self) -> AbstractContextManager[None]: ...  # one transaction: all or nothing
    def close(self) -> None: ...


def is_disk_full(e: BaseException) -> bool:
    """The database ran out of room: SQLite's SQLITE_FULL (or a disk failing under it,
    SQLITE_IOERR), PostgreSQL's class 53 (insufficient resources: disk full, out of memory)."""
    if isinstance(e, DatabaseError):
        return bool(e.sqlstate and e.sqlstate.startswith("53"))
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
    return isinstance(e, sqlite3.OperationalError) and ("full" in str(e) or "disk I/O" in str(e))


def first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def dict_rows(cursor: Iterator[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in cursor]
