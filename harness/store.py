"""The results store, written as results arrive: a SQLite file (the default) or a PostgreSQL
room store (``postgresql://`` URL), through one SQL layer (``harness.db``).

Cards are keyed by serial across runs, so a card's history follows it from bench to bench.
Every event is committed when it arrives: a harness crash loses nothing already measured, and
``burnin resume`` picks up the cards that had not finished. The readers mean the same on both
databases: runs are ordered by when they started (``run_seq``), text sorts byte-wise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.db.schema import SCHEMA_VERSION  # noqa: F401 - re-exported
from harness.db.sql import DB_ERRORS, Sql, is_disk_full  # noqa: F401 - re-exported
from harness.db.target import DbTarget, DbUrl, as_target
from stress.events import (
    CardStarted,
    EventConsumer,
    FindingRaised,
    HostFinding,
    Identity,
    Outcome,
    RunFinished,
    RunResumed,
    RunStarted,
    Sample,
    StageStarted,
    TestDone,
    Verdict,
)
from stress.model import Finding, Measurement, TestResult
from stress.record import CardRecord

RUN_COLUMNS = "run_id, rack, plan, config_path, plan_path, started_at, finished_at, status, stages"


def _j(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)


def default_db_path() -> DbTarget:
    """The database when neither ``--db`` nor the config names one (contract: ``burnin.db`` in the
    working directory); ``$BURNIN_DB`` moves it, e.g. to one file for a whole bench, or to the
    room's PostgreSQL store (a ``postgresql://`` URL)."""
    env = os.environ.get("BURNIN_DB")
    return as_target(env) if env else Path.cwd() / "burnin.db"


def open_sql(target: DbTarget, readonly: bool = False, threads: bool = False) -> Sql:
    """The connection for a target: a SQLite file, or PostgreSQL (psycopg imported only then)."""
    if isinstance(target, DbUrl):
        from harness.db.postgres import PostgresSql

        return PostgresSql(target, readonly=readonly)
    from harness.db.sqlite import SqliteSql

    return SqliteSql(target, readonly=readonly, threads=threads)


class Store:
    """The results database. Opening checks it before any card starts: a file that is not a
    burnin database, a damaged one, one that cannot be written (unless ``readonly``), one in a
    folder that does not exist, a server that cannot be reached or a driver that is not installed
    is a one-line error (UsageError: exit 2; HarnessUnavailable: 3). ``path`` names it in messages
    (a URL's password masked); ``db`` is the driver's own connection."""

    def __init__(self, path: str | Path | DbUrl, readonly: bool = False, threads: bool = False) -> None:
        self.path: DbTarget = as_target(path)
        self.readonly = readonly
        self.sql = open_sql(self.path, readonly=readonly, threads=threads)
        self.db = self.sql.raw
        self._seq = self.sql.run_order

    @property
    def is_room(self) -> bool:
        """A PostgreSQL store, shared by the room's benches."""
        return self.sql.dialect == "postgresql"

    @contextmanager
    def _tx(self) -> Iterator[Sql]:
        with self.sql.tx():
            yield self.sql

    def close(self) -> None:
        self.sql.close()

    # writing ----------------------------------------------------------------------------------
    def create_run(self, run_id: str, rack: str, plan: str, config_path: str, plan_path: str, started_at: str,
                   stages: list[str] | None = None) -> None:
        """A new run; ``stages``: the plan's stage names, so readers can tell how far a card is."""
        with self._tx() as db:
            db.run(f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                   (run_id, rack, plan, config_path, plan_path, started_at, None, "running",
                    _j(stages) if stages is not None else None))

    def add_card(self, run_id: str, key: str, host: str, slot: int, backend: str, locator: dict[str, Any]) -> None:
        with self._tx() as db:
            db.run("DELETE FROM run_cards WHERE run_id=? AND key=?", (run_id, key))
            db.run(
                "INSERT INTO run_cards (run_id, key, host, slot, backend, serial, locator, state) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (run_id, key, host, slot, backend, locator.get("serial"), _j(locator), "pending"),
            )

    def card_started(self, run_id: str, key: str, at: str) -> None:
        with self._tx() as db:
            db.run("UPDATE run_cards SET state='running', started_at=? WHERE run_id=? AND key=?", (at, run_id, key))

    def card_stage(self, run_id: str, key: str, stage: str, index: int) -> None:
        """The stage a card has entered (the room page and /metrics show it live)."""
        with self._tx() as db:
            db.run("UPDATE run_cards SET stage=?, stage_index=? WHERE run_id=? AND key=?", (stage, index, run_id, key))

    def card_identity(self, run_id: str, key: str, identity: dict[str, Any], at: str) -> None:
        serial = identity.get("serial")
        with self._tx() as db:
            db.run(
                "UPDATE run_cards SET identity=?, serial=COALESCE(?, serial), model=? WHERE run_id=? AND key=?",
                (_j(identity), serial, identity.get("model"), run_id, key),
            )
            if serial:
                db.run(
                    "INSERT INTO cards (serial, model, vendor, first_seen) VALUES (?,?,?,?) "
                    "ON CONFLICT (serial) DO NOTHING",
                    (serial, identity.get("model"), identity.get("vendor"), at),
                )

    def add_test(self, run_id: str, key: str, test: TestResult, index: int | None = None) -> None:
        with self._tx() as db:
            test_id = db.insert(
                "INSERT INTO tests (run_id, key, idx, name, status, duration_s, metrics, error, measurements) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, key, index, test.name, test.status, test.duration_s, _j(test.metrics), test.error,
                 _j([m.to_dict() for m in test.measurements])),
            )
            for f in test.findings:
                self._insert_finding(db, run_id, key, f, test_id)

    def add_finding(self, run_id: str, key: str, finding: Finding) -> None:
        with self._tx() as db:
            self._insert_finding(db, run_id, key, finding, None)

    @staticmethod
    def _insert_finding(db: Sql, run_id: str, key: str, f: Finding, test_id: int | None) -> None:
        db.run(
            "INSERT INTO findings (run_id, key, test, code, severity, action, message, location, evidence, test_id) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (run_id, key, f.test, f.code, f.severity, f.action, f.message, _j(f.location), _j(f.evidence), test_id),
        )

    def add_host_finding(self, run_id: str, host: str, f: Finding) -> None:
        """A finding a host, one of its slots or its fabric owns (not any card's)."""
        with self._tx() as db:
            db.run(
                "INSERT INTO host_findings (run_id, host, test, code, severity, action, message, location, evidence) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, host, f.test, f.code, f.severity, f.action, f.message, _j(f.location), _j(f.evidence)),
            )

    def reset_hosts(self, run_id: str, hosts: set[str]) -> None:
        """Forget the host findings of hosts whose cards run again (resume)."""
        with self._tx() as db:
            db.run_many("DELETE FROM host_findings WHERE run_id=? AND host=?", [(run_id, h) for h in sorted(hosts)])

    def host_findings(self, run_id: str) -> dict[str, list[Finding]]:
        """host -> the findings it owns in ``run_id``, in the order they were raised."""
        rows = self.sql.rows(
            "SELECT host, test, code, severity, action, message, location, evidence FROM host_findings "
            "WHERE run_id=? ORDER BY id", (run_id,))
        out: dict[str, list[Finding]] = {}
        for r in rows:
            out.setdefault(r["host"], []).append(Finding(
                code=r["code"], severity=r["severity"], action=r["action"], test=r["test"], message=r["message"],
                location=json.loads(r["location"]), evidence=json.loads(r["evidence"])))
        return out

    def add_samples(self, run_id: str, key: str, samples: list[dict[str, Any]]) -> None:
        with self._tx() as db:
            db.run_many(
                "INSERT INTO samples (run_id, key, t, tag, data) VALUES (?,?,?,?,?)",
                [(run_id, key, s.get("time_s"), s.get("tag", ""), _j(s)) for s in samples],
            )

    def card_outcome(self, run_id: str, key: str, state: str, detail: str | None, at: str) -> None:
        with self._tx() as db:
            db.run(
                "UPDATE run_cards SET state=?, detail=?, finished_at=? WHERE run_id=? AND key=?",
                (state, detail, at, run_id, key),
            )

    def card_verdict(self, run_id: str, key: str, verdict: str, actions: list[str], findings: list[Finding]) -> None:
        with self._tx() as db:
            db.run(
                "UPDATE run_cards SET verdict=?, actions=?, findings=? WHERE run_id=? AND key=?",
                (verdict, _j(actions), _j([f.to_dict() for f in findings]), run_id, key),
            )

    def reset_card(self, run_id: str, key: str) -> None:
        """Forget a card's partial results before it is run again (resume)."""
        with self._tx() as db:
            for table in ("tests", "findings", "samples"):
                db.run(f"DELETE FROM {table} WHERE run_id=? AND key=?", (run_id, key))  # noqa: S608
            db.run(
                "UPDATE run_cards SET state='pending', detail=NULL, verdict=NULL, actions=NULL, findings=NULL, "
                "stage=NULL, stage_index=NULL WHERE run_id=? AND key=?", (run_id, key),
            )

    def mark_run(self, run_id: str, status: str) -> None:
        """Set a run's status without finishing it (``interrupted``: resumable)."""
        with self._tx() as db:
            db.run("UPDATE runs SET status=? WHERE run_id=?", (status, run_id))

    def finish_run(self, run_id: str, at: str, status: str = "finished") -> None:
        with self._tx() as db:
            db.run("UPDATE runs SET finished_at=?, status=? WHERE run_id=?", (at, status, run_id))

    # reading ------------------------------------------------------------------------------------
    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self.sql.row(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id=?", (run_id,))
        if row is not None:
            row["stages"] = json.loads(row["stages"]) if row.get("stages") else None
        return row

    def run_cards(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.sql.rows("SELECT * FROM run_cards WHERE run_id=? ORDER BY host, slot, key", (run_id,))
        return [self._card_row(r) for r in rows]

    @staticmethod
    def _card_row(r: dict[str, Any]) -> dict[str, Any]:
        for k in ("locator", "identity", "actions", "findings"):
            r[k] = json.loads(r[k]) if r.get(k) else None
        return r

    def tests(self, run_id: str, key: str) -> list[TestResult]:
        """A card's tests in the order they ended, each with the findings it raised."""
        rows = self.sql.rows(
            "SELECT id, name, status, duration_s, metrics, error, measurements FROM tests WHERE run_id=? AND key=? "
            "ORDER BY id",
            (run_id, key),
        )
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
        rows = self.sql.rows(
            "SELECT test, code, severity, action, message, location, evidence, test_id FROM findings "
            "WHERE run_id=? AND key=? ORDER BY id", (run_id, key),
        )
        return [{**r, "location": json.loads(r["location"]), "evidence": json.loads(r["evidence"])} for r in rows]

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
        return [json.loads(r["data"]) for r in self.sql.rows(q, args)]

    def card_history(self, serial: str) -> list[dict[str, Any]]:
        """Every finished run of one card, oldest first (the contract's card shape plus run fields)."""
        rows = self.sql.rows(
            "SELECT rc.*, r.rack, r.plan, r.started_at AS run_started_at, r.finished_at AS run_finished_at, "
            f"r.{self._seq} AS run_seq "
            "FROM run_cards rc JOIN runs r ON r.run_id = rc.run_id "
            f"WHERE rc.serial=? ORDER BY r.started_at, r.{self._seq}", (serial,),
        )
        return [self._card_row(r) for r in rows]

    def run_seq(self, run_id: str) -> int | None:
        """The order in which runs were started: 'older' means a smaller number."""
        row = self.sql.row(f"SELECT {self._seq} AS seq FROM runs WHERE run_id=?", (run_id,))
        return int(row["seq"]) if row else None

    def slot_known_good(self, host: str, slot: int, serial: str | None, run_id: str) -> bool:
        """Did a different card pass in this host/slot in a run older than this one? Then the slot is good."""
        row = self.sql.row(
            "SELECT 1 AS good FROM run_cards rc JOIN runs r ON r.run_id = rc.run_id "
            "WHERE rc.host=? AND rc.slot=? AND rc.verdict='pass' AND rc.serial IS NOT ? "
            f"AND r.{self._seq} < (SELECT {self._seq} FROM runs WHERE run_id=?) LIMIT 1",
            (host, slot, serial, run_id),
        )
        return row is not None

    def slot_history(self, host: str, slot: int, serial: str | None, run_id: str) -> list[dict[str, Any]]:
        """Other cards' judged runs in this host/slot, older than ``run_id``, oldest first: whether a
        fault stays with the slot when the card changes (harness/link_history.py)."""
        rows = self.sql.rows(
            "SELECT rc.run_id, rc.serial, rc.slot, rc.host, rc.findings FROM run_cards rc "
            "JOIN runs r ON r.run_id = rc.run_id WHERE rc.host=? AND rc.slot=? AND rc.serial IS NOT ? "
            f"AND rc.findings IS NOT NULL AND r.{self._seq} < (SELECT {self._seq} FROM runs WHERE run_id=?) "
            f"ORDER BY r.{self._seq}", (host, slot, serial, run_id))
        return [self._card_row(dict(r)) for r in rows]

    def latest_run_id(self) -> str | None:
        row = self.sql.row(f"SELECT run_id FROM runs ORDER BY started_at DESC, {self._seq} DESC LIMIT 1")
        return row["run_id"] if row else None

    # repairs done at the bench (``burnin repair``) ----------------------------------------------
    def add_repair(self, serial: str, at: str, who: str, host: str, action: str, note: str | None,
                   part: str | None, after_run: str | None) -> int:
        """Record one repair; ``after_run`` is the card's latest run when it was done (what it targets)."""
        with self._tx() as db:
            return db.insert(
                "INSERT INTO repairs (serial, at, who, host, action, note, part, after_run) VALUES (?,?,?,?,?,?,?,?)",
                (serial, at, who, host, action, note, part, after_run),
            )

    def repairs(self, serial: str) -> list[dict[str, Any]]:
        """Every repair of one card, oldest first."""
        return self.sql.rows("SELECT * FROM repairs WHERE serial=? ORDER BY at, id", (serial,))


    # what the field reported of a card (``burnin triage --db``) ------------------------------------
    def add_field_report(self, serial: str | None, card_id: str, at: str, files: list[str], verdict: str,
                         actions: list[str], report: dict[str, Any]) -> int:
        """Store one card's triage (``report``: its card object of the triage document)."""
        with self._tx() as db:
            return db.insert(
                "INSERT INTO field_reports (serial, card_id, at, files, verdict, actions, report) VALUES (?,?,?,?,?,?,?)",
                (serial, card_id, at, _j(files), verdict, _j(actions), _j(report)),
            )

    def field_reports(self, serial: str) -> list[dict[str, Any]]:
        """Every field report of one card, oldest first ([] in a database older than the table)."""
        try:
            rows = self.sql.rows("SELECT * FROM field_reports WHERE serial=? ORDER BY at, id", (serial,))
        except DB_ERRORS:  # opened read-only before any triage was stored in it
            return []
        return [{**r, **{k: json.loads(r[k] or "null") for k in ("files", "actions", "report")}} for r in rows]


class StoreWriter(EventConsumer):
    """The store as a subscriber of the run's event stream: each event is persisted the moment it
    arrives (one commit each: a crash loses nothing). Nothing else writes a run to the store."""

    def __init__(self, store: Store, now: Callable[[], str]) -> None:
        self.store, self.now = store, now
        self.run_id = ""

    def on_run_start(self, key: str, ev: RunStarted) -> None:
        self.run_id = ev.run_id
        self.store.create_run(ev.run_id, ev.rack or "", ev.plan or "", ev.config_path, ev.plan_path, ev.started_at,
                              stages=list(ev.stages))
        for c in ev.cards:
            self.store.add_card(ev.run_id, c["key"], c["host"], int(c["slot"]), c["backend"], c.get("locator") or {})

    def on_run_resume(self, key: str, ev: RunResumed) -> None:
        self.run_id = ev.run_id
        self.store.mark_run(ev.run_id, "running")
        hosts = {str(c["host"]) for c in self.store.run_cards(ev.run_id) if c["key"] in set(ev.keys)}
        for k in ev.keys:
            self.store.reset_card(ev.run_id, k)
        self.store.reset_hosts(ev.run_id, hosts)  # their host's stages run again with them

    def on_card_start(self, key: str, ev: CardStarted) -> None:
        self.store.card_started(self.run_id, key, ev.at)

    def on_identity(self, key: str, ev: Identity) -> None:
        self.store.card_identity(self.run_id, key, ev.identity, self.now())

    def on_stage_start(self, key: str, ev: StageStarted) -> None:
        self.store.card_stage(self.run_id, key, ev.stage, ev.index)

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

    def on_host_finding(self, key: str, ev: HostFinding) -> None:
        self.store.add_host_finding(self.run_id, ev.host, ev.finding)

    def on_run_end(self, key: str, ev: RunFinished) -> None:
        if ev.status == "interrupted":
            self.store.mark_run(self.run_id, "interrupted")
        else:
            self.store.finish_run(self.run_id, ev.at, status=ev.status)
