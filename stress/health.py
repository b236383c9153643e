"""Health stage: what counters, flags, link state and events say, with no stress applied.

The checks of a fleet health daemon (DCGM health watches, GPUd, Azure NHC), with the rule
table of docs/verdict-rules.md; every threshold comes from the card's profile. Run first it reads a
baseline and watches the counters over a short idle window (replay and SBE rates); run again
with ``final = true`` at the end of a plan it judges what grew during the whole session.

The watch measures rates, and what it must see is enough counts to put each watched rate on one
side of its limit: it reads the counters every ``poll_s`` and stops once, for every counter, the
one-sided ``confidence`` Poisson bound of the rate decides it (the upper bound below the limit:
quiet; the lower bound, less the counter's read uncertainty, above it: a fault, or the per-test
replay cap already passed), at most ``observe_s``. With no counts, that is 3 / limit minutes
at 95 % (18 s for the 10/min SBE warning, 6 s for a Gen5 x16 replay limit of 31/min): the
rule the judge then applies to the window it watched gives the same answer the full window
would for any card far from its limit; one near its limit runs the whole window, as before.
The re-probe after a slot power-cycle watches its whole minute (did the card stay up?).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field

from drivers.api import THERMAL_THROTTLES, DeviceEvent, ErrorCounters, PcieLink, Telemetry
from drivers.xid import xid_rule
from stress.base import Stage, StageContext, StageParams, register_stage
from stress.bounds import INTERVAL_MAX_S, PHASE_MAX_S, WATCHDOG_MAX_S
from stress.facts import HealthBaseline
from stress.model import Finding, TestResult, test_status
from stress.settle import StopReason, count_lower, count_upper

POWER_LIMIT_TOLERANCE_W = 0.5  # an enforced limit this close to the profile's TDP is not a cap
COUNTER_STEP = 1  # a counter read twice is uncertain by one count: rates allow for it
IDLE_UTILIZATION_PCT = 5.0  # below this the card may be in a link power-saving state
FAN_SHOULD_TURN_PCT = 20.0  # at or above this duty a healthy fan turns (below it some fans stop)
COUNTERS_KEPT = ("sbe_aggregate", "dbe_aggregate", "remapped_rows_correctable", "remapped_rows_uncorrectable",
                 "row_remap_pending", "row_remap_failure", "retired_pages_sbe", "retired_pages_dbe")


class HealthParams(StageParams):
    # idle window over which replay and SBE rates are measured, at most; 0: one reading, no watch (final, devices)
    observe_s: float = Field(default=60.0, ge=0, le=PHASE_MAX_S)
    final: bool = False  # judge the whole session against the baseline taken by the first run
    timeout_s: float = Field(default=600.0, gt=0, le=WATCHDOG_MAX_S)
    stop_early: bool = True  # end the watch once the counts decide every rate (module docstring)
    poll_s: float = Field(default=2.0, gt=0, le=INTERVAL_MAX_S)  # counter reads during the watch
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)  # of the bounds that decide a rate


def _f(code: str, severity: str, action: str, message: str, **kw: Any) -> Finding:
    return Finding(code=code, severity=severity, action=action, test="health", message=message, **kw)  # type: ignore[arg-type]


def link_findings(link: PcieLink | None, ctx: StageContext, idle: bool = False) -> list[Finding]:
    """Width below max is a fault at any time. Gen below max is one only under load: NVIDIA
    cards drop their link to gen1 when idle to save power, so at idle a low gen is a warning
    that the PCIe stage re-checks under load."""
    if link is None or link.gen is None or link.max_gen is None:
        return []
    low_gen = link.gen < link.max_gen
    low_width = link.width is not None and link.max_width is not None and link.width < link.max_width
    if not (low_gen or low_width):
        return []
    floor = ctx.profile.pcie
    below_floor = link.gen < floor.floor_gen or (link.width or 0) < floor.floor_width
    evidence = {"gen": link.gen, "width": link.width, "max_gen": link.max_gen,
                "max_width": link.max_width, "below_floor": below_floor, "idle": idle}
    text = f"PCIe link trained at gen{link.gen} x{link.width}, card max gen{link.max_gen} x{link.max_width}"
    if low_gen and not low_width and idle:
        return [_f("pcie.link_degraded", "warn", "none",
                   text + " while idle (power saving lowers the gen; the PCIe stage checks it under load)",
                   location={"link": "pcie"}, evidence=evidence)]
    return [_f("pcie.link_degraded", "fail", "reseat",
               text + (f" (below the gen{floor.floor_gen} x{floor.floor_width} floor)" if below_floor else ""),
               location={"link": "pcie"}, evidence=evidence)]


def counter_findings(c: ErrorCounters, ctx: StageContext) -> list[Finding]:
    """Findings from counter levels and flags (not rates)."""
    e = ctx.profile.ecc
    out: list[Finding] = []
    if c.dbe_volatile:
        out.append(_f("ecc.dbe", "fail", "reset_and_retest",
                      f"{c.dbe_volatile} uncorrectable (double-bit) ECC errors since the last reset: reset and rescan",
                      evidence={"dbe_volatile": c.dbe_volatile, "dbe_aggregate": c.dbe_aggregate}))
    if c.row_remap_failure:
        out.append(_f("ecc.row_remap_failure", "fail", "rma",
                      "row remapping failed: a memory bank is out of spare rows",
                      evidence={"remapped_rows_uncorrectable": c.remapped_rows_uncorrectable}))
    if c.row_remap_pending:
        out.append(_f("ecc.row_remap_pending", "fail", "reset_and_retest",
                      "a row remap is pending: it is applied at the next GPU reset",
                      evidence={"remapped_rows_uncorrectable": c.remapped_rows_uncorrectable}))
    if c.remapped_rows_uncorrectable is not None and c.remapped_rows_uncorrectable >= e.remapped_uncorrectable_max:
        out.append(_f("ecc.row_remap_failure", "fail", "rma",
                      f"{c.remapped_rows_uncorrectable} rows remapped for uncorrectable errors "
                      f"(limit {e.remapped_uncorrectable_max:.0f}): memory wear-out",
                      evidence={"remapped_rows_uncorrectable": c.remapped_rows_uncorrectable}))
    sbe_pages, dbe_pages = c.retired_pages_sbe or 0, c.retired_pages_dbe or 0
    if sbe_pages + dbe_pages:
        over = sbe_pages + dbe_pages >= e.retired_pages_max or dbe_pages > e.retired_pages_dbe_max
        out.append(_f("ecc.retired_pages", "fail" if over else "warn", "rma" if over else "none",
                      f"{sbe_pages + dbe_pages} retired pages ({sbe_pages} SBE, {dbe_pages} DBE; limits "
                      f"{e.retired_pages_max:.0f} total, {e.retired_pages_dbe_max:.0f} DBE)",
                      evidence={"retired_sbe": sbe_pages, "retired_dbe": dbe_pages}))
    if c.retired_pages_pending:
        out.append(_f("ecc.retired_pages_pending", "fail", "reset_and_retest",
                      "pages are waiting to be retired: they are applied at the next reset",
                      evidence={"retired_pages_pending": True}))
    if c.sram_uncorrectable:
        out.append(_f("ecc.sram_uncorrectable", "fail", "rma",
                      f"{c.sram_uncorrectable} uncorrectable on-die SRAM errors",
                      evidence={"sram_uncorrectable": c.sram_uncorrectable}))
    if c.sbe_aggregate is not None and c.sbe_aggregate > e.sbe_warn_total:
        out.append(_f("ecc.sbe_rate", "warn", "none",
                      f"{c.sbe_aggregate} lifetime correctable errors (fleet limit {e.sbe_warn_total:.0f})",
                      evidence={"sbe_aggregate": c.sbe_aggregate}))
    if c.inforom_valid is False:
        out.append(_f("firmware.inforom_corrupt", "fail", "reflash_firmware",
                      "InfoROM checksum check failed", location={}, evidence={"inforom_valid": False}))
    if c.aux_power_ok is False:
        out.append(_f("power.aux_unplugged", "fail", "check_power",
                      "auxiliary power is not connected: the card runs on slot power only",
                      evidence={"aux_power_ok": False}))
    return out


def rate_findings(before: ErrorCounters, after: ErrorCounters, minutes: float, ctx: StageContext,
                  per_test_cap: bool = True) -> list[Finding]:
    """Findings from how fast counters grew over ``minutes``. DCGM's per-test replay cap (80)
    belongs to a test-length window; over a whole session (``per_test_cap=False``) only the
    rate counts, or a card under the rate limit would fail just for a long plan."""
    out: list[Finding] = []
    if minutes <= 0:
        return out
    pc = ctx.profile.pcie
    if before.pcie_replays is not None and after.pcie_replays is not None:
        delta = after.pcie_replays - before.pcie_replays
        rate = delta / minutes
        # a short window rounds the count: judge the lowest rate it is consistent with
        if max(0, delta - COUNTER_STEP) / minutes > pc.replays_per_min_max or (
                per_test_cap and delta > pc.replays_per_test_max):
            out.append(_f("pcie.replays", "fail", "reseat",
                          f"PCIe replay counter grew {delta} in {minutes:.1f} min ({rate:.1f}/min; limit "
                          f"{pc.replays_per_min_max:.0f}/min, {pc.replays_per_test_max:.0f} per test)",
                          location={"link": "pcie"},
                          evidence={"replays": delta, "per_minute": round(rate, 2), "minutes": round(minutes, 2)}))
    if before.sbe_volatile is not None and after.sbe_volatile is not None:
        delta = after.sbe_volatile - before.sbe_volatile
        rate = delta / minutes
        if rate > ctx.profile.ecc.sbe_rate_warn:
            out.append(_f("ecc.sbe_rate", "warn", "none",
                          f"correctable ECC errors rising at {rate:.0f}/min ({delta} in {minutes:.1f} min): "
                          "weak cells; the memory scan decides",
                          evidence={"sbe_delta": delta, "per_minute": round(rate, 2)}))
    return out


def _decided(before: int | None, after: int | None, minutes: float, limit: float, slack: int, cap: float | None,
             alpha: float) -> str | None:
    """"quiet" or "fault" once the counts put the rate on one side of ``limit`` (per minute) at
    confidence 1-alpha, else None. ``slack``: the counter's read uncertainty (counts)."""
    if before is None or after is None:
        return "not reported"  # a counter the card does not report is not waited on
    if minutes <= 0:
        return None
    k = max(0, after - before)
    if (cap is not None and k > cap) or count_lower(max(0, k - slack), alpha) / minutes > limit:
        return "fault"
    if count_upper(k, alpha) / minutes < limit:
        return "quiet"
    return None


def watch(ctx: StageContext, p: HealthParams, before: ErrorCounters) -> tuple[ErrorCounters, float, dict[str, Any]]:
    """Idle and read the counters until they decide every watched rate (or ``observe_s``
    passes): (counters at the end, minutes watched, what ended the watch)."""
    dev = ctx.device
    pc, ecc = ctx.profile.pcie, ctx.profile.ecc
    alpha = 1.0 - p.confidence
    if not p.stop_early:
        dev.clock.sleep(p.observe_s)
        return dev.counters(), p.observe_s / 60.0, {"stop_reason": "fixed", "watch_s": p.observe_s}
    t0 = dev.clock.now()
    after, minutes, why = before, 0.0, ""
    reason: StopReason = "limit"
    while True:
        elapsed = dev.clock.now() - t0
        if elapsed >= p.observe_s - 1e-9:
            break
        dev.clock.sleep(min(p.poll_s, p.observe_s - elapsed))
        after, minutes = dev.counters(), (dev.clock.now() - t0) / 60.0
        calls = {"pcie_replays": _decided(before.pcie_replays, after.pcie_replays, minutes, pc.replays_per_min_max,
                                          COUNTER_STEP, pc.replays_per_test_max, alpha),
                 "sbe_volatile": _decided(before.sbe_volatile, after.sbe_volatile, minutes, ecc.sbe_rate_warn, 0,
                                          None, alpha)}
        ctx.progress(0.1 + 0.8 * min(1.0, elapsed / p.observe_s), f"watching counters ({elapsed:.0f} s)")
        if all(calls.values()):
            reason, why = "decided", ", ".join(f"{k} {v}" for k, v in calls.items())
            break
    stop: dict[str, Any] = {"stop_reason": reason, "watch_s": round(minutes * 60.0, 1), "watch_limit_s": p.observe_s}
    if why:
        stop["stop_why"] = f"{why} at {p.confidence:.0%}"
    return after, minutes, stop


def power_limit_findings(t: Telemetry, ctx: StageContext) -> list[Finding]:
    tdp = ctx.profile.power.tdp
    if t.power_limit_w is None or t.power_limit_w >= tdp - POWER_LIMIT_TOLERANCE_W:
        return []
    return [_f("power.capped", "fail", "fix_host",
               f"enforced power limit {t.power_limit_w:.0f} W is below the profile's {tdp:.0f} W: a host setting",
               evidence={"power_limit_w": t.power_limit_w, "profile_tdp_w": tdp})]


def thermal_findings(t: Telemetry, ctx: StageContext) -> list[Finding]:
    """A card already throttling for heat, or over its limit, before any stress: say so now;
    the thermal stage finds the cause (fan, paste) under load."""
    th = ctx.profile.thermal
    temp = t.temperature_c
    if temp is not None and temp >= th.shutdown:
        return [_f("thermal.over_temp", "fail", "reset_and_retest",
                   f"die at {temp:.0f} C, at or above the {th.shutdown:.0f} C shutdown point",
                   evidence={"temperature_c": temp, "shutdown_c": th.shutdown})]
    if t.throttle & THERMAL_THROTTLES or (temp is not None and temp >= th.slowdown):
        return [_f("thermal.slowdown", "warn", "none",
                   f"thermal throttling at {temp} C before any stress; the thermal stage finds the cause",
                   evidence={"temperature_c": temp, "throttle": sorted(t.throttle)})]
    return []


def fan_findings(t: Telemetry) -> list[Finding]:
    """A card fan that reads 0 RPM while commanded to turn: stalled, or its tach is broken."""
    out: list[Finding] = []
    for i, rpm in enumerate(t.fans_rpm):
        duty = t.fans_duty_pct[i] if i < len(t.fans_duty_pct) else None
        if rpm == 0 and (duty is None or duty >= FAN_SHOULD_TURN_PCT):
            at = f" at {duty:.0f}% duty" if duty is not None else ""
            out.append(_f("fan.zero_rpm", "warn", "none",
                          f"fan {i} reads 0 RPM{at}: stalled, or a tach fault; the fan stage tells which",
                          location={"fan": i}, evidence={"rpm": rpm, "duty_pct": duty}))
    return out


def event_findings(events: list[DeviceEvent]) -> list[Finding]:
    out: list[Finding] = []
    for ev in events:
        if ev.kind == "xid":
            rule = xid_rule(int(ev.code))
            bucket = rule.entry.immediate if rule.entry else None
            out.append(_f(rule.finding, rule.severity, rule.action,
                          f"XID {ev.code}: {rule.meaning}",
                          evidence={"xid": int(ev.code), "at_s": round(ev.time_s, 1), "detail": ev.message,
                                    "nvidia_bucket": bucket, "why": rule.why}))
        elif ev.kind == "health":
            out.append(_health_code_finding(ev))
    return out


def _health_code_finding(ev: DeviceEvent) -> Finding:
    try:
        from drivers.ascend.codes import classify_health_code

        c = classify_health_code(str(ev.code))
    except ImportError:
        c = {"code": f"npu.{ev.code}", "severity": "fail", "action": "reset_and_retest",
             "message": f"health error code {ev.code}"}
    return _f(c["code"], c["severity"], c["action"], c["message"],
              evidence={"error_code": str(ev.code), "detail": ev.message, "at_s": round(ev.time_s, 1)})


@register_stage
class HealthStage(Stage):
    name = "health"
    Params = HealthParams
    # the rule table's codes; an XID (drivers/xid.py) or an Ascend health code (drivers/ascend/codes.py)
    # becomes xid.N / npu.CODE unless its catalogue names another finding (listed here too)
    codes: ClassVar[frozenset[str]] = frozenset({
        "pcie.link_degraded", "pcie.replays", "ecc.dbe", "ecc.row_remap_failure", "ecc.row_remap_pending",
        "ecc.retired_pages", "ecc.retired_pages_pending", "ecc.sram_uncorrectable", "ecc.sbe_rate",
        "firmware.inforom_corrupt", "power.aux_unplugged", "power.capped", "thermal.over_temp", "thermal.slowdown",
        "fan.zero_rpm", "xid.*", "npu.*", "bus.lost", "power.voltage_fault", "power.overcurrent",
        "link.nvlink_error"})
    # after a slot power-cycle: watch the card a minute (did it come back and stay up?)
    reprobe_params: ClassVar[dict[str, Any] | None] = {"observe_s": 60.0, "stop_early": False}
    listing_params: ClassVar[dict[str, Any] | None] = {"observe_s": 0.0}  # `burnin devices`: no watch
    stress = False  # reads counters only: runs on a card that is not ready too

    def run(self, ctx: StageContext) -> TestResult:
        p: HealthParams = ctx.params
        dev = ctx.device
        t0 = dev.clock.now()
        findings: list[Finding] = []
        ident = dev.identity()
        if ctx.facts.identity is None:
            ctx.facts.identity = ident
        counters = dev.counters()
        telemetry = ctx.sample("health")
        baseline = ctx.facts.health_baseline
        stop: dict[str, Any] = {}
        if p.final and baseline is not None:
            before, minutes = baseline.counters, (t0 - baseline.at_s) / 60.0
        else:
            ctx.facts.health_baseline = HealthBaseline(counters, t0)
            before, minutes = counters, 0.0
            if p.observe_s > 0:
                ctx.progress(0.1, f"watching counters for at most {p.observe_s:.0f} s")
                counters, minutes, stop = watch(ctx, p, before)
        idle = (telemetry.utilization_pct or 0.0) < IDLE_UTILIZATION_PCT
        findings += link_findings(telemetry.pcie, ctx, idle=idle)
        findings += counter_findings(counters, ctx)
        findings += rate_findings(before, counters, minutes, ctx, per_test_cap=not p.final)
        findings += power_limit_findings(telemetry, ctx)
        findings += thermal_findings(telemetry, ctx)
        findings += fan_findings(telemetry)
        ctx.drain_events()
        findings += event_findings(ctx.facts.events)
        metrics: dict[str, Any] = {
            "temperature_c": telemetry.temperature_c,
            "power_w": telemetry.power_w,
            "pcie_gen": telemetry.pcie.gen if telemetry.pcie else None,
            "pcie_width": telemetry.pcie.width if telemetry.pcie else None,
            "sbe_volatile": counters.sbe_volatile,
            "dbe_volatile": counters.dbe_volatile,
            "pcie_replays": counters.pcie_replays,
            # the rest of the counters as read (dcgm-exporter's ECC, row-remap and retired-page series)
            **{k: getattr(counters, k) for k in COUNTERS_KEPT if getattr(counters, k) is not None},
            "window_min": round(minutes, 3) if math.isfinite(minutes) else None,
            "final": p.final,  # the end-of-session check (its JUnit case is "health (final)")
            **stop,
        }
        ctx.progress(1.0, "health read")
        return TestResult(
            name=self.name,
            status=test_status(findings),
            duration_s=dev.clock.now() - t0,
            metrics=metrics,
            findings=findings,
        )
