"""What the room looks like now, read from the store: each slot's latest card, with its run.

A slot is (rack, host, card key): two benches whose configs both say ``host = "local"`` are two
hosts of the room. A card moved to another slot since shows at its old slot as ``moved`` and is
judged only where it was tested last. The reads are a handful of queries whatever the room's
size (no per-card round trips), so a 256-card room renders in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from harness.db.sql import DatabaseError
from harness.store import Store

VERDICT_RANK = {"rma": 0, "repair": 1, "retest": 2, "pass": 5}  # failures first
PULL_VERDICTS = ("rma", "repair", "retest")
EMPTY = "no bench has written to this store yet"
ENDED_BADLY = ("failed", "timed_out", "lost", "hung", "cancelled")
COUNTER_KEYS = ("sbe_volatile", "dbe_volatile", "sbe_aggregate", "dbe_aggregate", "pcie_replays",
                "remapped_rows_correctable", "remapped_rows_uncorrectable", "row_remap_pending",
                "row_remap_failure", "retired_pages_sbe", "retired_pages_dbe")


@dataclass
class RoomCard:
    """One slot's latest card."""

    run_id: str
    key: str
    rack: str
    host: str
    slot: int
    backend: str
    serial: str | None
    model: str | None
    state: str
    verdict: str | None
    actions: list[str]
    fail_codes: list[str]
    identity: dict[str, Any]
    locator: dict[str, Any]
    stage: str | None
    stage_index: int | None
    n_stages: int | None
    tests_done: int
    run_status: str | None
    started_at: str | None
    finished_at: str | None
    moved_to: str | None = None  # the slot the card was tested in since
    findings_by_severity: dict[str, int] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)  # the last sample
    counters: dict[str, Any] = field(default_factory=dict)  # the latest value of each COUNTER_KEYS
    xids: dict[int, int] = field(default_factory=dict)  # XID -> how many times seen in the run

    @property
    def place(self) -> str:
        return f"{self.host}/{self.slot}"

    @property
    def failing(self) -> bool:
        """A verdict to act on, or (still running) a fail finding already, or a run that ended badly."""
        if self.moved_to:
            return False
        if self.verdict:
            return self.verdict != "pass"
        return self.findings_by_severity.get("fail", 0) > 0 or self.state in ENDED_BADLY

    @property
    def rank(self) -> int:
        if self.moved_to:
            return 9
        if self.verdict:
            return VERDICT_RANK.get(self.verdict, 3)
        return 1 if self.failing else 4

    @property
    def progress(self) -> float:
        """How far through the plan (0..1): tests ended over the plan's stages."""
        if self.state not in ("pending", "running"):
            return 1.0
        if not self.n_stages:
            return 0.0
        return min(1.0, self.tests_done / self.n_stages)


@dataclass
class Room:
    cards: list[RoomCard]
    note: str | None = None  # why the room is empty, when it is

    def hosts(self) -> list[tuple[str, str, list[RoomCard]]]:
        """(rack, host, its slots in order), the hosts with the worst cards first."""
        by: dict[tuple[str, str], list[RoomCard]] = {}
        for c in self.cards:
            by.setdefault((c.rack, c.host), []).append(c)
        rows = [(rack, host, sorted(cs, key=lambda c: (c.slot, c.key))) for (rack, host), cs in by.items()]
        return sorted(rows, key=lambda r: (min(c.rank for c in r[2]), r[0], r[1]))

    def pick_list(self) -> list[RoomCard]:
        """The cards to pull or act on: a verdict other than pass where each was tested last; rma first."""
        picks = [c for c in self.cards if not c.moved_to and c.verdict in PULL_VERDICTS]
        return sorted(picks, key=lambda c: (c.rank, c.rack, c.host, c.slot))

    def host_names(self) -> dict[tuple[str, str], str]:
        """How each host is named on the page: its name, with the rack where two racks share it."""
        racks: dict[str, set[str]] = {}
        for c in self.cards:
            racks.setdefault(c.host, set()).add(c.rack)
        return {(c.rack, c.host): c.host if len(racks[c.host]) == 1 else f"{c.host} ({c.rack})" for c in self.cards}


def _json(v: Any, default: Any) -> Any:
    if v is None or v == "":
        return default
    try:
        return json.loads(v) if isinstance(v, str) else v
    except ValueError:
        return default


def _in(ids: list[str]) -> str:
    return ",".join("?" * len(ids))


def read_room(store: Store) -> Room:
    """The room now: the latest card of every slot the store has seen, with what the page and
    /metrics show of it."""
    sql, seq = store.sql, store.sql.run_order
    try:
        rows = sql.rows(
            "SELECT * FROM (SELECT rc.run_id, rc.key, rc.host, rc.slot, rc.backend, rc.serial, rc.model, rc.locator, "
            "rc.identity, rc.state, rc.verdict, rc.actions, rc.findings, rc.stage, rc.stage_index, "
            "rc.started_at, rc.finished_at, r.rack, r.status AS run_status, r.stages, "
            f"r.{seq} AS run_seq, ROW_NUMBER() OVER (PARTITION BY r.rack, rc.key ORDER BY r.{seq} DESC) AS n "
            "FROM run_cards rc JOIN runs r ON r.run_id = rc.run_id) latest WHERE n = 1")
        last_seen = {r["serial"]: r for r in sql.rows(
            "SELECT * FROM (SELECT rc.serial, r.rack, rc.host, rc.slot, rc.key, "
            f"ROW_NUMBER() OVER (PARTITION BY rc.serial ORDER BY r.{seq} DESC) AS n "
            "FROM run_cards rc JOIN runs r ON r.run_id = rc.run_id WHERE rc.serial IS NOT NULL) s WHERE n = 1")}
    except DatabaseError as e:
        if e.sqlstate == "42P01":  # undefined table: a room store no bench has written yet
            return Room([], note=EMPTY)
        raise
    cards = [_card(r) for r in rows]
    for c in cards:
        seen = last_seen.get(c.serial) if c.serial else None
        if seen is not None and (seen["rack"], seen["key"]) != (c.rack, c.key):
            c.moved_to = f"{seen['host']}/{seen['slot']}"
    _add_live(sql, cards)
    return Room(cards, note=None if cards else "no runs in this store yet")


def _card(r: dict[str, Any]) -> RoomCard:
    judged = _json(r.get("findings"), None)
    stages = _json(r.get("stages"), None)
    return RoomCard(
        run_id=r["run_id"], key=r["key"], rack=r.get("rack") or "", host=r["host"], slot=int(r["slot"]),
        backend=r.get("backend") or "", serial=r.get("serial"), model=r.get("model"),
        state=r.get("state") or "pending", verdict=r.get("verdict"), actions=list(_json(r.get("actions"), [])),
        fail_codes=sorted({str(f.get("code")) for f in judged or [] if f.get("severity") == "fail"}),
        identity=_json(r.get("identity"), {}) or {}, locator=_json(r.get("locator"), {}) or {},
        stage=r.get("stage"), stage_index=r.get("stage_index"),
        n_stages=len(stages) if isinstance(stages, list) else None, tests_done=0,
        run_status=r.get("run_status"), started_at=r.get("started_at"), finished_at=r.get("finished_at"))


def _add_live(sql: Any, cards: list[RoomCard]) -> None:
    """Per card of the latest runs: findings so far, tests ended, the last sample, counters, XIDs."""
    by = {(c.run_id, c.key): c for c in cards}
    runs = sorted({c.run_id for c in cards})
    for i in range(0, len(runs), 500):
        ids = runs[i:i + 500]
        for r in sql.rows(f"SELECT run_id, key, severity, COUNT(*) AS n FROM findings WHERE run_id IN ({_in(ids)}) "
                          "GROUP BY run_id, key, severity", ids):
            if c := by.get((r["run_id"], r["key"])):
                c.findings_by_severity[str(r["severity"])] = int(r["n"])
        for r in sql.rows(f"SELECT run_id, key, metrics FROM tests WHERE run_id IN ({_in(ids)}) ORDER BY id", ids):
            if c := by.get((r["run_id"], r["key"])):
                c.tests_done += 1
                metrics = _json(r["metrics"], {})
                if isinstance(metrics, dict):
                    c.counters.update({k: metrics[k] for k in COUNTER_KEYS if metrics.get(k) is not None})
        for r in sql.rows("SELECT s.run_id, s.key, s.data FROM samples s JOIN (SELECT MAX(id) AS id FROM samples "
                          f"WHERE run_id IN ({_in(ids)}) GROUP BY run_id, key) m ON s.id = m.id", ids):
            if c := by.get((r["run_id"], r["key"])):
                c.telemetry = _json(r["data"], {}) or {}
        for r in sql.rows(f"SELECT run_id, key, evidence FROM findings WHERE run_id IN ({_in(ids)}) "
                          "AND evidence LIKE ?", [*ids, '%"xid":%']):
            c = by.get((r["run_id"], r["key"]))
            xid = (_json(r["evidence"], {}) or {}).get("xid")
            if c is not None and isinstance(xid, int):
                c.xids[xid] = c.xids.get(xid, 0) + 1
