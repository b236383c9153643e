"""The results store: SQLite (standard library), written as results arrive.

Cards are keyed by serial across runs, so a card's history follows it from bench to bench.
Every event is committed when it arrives (WAL journal): a harness crash loses nothing already
measured, and ``burnin resume`` picks up the cards that had not finished.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import HarnessUnavailable, UsageError
from stress.events import (
    CardStarted,
    EventConsumer,
    FindingRaised,
    Identity,
    Outcome,
    RunFinished,
    RunResumed,
    RunStarted,
    Sample,
    TestDone,
    Verdict,
)
from stress.model import Finding, Measurement, TestResult
from stress.record import CardRecord

SCHEMA_VERSION = 1  # PRAGMA user_version of a burnin database

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, rack TEXT, plan TEXT, config_path TEXT, plan_path TEXT,
    started_at TEXT, finished_at TEXT, status TEXT
);
CREATE TABLE IF NOT EXISTS cards (
    serial TEXT PRIMARY KEY, model TEXT, vendor TEXT, first_seen TEXT
);
CREATE TABLE IF NOT EXISTS run_cards (
    run_id TEXT, key TEXT, host TEXT, slot INTEGER, backend TEXT, serial TEXT, model TEXT,
    locator TEXT, identity TEXT, state TEXT, detail TEXT, verdict TEXT, actions TEXT,
    findings TEXT, started_at TEXT, finished_at TEXT,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS tests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, key TEXT, idx INTEGER, name TEXT,
    status TEXT, duration_s REAL, metrics TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, key TEXT, test TEXT, code TEXT,
    severity TEXT, action TEXT, message TEXT, location TEXT, evidence TEXT
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, key TEXT, t REAL, tag TEXT, data TEXT
);
CREATE INDEX IF NOT EXISTS run_cards_serial ON run_cards(serial);
CREATE TABLE IF NOT EXISTS repairs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, serial TEXT, at TEXT, who TEXT, host TEXT, action TEXT,
    note TEXT, part TEXT, after_run TEXT
);
CREATE INDEX IF NOT EXISTS repairs_serial ON repairs(serial);
CREATE INDEX IF NOT EXISTS tests_run_key ON tests(run_id, key);
CREATE INDEX IF NOT EXISTS findings_run_key ON findings(run_id, key);
CREATE INDEX IF NOT EXISTS samples_run_key ON samples(run_id, key);
CREATE TABLE IF NOT EXISTS field_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT, serial TEXT, card_id TEXT, at TEXT, files TEXT,
    verdict TEXT, actions TEXT, report TEXT
);
CREATE INDEX IF NOT EXISTS field_reports_serial ON field_reports(serial);
"""

# (table, column definition) added after the first schema; ``findings.test_id`` links a finding to
# the test that raised it (NULL: raised outside any test, e.g. a peer comparison).
MIGRATIONS = (("findings", "test_id INTEGER"), ("tests", "measurements TEXT"))


def _j(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)


def default_db_path() -> Path:
    """The database when neither ``--db`` nor the config names one (contract: ``burnin.db`` in the
    working directory); ``$BURNIN_DB`` moves it, e.g. to one file for a whole bench."""
    env = os.environ.get("BURNIN_DB")
    return Path(env).expanduser() if env else Path.cwd() / "burnin.db"


def is_disk_full(e: BaseException) -> bool:
    """SQLite ran out of room (SQLITE_FULL) or the disk failed under it (SQLITE_IOERR)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
    return isinstance(e, sqlite3.OperationalError) and ("full" in str(e) or "disk I/O" in str(e))


def _why(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class Store:
    """The results database. Opening checks it before any card starts: a file that is not a
    burnin database, a damaged one, one that cannot be written (unless ``readonly``) or one in a
    folder that does not exist is a one-line error (UsageError: exit 2; HarnessUnavailable: 3)."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._check_path()
        try:
            if readonly:
                uri = self.path.resolve().as_uri() + "?mode=ro"
                self.db = sqlite3.connect(uri, uri=True, timeout=30.0)
            else:
                self.db = sqlite3.connect(str(self.path), timeout=30.0)
        except sqlite3.Error as e:
            raise HarnessUnavailable(f"{self.path}: cannot open the results database: {_why(e)}") from None
        self.db.row_factory = sqlite3.Row
        if readonly:
            try:
                self.db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.OperationalError:  # WAL in a folder we may not write: read it as it is
                self.db.close()
                self.db = sqlite3.connect(self.path.resolve().as_uri() + "?immutable=1", uri=True, timeout=30.0)
                self.db.row_factory = sqlite3.Row
        try:
            self._check_and_init()
        except sqlite3.DatabaseError as e:
            self.db.close()
            msg = _why(e)
            if isinstance(e, sqlite3.OperationalError) and ("readonly" in msg or "read-only" in msg
                                                            or "unable to open" in msg or "locked" in msg):
                raise HarnessUnavailable(f"{self.path}: cannot write the results database: {msg}") from None
            if is_disk_full(e):
                raise HarnessUnavailable(f"{self.path}: cannot write the results database: {msg}") from None
            raise UsageError(f"{self.path}: not a usable burnin results database: {msg}") from None

    def _check_path(self) -> None:
        p = self.path
        if p.exists() and not p.is_file():
            raise UsageError(f"{p}: results database is not a regular file")
        if not p.parent.is_dir():
            raise UsageError(f"{p}: the folder {p.parent} does not exist (results database)")
        if self.readonly and not p.is_file():
            raise UsageError(f"{p}: no such results database (--db)")

    def _check_and_init(self) -> None:
        """Refuse junk and damage before any card starts; create the schema in a new file."""
        db = self.db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "runs" not in tables:
            raise sqlite3.DatabaseError(f"it holds other tables ({', '.join(sorted(tables)[:3])}), not burnin results")
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"damaged ({check})")
        if self.readonly:
            return
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        self._migrate()
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")  # a real write: proves the file is writable
        db.commit()

    def _migrate(self) -> None:
        """Columns added since the first schema (older databases gain them, empty)."""
        for table, column in MIGRATIONS:
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column.split()[0] not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.db:
            yield self.db

    def close(self) -> None:
        self.db.close()

    # writing ----------------------------------------------------------------------------------
    def create_run(self, run_id: str, rack: str, plan: str, config_path: str, plan_path: str, started_at: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?)",
                (run_id, rack, plan, config_path, plan_path, started_at, None, "running"),
            )

    def add_card(self, run_id: str, key: str, host: str, slot: int, backend: str, locator: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO run_cards (run_id, key, host, slot, backend, serial, locator, state) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (run_id, key, host, slot, backend, locator.get("serial"), _j(locator), "pending"),
            )

    def card_started(self, run_id: str, key: str, at: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE run_cards SET state='running', started_at=? WHERE run_id=? AND key=?", (at, run_id, key))

    def card_identity(self, run_id: str, key: str, identity: dict[str, Any], at: str) -> None:
        serial = identity.get("serial")
        with self._tx() as db:
            db.execute(
                "UPDATE run_cards SET identity=?, serial=COALESCE(?, serial), model=? WHERE run_id=? AND key=?",
                (_j(identity), serial, identity.get("model"), run_id, key),
            )
            if serial:
                db.execute(
                    "INSERT OR IGNORE INTO cards VALUES (?,?,?,?)",
                    (serial, identity.get("model"), identity.get("vendor"), at),
                )

    def add_test(self, run_id: str, key: str, test: TestResult, index: int | None = None) -> None:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO tests (run_id, key, idx, name, status, duration_s, metrics, error, measurements) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, key, index, test.name, test.status, test.duration_s, _j(test.metrics), test.error,
                 _j([m.to_dict() for m in test.measurements])),
            )
            for f in test.findings:
                self._insert_finding(db, run_id, key, f, cur.lastrowid)

    def add_finding(self, run_id: str, key: str, finding: Finding) -> None:
        with self._tx() as db:
            self._insert_finding(db, run_id, key, finding, None)

    @staticmethod
    def _insert_finding(db: sqlite3.Connection, run_id: str, key: str, f: Finding, test_id: int | None) -> None:
        db.execute(
            "INSERT INTO findings (run_id, key, test, code, severity, action, message, location, evidence, test_id) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (run_id, key, f.test, f.code, f.severity, f.action, f.message, _j(f.location), _j(f.evidence), test_id),
        )

    def add_samples(self, run_id: str, key: str, samples: list[dict[str, Any]]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO samples (run_id, key, t, tag, data) VALUES (?,?,?,?,?)",
                [(run_id, key, s.get("time_s"), s.get("tag", ""), _j(s)) for s in samples],
            )

    def card_outcome(self, run_id: str, key: str, state: str, detail: str | None, at: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE run_cards SET state=?, detail=?, finished_at=? WHERE run_id=? AND key=?",
                (state, detail, at, run_id, key),
            )

    def card_verdict(self, run_id: str, key: str, verdict: str, actions: list[str], findings: list[Finding]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE run_cards SET verdict=?, actions=?, findings=? WHERE run_id=? AND key=?",
                (verdict, _j(actions), _j([f.to_dict() for f in findings]), run_id, key),
            )

    def reset_card(self, run_id: str, key: str) -> None:
        """Forget a card's partial results before it is run again (resume)."""
        with self._tx() as db:
            for table in ("tests", "findings", "samples"):
                db.execute(f"DELETE FROM {table} WHERE run_id=? AND key=?", (run_id, key))  # noqa: S608
            db.execute(
                "UPDATE run_cards SET state='pending', detail=NULL, verdict=NULL, actions=NULL, findings=NULL "
                "WHERE run_id=? AND key=?", (run_id, key),
            )

    def mark_run(self, run_id: str, status: str) -> None:
        """Set a run's status without finishing it (``interrupted``: resumable)."""
        with self._tx() as db:
            db.execute("UPDATE runs SET status=? WHERE run_id=?", (status, run_id))

    def finish_run(self, run_id: str, at: str, status: str = "finished") -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET finished_at=?, status=? WHERE run_id=?", (at, status, run_id))

    # reading ------------------------------------------------------------------------------------
    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def run_cards(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM run_cards WHERE run_id=? ORDER BY host, slot, key", (run_id,)).fetchall()
        return [self._card_row(dict(r)) for r in rows]

    @staticmethod
    def _card_row(r: dict[str, Any]) -> dict[str, Any]:
        for k in ("locator", "identity", "actions", "findings"):
            r[k] = json.loads(r[k]) if r.get(k) else None
        return r

    def tests(self, run_id: str, key: str) -> list[TestResult]:
        """A card's tests in the order they ended, each with the findings it raised."""
        rows = self.db.execute(
            "SELECT id, name, status, duration_s, metrics, error, measurements FROM tests WHERE run_id=? AND key=? "
            "ORDER BY id",
            (run_id, key),
        ).fetchall()
        by_test: dict[int | None, list[dict[str, Any]]] = {}
        for f in self.findings(run_id, key):
            by_test.setdefault(f.pop("test_id"), []).append(f)
        return [TestResult(name=r["name"], status=r["status"], duration_s=r["duration_s"] or 0.0,
                           metrics=json.loads(r["metrics"] or "{}"), error=r["error"],
                           findings=[Finding.from_dict(f) for f in by_test.get(r["id"], [])],
                           measurements=[Measurement.from_dict(m) for m in json.loads(r["measurements"] or "[]")])
                for r in rows]

    def extra_findings(self, run_id: str, key: str) -> list[Finding]:
        """Findings raised outside any test (session-level, peer comparisons)."""
        return [Finding.from_dict({k: v for k, v in f.items() if k != "test_id"})
                for f in self.findings(run_id, key) if f["test_id"] is None]

    def findings(self, run_id: str, key: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT test, code, severity, action, message, location, evidence, test_id FROM findings "
            "WHERE run_id=? AND key=? ORDER BY id", (run_id, key),
        ).fetchall()
        return [{**dict(r), "location": json.loads(r["location"]), "evidence": json.loads(r["evidence"])} for r in rows]

    def record(self, run_id: str, row: dict[str, Any], samples: bool = True) -> CardRecord:
        """A stored card (a ``run_cards`` row) as the record the run kept of it (its plot
        points too, unless ``samples`` is False)."""
        rec = CardRecord(key=row["key"], host=row["host"], slot=row["slot"], backend=row["backend"],
                         locator=row.get("locator") or {}, identity=row.get("identity"),
                         state=row.get("state") or "pending", detail=row.get("detail"),
                         tests=self.tests(run_id, row["key"]), extra_findings=self.extra_findings(run_id, row["key"]),
                         verdict=row.get("verdict"), actions=list(row.get("actions") or []),
                         judged=[Finding.from_dict(f) for f in row.get("findings") or []],
                         started_at=row.get("started_at"), finished_at=row.get("finished_at"))
        for s in self.samples(run_id, row["key"]) if samples else ():
            rec.add_sample(s)
        return rec

    def records(self, run_id: str) -> list[CardRecord]:
        return [self.record(run_id, row) for row in self.run_cards(run_id)]

    def samples(self, run_id: str, key: str, tag: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT data FROM samples WHERE run_id=? AND key=?" + (" AND tag=?" if tag else "") + " ORDER BY id"
        args = (run_id, key, tag) if tag else (run_id, key)
        return [json.loads(r["data"]) for r in self.db.execute(q, args).fetchall()]

    def card_history(self, serial: str) -> list[dict[str, Any]]:
        """Every finished run of one card, oldest first (the contract's card shape plus run fields)."""
        rows = self.db.execute(
            "SELECT rc.*, r.rack, r.plan, r.started_at AS run_started_at, r.finished_at AS run_finished_at, "
            "r.rowid AS run_seq "
            "FROM run_cards rc JOIN runs r ON r.run_id = rc.run_id "
            "WHERE rc.serial=? ORDER BY r.started_at, r.rowid", (serial,),
        ).fetchall()
        return [self._card_row(dict(r)) for r in rows]

    def run_seq(self, run_id: str) -> int | None:
        """The order in which runs were started (their row id): 'older' means a smaller number."""
        row = self.db.execute("SELECT rowid FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return int(row[0]) if row else None

    def slot_known_good(self, host: str, slot: int, serial: str | None, run_id: str) -> bool:
        """Did a different card pass in this host/slot in a run older than this one? Then the slot is good."""
        row = self.db.execute(
            "SELECT 1 FROM run_cards rc JOIN runs r ON r.run_id = rc.run_id "
            "WHERE rc.host=? AND rc.slot=? AND rc.verdict='pass' AND rc.serial IS NOT ? "
            "AND r.rowid < (SELECT rowid FROM runs WHERE run_id=?) LIMIT 1", (host, slot, serial, run_id),
        ).fetchone()
        return row is not None

    def latest_run_id(self) -> str | None:
        row = self.db.execute("SELECT run_id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()
        return row["run_id"] if row else None

    # repairs done at the bench (``burnin repair``) ----------------------------------------------
    def add_repair(self, serial: str, at: str, who: str, host: str, action: str, note: str | None,
                   part: str | None, after_run: str | None) -> int:
        """Record one repair; ``after_run`` is the card's latest run when it was done (what it targets)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO repairs (serial, at, who, host, action, note, part, after_run) VALUES (?,?,?,?,?,?,?,?)",
                (serial, at, who, host, action, note, part, after_run),
            )
        return int(cur.lastrowid or 0)

    def repairs(self, serial: str) -> list[dict[str, Any]]:
        """Every repair of one card, oldest first."""
        rows = self.db.execute("SELECT * FROM repairs WHERE serial=? ORDER BY at, id", (serial,)).fetchall()
        return [dict(r) for r in rows]

    # what the field reported about a card before it reached the bench (``burnin triage --db``) ---
    def add_field_report(self, serial: str | None, card_id: str, at: str, files: list[str], verdict: str,
                         actions: list[str], report: dict[str, Any]) -> int:
        """Store one card's triage (``report``: its card object of the triage document)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO field_reports (serial, card_id, at, files, verdict, actions, report) VALUES (?,?,?,?,?,?,?)",
                (serial, card_id, at, _j(files), verdict, _j(actions), _j(report)),
            )
        return int(cur.lastrowid or 0)

    def field_reports(self, serial: str) -> list[dict[str, Any]]:
        """Every field report of one card, oldest first ([] in a database older than the table)."""
        try:
            rows = self.db.execute("SELECT * FROM field_reports WHERE serial=? ORDER BY at, id", (serial,)).fetchall()
        except sqlite3.OperationalError:  # opened read-only before any triage was stored in it
            return []
        return [{**dict(r), **{k: json.loads(r[k] or "null") for k in ("files", "actions", "report")}} for r in rows]


class StoreWriter(EventConsumer):
    """The store as a subscriber of the run's event stream: each event is persisted the moment it
    arrives (one commit each: a crash loses nothing). Nothing else writes a run to the store."""

    def __init__(self, store: Store, now: Callable[[], str]) -> None:
        self.store, self.now = store, now
        self.run_id = ""

    def on_run_start(self, key: str, ev: RunStarted) -> None:
        self.run_id = ev.run_id
        self.store.create_run(ev.run_id, ev.rack or "", ev.plan or "", ev.config_path, ev.plan_path, ev.started_at)
        for c in ev.cards:
            self.store.add_card(ev.run_id, c["key"], c["host"], int(c["slot"]), c["backend"], c.get("locator") or {})

    def on_run_resume(self, key: str, ev: RunResumed) -> None:
        self.run_id = ev.run_id
        self.store.mark_run(ev.run_id, "running")
        for k in ev.keys:
            self.store.reset_card(ev.run_id, k)

    def on_card_start(self, key: str, ev: CardStarted) -> None:
        self.store.card_started(self.run_id, key, ev.at)

    def on_identity(self, key: str, ev: Identity) -> None:
        self.store.card_identity(self.run_id, key, ev.identity, self.now())

    def on_sample(self, key: str, ev: Sample) -> None:
        self.store.add_samples(self.run_id, key, [ev.to_dict()])

    def on_test(self, key: str, ev: TestDone) -> None:
        self.store.add_test(self.run_id, key, ev.result, ev.index)

    def on_finding(self, key: str, ev: FindingRaised) -> None:
        self.store.add_finding(self.run_id, key, ev.finding)

    def on_outcome(self, key: str, ev: Outcome) -> None:
        self.store.card_outcome(self.run_id, key, ev.state, ev.detail, self.now())

    def on_verdict(self, key: str, ev: Verdict) -> None:
        self.store.card_verdict(self.run_id, key, ev.verdict, ev.actions, ev.findings)

    def on_run_end(self, key: str, ev: RunFinished) -> None:
        if ev.status == "interrupted":
            self.store.mark_run(self.run_id, "interrupted")
        else:
            self.store.finish_run(self.run_id, ev.at, status=ev.status)
