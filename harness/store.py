"""The results store: SQLite (standard library), written as results arrive.

Cards are keyed by serial across runs, so a card's history follows it from bench to bench.
Every event is committed when it arrives (WAL journal): a harness crash loses nothing already
measured, and ``burnin resume`` picks up the cards that had not finished.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
CREATE INDEX IF NOT EXISTS tests_run_key ON tests(run_id, key);
CREATE INDEX IF NOT EXISTS findings_run_key ON findings(run_id, key);
CREATE INDEX IF NOT EXISTS samples_run_key ON samples(run_id, key);
"""


def _j(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(str(self.path), timeout=30.0)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.commit()

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

    def add_test(self, run_id: str, key: str, test: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO tests (run_id, key, idx, name, status, duration_s, metrics, error) VALUES (?,?,?,?,?,?,?,?)",
                (run_id, key, test.get("index"), test["name"], test["status"], test.get("duration_s", 0.0),
                 _j(test.get("metrics", {})), test.get("error")),
            )
            for f in test.get("findings", []):
                self._insert_finding(db, run_id, key, f)

    def add_finding(self, run_id: str, key: str, finding: dict[str, Any]) -> None:
        with self._tx() as db:
            self._insert_finding(db, run_id, key, finding)

    @staticmethod
    def _insert_finding(db: sqlite3.Connection, run_id: str, key: str, f: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO findings (run_id, key, test, code, severity, action, message, location, evidence) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (run_id, key, f["test"], f["code"], f["severity"], f["action"], f["message"],
             _j(f.get("location", {})), _j(f.get("evidence", {}))),
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

    def card_verdict(self, run_id: str, key: str, verdict: str, actions: list[str], findings: list[dict[str, Any]]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE run_cards SET verdict=?, actions=?, findings=? WHERE run_id=? AND key=?",
                (verdict, _j(actions), _j(findings), run_id, key),
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

    def tests(self, run_id: str, key: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT name, status, duration_s, metrics, error, idx FROM tests WHERE run_id=? AND key=? ORDER BY id",
            (run_id, key),
        ).fetchall()
        out = []
        for r in rows:
            d = {"name": r["name"], "status": r["status"], "duration_s": r["duration_s"],
                 "metrics": json.loads(r["metrics"] or "{}")}
            if r["error"]:
                d["error"] = r["error"]
            out.append(d)
        return out

    def findings(self, run_id: str, key: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT test, code, severity, action, message, location, evidence FROM findings "
            "WHERE run_id=? AND key=? ORDER BY id", (run_id, key),
        ).fetchall()
        return [{**dict(r), "location": json.loads(r["location"]), "evidence": json.loads(r["evidence"])} for r in rows]

    def samples(self, run_id: str, key: str, tag: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT data FROM samples WHERE run_id=? AND key=?" + (" AND tag=?" if tag else "") + " ORDER BY id"
        args = (run_id, key, tag) if tag else (run_id, key)
        return [json.loads(r["data"]) for r in self.db.execute(q, args).fetchall()]

    def card_history(self, serial: str) -> list[dict[str, Any]]:
        """Every finished run of one card, oldest first (the contract's card shape plus run fields)."""
        rows = self.db.execute(
            "SELECT rc.*, r.rack, r.plan, r.started_at AS run_started_at, r.finished_at AS run_finished_at "
            "FROM run_cards rc JOIN runs r ON r.run_id = rc.run_id "
            "WHERE rc.serial=? ORDER BY r.started_at, r.rowid", (serial,),
        ).fetchall()
        return [self._card_row(dict(r)) for r in rows]

    def slot_known_good(self, host: str, slot: int, serial: str | None, run_id: str) -> bool:
        """Did a different card pass in this host/slot in another run? Then the slot is good."""
        row = self.db.execute(
            "SELECT 1 FROM run_cards WHERE host=? AND slot=? AND verdict='pass' AND run_id<>? "
            "AND serial IS NOT ? LIMIT 1", (host, slot, run_id, serial),
        ).fetchone()
        return row is not None

    def latest_run_id(self) -> str | None:
        row = self.db.execute("SELECT run_id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()
        return row["run_id"] if row else None
