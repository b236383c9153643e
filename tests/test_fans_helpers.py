"""Shared helpers for the thermal/fan/power/PCIe stage tests (no tests of its own).

``DirectBench`` has the BenchController's methods but calls the mock card's bench plant
directly, so many-seed sweeps stay fast; the pty simulator path is covered in test_fans_stage.
"""

from __future__ import annotations

from typing import Any

from drivers.instruments.roles import BenchRoles
from drivers.mock.device import MockDevice
from drivers.mock.faults import parse_fault
from drivers.profiles import load_profile
from stress import model
from stress.base import StageContext, get_stage
from stress.events import Sample
from stress.facts import SessionFacts

PROFILES = ("h100-sxm5-80gb", "rtx4090-blower-48gb", "ascend-910b")


def make_dev(profile: str, faults: list[dict[str, Any]] | None = None, seed: int = 1, serial: str = "T-1") -> MockDevice:
    prof = load_profile(profile)
    parsed = [parse_fault(f, 64 << 20, prof.cooling.fault_fans) for f in faults or []]
    return MockDevice(prof, serial=serial, seed=seed, faults=parsed)


class DirectBench:
    """A BenchController look-alike wired straight to a plant (no serial line)."""

    def __init__(self, plant: MockDevice, tachs: int = 2) -> None:
        self.plant = plant
        self.tachs = tachs
        self.calls: list[str] = []

    @property
    def fans(self) -> int:
        return self.plant.chassis_fans()

    def set_fan_duty(self, ch: int, pct: float) -> None:
        self.calls.append(f"set {ch} {pct}")
        self.plant.set_chassis_duty(ch, pct)

    def fan_duty(self, ch: int) -> float:
        return self.plant.chassis_duty(ch)

    def fan_rpm(self, ch: int) -> float:
        return self.plant.chassis_rpm(ch)

    def tach_rpm(self, fan: int) -> float | None:
        return self.plant.card_fan_true_rpm(fan)

    def inlet_c(self) -> float:
        return self.plant.inlet_c()

    def outlet_c(self) -> float:
        return self.plant.outlet_c()


def run_stage(name: str, dev: MockDevice, bench: Any = None, facts: SessionFacts | None = None,
              **params: Any) -> tuple[model.TestResult, StageContext, list[tuple[str, dict[str, Any]]]]:
    cls = get_stage(name)
    events: list[tuple[str, dict[str, Any]]] = []  # (kind, what a consumer sees) of each event
    ctx = StageContext(
        device=dev, profile=dev.profile, params=cls.Params(**params), serial=dev.serial,
        emit=lambda ev: events.append((ev.kind, ev.to_dict() if isinstance(ev, Sample) else vars(ev))),
        instruments=BenchRoles.of(bench) if bench is not None else BenchRoles(),
        facts=facts if facts is not None else SessionFacts(),
    )
    return cls().run(ctx), ctx, events


def fails(res: model.TestResult) -> list[model.Finding]:
    return [f for f in res.findings if f.severity == "fail"]


def codes(res: model.TestResult, severity: str = "fail") -> set[tuple[str, str]]:
    return {(f.code, f.action) for f in res.findings if f.severity == severity}
