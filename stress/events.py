"""The run as one stream of typed events: what a card's session reports, and what the run
itself decides (run started, card started, verdict, run finished).

A worker sends its card events (over its pipe, or through Ray in their JSON form) the moment a
measurement exists, so a crash later loses nothing. The run adds its own events to the same
stream, and hands each one to every consumer through one dispatch, ``EventConsumer.handle``: the
run's records, the store, the events file, the progress bars, the metrics and the TUI are each one
``EventConsumer`` subclass that overrides the ``on_*`` methods it cares about. A new consumer is one
class, never another if/elif chain over event kinds.

Every event has a JSON codec (``to_json`` / ``event_from_json``), versioned by ``EVENT_SCHEMA``:
``burnin run --events FILE`` writes the stream as JSON lines, and the result document can be
rebuilt from such a file alone. Run-level events carry the key ``""``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from stress.model import Finding, TestResult

EVENT_SCHEMA = 1  # the ``v`` of every JSON event; a reader refuses a newer one
RUN_KEY = ""  # the key run-level events travel under (card events carry their card's key)


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


@dataclass(frozen=True)
class RunStarted:
    """A run began: which rack, plan and cards (``cards``: one dict per card with ``key``,
    ``host``, ``slot``, ``backend`` and ``locator``)."""

    kind: ClassVar[str] = "run_start"
    run_id: str
    rack: str | None
    plan: str | None
    started_at: str
    cards: list[dict[str, Any]]
    config_path: str = ""
    plan_path: str = ""
    stages: list[str] = field(default_factory=list)  # the plan's stage names, in order


@dataclass(frozen=True)
class RunResumed:
    """An interrupted run goes on (``burnin resume``): ``keys`` are the cards that run again."""

    kind: ClassVar[str] = "run_resume"
    run_id: str
    at: str
    keys: list[str]


@dataclass(frozen=True)
class CardStarted:
    """The card's job was handed to the engine (wall-clock time)."""

    kind: ClassVar[str] = "card_start"
    at: str


@dataclass(frozen=True)
class Verdict:
    """The verdict engine's word on a card: verdict, actions and the de-duplicated findings it
    rests on. ``note`` says anything a reader must know (why it changed, why it is incomplete)."""

    kind: ClassVar[str] = "verdict"
    verdict: str
    actions: list[str]
    findings: list[Finding]
    at: str = ""
    note: str = ""
    incomplete: list[str] | None = None  # the run ended before the card did: the stages it did not run


@dataclass(frozen=True)
class HostFinding:
    """A finding owned by a host, one of its slots or its fabric rather than by a card (the
    interconnect stage's host gates, a baseboard slot the history blames). Run-level: it travels
    under the key ``""`` and lands in the result document's ``hosts``."""

    kind: ClassVar[str] = "host_finding"
    host: str
    finding: Finding


@dataclass(frozen=True)
class RunFinished:
    """The run ended: ``status`` is finished, interrupted (resumable) or stopped (from the TUI)."""

    kind: ClassVar[str] = "run_end"
    at: str
    status: str = "finished"


CardEvent = Identity | StageStarted | Progress | Sample | TestDone | FindingRaised | Outcome
RunEvent = RunStarted | RunResumed | CardStarted | Verdict | HostFinding | RunFinished
Event = CardEvent | RunEvent
EVENT_TYPES: tuple[type, ...] = (Identity, StageStarted, Progress, Sample, TestDone, FindingRaised, Outcome,
                                 RunStarted, RunResumed, CardStarted, Verdict, HostFinding, RunFinished)
Emit = Callable[[CardEvent], None]

_HANDLER: dict[type, str] = {
    Identity: "on_identity", StageStarted: "on_stage_start", Progress: "on_progress", Sample: "on_sample",
    TestDone: "on_test", FindingRaised: "on_finding", Outcome: "on_outcome", RunStarted: "on_run_start",
    RunResumed: "on_run_resume", CardStarted: "on_card_start", Verdict: "on_verdict", RunFinished: "on_run_end",
    HostFinding: "on_host_finding",
}
_BY_KIND: dict[str, type] = {cls.kind: cls for cls in EVENT_TYPES}  # type: ignore[attr-defined]


class EventCodecError(ValueError):
    """A JSON event this version of burnin cannot read (one line says which and why)."""


def _finding_from(d: Any) -> Finding:
    return Finding.from_dict(dict(d))


def _encode_value(name: str, value: Any) -> Any:
    if isinstance(value, TestResult):
        return {**value.to_dict_full(), "duration_s": value.duration_s}
    if isinstance(value, Finding):
        return value.to_dict()
    if name == "findings":
        return [f.to_dict() for f in value]
    return value


def _decode_value(cls: type, name: str, value: Any) -> Any:
    if cls is TestDone and name == "result":
        return TestResult.from_dict(value)
    if name == "finding":
        return None if value is None else _finding_from(value)
    if cls is Verdict and name == "findings":
        return [_finding_from(f) for f in value]
    return value


def to_json(key: str, event: Event) -> dict[str, Any]:
    """One event as a JSON object: ``{"v", "type", "key", ...its fields}``."""
    out: dict[str, Any] = {"v": EVENT_SCHEMA, "type": event.kind, "key": key}
    for f in fields(event):
        out[f.name] = _encode_value(f.name, getattr(event, f.name))
    return out


def event_from_json(obj: Any) -> tuple[str, Event]:
    """(key, event) from ``to_json``'s object; EventCodecError names what is wrong."""
    if not isinstance(obj, dict):
        raise EventCodecError("an event is a JSON object")
    v = obj.get("v")
    if not isinstance(v, int) or v > EVENT_SCHEMA or v < 1:
        raise EventCodecError(f"event schema version {v!r} is not one this burnin reads (<= {EVENT_SCHEMA})")
    cls = _BY_KIND.get(str(obj.get("type")))
    if cls is None:
        raise EventCodecError(f"unknown event type {obj.get('type')!r}")
    key = obj.get("key")
    if not isinstance(key, str):
        raise EventCodecError(f"{cls.kind} event without a string key")  # type: ignore[attr-defined]
    kwargs = {}
    try:
        for f in fields(cls):
            if f.name in obj:
                kwargs[f.name] = _decode_value(cls, f.name, obj[f.name])
        return key, cls(**kwargs)
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise EventCodecError(f"{cls.kind} event: {e}") from None  # type: ignore[attr-defined]


class EventConsumer:
    """Something that folds events: override the ``on_*`` methods you need."""

    def handle(self, key: str, event: Event) -> None:
        """The one dispatch: call the method for this event's type."""
        getattr(self, _HANDLER[type(event)])(key, event)

    def on_identity(self, key: str, ev: Identity) -> None: ...

    def on_stage_start(self, key: str, ev: StageStarted) -> None: ...

    def on_progress(self, key: str, ev: Progress) -> None: ...

    def on_sample(self, key: str, ev: Sample) -> None: ...

    def on_test(self, key: str, ev: TestDone) -> None: ...

    def on_finding(self, key: str, ev: FindingRaised) -> None: ...

    def on_outcome(self, key: str, ev: Outcome) -> None: ...

    def on_run_start(self, key: str, ev: RunStarted) -> None: ...

    def on_run_resume(self, key: str, ev: RunResumed) -> None: ...

    def on_card_start(self, key: str, ev: CardStarted) -> None: ...

    def on_verdict(self, key: str, ev: Verdict) -> None: ...

    def on_host_finding(self, key: str, ev: HostFinding) -> None: ...

    def on_run_end(self, key: str, ev: RunFinished) -> None: ...


@dataclass
class Recorder:
    """An ``Emit`` that keeps every event (stage unit tests, the devices listing)."""

    events: list[CardEvent] = field(default_factory=list)

    def __call__(self, event: CardEvent) -> None:
        self.events.append(event)

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]
