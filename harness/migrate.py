"""``burnin db migrate --from SQLITE --to URL``: a bench's history moved into the room store.

Each run is copied whole in one transaction (its cards, tests, findings with their links to
their tests, samples), in the order the bench started them, so the room store orders them the
same way. Running it again copies nothing twice: a run already there is skipped (or replaced,
when the bench has finished it since the last copy and the room's copy has not), a repair
identical in every field is not added again, a card already known keeps its first sighting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.db.sql import Sql
from harness.store import Store

COPIED_TABLES = ("run_cards", "tests", "findings", "samples")
REPAIR_FIELDS = ("serial", "at", "who", "host", "action", "note", "part", "after_run")


@dataclass
class Moved:
    runs: int = 0
    replaced: int = 0
    skipped: int = 0
    cards: int = 0
    tests: int = 0
    findings: int = 0
    samples: int = 0
    repairs: int = 0
    repairs_skipped: int = 0

    def line(self) -> str:
        return (f"{self.runs} runs copied ({self.replaced} replacing an unfinished copy; {self.cards} cards, "
                f"{self.tests} tests, {self.findings} findings, {self.samples} samples), {self.skipped} already "
                f"there; {self.repairs} repairs copied, {self.repairs_skipped} already there")


def _insert(sql: Sql, table: str, row: dict[str, Any], columns: list[str]) -> None:
    cols = [c for c in columns if c in row]
    sql.run(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",  # noqa: S608
            [row[c] for c in cols])


def _copy_run(src: Sql, dst: Sql, run: dict[str, Any], moved: Moved) -> None:
    rid = run["run_id"]
    cols = {t: dst.columns(t) for t in ("runs", *COPIED_TABLES)}
    _insert(dst, "runs", run, [c for c in cols["runs"] if c != "seq"])
    for rc in src.rows("SELECT * FROM run_cards WHERE run_id=?", (rid,)):
        _insert(dst, "run_cards", rc, cols["run_cards"])
        moved.cards += 1
    test_ids: dict[int, int] = {}
    for t in src.rows("SELECT * FROM tests WHERE run_id=? ORDER BY id", (rid,)):
        names = [c for c in cols["tests"] if c != "id" and c in t]
        test_ids[t["id"]] = dst.insert(
            f"INSERT INTO tests ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",  # noqa: S608
            [t[c] for c in names])
        moved.tests += 1
    for f in src.rows("SELECT * FROM findings WHERE run_id=? ORDER BY id", (rid,)):
        f["test_id"] = test_ids.get(f["test_id"]) if f.get("test_id") is not None else None
        _insert(dst, "findings", {k: v for k, v in f.items() if k != "id"}, cols["findings"])
        moved.findings += 1
    samples = src.rows("SELECT run_id, key, t, tag, data FROM samples WHERE run_id=? ORDER BY id", (rid,))
    dst.run_many("INSERT INTO samples (run_id, key, t, tag, data) VALUES (?,?,?,?,?)",
                 [(s["run_id"], s["key"], s["t"], s["tag"], s["data"]) for s in samples])
    moved.samples += len(samples)


def migrate(source: Store, dest: Store) -> Moved:
    """Copy every run, card and repair of ``source`` that ``dest`` does not hold yet."""
    src, dst = source.sql, dest.sql
    moved = Moved()
    for run in src.rows(f"SELECT * FROM runs ORDER BY {src.run_order}"):
        run.pop("seq", None)
        there = dst.row("SELECT status, finished_at FROM runs WHERE run_id=?", (run["run_id"],))
        if there is not None and (there["status"] == "finished" or
                                  (there["status"], there["finished_at"]) == (run["status"], run["finished_at"])):
            moved.skipped += 1
            continue
        with dst.tx():
            if there is not None:  # the bench went on with a run the room holds unfinished
                for table in (*COPIED_TABLES, "runs"):
                    dst.run(f"DELETE FROM {table} WHERE run_id=?", (run["run_id"],))  # noqa: S608
                moved.replaced += 1
            _copy_run(src, dst, run, moved)
        moved.runs += 1
    with dst.tx():
        for card in src.rows("SELECT serial, model, vendor, first_seen FROM cards"):
            dst.run("INSERT INTO cards (serial, model, vendor, first_seen) VALUES (?,?,?,?) "
                    "ON CONFLICT (serial) DO NOTHING", (card["serial"], card["model"], card["vendor"], card["first_seen"]))
    for rep in src.rows("SELECT * FROM repairs ORDER BY id"):
        same = " AND ".join(f"{k} IS NOT DISTINCT FROM ?" if dst.dialect == "postgresql" else f"{k} IS ?"
                            for k in REPAIR_FIELDS)
        if dst.row(f"SELECT id FROM repairs WHERE {same}", [rep[k] for k in REPAIR_FIELDS]):  # noqa: S608
            moved.repairs_skipped += 1
            continue
        with dst.tx():
            dst.insert(f"INSERT INTO repairs ({', '.join(REPAIR_FIELDS)}) VALUES ({', '.join('?' * len(REPAIR_FIELDS))})",
                       [rep[k] for k in REPAIR_FIELDS])
        moved.repairs += 1
    return moved
