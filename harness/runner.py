"""The orchestrator: rack config + plan -> engine jobs -> store -> verdicts -> result document.

Data moves one way: workers measure and send typed events (``stress.events``); each event is
handed, through one dispatch, to the run's records, the store (persisted as it arrives) and any
listener (progress bars, the TUI). At the end, peer comparison and verdicts run on the records,
and every view (table, JSON, JUnit, HTML) reads the result document built from them. Nothing
here talks to a device.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drivers.api import BackendUnavailable
from drivers.derived import resolve_profile
from drivers.profiles import Profile, ProfileError
from drivers.registry import get_backend
from harness.benches import HostBenches
from harness.config import DeviceEntry, RackConfig
from harness.db.sql import DB_ERRORS
from harness.db.target import DbTarget, as_target
from harness.engine import Engine, LocalEngine
from harness.errors import HarnessUnavailable, UsageError
from harness.plans import Plan
from harness.session import CardJob
from harness.store import Store, StoreWriter, default_db_path
from harness.verdict import CardVerdict, judge_card
from harness.views import RESULT_SCHEMA
from stress.base import get_stage
from stress.events import CardEvent, EventConsumer, Outcome, TestDone
from stress.model import Finding, TestResult, soften
from stress.record import CardRecord

SCHEMA = RESULT_SCHEMA
MOCK_CARDS_PER_CPU = 4


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


def _discover_here(cfg: RackConfig) -> Iterator[tuple[DeviceEntry, list[dict[str, Any]]]]:
    """Each device entry with its locators, discovered on this machine (the local engine)."""
    here = {"local", "localhost", socket.gethostname(), socket.gethostname().split(".")[0]}
    for entry in cfg.devices:
        if entry.host not in here and entry.config.backend != "mock":
            raise HarnessUnavailable(
                f"{cfg.path}: {entry.label}: host {entry.host!r} is not this machine; the local engine runs "
                f"real cards only here (run burnin on {entry.host}, name this host \"local\", "
                f"or use [rack] engine = \"ray\")"
            )
        backend = get_backend(entry.config.backend)
        ctx = {"config_dir": str(cfg.path.parent.resolve()), "host": entry.host, "index": entry.index}
        try:
            yield entry, backend.discover(entry.config, ctx)
        except BackendUnavailable as e:
            raise HarnessUnavailable(f"{cfg.path}: {entry.label}: {e}") from None


def _discover_on_ray(cfg: RackConfig) -> list[tuple[DeviceEntry, list[dict[str, Any]]]]:
    """Each device entry with its locators, a host's real cards discovered on that host's node."""
    from harness.engines.fleet import discover_fleet
    from harness.engines.ray_engine import Placer, connect

    ray, _ = connect(cfg.rack.ray_address)  # the engine joins the same cluster afterwards
    placer = Placer(ray, {h.name: h.address for h in cfg.hosts if h.address})
    return discover_fleet(cfg, placer, ray)


def discover_cards(cfg: RackConfig, engine: str | None = None) -> list[CardSlot]:
    """Turn the config's device entries into one CardSlot per card (exit 3 if a backend can't run
    here; on Ray a host that cannot run its cards gives them a finding instead). ``engine``
    overrides the config's (``devices`` opens cards in-process, so it discovers here)."""
    cards: list[CardSlot] = []
    used: set[str] = set()
    found = _discover_on_ray(cfg) if (engine or cfg.rack.engine) == "ray" else _discover_here(cfg)
    for entry, locators in found:
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
    return cards + _missing_cards(cfg, cards)


def _missing_cards(cfg: RackConfig, found: list[CardSlot]) -> list[CardSlot]:
    """A card the host says it has (``cards = N``) that discovery did not find: listed at its
    slot, so the run reports it ``bus.lost`` instead of quietly testing fewer cards."""
    out: list[CardSlot] = []
    for host in cfg.hosts:
        expected = host.expected_slots
        if expected is None:
            continue
        have = {c.slot for c in found if c.host == host.name}
        backend = str(host.devices[0].get("backend"))
        for slot in expected:
            if slot in have:
                continue
            why = f"no card found in slot {slot} of host {host.name!r}, which should have {len(expected)}"
            loc = {"backend": backend, "slot": slot, "host": host.name, "serial": None, "missing": why}
            insts = [i.model_dump() for i in cfg.instruments_for(host.name, slot)]
            out.append(CardSlot(f"{host.name}/{slot}", host.name, slot, backend,
                                f"hosts[{host.name}] slot {slot} (missing)", loc, insts))
    return out


def make_engine(cfg: RackConfig, cards: list[CardSlot], should_stop: Callable[[], bool] | None = None) -> Engine:
    """The engine the config names (``[rack] engine``), for ``run``, ``resume`` and ``tui`` alike.

    Real cards all run at once (each is its own hardware); simulated cards share the CPUs, so a
    large mock rack runs a few per core at a time, in reused workers."""
    mock = all(c.backend == "mock" for c in cards)
    if cfg.rack.engine == "ray":
        from harness.engines.ray_engine import RayEngine

        # a whole CPU a card, mock or not: a Ray worker costs ~1 s of CPU to start, so fractional
        # shares (more workers) made a 256-card mock rack slower (bench/fleet.py: 28 s vs 17 s)
        return RayEngine(address=cfg.rack.ray_address, parallel=cfg.rack.parallel,
                         cpus_per_card=1.0, reuse_workers=mock,
                         host_addresses={h.name: h.address for h in cfg.hosts if h.address},
                         should_stop=should_stop)
    parallel = cfg.rack.parallel
    if parallel is None and mock:
        parallel = min(len(cards), MOCK_CARDS_PER_CPU * (os.cpu_count() or 2)) or 1
    return LocalEngine(parallel=parallel or max(1, len(cards)), should_stop=should_stop, reuse_workers=mock)


class RunRecords(EventConsumer):
    """The run's in-memory record of every card, folded from its events."""

    def __init__(self) -> None:
        self.by_key: dict[str, CardRecord] = {}

    def add(self, rec: CardRecord) -> None:
        self.by_key[rec.key] = rec

    def handle(self, key: str, event: CardEvent) -> None:
        rec = self.by_key.get(key)
        if rec is not None:
            rec.apply(event)

    def ordered(self) -> list[CardRecord]:
        return sorted(self.by_key.values(), key=lambda r: (r.host, r.slot, r.key))


class Run:
    """One run of a plan over a rack: events fold into records, the store persists them as they
    arrive, and peer comparison and verdicts run on the records at the end."""

    def __init__(self, cfg: RackConfig, plan: Plan, store: Store, listeners: list[EventConsumer] | None = None,
                 engine: Engine | None = None) -> None:
        self.cfg = cfg
        self.plan = plan
        self.store = store
        self.listeners = list(listeners or [])
        self._engine = engine
        self.run_id = ""
        self.started_at = ""
        self.cards: list[CardSlot] = []
        self.records = RunRecords()
        self.benches: HostBenches | None = None

    def start(self, cards: list[CardSlot]) -> str:
        self.run_id = new_run_id()
        self.started_at = utcnow()
        self.cards = cards
        self._open_benches()  # a miswired bench is bad input: said before the run is recorded
        self.store.create_run(self.run_id, self.cfg.name, self.plan.name, str(self.cfg.path.resolve()),
                              str(self.plan.path.resolve()), self.started_at, [s.stage for s in self.plan.stages])
        for c in cards:
            self.store.add_card(self.run_id, c.key, c.host, c.slot, c.backend, c.locator)
            self.records.add(CardRecord(c.key, c.host, c.slot, c.backend, dict(c.locator)))
        return self.run_id

    def resume(self, run_id: str, cards: list[CardSlot]) -> None:
        """Continue ``run_id``: cards already finished keep their results (read back once, so
        peer comparison sees every card of the run), the rest run again from scratch."""
        self.run_id = run_id
        self.started_at = (self.store.run(run_id) or {}).get("started_at") or utcnow()
        self.cards = cards
        for stored in self.store.records(run_id):
            self.records.add(stored)
        for c in cards:
            self.store.reset_card(run_id, c.key)
            rec = self.records.by_key.get(c.key)
            if rec is None:
                self.records.add(CardRecord(c.key, c.host, c.slot, c.backend, dict(c.locator)))
            else:
                rec.reset()
        self._open_benches()

    def _default_engine(self) -> Engine:
        return make_engine(self.cfg, self.cards)

    def _open_benches(self) -> None:
        """The host owns its bench: each host's controller is opened once here and shared by its
        card workers through a broker (a Ray run's workers are elsewhere: they open it per card)."""
        if self.benches is not None:
            return
        self.benches = HostBenches(self.cfg)
        local = self._engine.shares_host_bench if self._engine is not None else self.cfg.rack.engine != "ray"
        if local:
            self.benches.open({c.host for c in self.cards if c.instruments})

    def execute(self) -> dict[str, Any]:
        self.engine = self._engine or self._default_engine()
        consumers: list[EventConsumer] = [self.records, StoreWriter(self.store, self.run_id, utcnow), *self.listeners]
        stages = [(s.stage, s.params) for s in self.plan.stages]
        self._open_benches()
        for c in self.cards:
            self.store.card_started(self.run_id, c.key, utcnow())
            self.records.by_key[c.key].started_at = utcnow()
            self.engine.submit(CardJob(key=c.key, locator=c.locator, stages=stages, instruments=c.instruments,
                                       bench=self.benches.access(c.host, c.slot) if self.benches else None))
        try:
            try:
                for ev in self.engine.events():
                    for event in _with_abandoned_test(ev.event, self.records.by_key.get(ev.key)):
                        for consumer in consumers:
                            consumer.handle(ev.key, event)
            finally:
                self.engine.close()
                if self.benches is not None:
                    self.benches.close()
            records = self.records.ordered()
            for key, f in peer_findings(records):
                self.store.add_finding(self.run_id, key, f)
            self._verdicts(records)
            finished_at = utcnow()
            self.store.finish_run(self.run_id, finished_at)
        except BaseException as e:  # Ctrl-C, a signal, a full disk: the run stays resumable
            self._interrupted()
            if isinstance(e, DB_ERRORS):
                raise HarnessUnavailable(
                    f"{self.store.path}: cannot write results ({str(e) or type(e).__name__}); run {self.run_id} "
                    f"stopped, cards finished so far are kept; free space, then `burnin resume {self.run_id} "
                    f"--db {self.store.path}`"
                ) from None
            raise
        return result_document(self.run_id, self.cfg.name, self.plan.name, self.started_at, finished_at, records)

    def _interrupted(self) -> None:
        """Mark the run resumable; best effort (the disk may be what failed)."""
        try:
            self.store.mark_run(self.run_id, "interrupted")
        except DB_ERRORS:
            pass

    def _verdicts(self, records: list[CardRecord]) -> None:
        for rec in records:
            v = judge_with_history(self.store, self.run_id, rec.serial, rec.host, rec.slot, rec.findings())
            rec.verdict, rec.actions, rec.judged = v.verdict, v.actions, v.findings
            self.store.card_verdict(self.run_id, rec.key, v.verdict, v.actions, v.findings)


def judge_with_history(store: Store, run_id: str, serial: str | None, host: str, slot: int,
                       findings: list[Finding]) -> CardVerdict:
    """A card's verdict with what the store knows of it from before this run: its earlier runs
    (only older ones: a resumed run is judged as it would have been), its repairs, and whether
    its slot is known good. The runner and the TUI's early verdicts both judge through this."""
    from harness.repairs import repairs_before

    history: list[dict[str, Any]] = []
    repairs: list[dict[str, Any]] = []
    if serial:
        seq = store.run_seq(run_id) or 0
        history = [h for h in store.card_history(serial) if h["run_seq"] < seq and h.get("findings") is not None]
        started = (store.run(run_id) or {}).get("started_at") or utcnow()
        repairs = repairs_before(store, serial, run_id, started)
    good = store.slot_known_good(host, slot, serial, run_id)
    return judge_card(findings, history, slot, slot_known_good=good, repairs=repairs)


def peer_findings(records: list[CardRecord]) -> list[tuple[str, Finding]]:
    """Run-level comparisons among identical cards (e.g. throughput against the best peer),
    over every card of the run (also those a resumed run had finished before). Each new finding
    is added to its card's record and returned with the card's key; one the record already holds
    (same test, code and message: a resumed run compares again) is not added twice."""
    by_stage: dict[str, list[tuple[str, Profile, TestResult]]] = {}
    for rec in records:
        if not rec.identity and not rec.profile_name:
            continue
        try:
            profile, _ = resolve_profile(rec.identity or {}, rec.locator)
        except ProfileError:
            continue
        for t in rec.tests:
            if t.status in ("pass", "fail"):
                by_stage.setdefault(t.name, []).append((rec.key, profile, t))
    by_key = {r.key: r for r in records}
    out: list[tuple[str, Finding]] = []
    for stage, results in by_stage.items():
        try:
            extra = get_stage(stage).compare_peers(results)
        except KeyError:
            continue
        for key, found in extra.items():
            profile = next(p for k, p, _ in results if k == key)
            rec = by_key[key]
            for f in soften(found, profile.assumed):  # a derived profile's assumed figures only warn
                if any((g.test, g.code, g.message) == (f.test, f.code, f.message) for g in rec.extra_findings):
                    continue
                rec.extra_findings.append(f)
                out.append((key, f))
    return out


def _with_abandoned_test(event: CardEvent, rec: CardRecord | None) -> list[CardEvent]:
    """An abnormal end from the supervisor (the worker died or ran past its watchdog) becomes
    the test the card was in, failed with why, followed by the outcome itself."""
    if not isinstance(event, Outcome) or event.state not in ("timed_out", "failed"):
        return [event]
    stage = event.stage or (rec.stage if rec else None) or "session"
    return [TestDone(abandoned_test(stage, event.state, event.detail or "", event.finding)), event]


def abandoned_test(stage: str, state: str, detail: str, finding: Finding | None = None) -> TestResult:
    """The test a worker was in when the supervisor gave up on it; the stage says what its
    watchdog running out means (a kernel-launching stage: ``compute.hang``); ``finding`` is the
    engine's own word when it has one (the card's host left the cluster)."""
    if finding is not None:
        f = finding
    elif state == "timed_out":
        try:
            code = get_stage(stage).watchdog_code
        except KeyError:
            code = "harness.stage_timeout"
        what = "a kernel" if code == "compute.hang" else f"stage {stage}"
        f = Finding(code, "fail", "reset_and_retest", stage,
                    f"{what} did not finish within the {stage} stage's watchdog; worker abandoned ({detail})",
                    evidence={"detail": detail})
    else:
        f = Finding("harness.worker_crashed", "fail", "reset_and_retest", stage,
                    f"the card's worker died during {stage}: {detail}", evidence={"detail": detail})
    return TestResult(name=stage, status="error", error=detail, findings=[f])


def result_document(run_id: str, rack: str | None, plan: str | None, started_at: str | None,
                    finished_at: str | None, records: list[CardRecord]) -> dict[str, Any]:
    """contract.md's result document, built from the run's records alone. ``telemetry`` carries
    each card's plot points (by card key) so the HTML view needs nothing but this document."""
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "rack": rack,
        "plan": plan,
        "started_at": started_at,
        "finished_at": finished_at,
        "cards": [r.card_document() for r in records],
        "telemetry": {r.key: r.samples for r in records if r.samples},
    }


def stored_document(store: Store, run_id: str) -> dict[str, Any]:
    """The result document of a stored run (resume of a finished run, evidence packs)."""
    run = store.run(run_id) or {}
    return result_document(run_id, run.get("rack"), run.get("plan"), run.get("started_at"),
                           run.get("finished_at"), store.records(run_id))


def resolve_db(cli_db: str | None, cfg: RackConfig | None) -> DbTarget:
    """The results database every verb agrees on: ``--db`` (a path relative to the working
    directory, or a ``postgresql://`` URL), else the config's ``db`` (a path relative to the
    config's folder, or a URL), else the default (``$BURNIN_DB``, else ``./burnin.db``)."""
    if cli_db:
        return as_target(cli_db)
    if cfg is not None and cfg.rack.db:
        try:
            return as_target(cfg.rack.db, base=cfg.base_dir)
        except UsageError as e:
            raise UsageError(f"{cfg.path}: rack.db: {e}") from None
    return default_db_path()


def open_store(cli_db: str | None, cfg: RackConfig | None, readonly: bool = False) -> Store:
    """Open (and check) the results database before any card starts."""
    return Store(resolve_db(cli_db, cfg), readonly=readonly)
