"""Thermal soak: hold full load, record the heating curve, stop once the die has settled.

The stage is the loop around the physics: it holds the chassis lease (``measure``, shared with
other cards' soaks) so no card's fan sweep changes the airflow under it, reads the inlet, lets a
card warm from earlier stages cool until it stops cooling (at most ``cooldown_s``), then loads
the card and samples it until the die has settled (``stress/thermal/settle.py``; at most
``soak_s``). Every sample goes to the store (``ctx.sample``), so the technician sees the curve.
The judging is ``stress/thermal/judge.py``; theta goes to ``ctx.facts.theta_c_per_w`` for the
compute stage's heat-versus-silicon call, the fitted tau to ``ctx.facts.thermal`` for the burn's
stop rule.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from drivers.api import Telemetry
from stress.base import Stage, StageContext, StageParams, register_stage
from stress.bounds import CELSIUS_MAX, INTERVAL_MAX_S, PHASE_MAX_S, SMALL_COUNT_MAX
from stress.events import Sample
from stress.fans import BenchLink, fan_suspects, inlet_reading
from stress.hold import hold_load
from stress.model import TestResult
from stress.settle import StopReason, drift_over
from stress.thermal.judge import Soak, judge_soak
from stress.thermal.settle import SoakSettle

COOL_FLAT_SAMPLES = 3  # the idle die has stopped cooling when its drift over these many samples is small


class ThermalParams(StageParams):
    soak_s: float = Field(default=300.0, gt=0, le=PHASE_MAX_S)  # device-clock seconds at full load, at most
    sample_interval_s: float = Field(default=5.0, gt=0, le=INTERVAL_MAX_S)
    intensity: float = Field(default=1.0, gt=0, le=1)
    steady_fraction: float = Field(default=0.25, gt=0, le=1)  # tail of the soak taken as steady state
    # idle first, at most this, so a warm card shows a curve
    cooldown_s: float = Field(default=0.0, ge=0, le=PHASE_MAX_S)
    stop_early: bool = True  # stop once settled (stress/thermal/settle.py); false: the whole soak_s and cooldown_s
    settle_taus: float = Field(default=3.0, gt=0, le=100)  # fitted time constants under load before it may stop
    settle_tol_c: float = Field(default=0.5, gt=0, le=CELSIUS_MAX)  # asymptote (and idle die) movement counted as settled
    min_samples: int = Field(default=6, ge=4, le=SMALL_COUNT_MAX)  # readings under load before a fit may decide


@register_stage
class ThermalStage(Stage):
    name = "thermal"
    Params = ThermalParams
    # fan.suspect: the soak's own look at the fans, kept in its metrics to blame heat on a fan
    codes: ClassVar[frozenset[str]] = frozenset({
        "thermal.high_resistance", "thermal.slowdown", "thermal.over_temp", "fan.suspect", "instrument.*"})
    requires: ClassVar[frozenset[str]] = frozenset({"compute"})

    def run(self, ctx: StageContext) -> TestResult:
        prm: ThermalParams = ctx.params
        dev = ctx.device
        assert dev.compute is not None  # `requires` guarantees it
        bench = BenchLink(ctx, "thermal")
        # the chassis's airflow holds still from the inlet reading to the last sample: another
        # card's fan sweep waits for the soak (and the soak for a sweep already under way)
        ctx.progress(0.0, "thermal: waiting for the chassis (no other card's fan sweep under way)")
        with bench.lease.measure():
            inlet = inlet_reading(ctx, bench)
            inlet_source = ("bench" if bench.ok and bench.probes is not None
                            else ("device" if dev.telemetry().inlet_c is not None else "profile"))
            suspects = fan_suspects(ctx, bench)
            stop: dict[str, Any] = self._cool(ctx, prm)
            t0 = dev.clock.now()
            samples: list[Telemetry] = [ctx.sample("thermal")]
            rule = SoakSettle(prm.settle_taus, prm.settle_tol_c, prm.min_samples)
            rule.add(samples[0])
            reason: StopReason = "limit" if prm.stop_early else "fixed"
            for tel in hold_load(ctx, dev.compute, prm.soak_s, prm.sample_interval_s, prm.intensity,
                                 "thermal", "thermal soak"):
                samples.append(tel)
                outlet = bench.outlet()
                if outlet is not None:
                    ctx.emit(Sample({"time_s": tel.time_s, "inlet_c": inlet, "outlet_c": outlet}, "thermal bench"))
                rule.add(tel)
                if prm.stop_early and rule.settled():
                    reason = "settled"
                    break
            duration = dev.clock.now() - t0
        stop.update({"stop_reason": reason, "soak_s": round(duration, 1), "soak_limit_s": prm.soak_s})
        if rule.why:
            stop["stop_why"] = rule.why
        soak = Soak(samples, inlet, inlet_source, suspects, ctx.facts.fans_checked, prm.steady_fraction,
                    duration, stop)
        res, summary = judge_soak(soak, ctx.profile, bench.findings)
        if summary is not None:
            ctx.facts.thermal = summary
            if summary.judged and summary.theta_c_per_w is not None:
                # a small rise over an unmeasured inlet would mislead the compute stage
                ctx.facts.theta_c_per_w = summary.theta_c_per_w
        return res

    @staticmethod
    def _cool(ctx: StageContext, prm: ThermalParams) -> dict[str, Any]:
        """Idle until the die stops cooling (at most ``cooldown_s``): a card warm from earlier
        stages then shows a whole heating curve, and a cool one does not wait for nothing."""
        clock = ctx.device.clock
        if prm.cooldown_s <= 0:
            return {}
        if not prm.stop_early:
            clock.sleep(prm.cooldown_s)
            return {"cooldown_s": prm.cooldown_s, "cooldown_stop": "fixed"}
        t0 = clock.now()
        times: list[float] = []
        temps: list[float] = []
        waited = 0.0
        while True:
            tel = ctx.device.telemetry()
            if tel.temperature_c is not None:
                times.append(tel.time_s)
                temps.append(tel.temperature_c)
            if len(times) >= COOL_FLAT_SAMPLES:
                drift = drift_over(times, temps, times[-1] - times[-COOL_FLAT_SAMPLES])
                if drift is not None and abs(drift) <= prm.settle_tol_c:
                    return {"cooldown_s": round(clock.now() - t0, 1), "cooldown_stop": "settled"}
            if waited >= prm.cooldown_s - 1e-9 or tel.temperature_c is None:
                return {"cooldown_s": round(clock.now() - t0, 1),
                        "cooldown_stop": "limit" if tel.temperature_c is not None else "no temperature"}
            step = min(prm.sample_interval_s, prm.cooldown_s - waited)
            clock.sleep(step)
            waited += step
