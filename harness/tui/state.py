"""What the bench screen knows about each card, folded from engine events (no textual here).

Kept apart from the widgets so the folding can be tested without a terminal and so the app
can apply events at once but redraw at a steady rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from harness.views.table import profile_label
from stress.events import (
    Event,
    EventConsumer,
    FindingRaised,
    HostFinding,
    Identity,
    Outcome,
    Progress,
    Sample,
    StageStarted,
    TestDone,
    Verdict,
)
from stress.model import Finding, actions_of, verdict_of

HISTORY_MAX = 600  # samples kept per card for the sparklines
FINAL_OK = "done"



@dataclass
class CardState:
    key: str
    host: str
    slot: int
    serial: str
    model: str
    n_stages: int
    state: str = "pending"  # pending | running | done | lost | hung | failed | timed_out | cancelled
    detail: str | None = None
    stage: str | None = None
    stage_index: int = 0
    fraction: float = 0.0
    message: str = ""
    temperature_c: float | None = None
    power_w: float | None = None
    temps: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_MAX))
    powers: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_MAX))
    tests: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    verdict: str | None = None  # set only by the verdict engine (its Verdict event)
    actions: list[str] = field(default_factory=list)
    profile: str = ""  # the profile that judges the card; "(derived)" marks one built from its facts

    @property
    def finished(self) -> bool:
        return self.state not in ("pending", "running")

    @property
    def done_fraction(self) -> float:
        if self.finished:
            return 1.0
        return min(1.0, (self.stage_index + self.fraction) / max(1, self.n_stages))

    def fail_findings(self) -> list[dict[str, Any]]:
        return [f for f in self.findings if f.get("severity") == "fail"]

    def provisional_verdict(self) -> str | None:
        """What the findings so far point to (the verdict engine may still change it)."""
        try:
            return verdict_of([Finding.from_dict(f) for f in self.fail_findings()])
        except (TypeError, ValueError, KeyError):
            return None

    def live_actions(self) -> list[str]:
        if self.verdict is not None:
            return self.actions
        try:
            return actions_of([Finding.from_dict(f) for f in self.findings])
        except (TypeError, ValueError, KeyError):
            return []

    def needs_attention(self) -> bool:
        """Not (or not yet known to be) a pass: what the 'non-pass' filter keeps."""
        if self.verdict is not None:
            return self.verdict != "pass"
        return bool(self.fail_findings()) or (self.finished and self.state != FINAL_OK)


class BenchState(EventConsumer):
    """Every card of the run, keyed like the engine's events ("host/slot")."""

    def __init__(self, cards: list[Any], n_stages: int) -> None:
        self.cards: dict[str, CardState] = {}
        for c in cards:
            loc = c.locator or {}
            self.cards[c.key] = CardState(
                key=c.key, host=c.host, slot=c.slot, serial=str(loc.get("serial") or ""),
                model=str(loc.get("profile") or loc.get("model") or c.backend), n_stages=max(1, n_stages),
            )
        self.run_id = ""
        self.doc: dict[str, Any] | None = None
        self.hosts: dict[str, list[dict[str, Any]]] = {}  # findings a host, slot or fabric owns

    def apply(self, key: str, event: Event) -> CardState | None:
        """Fold one event into its card; returns the card it changed (None if unknown)."""
        if isinstance(event, HostFinding):
            self.hosts.setdefault(event.host, []).append(event.finding.to_dict())
            return None
        card = self.cards.get(key)
        if card is not None:
            self.handle(key, event)
        return card

    def on_identity(self, key: str, ev: Identity) -> None:
        card = self.cards[key]
        card.serial = str(ev.identity.get("serial") or card.serial)
        card.model = str(ev.identity.get("model") or card.model)
        card.profile = profile_label(ev.identity) or card.profile
        card.state = "running"

    def on_stage_start(self, key: str, ev: StageStarted) -> None:
        card = self.cards[key]
        card.state, card.stage, card.stage_index = "running", ev.stage, ev.index
        card.fraction, card.message = 0.0, ""

    def on_progress(self, key: str, ev: Progress) -> None:
        card = self.cards[key]
        card.fraction, card.message = ev.fraction, ev.message

    def on_sample(self, key: str, ev: Sample) -> None:
        card = self.cards[key]
        t, p = ev.data.get("temperature_c"), ev.data.get("power_w")
        if isinstance(t, int | float):
            card.temperature_c = float(t)
            card.temps.append(float(t))
        if isinstance(p, int | float):
            card.power_w = float(p)
            card.powers.append(float(p))

    def on_test(self, key: str, ev: TestDone) -> None:
        card = self.cards[key]
        card.tests.append(ev.result.to_dict())
        card.findings.extend(f.to_dict() for f in ev.result.findings)

    def on_finding(self, key: str, ev: FindingRaised) -> None:
        self.cards[key].findings.append(ev.finding.to_dict())

    def on_outcome(self, key: str, ev: Outcome) -> None:
        card = self.cards[key]
        card.state, card.detail, card.fraction = ev.state or FINAL_OK, ev.detail, 1.0

    def on_verdict(self, key: str, ev: Verdict) -> None:
        """The verdict engine's word on the card, given the moment it is final."""
        card = self.cards[key]
        card.verdict, card.actions = ev.verdict, list(ev.actions)
        card.findings = [f.to_dict() for f in ev.findings]

    def finish(self, doc: dict[str, Any]) -> None:
        """Take the verdict engine's word: verdicts, actions, the final findings and tests."""
        self.doc = doc
        self.hosts = {str(h.get("name")): list(h.get("findings") or []) for h in doc.get("hosts") or []
                      if h.get("findings")}
        for c in doc.get("cards", []):
            card = self.cards.get(str(c.get("key")))
            if card is None:
                continue
            card.verdict = c.get("verdict")
            card.actions = list(c.get("actions") or [])
            card.findings = list(c.get("findings") or [])
            card.tests = list(c.get("tests") or card.tests)
            card.serial = str(c.get("serial") or card.serial)
            card.model = str(c.get("model") or card.model)
            card.profile = profile_label(c) or card.profile
            if card.state in ("pending", "running"):
                card.state = str(c.get("state") or card.state)

    def counts(self) -> dict[str, int]:
        """Cards per final verdict (cards without one yet count under their state)."""
        out: dict[str, int] = {}
        for c in self.cards.values():
            k = c.verdict or (c.state if c.state != "pending" else "waiting")
            out[k] = out.get(k, 0) + 1
        return out

    def exit_code(self) -> int:
        """As ``burnin run``: 0 when every card passed, 1 otherwise (including an unfinished run)."""
        if self.doc is None:
            return 1
        return 0 if all(c.get("verdict") == "pass" for c in self.doc.get("cards", [])) else 1
