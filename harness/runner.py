"""The orchestrator: rack config + plan -> engine jobs -> store -> verdicts -> result document.

Data moves one way: workers measure, the store records each event as it arrives, the verdict
engine reads the store at the end, and every view (table, JSON, JUnit, HTML, TUI) reads the
result document or the event stream. Nothing here talks to a device.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drivers.api import BackendUnavailable
from drivers.profiles import ProfileError, load_profile
from drivers.registry import get_backend
from harness.config import RackConfig
from harness.engine import Engine, EngineEvent, LocalEngine
from harness.errors import HarnessUnavailable
from harness.plans import Plan
from harness.session import CardJob
from harness.store import Store
from harness.verdict import judge_card
from stress.base import get_stage
from stress.model import Finding, TestResult

SCHEMA = "burnin.result/1"
COMPUTE_STAGES = frozenset({"burn", "compute"})
MOCK_CARDS_PER_CPU = 4

Listener = Callable[[EngineEvent], None]


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass
class CardSlot:
    key: str
    host: str
    slot: int
    backend: str
    label: str
    locator: dict[str, Any]
    instruments: list[dict[str, Any]] = field(default_factory=list)


def discover_cards(cfg: RackConfig) -> list[CardSlot]:
    """Turn the config's device entries into one CardSlot per card (exit 3 if a backend can't run)."""
    cards: list[CardSlot] = []
    used: set[str] = set()
    here = {"local", "localhost", socket.gethostname(), socket.gethostname().split(".")[0]}
    for entry in cfg.devices:
        if entry.host not in here and entry.config.backend != "mock":
            raise HarnessUnavailable(
                f"{cfg.path}: {entry.label}: host {entry.host!r} is not this machine; the local engine runs "
                f"real cards only here (run burnin on {entry.host}, or name this host \"local\")"
            )
        backend = get_backend(entry.config.backend)
        ctx = {"config_dir": str(cfg.path.parent.resolve()), "host": entry.host, "index": entry.index}
        try:
            locators = backend.discover(entry.config, ctx)
        except BackendUnavailable as e:
            raise HarnessUnavailable(f"{cfg.path}: {entry.label}: {e}") from None
        for loc in locators:
            slot = int(loc.get("slot", entry.index))
            key = f"{entry.host}/{slot}"
            n = 1
            while key in used:
                key, n = f"{entry.host}/{slot}.{n}", n + 1
            used.add(key)
            loc.setdefault("host", entry.host)
            insts = [i.model_dump() for i in cfg.instruments_for(entry.host, slot)]
            cards.append(CardSlot(key, entry.host, slot, entry.config.backend, entry.label, loc, insts))
    return cards


class Run:
    """One run of a plan over a rack, recorded in a store as it happens."""

    def __init__(self, cfg: RackConfig, plan: Plan, store: Store, listener: Listener | None = None,
                 engine: Engine | None = None) -> None:
        self.cfg = cfg
        self.plan = plan
        self.store = store
        self.listener = listener or (lambda ev: None)
        self._engine = engine
        self.run_id = ""
        self.cards: list[CardSlot] = []
        self._stage_of: dict[str, str | None] = {}

    def start(self, cards: list[CardSlot]) -> str:
        self.run_id = new_run_id()
        self.cards = cards
        self.store.create_run(self.run_id, self.cfg.name, self.plan.name, str(self.cfg.path.resolve()),
                              str(self.plan.path.resolve()), utcnow())
        for c in cards:
            self.store.add_card(self.run_id, c.key, c.host, c.slot, c.backend, c.locator)
        return self.run_id

    def resume(self, run_id: str, cards: list[CardSlot]) -> None:
        """Continue ``run_id``: cards already finished keep their results, the rest run again."""
        self.run_id = run_id
        self.cards = cards

    def _default_engine(self) -> Engine:
        """Real cards all run at once (each is its own hardware); simulated cards share this
        host's CPUs, so a large mock rack runs a few per core at a time."""
        if self.cfg.rack.engine == "ray":
            from harness.engines.ray_engine import RayEngine

            mock = all(c.backend == "mock" for c in self.cards)
            return RayEngine(address=self.cfg.rack.ray_address, parallel=self.cfg.rack.parallel,
                             cpus_per_card=1 / MOCK_CARDS_PER_CPU if mock else 1.0, reuse_workers=mock,
                             host_addresses={h.name: h.address for h in self.cfg.hosts if h.address})
        parallel = self.cfg.rack.parallel
        if parallel is None and all(c.backend == "mock" for c in self.cards):
            parallel = min(len(self.cards), MOCK_CARDS_PER_CPU * (os.cpu_count() or 2)) or 1
        return LocalEngine(parallel=parallel or max(1, len(self.cards)))

    def execute(self) -> dict[str, Any]:
        self.engine = self._engine or self._default_engine()
        stages = [(s.stage, s.params) for s in self.plan.stages]
        for c in self.cards:
            self.store.card_started(self.run_id, c.key, utcnow())
            self.engine.submit(CardJob(key=c.key, locator=c.locator, stages=stages, instruments=c.instruments))
        try:
            for ev in self.engine.events():
                self._record(ev)
                self.listener(ev)
        finally:
            self.engine.close()
        self._peer_findings()
        self._verdicts()
        self.store.finish_run(self.run_id, utcnow())
        return build_document(self.store, self.run_id)

    def _record(self, ev: EngineEvent) -> None:
        s, rid, key, d = self.store, self.run_id, ev.key, ev.data
        if ev.kind == "identity":
            s.card_identity(rid, key, d, utcnow())
        elif ev.kind == "stage_start":
            self._stage_of[key] = d.get("stage")
        elif ev.kind == "test":
            s.add_test(rid, key, d)
        elif ev.kind == "finding":
            s.add_finding(rid, key, d)
        elif ev.kind == "sample":
            s.add_samples(rid, key, [d])
        elif ev.kind == "outcome":
            state = d.get("state", "done")
            if state in ("timed_out", "failed"):
                stage = d.get("stage") or self._stage_of.get(key) or "session"
                s.add_test(rid, key, _abandoned_test(stage, state, d.get("detail", "")))
            s.card_outcome(rid, key, state, d.get("detail"), utcnow())

    def _peer_findings(self) -> None:
        """Run-level comparisons among identical cards (e.g. throughput vs the best peer).

        Every card of the run takes part, also those a resumed run had finished before."""
        by_stage: dict[str, list[tuple[str, Any, TestResult]]] = {}
        for row in self.store.run_cards(self.run_id):
            ident = row.get("identity") or {}
            try:
                profile = load_profile(ident.get("profile") or (row.get("locator") or {}).get("profile", ""))
            except ProfileError:
                continue
            for t in self.store.tests(self.run_id, row["key"]):
                if t["status"] in ("pass", "fail"):
                    by_stage.setdefault(t["name"], []).append((row["key"], profile, TestResult.from_dict(t)))
        for stage, results in by_stage.items():
            try:
                extra = get_stage(stage).compare_peers(results)
            except KeyError:
                continue
            for key, findings in extra.items():
                for f in findings:
                    self.store.add_finding(self.run_id, key, f.to_dict())

    def _verdicts(self) -> None:
        for row in self.store.run_cards(self.run_id):
            findings = [Finding.from_dict(f) for f in self.store.findings(self.run_id, row["key"])]
            history = []
            if row.get("serial"):
                history = [h for h in self.store.card_history(row["serial"])
                           if h["run_id"] != self.run_id and h.get("findings") is not None]
            good = self.store.slot_known_good(row["host"], row["slot"], row.get("serial"), self.run_id)
            v = judge_card(findings, history, row.get("slot"), slot_known_good=good)
            self.store.card_verdict(self.run_id, row["key"], v.verdict, v.actions, [f.to_dict() for f in v.findings])


def _abandoned_test(stage: str, state: str, detail: str) -> dict[str, Any]:
    """The test a worker was in when the supervisor gave up on it, with why."""
    if state == "timed_out" and stage in COMPUTE_STAGES:
        f = Finding("compute.hang", "fail", "reset_and_retest", stage,
                    f"the {stage} stage did not finish within its watchdog; worker abandoned ({detail})",
                    evidence={"detail": detail})
    elif state == "timed_out":
        f = Finding("harness.stage_timeout", "fail", "reset_and_retest", stage,
                    f"stage {stage} did not finish within its watchdog; worker abandoned ({detail})",
                    evidence={"detail": detail})
    else:
        f = Finding("harness.worker_crashed", "fail", "reset_and_retest", stage,
                    f"the card's worker died during {stage}: {detail}", evidence={"detail": detail})
    return {"name": stage, "status": "error", "duration_s": 0.0, "metrics": {}, "error": detail,
            "findings": [f.to_dict()]}


def card_document(row: dict[str, Any], tests: list[dict[str, Any]]) -> dict[str, Any]:
    """The contract's card shape from a stored run_cards row."""
    ident = row.get("identity") or {}
    loc = row.get("locator") or {}
    return {
        "host": row["host"],
        "slot": row["slot"],
        "backend": row["backend"],
        "model": ident.get("model") or loc.get("profile") or row.get("model"),
        "serial": row.get("serial") or ident.get("serial"),
        "verdict": row.get("verdict") or "retest",
        "actions": row.get("actions") or [],
        "findings": row.get("findings") or [],
        "tests": tests,
        "state": row.get("state"),
    }


def build_document(store: Store, run_id: str) -> dict[str, Any]:
    run = store.run(run_id) or {}
    cards = [card_document(r, store.tests(run_id, r["key"])) for r in store.run_cards(run_id)]
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "rack": run.get("rack"),
        "plan": run.get("plan"),
        "started_at": run.get("started_at"),
        "finished_at": run.get("finished_at"),
        "cards": cards,
    }


def resolve_db(cli_db: str | None, cfg: RackConfig | None) -> Path:
    if cli_db:
        return Path(cli_db)
    if cfg is not None and cfg.rack.db:
        p = Path(cfg.rack.db)
        return p if p.is_absolute() else Path.cwd() / p
    return Path.cwd() / "burnin.db"
