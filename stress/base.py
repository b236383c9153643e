"""The stage interface: what a check that runs on one card looks like to the harness.

A stage is one class in one module of ``stress/`` decorated with ``@register_stage``; the
registry finds it by importing every module of the package (third parties: the
``burnin.stages`` entry-point group). A stage talks to the device API only, declares its plan
parameters as a strict pydantic model (so a typo in a plan is an exit-2 error naming the field),
and returns a TestResult whose findings carry their repair action.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from drivers.api import Device, DeviceEvent, Telemetry
from drivers.instruments.roles import BenchRoles
from drivers.profiles import Profile
from stress.bounds import WATCHDOG_MAX_S
from stress.events import Emit, Progress, Sample
from stress.facts import SessionFacts
from stress.model import Finding, TestResult


class StageParams(BaseModel):
    """Base of every stage's parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    timeout_s: float = Field(default=1800.0, gt=0, le=WATCHDOG_MAX_S)  # wall-clock watchdog for the whole stage on this card
    # kinds of card (a vendor, a cooling or memory kind, a backend, a profile name; "any") on which
    # the plan accepts this stage being skipped for a missing capability (e.g. fans on "passive")
    optional_for: list[str] = []



@dataclass
class StageContext:
    """What a stage gets: the device, its profile, its parameters and a way to report.

    ``facts`` are what the stages of one card session pass on to each other, typed
    (``stress/facts.py``: e.g. the health stage's baseline counters, the thermal stage's theta
    for the compute stage's heat-versus-silicon call).
    ``instruments`` is the bench as this card's slot sees it: typed roles (``fan_controller``,
    ``tachometer``, ``probes``, ``relay``; ``None`` where the bench has none) and the chassis
    ``lease`` that stages changing chassis airflow or measuring heat hold.
    """

    device: Device
    profile: Profile
    params: Any  # the stage's StageParams subclass instance
    serial: str
    slot: int = 0
    emit: Emit = lambda event: None
    instruments: BenchRoles = field(default_factory=BenchRoles)
    facts: SessionFacts = field(default_factory=SessionFacts)
    prior: list[TestResult] = field(default_factory=list)

    def progress(self, fraction: float, message: str = "") -> None:
        self.emit(Progress(max(0.0, min(1.0, fraction)), message))

    def sample(self, tag: str = "") -> Telemetry:
        """Read telemetry and record it as a sample (it lands in the store)."""
        t = self.device.telemetry()
        self.emit(Sample(t.to_dict(), tag))
        return t

    def drain_events(self) -> list[DeviceEvent]:
        """New device events, also kept in ``facts.events`` for later stages."""
        new = self.device.events()
        self.facts.events.extend(new)
        return new


class Stage(ABC):
    name: ClassVar[str]
    # every finding code the stage can emit (from ``run`` and ``compare_peers``, including its
    # watchdog code); a trailing ".*" declares a family ("xid.*"). ``burnin stages`` lists them and
    # the tests fail on a finding whose code neither its stage nor the harness declares.
    codes: ClassVar[frozenset[str]] = frozenset()
    Params: ClassVar[type[StageParams]] = StageParams
    requires: ClassVar[frozenset[str]] = frozenset()  # device handles needed: memory, compute, fans
    # What it means when the worker is killed because this stage ran past its ``timeout_s``: a
    # stage that launches kernels says ``compute.hang`` (a kernel never came back).
    watchdog_code: ClassVar[str] = "harness.stage_timeout"
    # A stage that can re-probe a card after a slot power-cycle (did it come back and stay up?)
    # gives the parameters to do it with; the session asks ``reprobe_stage()`` for it.
    reprobe_params: ClassVar[dict[str, Any] | None] = None
    # A stage ``burnin devices`` runs on each card (no stress), with these parameters.
    listing_params: ClassVar[dict[str, Any] | None] = None
    # loads or commands the card: skipped on a card preflight found not ready (False: only reads)
    stress: ClassVar[bool] = True
    # "card": runs in each card's own session; "host": runs once per host over all its cards, after
    # their card stages (stress.hoststage.HostStage: the harness runs it as a host job)
    scope: ClassVar[str] = "card"

    @abstractmethod
    def run(self, ctx: StageContext) -> TestResult: ...

    @classmethod
    def cannot_run(cls, device: Device, profile: Profile, instruments: BenchRoles) -> str | None:
        """Why this stage cannot run on this card, known before it starts (a missing handle, no
        fan control, no bench) and what would let it run; None when nothing is known against it.
        Must not build what it asks about (``Device.unavailable``)."""
        for h in sorted(cls.requires):
            why = device.unavailable(h)
            if why:
                return f"no {h} handle: {why}"
        return None

    @classmethod
    def compare_peers(cls, results: list[tuple[str, Profile, TestResult]]) -> dict[str, list[Finding]]:
        """Run-level findings from comparing identical cards (key -> findings). Default: none."""
        return {}


def declares(codes: frozenset[str], code: str) -> bool:
    """Whether ``codes`` (literal codes and ".*" families) covers ``code``; a code that is itself
    a family pattern ("instrument.*") is covered only by that family or a wider one."""
    if code in codes:
        return True
    return any(c.endswith(".*") and code.startswith(c[:-1]) for c in codes)


def skipped(name: str, reason: str, kind: str = "capability", **metrics: Any) -> TestResult:
    """A skipped result that says why: ``kind`` is "capability" (the card or host lacks what the
    stage needs: counts against a pass), "not_ready" (preflight) or "card" (the card was lost)."""
    return TestResult(name=name, status="skipped", error=reason,
                      metrics={**metrics, "reason": reason, "skip": {"kind": kind, "reason": reason}})


_REGISTRY: dict[str, type[Stage]] = {}
_LOADED = False
_BROKEN: dict[str, str] = {}  # module -> why it failed to import (named when a stage is missing)


def register_stage(cls: type[Stage]) -> type[Stage]:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two stages named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    import stress

    for mod in pkgutil.walk_packages(stress.__path__, "stress."):
        if mod.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        try:
            importlib.import_module(mod.name)
        except Exception as e:  # noqa: BLE001 - one broken module must not hide every other stage
            _BROKEN[mod.name] = f"{type(e).__name__}: {e}"
    for ep in importlib.metadata.entry_points(group="burnin.stages"):
        register_stage(ep.load())
    _LOADED = True


def stages() -> dict[str, type[Stage]]:
    _load_all()
    return dict(_REGISTRY)


def reprobe_stage() -> type[Stage] | None:
    """The stage that re-probes a card after a slot power-cycle, if one is registered."""
    return next((cls for _, cls in sorted(stages().items()) if cls.reprobe_params is not None), None)


def listing_stages() -> list[type[Stage]]:
    """The stages ``burnin devices`` runs on each card, in name order."""
    return [cls for _, cls in sorted(stages().items()) if cls.listing_params is not None]


def get_stage(name: str) -> type[Stage]:
    """A registered stage by name, or a user's stage class by import path ``package.module:Class``."""
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(mod_name), attr)
        except Exception as e:  # noqa: BLE001 - any failure importing a user's stage is their input's fault
            raise KeyError(f"cannot load stage {name!r}: {type(e).__name__}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise KeyError(f"{name!r} is not a Stage class")
        return cls
    all_stages = stages()
    if name not in all_stages:
        broken = "".join(f"; {m} failed to import ({why})" for m, why in sorted(_BROKEN.items()))
        raise KeyError(f"unknown stage {name!r} (have: {', '.join(sorted(all_stages))}){broken}")
    return all_stages[name]
