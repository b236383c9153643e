"""Power: drive the card to its power target and see whether it gets there (DCGM targeted_power).

A healthy card at full load draws close to its rated power. Below ``target_fraction_min`` of the
target the cause decides the repair: an enforced limit under the profile's TDP is a host setting
(``power.capped``, ``fix_host``); missing aux power (the card says so, or XID 54) is a cable
(``power.aux_unplugged``, ``check_power``); otherwise cables/PSU/VRM (``power.low``,
``check_power``). A card held back by thermal slowdown is the thermal stage's call, not a power
fault, so it gets an info finding here and no repair.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any, ClassVar

from pydantic import Field

from drivers.api import POWER_THROTTLES, THERMAL_THROTTLES, Telemetry
from stress.base import Stage, StageContext, StageParams, register_stage
from stress.bounds import INTERVAL_MAX_S, PHASE_MAX_S
from stress.hold import hold_load
from stress.model import Finding, Measurement, TestResult, test_status

XID_AUX_POWER = 54


class PowerParams(StageParams):
    hold_s: float = Field(default=60.0, gt=0, le=PHASE_MAX_S)  # device-clock seconds at full load
    sample_interval_s: float = Field(default=5.0, gt=0, le=INTERVAL_MAX_S)
    settle_s: float = Field(default=10.0, ge=0, le=PHASE_MAX_S)  # samples before this are not averaged
    intensity: float = Field(default=1.0, gt=0, le=1)


def _aux_missing(ctx: StageContext) -> tuple[bool, list[str]]:
    why = []
    if ctx.device.counters().aux_power_ok is False:
        why.append("card reports aux power not connected")
    ctx.drain_events()
    if any(e.kind == "xid" and e.code == XID_AUX_POWER for e in ctx.facts.events):
        why.append("XID 54 seen")
    return bool(why), why


@register_stage
class PowerStage(Stage):
    name = "power"
    Params = PowerParams
    codes: ClassVar[frozenset[str]] = frozenset({
        "power.aux_unplugged", "power.capped", "power.low", "power.thermal_limited"})
    requires: ClassVar[frozenset[str]] = frozenset({"compute"})

    def run(self, ctx: StageContext) -> TestResult:
        prm: PowerParams = ctx.params
        dev = ctx.device
        compute = dev.compute
        if compute is None:
            return TestResult("power", "skipped", metrics={"reason": "device offers no compute load"})
        t0 = dev.clock.now()
        samples: list[Telemetry] = list(hold_load(ctx, compute, prm.hold_s, prm.sample_interval_s, prm.intensity,
                                                  "power", "power: holding full load"))
        steady = [s for s in samples if s.time_s - t0 >= prm.settle_s] or samples[-1:]
        powers = [s.power_w for s in steady if s.power_w is not None]
        prof = ctx.profile.power
        target = prof.tdp
        metrics: dict[str, Any] = {"target_w": target}
        findings: list[Finding] = []
        duration = dev.clock.now() - t0
        if not powers:
            return TestResult("power", "error", duration_s=duration, metrics=metrics,
                              error="the device reports no power reading")
        mean_w = fmean(powers)
        limits = [s.power_limit_w for s in steady if s.power_limit_w is not None]
        limit = min(limits) if limits else None
        throttles = frozenset().union(*(s.throttle for s in steady))
        floor = prof.floor_w
        metrics.update({
            "mean_power_w": round(mean_w, 1),
            "fraction_of_target": round(mean_w / target, 3),
            "enforced_limit_w": limit,
            "throttle": sorted(throttles),
        })
        aux_missing, aux_why = _aux_missing(ctx)
        capped = limit is not None and limit < prof.tdp - 0.5
        evidence = {"mean_power_w": round(mean_w, 1), "target_w": target, "floor_w": round(floor, 1),
                    "enforced_limit_w": limit, "throttle": sorted(throttles)}
        low = mean_w < floor
        if aux_missing:
            findings.append(Finding(
                code="power.aux_unplugged", severity="fail", action="check_power", test="power",
                message=f"aux power missing ({'; '.join(aux_why)}): {mean_w:.0f} W at full load of {target:.0f} W",
                evidence={**evidence, "why": aux_why},
            ))
        if capped:
            findings.append(Finding(
                code="power.capped", severity="fail" if low else "warn", action="fix_host", test="power",
                message=(
                    f"enforced power limit {limit:.0f} W is under the profile's {prof.tdp:.0f} W;"
                    f" {mean_w:.0f} W at full load ({mean_w / target:.0%} of target)"
                ),
                evidence=evidence,
            ))
        if low and not aux_missing and not capped:
            if throttles & THERMAL_THROTTLES and not throttles & POWER_THROTTLES:
                findings.append(Finding(
                    code="power.thermal_limited", severity="info", action="none", test="power",
                    message=f"{mean_w:.0f} W of {target:.0f} W: held back by thermal slowdown (see thermal)",
                    evidence=evidence,
                ))
            else:
                findings.append(Finding(
                    code="power.low", severity="fail", action="check_power", test="power",
                    message=(
                        f"{mean_w:.0f} W at full load, below {prof.target_fraction_min:.0f} % of the"
                        f" {target:.0f} W target with no cap set and aux power present"
                    ),
                    evidence=evidence,
                ))
        measured = [Measurement("power under full load", round(mean_w, 1), round(floor, 1), "W", "min")]
        return TestResult("power", test_status(findings), duration_s=duration, metrics=metrics, findings=findings,
                          measurements=measured)
