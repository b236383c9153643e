"""The orchestrator: one run of a plan over a rack's cards, as one stream of typed events.

The run publishes its own events (run started or resumed, card started, peer findings, verdict,
run finished) on the same stream as the events its cards' workers send, and hands each one,
through one dispatch, to every subscriber: the run's records (harness/records.py), the store
(``StoreWriter``), and any listener (progress bars, the events file, metrics, the TUI). A card is
judged the moment its verdict is final (harness/judging.py), not at the end of the run. Nothing
here talks to a device or writes the store itself.
"""

from __future__ import annotations

from typing import Any

from harness.benches import HostBenches
from harness.cards import CardSlot
from harness.clock import new_run_id, utcnow
from harness.config import RackConfig
from harness.db.sql import DB_ERRORS
from harness.engine import Engine, RunCancelled
from harness.engines import make_engine
from harness.errors import HarnessUnavailable
from harness.host_jobs import HostJobs
from harness.judging import group_of, judge_with_history, peer_findings, peer_ready
from harness.plans import Plan
from harness.records import RunInfo, RunRecords
from harness.session import CardJob
from harness.store import Store, StoreWriter
from stress.base import get_stage
from stress.events import (
    RUN_KEY,
    CardStarted,
    Event,
    EventConsumer,
    FindingRaised,
    HostFinding,
    Outcome,
    Progress,
    RunFinished,
    RunResumed,
    RunStarted,
    TestDone,
    Verdict,
)
from stress.model import Finding, TestResult
from stress.record import CardRecord


class Run:
    """One run of a plan over a rack: every event, the cards' and its own, goes to every
    subscriber; verdicts are given as soon as they are final."""

    def __init__(self, cfg: RackConfig, plan: Plan, store: Store, listeners: list[EventConsumer] | None = None,
                 engine: Engine | None = None) -> None:
        self.cfg = cfg
        self.plan = plan
        self.store = store
        self.records = RunRecords()
        self.subscribers: list[EventConsumer] = [self.records, StoreWriter(store, utcnow), *(listeners or [])]
        self._engine = engine
        self.engine: Engine | None = None
        self.run_id = ""
        self.cards: list[CardSlot] = []
        self.benches: HostBenches | None = None
        self._judged: set[str] = set()  # cards given their verdict in this session
        self._groups: dict[str, str] = {}  # card key -> its group of identical cards

    @property
    def started_at(self) -> str:
        return self.records.info.started_at or ""

    def publish(self, key: str, event: Event) -> None:
        """Hand one event to every subscriber, in order (the records first, then the store)."""
        for sub in self.subscribers:
            sub.handle(key, event)

    def start(self, cards: list[CardSlot]) -> str:
        self.run_id = new_run_id()
        self.cards = cards
        self._open_benches()  # a miswired bench is bad input: said before the run is recorded
        self.publish(RUN_KEY, RunStarted(
            self.run_id, self.cfg.name, self.plan.name, utcnow(), [c.to_json() for c in cards],
            str(self.cfg.path.resolve()), str(self.plan.path.resolve()), [s.stage for s in self.plan.stages]))
        return self.run_id

    def resume(self, run_id: str, cards: list[CardSlot]) -> None:
        """Continue ``run_id``: cards already finished keep their results (read back once, so
        peer comparison sees every card of the run), the rest run again from scratch."""
        self.run_id = run_id
        self.cards = cards
        row = self.store.run(run_id) or {}
        self.records.info = RunInfo(run_id, row.get("rack"), row.get("plan"), row.get("started_at") or utcnow(),
                                    None, "running", row.get("config_path") or "", row.get("plan_path") or "")
        for rec in self.store.records(run_id):
            self.records.add(rec)
        for c in cards:
            if c.key not in self.records.by_key:
                self.records.add(CardRecord(c.key, c.host, c.slot, c.backend, dict(c.locator)))
        self.publish(RUN_KEY, RunResumed(run_id, utcnow(), [c.key for c in cards]))
        self._open_benches()

    def _open_benches(self) -> None:
        """The host owns its bench: each host's controller is opened once here and shared by its
        card workers through a broker (a Ray run's workers are elsewhere: they open it per card)."""
        if self.benches is not None:
            return
        self.benches = HostBenches(self.cfg)
        local = self._engine.shares_host_bench if self._engine is not None else self.cfg.rack.engine == "local"
        if local:
            self.benches.open({c.host for c in self.cards if c.instruments})

    def execute(self) -> dict[str, Any]:
        """Run every card to its end and judge it; the result document. A run cut short (Ctrl-C,
        a signal, a full disk, a stop from the TUI) is marked resumable and keeps what it measured."""
        engine = self.engine = self._engine or make_engine(self.cfg, self.cards)
        # host stages (the interconnect) run once per host after its cards: harness/host_jobs.py
        hosts = HostJobs([(s.stage, s.params) for s in self.plan.stages], self.cards)
        stages = hosts.card_stages
        self._open_benches()
        try:
            try:
                for c in self.cards:
                    self.publish(c.key, CardStarted(utcnow()))
                    engine.submit(CardJob(key=c.key, locator=c.locator, stages=stages, instruments=c.instruments,
                                          bench=self.benches.access(c.host, c.slot) if self.benches else None))
                for ev in engine.events():
                    if hosts.is_job(ev.key):  # a host job's own end: its cards' held outcomes go out
                        if isinstance(ev.event, Outcome):
                            for key, event in hosts.job_ended(ev.key, ev.event):
                                self.publish(key, event)
                            self._judge_ready()
                        continue
                    for event in _with_abandoned_test(ev.event, self.records.by_key.get(ev.key)):
                        if isinstance(event, Outcome) and hosts.holds(ev.key):
                            job, now = hosts.card_ended(ev.key, event)
                            if job is not None:
                                engine.submit(job)
                            elif not now:
                                self.publish(ev.key, Progress(1.0, hosts.waiting_text(ev.key)))
                            for key, held in now:
                                self.publish(key, held)
                            continue
                        hosts.note(ev.key, event)
                        self.publish(ev.key, event)
                    if isinstance(ev.event, Outcome):
                        self._judge_ready()
            finally:
                engine.close()
                if self.benches is not None:
                    self.benches.close()
            self._judge_ready(final=True)
            self.publish(RUN_KEY, RunFinished(utcnow(), "finished"))
        except RunCancelled:
            self._ended_early("stopped", "the run was stopped from the bench TUI")
            raise
        except BaseException as e:  # Ctrl-C, a signal, a full disk: the run stays resumable
            self._ended_early("interrupted", _why_interrupted(e))
            if isinstance(e, DB_ERRORS):
                raise HarnessUnavailable(
                    f"{self.store.path}: cannot write results ({str(e) or type(e).__name__}); run {self.run_id} "
                    f"stopped, cards finished so far are kept; free space, then `burnin resume {self.run_id} "
                    f"--db {self.store.path}`"
                ) from None
            raise
        return self.records.document()

    def _ended_early(self, status: str, why: str) -> None:
        """The run ends before its cards did: each card cut short is marked ``cancelled`` and gets
        a verdict from what it had measured, marked incomplete with the stages it did not run (a
        card with failed memory tests keeps that verdict, not "retest"); then the run's end.
        Best effort, one subscriber at a time: the disk under the store may be what failed, and
        the events file must still hear of it."""
        events: list[tuple[str, Event]] = []
        ours = {c.key for c in self.cards}
        for rec in self.records.ordered():
            if rec.key not in ours or (rec.finished and rec.key in self._judged):
                continue
            if not rec.finished:
                events.append((rec.key, Outcome("cancelled", rec.stage, why)))
            try:
                events.append((rec.key, self._incomplete_verdict(rec, why)))
            except Exception:  # noqa: BLE001 - the store is unreadable: the card stays unjudged, resumable
                pass
        events.append((RUN_KEY, RunFinished(utcnow(), status)))
        for sub in self.subscribers:
            for key, event in events:
                try:
                    sub.handle(key, event)
                except Exception:  # noqa: BLE001 - a broken subscriber must not hide the others
                    break

    def _incomplete_verdict(self, rec: CardRecord, why: str) -> Verdict:
        ran = {t.name for t in rec.tests if t.status != "skipped" or t.metrics.get("skip", {}).get("kind") != "card"}
        not_run = [s.stage for s in self.plan.stages if s.stage not in ran]
        found = rec.findings()
        if not_run:
            found = [*found, Finding(
                "harness.incomplete", "fail", "reset_and_retest", "session",
                f"{why} before this card finished: not run: {', '.join(not_run)}", evidence={"not_run": not_run})]
        v = judge_with_history(self.store, self.run_id, rec.serial, rec.host, rec.slot, found)
        self._judged.add(rec.key)
        return Verdict(v.verdict, v.actions, v.findings, utcnow(),
                       f"incomplete: {why}; not run: {', '.join(not_run) or 'none'}", not_run)

    def _judge_ready(self, final: bool = False) -> None:
        """Judge every card that has finished and has no verdict yet, at once; compare each group
        of identical cards among its finished members once enough have finished (``final``: the
        run is over, compare what there is); re-judge a card a new peer finding changes."""
        records = self.records.ordered()
        groups: dict[str, list[CardRecord]] = {}
        for rec in records:
            groups.setdefault(self._group_of(rec), []).append(rec)
        touched: set[str] = set()
        for members in groups.values():
            usable = [r for r in members if r.finished] if final else peer_ready(members)
            for key, f in peer_findings(usable):
                self.publish(key, FindingRaised(f))
                touched.add(key)
        fresh = [r for r in records if r.finished and r.key not in self._judged]
        for rec in fresh:  # first verdicts first (the card that just finished), then changes
            self._judge(rec)
        for rec in records:
            if rec.key in touched and rec not in fresh and rec.key in self._judged:
                self._judge(rec)

    def _group_of(self, rec: CardRecord) -> str:
        """The card's group of identical cards (cached once its profile is known)."""
        group = self._groups.get(rec.key)
        if group is None:
            group = group_of(rec)
            if not group.startswith("?"):
                self._groups[rec.key] = group
        return group

    def _judge(self, rec: CardRecord) -> None:
        v = judge_with_history(self.store, self.run_id, rec.serial, rec.host, rec.slot, rec.findings())
        first = rec.key not in self._judged
        self._judged.add(rec.key)
        if not first and (v.verdict, v.actions) == (rec.verdict, rec.actions):
            if [f.to_dict() for f in v.findings] != [f.to_dict() for f in rec.judged]:
                self.publish(rec.key, Verdict(v.verdict, v.actions, v.findings, utcnow()))
            return
        note = ""
        if not first:
            new = [f for f in v.findings if f.severity == "fail" and f not in rec.judged]
            why = "; ".join(f"{f.code}: {f.message}" for f in new) or "peer comparison"
            note = f"changed from {rec.verdict} to {v.verdict}: {why}"
        self.publish(rec.key, Verdict(v.verdict, v.actions, v.findings, utcnow(), note))
        if first:  # the history put a fault on the host (a baseboard slot): said once
            for f in v.host_findings:
                self.publish(RUN_KEY, HostFinding(rec.host, f))


def _why_interrupted(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "the run was interrupted (Ctrl-C)"
    if isinstance(e, DB_ERRORS):
        return f"the results database failed ({e})"
    name = {15: "SIGTERM", 1: "SIGHUP"}.get(int(getattr(e, "signum", 0) or 0))
    return f"the run was stopped by {name}" if name else f"the run stopped ({type(e).__name__})"


def _with_abandoned_test(event: Any, rec: CardRecord | None) -> list[Any]:
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
