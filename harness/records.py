"""The run's records: one ``CardRecord`` per card and the run's own facts, folded from the event
stream. The runner, the verdict engine, the TUI, the metrics and the result document all read
these; rebuilding them from a saved events file (``burnin report --events``) gives the same
document the run wrote."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.store import Store
from harness.views import RESULT_SCHEMA
from stress.events import (
    Event,
    EventConsumer,
    HostFinding,
    RunFinished,
    RunResumed,
    RunStarted,
)
from stress.model import Finding
from stress.record import CardRecord


@dataclass
class RunInfo:
    """What the run itself is: the facts of its ``RunStarted`` / ``RunFinished`` events."""

    run_id: str = ""
    rack: str | None = None
    plan: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    status: str = "running"  # running | finished | interrupted | stopped
    config_path: str = ""
    plan_path: str = ""


@dataclass
class RunRecords(EventConsumer):
    """The run's in-memory record of every card, folded from its events."""

    info: RunInfo = field(default_factory=RunInfo)
    by_key: dict[str, CardRecord] = field(default_factory=dict)
    hosts: dict[str, list[Finding]] = field(default_factory=dict)  # findings a host, slot or fabric owns

    def add(self, rec: CardRecord) -> None:
        self.by_key[rec.key] = rec

    def handle(self, key: str, event: Event) -> None:
        if key:
            rec = self.by_key.get(key)
            if rec is None:
                return
            if not isinstance(event, RunStarted | RunResumed | RunFinished | HostFinding):
                rec.apply(event)
            return
        super().handle(key, event)

    def on_run_start(self, key: str, ev: RunStarted) -> None:
        self.info = RunInfo(ev.run_id, ev.rack, ev.plan, ev.started_at, None, "running", ev.config_path,
                            ev.plan_path)
        for c in ev.cards:
            if c["key"] not in self.by_key:
                self.add(CardRecord(c["key"], c["host"], int(c["slot"]), c["backend"], dict(c.get("locator") or {})))

    def on_run_resume(self, key: str, ev: RunResumed) -> None:
        self.info.status, self.info.finished_at = "running", None
        for k in ev.keys:
            rec = self.by_key.get(k)
            if rec is not None:
                rec.reset()
                self.hosts.pop(rec.host, None)  # its host's stages run again with it

    def on_host_finding(self, key: str, ev: HostFinding) -> None:
        self.hosts.setdefault(ev.host, []).append(ev.finding)

    def on_run_end(self, key: str, ev: RunFinished) -> None:
        self.info.status = ev.status
        if ev.status == "finished":
            self.info.finished_at = ev.at

    def ordered(self) -> list[CardRecord]:
        return sorted(self.by_key.values(), key=lambda r: (r.host, r.slot, r.key))

    def document(self) -> dict[str, Any]:
        """The run's result document, from the records alone."""
        i = self.info
        return result_document(i.run_id, i.rack, i.plan, i.started_at, i.finished_at, self.ordered(), self.hosts)


def hosts_document(records: list[CardRecord], hosts: dict[str, list[Finding]] | None) -> list[dict[str, Any]]:
    """``hosts``: one entry per host of the run, with the findings it (a slot of it, its fabric) owns."""
    names = list(dict.fromkeys([r.host for r in records] + sorted(hosts or {})))
    return [{"name": h, "findings": [f.to_dict() for f in (hosts or {}).get(h, [])]} for h in names]


def result_document(run_id: str, rack: str | None, plan: str | None, started_at: str | None,
                    finished_at: str | None, records: list[CardRecord],
                    hosts: dict[str, list[Finding]] | None = None) -> dict[str, Any]:
    """docs/contract.md's result document, built from the run's records alone. ``telemetry`` carries
    each card's plot points (by card key) so the HTML view needs nothing but this document;
    ``hosts`` the findings owned by a host, a slot or a fabric rather than a card."""
    return {
        "schema": RESULT_SCHEMA,
        "run_id": run_id,
        "rack": rack,
        "plan": plan,
        "started_at": started_at,
        "finished_at": finished_at,
        "cards": [r.card_document() for r in records],
        "hosts": hosts_document(records, hosts),
        "telemetry": {r.key: r.samples for r in records if r.samples},
    }


def stored_document(store: Store, run_id: str) -> dict[str, Any]:
    """The result document of a stored run (resume of a finished run, evidence packs)."""
    run = store.run(run_id) or {}
    return result_document(run_id, run.get("rack"), run.get("plan"), run.get("started_at"),
                           run.get("finished_at"), store.records(run_id), store.host_findings(run_id))

