"""What a card's session reports, as it happens: one typed event class per kind.

A worker sends these (pickled, over its pipe or through Ray) the moment a measurement exists, so
a crash later loses nothing. The harness hands each one to every consumer through one dispatch,
``EventConsumer.handle``: the run's record folder, the store writer, the progress bars and the TUI
are each one ``EventConsumer`` subclass that overrides the ``on_*`` methods it cares about. A new
consumer is one class, never another if/elif chain over event kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stress.model import Finding, TestResult


@dataclass(frozen=True)
class Identity:
    """Who the card is (``drivers.api.Identity.to_dict()``, serial filled from the UUID if needed)."""

    kind: ClassVar[str] = "identity"
    identity: dict[str, Any]

    @property
    def serial(self) -> str | None:
        return self.identity.get("serial")


@dataclass(frozen=True)
class StageStarted:
    kind: ClassVar[str] = "stage_start"
    index: int
    stage: str
    timeout_s: float | None = None


@dataclass(frozen=True)
class Progress:
    kind: ClassVar[str] = "progress"
    fraction: float
    message: str = ""


@dataclass(frozen=True)
class Sample:
    """One telemetry reading (``Telemetry.to_dict()`` plus anything a stage adds), tagged."""

    kind: ClassVar[str] = "sample"
    data: dict[str, Any]
    tag: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, **self.data}


@dataclass(frozen=True)
class TestDone:
    """A stage finished on the card (whatever its status), with its findings."""

    __test__: ClassVar[bool] = False  # not a pytest test class
    kind: ClassVar[str] = "test"
    result: TestResult
    index: int | None = None


@dataclass(frozen=True)
class FindingRaised:
    """A finding outside any one test (a session-level or run-level observation)."""

    kind: ClassVar[str] = "finding"
    finding: Finding


@dataclass(frozen=True)
class Outcome:
    """How the card's session ended: done, lost, hung, or (from the supervisor) failed, timed_out,
    cancelled; ``stage`` is where it was when it ended abnormally."""

    kind: ClassVar[str] = "outcome"
    state: str
    stage: str | None = None
    detail: str | None = None
    finding: Finding | None = None  # the supervisor's own word on an abnormal end (e.g. host.lost)


CardEvent = Identity | StageStarted | Progress | Sample | TestDone | FindingRaised | Outcome
EVENT_TYPES: tuple[type, ...] = (Identity, StageStarted, Progress, Sample, TestDone, FindingRaised, Outcome)
Emit = Callable[[CardEvent], None]

_HANDLER = {Identity: "on_identity", StageStarted: "on_stage_start", Progress: "on_progress", Sample: "on_sample",
            TestDone: "on_test", FindingRaised: "on_finding", Outcome: "on_outcome"}


class EventConsumer:
    """Something that folds card events: override the ``on_*`` methods you need."""

    def handle(self, key: str, event: CardEvent) -> None:
        """The one dispatch: call the method for this event's type."""
        getattr(self, _HANDLER[type(event)])(key, event)

    def on_identity(self, key: str, ev: Identity) -> None: ...

    def on_stage_start(self, key: str, ev: StageStarted) -> None: ...

    def on_progress(self, key: str, ev: Progress) -> None: ...

    def on_sample(self, key: str, ev: Sample) -> None: ...

    def on_test(self, key: str, ev: TestDone) -> None: ...

    def on_finding(self, key: str, ev: FindingRaised) -> None: ...

    def on_outcome(self, key: str, ev: Outcome) -> None: ...


@dataclass
class Recorder:
    """An ``Emit`` that keeps every event (stage unit tests, the devices listing)."""

    events: list[CardEvent] = field(default_factory=list)

    def __call__(self, event: CardEvent) -> None:
        self.events.append(event)

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]
