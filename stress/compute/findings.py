"""What a burn-in phase saw, and the findings the rules draw from it (docs/verdict-rules.md).

Wrong results: retest cooler; errors only when hot on a card whose theta is high -> ``repaste``,
errors that persist cool (or hot-only errors with healthy cooling: marginal silicon) -> ``rma``.
Throughput below the profile's floor: thermal throttling -> a thermal finding with its cause,
a power cap -> advice only (the power stage owns it), no throttle at all -> ``compute.slow``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from drivers.abft import ElementError
from drivers.api import POWER_THROTTLES, THERMAL_THROTTLES, Telemetry
from drivers.profiles import Profile
from stress.compute.engine import BatchReport
from stress.model import Finding, Measurement, Severity

TEST = "burn"


@dataclass
class Tally:
    """Everything one phase (hot burn or cool retest) measured."""

    products: dict[str, int] = field(default_factory=dict)
    flops: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    full_checks: int = 0
    bad_products: int = 0
    wrong: int = 0
    nonfinite: int = 0
    examples: list[tuple[ElementError, float | None]] = field(default_factory=list)  # with die temp
    error_temps: list[float] = field(default_factory=list)  # die temperature of each bad batch
    throttle: set[str] = field(default_factory=set)
    samples: list[Telemetry] = field(default_factory=list)
    started_s: float = 0.0
    ended_s: float = 0.0

    def add(self, rep: BatchReport) -> None:
        d = rep.dtype
        self.products[d] = self.products.get(d, 0) + rep.products
        self.flops[d] = self.flops.get(d, 0.0) + rep.flops
        self.seconds[d] = self.seconds.get(d, 0.0) + rep.seconds
        self.full_checks += rep.full_checks
        self.bad_products += rep.bad_products
        self.wrong += rep.wrong_elements
        self.nonfinite += rep.nonfinite

    def note(self, t: Telemetry) -> None:
        self.samples.append(t)
        self.throttle |= set(t.throttle)

    @property
    def total_products(self) -> int:
        return sum(self.products.values())

    @property
    def max_temp(self) -> float | None:
        temps = [s.temperature_c for s in self.samples if s.temperature_c is not None]
        return max(temps) if temps else None

    def tflops(self, dtype: str) -> float | None:
        s = self.seconds.get(dtype, 0.0)
        return self.flops[dtype] / s / 1e12 if s > 0 else None


@dataclass
class HeatCall:
    """The heat-versus-silicon decision and its reasons."""

    action: str
    why: str
    evidence: dict[str, Any]


def heat_call(hot: Tally, cool: Tally | None, theta: float | None, theta_src: str, profile: Profile,
              margin_c: float, airflow: list[str]) -> HeatCall:
    th_max = profile.thermal.theta_max
    t_err = min(hot.error_temps) if hot.error_temps else None
    ev: dict[str, Any] = {
        "theta_c_per_w": None if theta is None else round(theta, 4), "theta_source": theta_src,
        "theta_max": th_max, "min_error_temp_c": t_err, "hot_max_temp_c": hot.max_temp,
    }
    theta_high = theta is not None and theta > th_max
    theta_txt = "theta unknown" if theta is None else (
        f"theta {theta:.3f} C/W {'above' if theta_high else 'within'} the healthy max {th_max:g}")
    if cool is None:
        return HeatCall("rma", "no cool retest was run", ev)
    ev.update({"cool_products": cool.total_products, "cool_wrong": cool.wrong,
               "cool_max_temp_c": cool.max_temp, "airflow": airflow or ["lower load only"]})
    if cool.wrong:
        return HeatCall("rma", f"errors persist cool ({cool.wrong} wrong in {cool.total_products} products at "
                               f"<= {_t(cool.max_temp)} C): the silicon, not the cooling", ev)
    cooler = (t_err is not None and cool.max_temp is not None and cool.max_temp < t_err - margin_c / 2)
    if not cooler:
        if theta_high:
            return HeatCall("repaste", f"the retest could not run cooler than the errors ({_t(cool.max_temp)} C vs "
                                       f"{_t(t_err)} C); {theta_txt}: repaste and retest", ev)
        return HeatCall("rma", f"the retest could not run cooler than the errors; {theta_txt}", ev)
    if theta_high:
        return HeatCall("repaste", f"errors only when hot (>= {_t(t_err)} C), none in {cool.total_products} products "
                                   f"at <= {_t(cool.max_temp)} C; {theta_txt}: repaste and retest", ev)
    return HeatCall("rma", f"errors only when hot (>= {_t(t_err)} C) but the cooling is healthy ({theta_txt}): "
                           "marginal silicon at normal operating temperature", ev)


def _v(x: float) -> str:
    """A result value in full: an integral float as an integer, else its shortest exact repr."""
    return str(int(x)) if math.isfinite(x) and x == int(x) else repr(x)


def _t(x: float | None) -> str:
    return "?" if x is None else f"{x:.0f}"


def wrong_result_findings(hot: Tally, call: HeatCall) -> list[Finding]:
    """compute.miscompare and/or compute.nan, each naming an element, its values and the bit."""
    out: list[Finding] = []
    plain = [(e, t) for e, t in hot.examples if not e.nonfinite]
    bad = [(e, t) for e, t in hot.examples if e.nonfinite]
    groups = (("compute.miscompare", plain, hot.wrong - hot.nonfinite),
              ("compute.nan", bad, hot.nonfinite))
    for code, examples, count in groups:
        if count <= 0:
            continue
        first, temp = examples[0] if examples else (None, None)
        loc: dict[str, Any] = {}
        head = ""
        if first is not None:
            loc = {"dtype": first.dtype, "row": first.row, "col": first.col}
            if len(first.bits) == 1:
                loc["bit"] = first.bits[0]
            bits = (f"bit {first.bits[0]} flipped" if len(first.bits) == 1
                    else f"bits {', '.join(map(str, first.bits))} differ")
            head = (f": {first.dtype} C[{first.row},{first.col}] expected {_v(first.expected)} got {_v(first.actual)} "
                    f"({bits}) at {_t(temp)} C")
        what = "NaN/Inf results" if code == "compute.nan" else "wrong elements"
        msg = (f"{count} {what} in {hot.bad_products} of {hot.total_products} products{head}; "
               f"{call.why} -> {call.action}")
        evidence = {
            "count": count, "bad_products": hot.bad_products, "products": hot.total_products,
            "examples": [{**e.to_evidence(), "temperature_c": t} for e, t in examples],
            **call.evidence,
        }
        out.append(Finding(code, "fail", call.action, TEST, msg, loc, evidence))
    return out


def throughput_findings(hot: Tally, profile: Profile, dtypes: list[str], theta: float | None,
                        fan_suspect: str | None) -> list[Finding]:
    """Sustained rate against the profile's floor, throttle reasons read before blaming silicon."""
    floor = profile.compute.slow_fraction / 100.0
    slow: list[tuple[str, float, float]] = []
    for d in dtypes:
        rate = hot.tflops(d)
        target = profile.compute.target.get(d)
        if rate is None or not target:
            continue
        if rate < floor * target:
            slow.append((d, rate, target))
    if not slow:
        return []
    summary = ", ".join(f"{d} {r:.1f}/{t:g} TFLOPS" for d, r, t in slow)
    ev = {"rates": {d: round(r, 3) for d, r, _ in slow}, "targets": {d: t for d, _, t in slow},
          "floor_fraction": floor, "throttle": sorted(hot.throttle)}
    if hot.throttle & THERMAL_THROTTLES:
        th = profile.thermal
        sev: Severity
        if fan_suspect:
            action, sev, cause = "replace_fan", "fail", fan_suspect
        elif theta is not None and theta > th.theta_max:
            action, sev, cause = "repaste", "fail", f"theta {theta:.3f} C/W above the healthy max {th.theta_max:g}"
        else:
            action, sev, cause = "none", "warn", "cause not found here (see the thermal stage)"
        ev["theta_c_per_w"] = None if theta is None else round(theta, 4)
        return [Finding("thermal.slowdown", sev, action, TEST,
                        f"thermal throttling held throughput below {floor:.0%} of target ({summary}): {cause}",
                        {}, ev)]
    if hot.throttle & POWER_THROTTLES:
        return [Finding("compute.power_limited", "warn", "none", TEST,
                        f"throughput below {floor:.0%} of target at the power limit ({summary}); "
                        "see the power stage", {}, ev)]
    return [Finding("compute.slow", "fail", "rma", TEST,
                    f"sustained throughput below {floor:.0%} of target with no throttle reason ({summary})",
                    {"dtype": slow[0][0]}, ev)]


def fan_suspect(samples: list[Telemetry], profile: Profile) -> str | None:
    """A card fan that reads 0 RPM, or far below its curve, while commanded to spin."""
    if profile.cooling.kind != "fan":
        return None
    for s in reversed(samples):
        for i, (rpm, duty) in enumerate(zip(s.fans_rpm, s.fans_duty_pct, strict=False)):
            if rpm is None or duty is None or duty <= 0:
                continue
            want = profile.cooling.rpm_at(duty)
            if want > 0 and rpm < profile.cooling.rpm_band(want)[0]:
                return f"fan {i} at {rpm} RPM for {duty:.0f}% duty (curve {want:.0f})"
        return None
    return None


def hang_finding(exc: Exception, dtype: str | None, size: int | None, timeout_s: float, products: int,
                 t_s: float) -> Finding:
    where = f"a {dtype} {size}x{size} product" if dtype else "the load kernels"
    return Finding("compute.hang", "fail", "reset_and_retest", TEST,
                   f"{where} did not finish within the {timeout_s:g} s watchdog after {products} products "
                   f"({t_s:.0f} s into the stage); burn-in stopped on this card",
                   {"dtype": dtype} if dtype else {},
                   {"timeout_s": timeout_s, "products": products, "at_s": round(t_s, 1), "error": str(exc)})


def rate_metrics(tally: Tally, profile: Profile, dtypes: list[str]) -> dict[str, Any]:
    m: dict[str, Any] = {}
    for d in dtypes:
        rate = tally.tflops(d)
        target = profile.compute.target.get(d)
        m[f"products_{d}"] = tally.products.get(d, 0)
        m[f"tflops_{d}"] = None if rate is None else round(rate, 3)
        m[f"target_tflops_{d}"] = target
        m[f"ratio_{d}"] = None if rate is None or not target else round(rate / target, 4)
    return m


def rate_measurements(metrics: dict[str, Any], profile: Profile, dtypes: list[str]) -> list[Measurement]:
    """Each datatype's sustained rate against the floor it is judged by (a fraction of target)."""
    floor = profile.compute.slow_fraction / 100.0
    out = []
    for d in dtypes:
        target = profile.compute.target.get(d)
        out.append(Measurement(f"{d} rate", metrics.get(f"tflops_{d}"),
                               None if not target else round(floor * target, 3), "TFLOPS", "min"))
    return out


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x
