"""What the stages of one card session learn and pass on to each other, typed.

A card session runs its plan's stages in order on one card; some stages leave facts that later
ones (or the session itself) act on: preflight says the card is not ready, the fan stage says a
fan is weak so the soak blames heat on it before paste, the soak's theta lets the burn tell heat
from silicon. Each field says who writes it and who reads it, so a reader can follow a fact from
where it is made to where it is used, and mypy checks both ends.

A stage from outside burnin keeps its own facts in ``extra``, under its stage name, as an
instance of its own class (``facts.own(self.name, MyFacts)``): typed at both ends too, and no
key of burnin's own can collide with it. Facts live for one card session, in its worker; they
never leave the process (what a later reader needs goes into a stage's metrics or findings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from drivers.api import Conditions, DeviceEvent, ErrorCounters, Identity
from stress.model import Finding

T = TypeVar("T")


@dataclass(frozen=True)
class HealthBaseline:
    """The error counters the first health read saw, and when (device clock, seconds)."""

    counters: ErrorCounters
    at_s: float


@dataclass(frozen=True)
class PowerUpSnapshot:
    """Memory as found before anything wrote it: the non-zero bytes (address -> value), or
    ``None`` when there were too many to keep (memory not in a known state)."""

    nonzero: dict[int, int] | None


@dataclass(frozen=True)
class ThermalSummary:
    """What the soak concluded, for stages after it."""

    theta_c_per_w: float | None  # steady-state rise per watt (judged or not)
    judged: bool  # the rise was large enough to judge theta on
    slowdown: bool  # thermal slowdown under the rated power was seen
    t_max_c: float
    cause: str | None  # the action heat was blamed on ("replace_fan", "repaste"), if any
    tau_s: float | None = None  # the fitted thermal time constant, when the curve gave one
    t_steady_c: float | None = None  # the fitted asymptote under the soak's load, likewise


@dataclass
class SessionFacts:
    """The facts of one card session (see the module docstring)."""

    # the plan's (stage, params), in order. Written by: the session (harness/session.py,
    # harness/devices.py). Read by: preflight (which stages this card cannot run, said up front).
    plan: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # who the card is, as the first health read saw it. Written by: health. Read by: later stages
    # that need the card's identity (none of burnin's own yet; the session has it as an event).
    identity: Identity | None = None
    # the host's conditions on the card. Written by: preflight. Read by: memory (coverage names
    # the memory other processes hold).
    conditions: Conditions | None = None
    # why the card is not ready (a blocking preflight finding, not forced). Written by: preflight.
    # Read by: the session, which skips every stage with ``Stage.stress`` and says why.
    not_ready: str | None = None
    # the conditions a forced run measured under. Written by: preflight (force). Read by: the
    # session, which marks every later result with them.
    measured_under: list[str] = field(default_factory=list)
    # every device event (XID, health code) drained so far. Written by: ``StageContext.drain_events``
    # (any stage). Read by: health (event findings), power (XID 54 means aux power).
    events: list[DeviceEvent] = field(default_factory=list)
    # the first health read's counters. Written by: health (first run). Read by: health
    # (``final``: what grew over the whole session).
    health_baseline: HealthBaseline | None = None
    # memory before anything wrote it, taken once a session. Written and read by: memory (a later
    # memory stage in the same session, e.g. an overnight loop, reuses it).
    memory_powerup: PowerUpSnapshot | None = None
    # the fan stage's fan.* findings. Written by: fans. Read by: thermal (heat blamed on a fan
    # before paste, ``stress.fans.fan_suspects``).
    fan_findings: list[Finding] = field(default_factory=list)
    # the fan stage could judge every fan (with the bench where the fans are the chassis's).
    # Written by: fans. Read by: thermal (trusts ``fan_findings`` instead of a look of its own).
    fans_checked: bool = False
    # theta the soak judged on (a rise large enough to read). Written by: thermal. Read by: burn
    # (heat versus silicon for a miscompare).
    theta_c_per_w: float | None = None
    # the soak's conclusions. Written by: thermal. Read by: burn (the fitted tau bounds how long
    # the die takes to settle under load).
    thermal: ThermalSummary | None = None
    # facts of stages from outside burnin, by stage name (see ``own``).
    extra: dict[str, object] = field(default_factory=dict)

    def own(self, stage: str, kind: type[T]) -> T:
        """The facts ``stage`` keeps for itself: an instance of ``kind`` (a class whose
        constructor takes no arguments, e.g. a dataclass with defaults), made on first use.
        A different kind already kept under that name is a TypeError (two stages, one name)."""
        got = self.extra.get(stage)
        if got is None:
            made = kind()
            self.extra[stage] = made
            return made
        if not isinstance(got, kind):
            raise TypeError(f"facts of stage {stage!r} are a {type(got).__name__}, not a {kind.__name__}")
        return got
