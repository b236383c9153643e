"""Thermal soak: hold full load, record the heating curve, fit theta (°C/W) and the time constant.

A die under constant power heats like a first-order system, ``T(t) = T_inf - B exp(-t / tau)``,
and settles at ``inlet + power x theta``. Theta is what a bench can fix: dried paste, a missing
pad or a loose heatsink raise it (``thermal.high_resistance`` -> ``repaste``). Less air raises it
too, so heat is attributed to a fan fault first (the fan stage's findings, or a look at the fans
here), then to theta: a dead fan is never also called paste. Slowdown (a thermal throttle
reason under the rated power) and a die over its operating limit get the same attribution.
Theta is judged only where the rise is large enough to read (the card drew near its target,
or it was held at its slowdown point), since an unknown inlet spoils small rises.

The soak holds the chassis lease (``measure``, shared with other cards' soaks) so no card's fan
sweep changes the airflow under it. Every sample goes to the store (``ctx.sample``), so the technician sees the curve; theta goes to
``ctx.facts.theta_c_per_w`` for the compute stage's heat-versus-silicon call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from drivers.api import THERMAL_THROTTLES, Telemetry
from stress.base import Stage, StageContext, StageParams, register_stage
from stress.events import Sample
from stress.facts import ThermalSummary
from stress.fans import BenchLink, fan_suspects, inlet_reading
from stress.hold import hold_load
from stress.model import Finding, Measurement, TestResult, test_status

TAU_GRID = 240  # candidate time constants for the fit (log-spaced)
MIN_FIT_RISE_C = 5.0  # a heating curve smaller than this (card already hot) gives no usable tau


class ThermalParams(StageParams):
    soak_s: float = Field(default=300.0, gt=0)  # device-clock seconds at full load
    sample_interval_s: float = Field(default=5.0, gt=0)
    intensity: float = Field(default=1.0, gt=0, le=1)
    steady_fraction: float = Field(default=0.25, gt=0, le=1)  # tail of the soak taken as steady state
    cooldown_s: float = Field(default=0.0, ge=0)  # idle first, so a card warm from earlier stages shows a curve


@dataclass(frozen=True)
class Fit:
    t_inf: float  # asymptotic temperature, °C
    amplitude: float  # B in T_inf - B exp(-t/tau)
    tau: float  # seconds
    rmse: float

    def transient(self, t: float) -> float:
        """How far below its steady state the die still is, ``t`` seconds into the load."""
        return self.amplitude * math.exp(-t / self.tau)


def fit_first_order(t: np.ndarray, temp: np.ndarray) -> Fit | None:
    """Least squares ``temp = A - B exp(-t/tau)``: linear in (A, B) for each tau on a log grid,
    refined once on a finer grid around the best. ``None`` with fewer than 4 points."""
    if len(t) < 4 or float(t[-1] - t[0]) <= 0:
        return None
    span = float(t[-1] - t[0])
    dt = float(np.min(np.diff(t))) if len(t) > 1 else span

    def best(taus: np.ndarray) -> tuple[float, float, float, float]:
        out = (math.inf, 0.0, 0.0, 0.0)
        for tau in taus:
            x = np.column_stack([np.ones_like(t), -np.exp(-(t - t[0]) / tau)])
            coef, *_ = np.linalg.lstsq(x, temp, rcond=None)
            sse = float(np.sum((x @ coef - temp) ** 2))
            if sse < out[0]:
                out = (sse, float(coef[0]), float(coef[1]), float(tau))
        return out

    coarse = np.geomspace(max(dt / 4, 1e-3), span * 10, TAU_GRID)
    _, _, _, tau0 = best(coarse)
    ratio = float(coarse[1] / coarse[0])
    sse, a, b, tau = best(np.geomspace(tau0 / ratio, tau0 * ratio, 41))
    return Fit(t_inf=a, amplitude=b, tau=tau, rmse=math.sqrt(sse / len(t)))


def _cause(theta: float | None, suspects: list[Finding], ctx: StageContext) -> tuple[str, str] | None:
    """Fan fault first, then theta above the healthy band (verdict-rules.md)."""
    if suspects:
        f = suspects[0]
        return "replace_fan", f"fan fault: {f.message}"
    if theta is not None and theta > ctx.profile.thermal.theta_max:
        return "repaste", f"theta {theta:.4f} °C/W above the healthy band (max {ctx.profile.thermal.theta_max})"
    return None


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
            if prm.cooldown_s > 0:
                dev.clock.sleep(prm.cooldown_s)
            t0 = dev.clock.now()
            samples: list[Telemetry] = [ctx.sample("thermal")]
            for tel in hold_load(ctx, dev.compute, prm.soak_s, prm.sample_interval_s, prm.intensity,
                                 "thermal", "thermal soak"):
                samples.append(tel)
                outlet = bench.outlet()
                if outlet is not None:
                    ctx.emit(Sample({"time_s": tel.time_s, "inlet_c": inlet, "outlet_c": outlet}, "thermal bench"))
            duration = dev.clock.now() - t0
        return self._judge(ctx, prm, samples, inlet, inlet_source, suspects, bench, duration)

    def _judge(self, ctx: StageContext, prm: ThermalParams, samples: list[Telemetry], inlet: float,
               inlet_source: str, suspects: list[Finding], bench: BenchLink, duration: float) -> TestResult:
        prof = ctx.profile
        th = prof.thermal
        pts = [s for s in samples if s.temperature_c is not None]
        metrics: dict[str, Any] = {"inlet_c": round(inlet, 2), "inlet_source": inlet_source, "samples": len(samples)}
        findings: list[Finding] = list(bench.findings)
        if len(pts) < 4:
            return TestResult("thermal", "error", duration_s=duration, metrics=metrics, findings=findings,
                              error="too few temperature readings to fit a heating curve")
        t = np.array([s.time_s for s in pts], dtype=float)
        temp = np.array([s.temperature_c for s in pts], dtype=float)
        # the firmware clamps the die at its slowdown point: only the curve before that is first-order
        free = next((i for i, s in enumerate(pts) if s.throttle & THERMAL_THROTTLES), len(pts))
        fit = fit_first_order(t[:free], temp[:free])
        if fit is not None and abs(fit.amplitude) < MIN_FIT_RISE_C:
            metrics["tau_note"] = f"card started within {MIN_FIT_RISE_C:g} °C of steady state: no curve to fit tau"
            fit = None  # too flat to say anything about tau; theta comes from the steady tail alone
        n_tail = max(3, math.ceil(prm.steady_fraction * (len(pts) - 1)))
        # the steady tail's samples with a power reading, as (sample, temperature, power)
        tail = [(s, s.temperature_c, s.power_w) for s in pts[-n_tail:]
                if s.temperature_c is not None and s.power_w]
        load = pts[1:]
        hot = [s for s in load if s.throttle & THERMAL_THROTTLES and (s.power_w or 0) < prof.power.tdp]
        tail_throttled = any(s.throttle & THERMAL_THROTTLES for s, _, _ in tail)
        theta: float | None = None
        if tail:
            if fit is not None and not tail_throttled and fit.tau > 0:
                # project each tail sample to steady state with the fitted transient
                vals = [(temp_c + fit.transient(s.time_s - t[0]) - inlet) / power
                        for s, temp_c, power in tail]
            else:
                vals = [(temp_c - inlet) / power for _, temp_c, power in tail]
            theta = fmean(vals)
        p_ss = fmean([power for _, _, power in tail]) if tail else None
        t_max = float(np.max(temp[1:])) if len(temp) > 1 else float(temp[0])
        judged = theta is not None and p_ss is not None and (
            tail_throttled or p_ss >= prof.power.floor_w
        )
        if fit is not None:
            metrics.update({"tau_s": round(fit.tau, 2), "t_steady_c": round(fit.t_inf, 2), "fit_rmse_c": round(fit.rmse, 3),
                            "settled": bool(t[-1] - t[0] >= 3 * fit.tau)})
        metrics.update({
            "theta_c_per_w": None if theta is None else round(theta, 5),
            "theta_judged": judged,
            "power_steady_w": None if p_ss is None else round(p_ss, 1),
            "t_max_c": round(t_max, 1),
            "thermal_throttle_samples": len(hot),
        })
        if judged and theta is not None:  # a small rise over an unmeasured inlet would mislead the compute stage
            ctx.facts.theta_c_per_w = theta
        cause = _cause(theta if judged else None, suspects, ctx)
        ctx.facts.thermal = ThermalSummary(theta_c_per_w=theta, judged=judged, slowdown=bool(hot), t_max_c=t_max,
                                           cause=cause[0] if cause else None, tau_s=fit.tau if fit else None)
        loc: dict[str, Any] = {}
        ev = {"theta_c_per_w": metrics["theta_c_per_w"], "power_w": metrics["power_steady_w"], "inlet_c": round(inlet, 2),
              "t_max_c": round(t_max, 1), "theta_max": th.theta_max, "theta_fail": th.theta_fail}
        if suspects:
            ev["fan"] = suspects[0].location.get("fan")
        if judged and theta is not None and theta > th.theta_max:
            warn_at = (th.theta_max + th.theta_fail) / 2  # between the band and the fail line: advice only
            band = f"band {th.theta_min}-{th.theta_max}, fail above {th.theta_fail}"
            if suspects:
                if theta > warn_at:
                    findings.append(Finding(
                        "thermal.high_resistance", "warn", "replace_fan", "thermal",
                        f"theta {theta:.4f} °C/W ({band}) explained by a fan fault: replace the fan and"
                        f" soak again before repasting", loc, ev))
            elif theta > th.theta_fail:
                findings.append(Finding(
                    "thermal.high_resistance", "fail", "repaste", "thermal",
                    f"theta {theta:.4f} °C/W at {p_ss:.0f} W ({band}): paste, pads or heatsink mount", loc, ev))
            elif theta > warn_at:
                findings.append(Finding(
                    "thermal.high_resistance", "warn", "repaste", "thermal",
                    f"theta {theta:.4f} °C/W at {p_ss:.0f} W is above the healthy band ({band})", loc, ev))
        if hot:
            first = hot[0]
            ev_s = {**ev, "first_at_s": round(first.time_s - t[0], 1), "power_at_slowdown_w": first.power_w,
                    "clock_mhz": first.clock_mhz, "throttle": sorted(first.throttle)}
            if cause:
                findings.append(Finding(
                    "thermal.slowdown", "fail", cause[0], "thermal",
                    f"thermal slowdown at {first.temperature_c:.0f} °C and {first.power_w or 0:.0f} W, under the"
                    f" rated {prof.power.tdp:.0f} W; cause: {cause[1]}", loc, ev_s))
            else:
                findings.append(Finding(
                    "thermal.slowdown", "warn", "none", "thermal",
                    f"thermal slowdown at {first.temperature_c:.0f} °C with theta in band and fans fine:"
                    f" check the inlet air ({inlet:.1f} °C) and the airflow path", loc, ev_s))
        elif t_max > th.max_operating:
            findings.append(Finding(
                "thermal.over_temp", "fail" if cause else "warn", cause[0] if cause else "none", "thermal",
                f"die reached {t_max:.1f} °C, above the {th.max_operating:.0f} °C operating limit"
                + (f"; cause: {cause[1]}" if cause else ""), loc, ev))
        if suspects and not ctx.facts.fans_checked:
            metrics["fan_suspects"] = [f.message for f in suspects]
        measured = [Measurement("theta", metrics["theta_c_per_w"], th.theta_fail if judged else None, "°C/W"),
                    Measurement("max temperature", metrics["t_max_c"], th.max_operating, "°C")]
        return TestResult("thermal", test_status(findings), duration_s=duration, metrics=metrics, findings=findings,
                          measurements=measured)
