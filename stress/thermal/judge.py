"""Judging a soak: theta from the heating curve, and heat blamed on the right part.

Theta is what a bench can fix: dried paste, a missing pad or a loose heatsink raise it
(``thermal.high_resistance`` -> ``repaste``). Less air raises it too, so heat is attributed to a
fan fault first (the fan stage's findings, or the soak's own look at the fans), then to theta: a
dead fan is never also called paste. Slowdown (a thermal throttle reason under the rated power)
and a die over its operating limit get the same attribution. Theta is judged only where the rise
is large enough to read (the card drew near its target, or it was held at its slowdown point),
since an unknown inlet spoils small rises. Apart from the stage, which only holds the load and
samples, so the rules can be read (and tested) without the loop around them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Any

import numpy as np

from drivers.api import THERMAL_THROTTLES, Telemetry
from drivers.profiles import Profile
from stress.facts import ThermalSummary
from stress.model import Finding, Measurement, TestResult, test_status
from stress.thermal.fit import MIN_FIT_RISE_C, fit_first_order

TEST = "thermal"


@dataclass(frozen=True)
class Soak:
    """What the stage measured: the samples (the first at load start), the inlet and where it
    came from, the fan suspects known before the soak, and how long and why the soak ran."""

    samples: list[Telemetry]
    inlet: float
    inlet_source: str  # "bench" | "device" | "profile"
    suspects: list[Finding]
    fans_checked: bool
    steady_fraction: float  # tail of the soak taken as steady state
    duration_s: float
    stop: dict[str, Any]  # stop_reason and what decided it (metrics)


def cause(theta: float | None, suspects: list[Finding], profile: Profile) -> tuple[str, str] | None:
    """Fan fault first, then theta above the healthy band (docs: verdict rules)."""
    if suspects:
        f = suspects[0]
        return "replace_fan", f"fan fault: {f.message}"
    if theta is not None and theta > profile.thermal.theta_max:
        return "repaste", f"theta {theta:.4f} °C/W above the healthy band (max {profile.thermal.theta_max})"
    return None


def judge_soak(soak: Soak, profile: Profile, bench_findings: list[Finding]) -> tuple[TestResult, ThermalSummary | None]:
    """The soak's result and, where it produced one, the summary later stages read."""
    th = profile.thermal
    samples, inlet, suspects = soak.samples, soak.inlet, soak.suspects
    pts = [s for s in samples if s.temperature_c is not None]
    metrics: dict[str, Any] = {"inlet_c": round(inlet, 2), "inlet_source": soak.inlet_source, "samples": len(samples),
                               **soak.stop}
    findings: list[Finding] = list(bench_findings)
    if len(pts) < 4:
        return TestResult(TEST, "error", duration_s=soak.duration_s, metrics=metrics, findings=findings,
                          error="too few temperature readings to fit a heating curve"), None
    t = np.array([s.time_s for s in pts], dtype=float)
    temp = np.array([s.temperature_c for s in pts], dtype=float)
    # the firmware clamps the die at its slowdown point: only the curve before that is first-order
    free = next((i for i, s in enumerate(pts) if s.throttle & THERMAL_THROTTLES), len(pts))
    fit = fit_first_order(t[:free], temp[:free])
    if fit is not None and abs(fit.amplitude) < MIN_FIT_RISE_C:
        metrics["tau_note"] = f"card started within {MIN_FIT_RISE_C:g} °C of steady state: no curve to fit tau"
        fit = None  # too flat to say anything about tau; theta comes from the steady tail alone
    n_tail = max(3, math.ceil(soak.steady_fraction * (len(pts) - 1)))
    # the steady tail's samples with a power reading, as (sample, temperature, power)
    tail = [(s, s.temperature_c, s.power_w) for s in pts[-n_tail:]
            if s.temperature_c is not None and s.power_w]
    hot = [s for s in pts[1:] if s.throttle & THERMAL_THROTTLES and (s.power_w or 0) < profile.power.tdp]
    tail_throttled = any(s.throttle & THERMAL_THROTTLES for s, _, _ in tail)
    theta: float | None = None
    if tail:
        if fit is not None and not tail_throttled and fit.tau > 0:
            # project each tail sample to steady state with the fitted transient
            vals = [(temp_c + fit.transient(s.time_s - t[0]) - inlet) / power for s, temp_c, power in tail]
        else:
            vals = [(temp_c - inlet) / power for _, temp_c, power in tail]
        theta = fmean(vals)
    p_ss = fmean([power for _, _, power in tail]) if tail else None
    t_max = float(np.max(temp[1:])) if len(temp) > 1 else float(temp[0])
    judged = theta is not None and p_ss is not None and (tail_throttled or p_ss >= profile.power.floor_w)
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
    blame = cause(theta if judged else None, suspects, profile)
    summary = ThermalSummary(theta_c_per_w=theta, judged=judged, slowdown=bool(hot), t_max_c=t_max,
                             cause=blame[0] if blame else None, tau_s=fit.tau if fit else None,
                             t_steady_c=fit.t_inf if fit else None)
    ev: dict[str, Any] = {"theta_c_per_w": metrics["theta_c_per_w"], "power_w": metrics["power_steady_w"],
                          "inlet_c": round(inlet, 2), "t_max_c": round(t_max, 1), "theta_max": th.theta_max,
                          "theta_fail": th.theta_fail}
    if suspects:
        ev["fan"] = suspects[0].location.get("fan")
    if judged and theta is not None and theta > th.theta_max:
        findings += _resistance(theta, p_ss, bool(suspects), profile, ev)
    if hot:
        findings.append(_slowdown(hot[0], t[0], blame, inlet, profile, ev))
    elif t_max > th.max_operating:
        findings.append(Finding(
            "thermal.over_temp", "fail" if blame else "warn", blame[0] if blame else "none", TEST,
            f"die reached {t_max:.1f} °C, above the {th.max_operating:.0f} °C operating limit"
            + (f"; cause: {blame[1]}" if blame else ""), {}, ev))
    if suspects and not soak.fans_checked:
        metrics["fan_suspects"] = [f.message for f in suspects]
    measured = [Measurement("theta", metrics["theta_c_per_w"], th.theta_fail if judged else None, "°C/W"),
                Measurement("max temperature", metrics["t_max_c"], th.max_operating, "°C")]
    return TestResult(TEST, test_status(findings), duration_s=soak.duration_s, metrics=metrics, findings=findings,
                      measurements=measured), summary


def _resistance(theta: float, p_ss: float | None, fan_fault: bool, profile: Profile,
                ev: dict[str, Any]) -> list[Finding]:
    """Theta above the band: a fan's fault where one is known, else paste, pads or mount."""
    th = profile.thermal
    warn_at = (th.theta_max + th.theta_fail) / 2  # between the band and the fail line: advice only
    band = f"band {th.theta_min}-{th.theta_max}, fail above {th.theta_fail}"
    if fan_fault:
        if theta > warn_at:
            return [Finding("thermal.high_resistance", "warn", "replace_fan", TEST,
                            f"theta {theta:.4f} °C/W ({band}) explained by a fan fault: replace the fan and"
                            f" soak again before repasting", {}, ev)]
        return []
    if theta > th.theta_fail:
        return [Finding("thermal.high_resistance", "fail", "repaste", TEST,
                        f"theta {theta:.4f} °C/W at {p_ss or 0:.0f} W ({band}): paste, pads or heatsink mount", {}, ev)]
    if theta > warn_at:
        return [Finding("thermal.high_resistance", "warn", "repaste", TEST,
                        f"theta {theta:.4f} °C/W at {p_ss or 0:.0f} W is above the healthy band ({band})", {}, ev)]
    return []


def _slowdown(first: Telemetry, t0: float, blame: tuple[str, str] | None, inlet: float, profile: Profile,
              ev: dict[str, Any]) -> Finding:
    ev_s = {**ev, "first_at_s": round(first.time_s - t0, 1), "power_at_slowdown_w": first.power_w,
            "clock_mhz": first.clock_mhz, "throttle": sorted(first.throttle)}
    if blame:
        return Finding("thermal.slowdown", "fail", blame[0], TEST,
                       f"thermal slowdown at {first.temperature_c:.0f} °C and {first.power_w or 0:.0f} W, under the"
                       f" rated {profile.power.tdp:.0f} W; cause: {blame[1]}", {}, ev_s)
    return Finding("thermal.slowdown", "warn", "none", TEST,
                   f"thermal slowdown at {first.temperature_c:.0f} °C with theta in band and fans fine:"
                   f" check the inlet air ({inlet:.1f} °C) and the airflow path", {}, ev_s)
