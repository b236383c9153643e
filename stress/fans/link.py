"""The bench as a stage uses it, failing softly; and the readings stages take through it.

A stage reaches the bench through the card's typed roles (``ctx.instruments``: fan controller,
tachometer, probes; ``drivers.instruments.roles``). A failed call becomes one ``instrument.*``
warning finding and ``None``, and the bench is not used again in that stage (no timeout after
timeout): a bench that fails is the bench's fault, never the card's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from drivers.instruments import InstrumentError
from drivers.instruments.roles import AirProbes, FanController, Tachometer
from stress.base import StageContext
from stress.model import Finding

T = TypeVar("T")
AIRFLOW_FAULTS = frozenset({"fan.stalled", "fan.weak"})  # findings that mean less air, not a bad reading


class BenchLink:
    """One stage's use of the bench roles; ``ok`` until the first failure."""

    def __init__(self, ctx: StageContext, test: str) -> None:
        roles = ctx.instruments
        self.chassis: FanController | None = roles.fan_controller
        self.tachometer: Tachometer | None = roles.tachometer
        self.probes: AirProbes | None = roles.probes
        self.lease = roles.lease
        self.test = test
        self.findings: list[Finding] = []
        self._live = roles.present  # False after a failure
        self._retry = roles.present  # restoring fan settings is worth one more try after a failure

    @property
    def ok(self) -> bool:
        return self._live

    def call(self, what: str, fn: Callable[..., T], *args: Any, force: bool = False) -> T | None:
        """``fn(*args)``, or None once the bench has failed (``force``: try it anyway, once more)."""
        if not self._live and not (force and self._retry):
            return None
        try:
            return fn(*args)
        except InstrumentError as e:
            if self._live:  # one finding per failure, not one per later attempt
                kind = type(e).__name__.removeprefix("Instrument").lower() or "error"
                self.findings.append(Finding(
                    code=f"instrument.{kind}", severity="warn", action="none", test=self.test,
                    message=f"{what}: {e}; carrying on without the bench",
                    evidence={"port": getattr(e, "port", None), "command": getattr(e, "command", None)},
                ))
            self._live = False
            if force:
                self._retry = False
            return None

    def chassis_count(self) -> int:
        """Chassis fans cooling this slot (0: no fan controller, or it failed)."""
        if self.chassis is None:
            return 0
        return self.call("chassis fan count", lambda: self.chassis.count if self.chassis else 0) or 0

    def tach(self, fan: int) -> float | None:
        """Optical tach reading of card fan ``fan``; None when there is no head or no fan in view."""
        tach = self.tachometer
        if tach is None or not self._live:
            return None
        heads = self.call("tachometer head count", lambda: tach.heads)
        if not heads or fan >= heads:
            return None
        rpm = self.call(f"tach {fan}", tach.rpm, fan)
        return None if rpm is None or not math.isfinite(rpm) else float(rpm)

    def inlet(self) -> float | None:
        return self.call("inlet probe", self.probes.inlet_c) if self.probes is not None else None

    def outlet(self) -> float | None:
        return self.call("outlet probe", self.probes.outlet_c) if self.probes is not None else None


def inlet_reading(ctx: StageContext, bench: BenchLink) -> float:
    """Inlet air: the bench probe, else what the device reports, else the profile's bench figure."""
    v = bench.inlet()
    if v is not None and math.isfinite(v):
        return float(v)
    tel_inlet = ctx.device.telemetry().inlet_c
    return float(tel_inlet) if tel_inlet is not None else ctx.profile.thermal.inlet


def fan_suspects(ctx: StageContext, bench: BenchLink) -> list[Finding]:
    """Airflow faults known for this card: the fan stage's, else a quick look at the fans now."""
    if ctx.facts.fans_checked:
        return [f for f in ctx.facts.fan_findings if f.code in AIRFLOW_FAULTS]
    prof = ctx.profile
    out: list[Finding] = []
    if prof.cooling.kind == "fan":
        tel = ctx.device.telemetry()
        for i, (rpm, duty) in enumerate(zip(tel.fans_rpm, tel.fans_duty_pct, strict=False)):
            if rpm is None or duty is None:
                continue
            true = bench.tach(i)
            exp = prof.cooling.rpm_at(duty)
            seen = true if true is not None else rpm
            if seen < prof.cooling.rpm_band(exp)[0]:
                out.append(Finding("fan.suspect", "warn", "replace_fan", "thermal",
                                   f"card fan {i} at {seen:.0f} RPM at {duty:.0f}% duty (curve {exp:.0f})",
                                   location={"fan": i}, evidence={"rpm": seen, "duty_pct": duty}))
    elif bench.chassis is not None and bench.ok:
        chassis = bench.chassis
        n = min(bench.chassis_count(), prof.cooling.chassis_fans)
        for ch in range(n):
            duty = bench.call(f"chassis fan {ch} duty", chassis.duty, ch)
            duty = prof.cooling.chassis_default_duty if duty is None else duty
            ch_rpm = bench.call(f"chassis fan {ch} rpm", chassis.rpm, ch)
            if ch_rpm is None:
                break
            exp = prof.cooling.rpm_at(duty, chassis=True)
            if ch_rpm < prof.cooling.rpm_band(exp)[0]:
                out.append(Finding("fan.suspect", "warn", "replace_fan", "thermal",
                                   f"chassis fan {ch} at {ch_rpm:.0f} RPM at {duty:.0f}% duty (curve {exp:.0f})",
                                   location={"fan": ch, "chassis": True}, evidence={"rpm": ch_rpm, "duty_pct": duty}))
    return out
