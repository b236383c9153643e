"""The room store: PostgreSQL through psycopg 3, imported only when a ``postgresql://`` URL is used.

Every bench and the Ray controller of a room write here at once: each write is one short
transaction on the process's own connection, ids come from sequences, and nothing is read back
to decide a write, so concurrent runs never lose or mix results. The connection is in autocommit
mode, so a reader (``burnin serve``) sees each commit as it lands and holds no transaction open.
A card under test is also locked here (``StoreLocks``), so two controllers in the room cannot
run the same card, even from two machines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from harness.db.schema import ADDED_COLUMNS, SCHEMA_VERSION, ddl, fill
from harness.db.sql import DatabaseError, first_line
from harness.db.target import EXTRA, DbUrl, mask
from harness.errors import HarnessUnavailable, UsageError

SCHEMA_LOCK = 0x6275726E696E  # "burnin": one bench at a time creates or migrates the schema
CONNECT_TIMEOUT_S = 10

class NoResultsYet(UsageError):
    """A room store no bench has written to yet (read-only: nothing to read, and no schema made)."""


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise HarnessUnavailable(f"a postgresql:// results database needs psycopg 3, which is not installed: "
                                 f"pip install '{EXTRA}'") from None
    return psycopg

def _pg(sql: str) -> str:
    """The shared SQL in PostgreSQL's spelling: ``%s`` placeholders, ``IS DISTINCT FROM``."""
    return sql.replace("%", "%%").replace(" IS NOT ?", " IS DISTINCT FROM ?").replace("?", "%s")

def _error(target: DbUrl, e: Exception) -> DatabaseError:
    return DatabaseError(f"{mask(first_line(e))} ({target})", getattr(e, "sqlstate", None))

def connect(target: DbUrl) -> Any:
    """An autocommit psycopg connection (dict rows), or a one-line error naming the masked URL."""
    psycopg = _psycopg()
    from psycopg.rows import dict_row

    try:
        return psycopg.connect(target.url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as e:
        raise HarnessUnavailable(f"{target}: cannot connect to the results database: {mask(first_line(e))}") from None
    except ValueError as e:  # a malformed URL (bad port, bad option)
        raise UsageError(f"{target}: not a usable PostgreSQL URL: {mask(first_line(e))}") from None

class PostgresSql:
    dialect = "postgresql"
    run_order = "seq"

    def __init__(self, target: DbUrl, readonly: bool = False) -> None:
        self.target = target
        self._psycopg = _psycopg()
        self.raw = connect(target)
        try:
            self._check_and_init(readonly)
        except self._psycopg.Error as e:
            self.raw.close()
            if getattr(e, "sqlstate", "") in ("42501", "25006"):  # insufficient privilege, read-only tx
                raise HarnessUnavailable(f"{target}: cannot write the results database: {mask(first_line(e))}") from None
            raise HarnessUnavailable(f"{target}: cannot use the results database: {mask(first_line(e))}") from None
        except (UsageError, HarnessUnavailable):
            self.raw.close()
            raise

    def _tables(self) -> set[str]:
        rows = self.raw.execute("SELECT table_name FROM information_schema.tables "
                                "WHERE table_schema = current_schema()").fetchall()
        return {r["table_name"] for r in rows}

    def _check_and_init(self, readonly: bool) -> None:
        """Refuse a database that holds something else; create or extend the schema (one bench at
        a time: an advisory lock, so two benches starting together do not race)."""
        tables = self._tables()
        if tables and "runs" not in tables:
            raise UsageError(f"{self.target}: not a usable burnin results database: it holds other tables "
                             f"({', '.join(sorted(tables)[:3])}), not burnin results; give burnin a database "
                             f"of its own (CREATE DATABASE burnin)")
        if readonly:
            if "runs" not in tables:
                raise NoResultsYet(f"{self.target}: no burnin results in this database yet")
            self.raw.execute("SET default_transaction_read_only = on")
            return
        with self.raw.transaction():
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for stmt in ddl("postgresql"):
                self.raw.execute(stmt)
            for table, column in ADDED_COLUMNS:
                self.raw.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {fill(column, 'postgresql')}")
            self.raw.execute("INSERT INTO burnin_meta (key, value) VALUES ('schema_version', %s) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> Any:
        try:
            return self.raw.execute(_pg(sql), tuple(args))
        except self._psycopg.Error as e:
            raise _error(self.target, e) from None

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self._exec(sql, args).fetchall())

    def row(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        r = self._exec(sql, args).fetchone()
        return dict(r) if r is not None else None

    def run(self, sql: str, args: Sequence[Any] = ()) -> None:
        self._exec(sql, args)

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            with self.raw.cursor() as cur:
                cur.executemany(_pg(sql), [tuple(r) for r in rows])
        except self._psycopg.Error as e:
            raise _error(self.target, e) from None

    def insert(self, sql: str, args: Sequence[Any]) -> int:
        row = self._exec(sql + " RETURNING id", args).fetchone()
        return int(row["id"]) if row else 0

    def columns(self, table: str) -> list[str]:
        return [r["column_name"] for r in self.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position", (table,))]

    @contextmanager
    def tx(self) -> Iterator[None]:
        try:
            with self.raw.transaction():
                yield
        except self._psycopg.Error as e:
            raise _error(self.target, e) from None

    def close(self) -> None:
        self.raw.close()

def lock_key(name: str) -> int:
    """A lock name as PostgreSQL's 64-bit advisory lock key."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)

class StoreLocks:
    """Cards under test, locked in the room store for the length of a run: a session advisory
    lock per card on a connection of their own (PostgreSQL drops it when the holder's connection
    ends, however it ends, like the ``flock`` of a bench), and a ``card_locks`` row that names
    the holder for the next harness to tell its user."""

    def __init__(self, target: DbUrl) -> None:
        self.target = target
        self._conn = connect(target)
        self._names: list[str] = []

    def acquire(self, names: list[tuple[str, str]], holder: str, since: str) -> None:
        """Lock every (label, name), or none: HarnessUnavailable naming the holder of the first taken."""
        psycopg = _psycopg()
        try:
            for label, name in names:
                if name in self._names:
                    continue
                got = self._conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (lock_key(name),)).fetchone()
                if not got["got"]:
                    row = self._conn.execute("SELECT holder FROM card_locks WHERE name = %s", (name,)).fetchone()
                    self.release()
                    who = row["holder"] if row else "another burnin"
                    raise HarnessUnavailable(f"{label} is being tested by {who}; one harness per card "
                                             f"(room store {self.target})")
                self._names.append(name)
                self._conn.execute("INSERT INTO card_locks (name, holder, since) VALUES (%s, %s, %s) "
                                   "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, since = excluded.since",
                                   (name, holder, since))
        except psycopg.Error as e:
            self.release()
            raise HarnessUnavailable(f"{self.target}: cannot lock the cards in the room store: "
                                     f"{mask(first_line(e))}") from None

    def release(self) -> None:
        if self._conn.closed:
            return
        try:
            if self._names:
                self._conn.execute("DELETE FROM card_locks WHERE name = ANY(%s)", (self._names,))
        except Exception:  # noqa: BLE001 - closing the connection releases the locks all the same
            pass
        finally:
            self._names = []
            self._conn.close()
