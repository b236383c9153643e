"""Host stages: checks that run once per host over all its cards at once (the links between them).

A card stage sees one card; the interconnect between cards can only be tested with every card of
the host held by one worker. A ``HostStage`` is registered like any stage and named in a plan like
any stage; the harness runs it as a host job after the host's cards have finished their own
stages, opening every card of the host through the device API. It returns one ``TestResult`` per
card (what the stage found on that card, or why it did not apply) and the findings owned by the
host, a slot or the fabric rather than any card.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from drivers.api import Device
from drivers.profiles import Profile
from stress.base import Stage, StageContext
from stress.events import CardEvent, Progress
from stress.model import Finding, TestResult

KeyedEmit = Callable[[str, CardEvent], None]


@dataclass
class HostCard:
    """One card of the host as a host stage sees it."""

    key: str
    slot: int
    serial: str
    device: Device
    profile: Profile


@dataclass
class HostContext:
    """What a host stage gets: the host's cards (those whose own session ended well), its
    parameters, and a way to report progress on every card of the host."""

    host: str
    cards: list[HostCard]
    params: Any
    emit: KeyedEmit = lambda key, event: None
    state: dict[str, Any] = field(default_factory=dict)

    def progress(self, fraction: float, message: str = "") -> None:
        ev = Progress(max(0.0, min(1.0, fraction)), message)
        for c in self.cards:
            self.emit(c.key, ev)


@dataclass
class HostResult:
    """A host stage's word: a test per card key, and the findings the host owns."""

    tests: dict[str, TestResult]
    host_findings: list[Finding] = field(default_factory=list)


class HostStage(Stage):
    scope: ClassVar[str] = "host"
    stress: ClassVar[bool] = True

    def run(self, ctx: StageContext) -> TestResult:
        raise TypeError(f"{self.name} is a host stage: the harness runs it over a host's cards (run_host)")

    @abstractmethod
    def run_host(self, ctx: HostContext) -> HostResult: ...
