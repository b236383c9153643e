"""One card's record: everything a run learned about one card, folded from its events.

The harness keeps one ``CardRecord`` per card in memory while the run goes on; peer comparison
and the verdict engine read these records (not the store), and the result document's card shape
(docs/contract.md section 2) is built from them. The store persists the same events as they arrive,
so a record can be rebuilt from it for cards a resumed run had finished before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stress.events import (
    CardEvent,
    CardStarted,
    FindingRaised,
    Identity,
    Outcome,
    Progress,
    Sample,
    StageStarted,
    TestDone,
    Verdict,
)
from stress.model import Finding, TestResult

PLOT_FIELDS = ("time_s", "temperature_c", "power_w", "power_limit_w", "tag")
PLOT_POINTS_MAX = 1200  # samples kept per card for the report's plot (halved when full)
FINISHED_STATES = frozenset({"done", "lost", "hung"})  # a session that reached its end


def _heat(p: dict[str, Any]) -> float:
    t = p.get("temperature_c")
    return float(t) if isinstance(t, int | float) else float("-inf")


@dataclass
class CardRecord:
    key: str  # "host/slot", unique in the run
    host: str
    slot: int
    backend: str
    locator: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] | None = None
    state: str = "pending"  # pending | running | done | lost | hung | failed | timed_out | cancelled
    detail: str | None = None
    stage: str | None = None  # the stage running now (or when the session ended)
    stage_index: int = 0
    fraction: float = 0.0
    message: str = ""
    tests: list[TestResult] = field(default_factory=list)
    extra_findings: list[Finding] = field(default_factory=list)  # session- and run-level findings
    samples: list[dict[str, Any]] = field(default_factory=list)  # plot points, decimated
    verdict: str | None = None  # set by the verdict engine
    actions: list[str] = field(default_factory=list)
    judged: list[Finding] = field(default_factory=list)  # the verdict engine's de-duplicated findings
    # a verdict given and later changed (a peer comparison that came after): each change and why
    verdict_changes: list[dict[str, Any]] = field(default_factory=list)
    incomplete: dict[str, Any] | None = None  # judged when the run ended before the card did: why, stages not run
    started_at: str | None = None
    finished_at: str | None = None

    # -- who ------------------------------------------------------------------------------------
    @property
    def serial(self) -> str | None:
        return (self.identity or {}).get("serial") or self.locator.get("serial")

    @property
    def model(self) -> str | None:
        return (self.identity or {}).get("model") or self.locator.get("profile") or self.locator.get("model")

    @property
    def profile_name(self) -> str:
        return str((self.identity or {}).get("profile") or self.locator.get("profile") or "")

    @property
    def finished(self) -> bool:
        return self.state not in ("pending", "running")

    @property
    def completed(self) -> bool:
        """The session reached its end (resume does not run it again)."""
        return self.state in FINISHED_STATES

    def findings(self) -> list[Finding]:
        """Every finding so far: each test's, then those raised outside a test."""
        return [f for t in self.tests for f in t.findings] + list(self.extra_findings)

    # -- folding events -------------------------------------------------------------------------
    def apply(self, ev: CardEvent | CardStarted | Verdict) -> None:
        if isinstance(ev, CardStarted):
            self.started_at = ev.at
        elif isinstance(ev, Verdict):
            if ev.note and self.verdict is not None and ev.incomplete is None:
                self.verdict_changes.append({"from": self.verdict, "to": ev.verdict, "why": ev.note, "at": ev.at})
            self.incomplete = None if ev.incomplete is None else {"why": ev.note, "not_run": list(ev.incomplete)}
            self.verdict, self.actions, self.judged = ev.verdict, list(ev.actions), list(ev.findings)
        elif isinstance(ev, Identity):
            self.identity = dict(ev.identity)
            self.state = "running"
        elif isinstance(ev, StageStarted):
            self.state, self.stage, self.stage_index = "running", ev.stage, ev.index
            self.fraction, self.message = 0.0, ""
        elif isinstance(ev, Progress):
            self.fraction, self.message = ev.fraction, ev.message
        elif isinstance(ev, Sample):
            self.add_sample(ev.to_dict())
        elif isinstance(ev, TestDone):
            self.tests.append(ev.result)
        elif isinstance(ev, FindingRaised):
            self.extra_findings.append(ev.finding)
        elif isinstance(ev, Outcome):
            self.state, self.detail, self.fraction = ev.state, ev.detail, 1.0
            if ev.stage:
                self.stage = ev.stage

    def add_sample(self, s: dict[str, Any]) -> None:
        """Keep what the report's plot needs. Past the cap, neighbours pair up and the hotter of
        each pair stays: half the points, evenly spread, and no temperature peak lost."""
        if s.get("temperature_c") is None and s.get("power_w") is None:
            return
        self.samples.append({k: s[k] for k in PLOT_FIELDS if s.get(k) is not None})
        if len(self.samples) > PLOT_POINTS_MAX:
            pts = self.samples
            self.samples = [max(pts[i:i + 2], key=_heat) for i in range(0, len(pts), 2)]

    def reset(self) -> None:
        """Forget partial results before the card runs again (resume)."""
        self.state, self.detail, self.stage, self.stage_index, self.fraction = "pending", None, None, 0, 0.0
        self.tests, self.extra_findings, self.samples = [], [], []
        self.verdict, self.actions, self.judged, self.verdict_changes = None, [], [], []
        self.incomplete = None

    # -- the contract's card shape --------------------------------------------------------------
    def card_document(self) -> dict[str, Any]:
        """docs/contract.md's card, plus ``key`` (which card of the run) and ``state`` (how it ended)."""
        return {
            "key": self.key,
            "host": self.host,
            "slot": self.slot,
            "backend": self.backend,
            "model": self.model,
            "serial": self.serial,
            "profile": self.profile_name or None,
            "profile_source": (self.identity or {}).get("profile_source") or ("config" if self.profile_name else None),
            "verdict": self.verdict or "retest",
            "actions": list(self.actions),
            "findings": [f.to_dict() for f in self.judged],
            "tests": [t.to_dict() for t in self.tests],
            "state": self.state,
            **({"verdict_changes": list(self.verdict_changes)} if self.verdict_changes else {}),
            **({"incomplete": dict(self.incomplete)} if self.incomplete else {}),
        }
