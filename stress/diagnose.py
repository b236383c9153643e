"""The vendor's own diagnosis with stress, judged as burnin judges its own stages.

Through the device API's diagnostics handle (ascend-dmi on Ascend; a DCGM diag could serve
NVIDIA): a diagnosis of the chip's items under stress (HBM, AI cores), FLOPS per datatype,
bandwidth per kind (host->device, device->host, on-card memory, to peer cards) and a power
stress. What the vendor says and what the figures say both become findings with an action:

- a word per item: GENERAL_WARN (the vendor says rerun) and IMPORTANT_WARN (reset the chip) are
  ``reset_and_retest``; EMERGENCY_WARN (replace the part) is ``rma``, or ``replace_memory`` for a
  memory item on a card whose memory chips a bench can replace (``memory.kind == "gddr"``);
- FLOPS under the profile's floor (``compute.target`` x ``slow_fraction``): ``compute.slow``
  (``rma``), unless the card was thermally throttled (then the thermal stage's call);
- host<->device bandwidth under ``pcie_fraction_min`` of the profile's ``h2d_bandwidth``:
  ``pcie.bandwidth_low`` (a warning on the host, as the PCIe stage says it);
- on-card memory bandwidth under ``memory_fraction_min`` of the profile's peak:
  ``memory.bandwidth_low`` (``rma``: HBM sits in the package);
- mean power under the stress below the profile's floor: ``power.low`` (``check_power``),
  or an info when thermal throttling held it back.

Every figure is a measurement with its limit in the result document.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from drivers.api import (
    DIAG_EMERGENCY_WARN,
    DIAG_GENERAL_WARN,
    DIAG_IMPORTANT_WARN,
    DIAG_PASS,
    THERMAL_THROTTLES,
    DiagnosisItem,
    DiagnosticsHandle,
    Unsupported,
)
from drivers.profiles import Profile
from stress.base import Stage, StageContext, StageParams, register_stage
from stress.bounds import PHASE_MAX_S, WATCHDOG_MAX_S
from stress.model import Finding, Measurement, TestResult, test_status

TEST = "diagnose"
MEMORY_ITEMS = frozenset({"hbm", "memory", "ddr"})
WORD_MEANING = {
    DIAG_GENERAL_WARN: "the vendor says rerun",
    DIAG_IMPORTANT_WARN: "the vendor says reset the chip and rerun",
    DIAG_EMERGENCY_WARN: "the vendor says replace the part",
}


class DiagnoseParams(StageParams):
    items: list[str] = ["hbm", "aicore"]  # diagnosis items, run together
    stress: bool = True  # diagnose under stress (ascend-dmi -s), not a quick look
    flops: list[str] | None = None  # datatypes; default: the profile's that the tool offers
    bandwidth: list[str] = ["h2d", "d2h", "d2d"]  # add "p2p" on a server whose cards talk to each other
    power_s: float = Field(60.0, ge=0, le=PHASE_MAX_S)  # power stress length (0: none)
    tool_timeout_s: float = Field(900.0, gt=0, le=PHASE_MAX_S)  # per tool call, past the stress it runs
    pcie_fraction_min: float = Field(0.8, gt=0, le=1)  # of the profile's h2d_bandwidth
    memory_fraction_min: float = Field(0.6, gt=0, le=1)  # of the profile's memory bandwidth (a peak figure)
    timeout_s: float = Field(3600.0, gt=0, le=WATCHDOG_MAX_S)


def word_finding(item: DiagnosisItem, profile: Profile, tool: str) -> Finding | None:
    """The finding for one item's word (None for PASS)."""
    if item.result == DIAG_PASS:
        return None
    if item.result == DIAG_EMERGENCY_WARN:
        action = "replace_memory" if item.kind in MEMORY_ITEMS and profile.memory.kind == "gddr" else "rma"
    else:
        action = "reset_and_retest"  # GENERAL_WARN, IMPORTANT_WARN, and any word we do not know
    meaning = WORD_MEANING.get(item.result, f"a word burnin does not know ({item.result}): treated as rerun")
    details = f": {item.details}" if item.details else ""
    loc: dict[str, Any] = {"item": item.name}
    if item.kind in MEMORY_ITEMS:
        loc["memory"] = profile.memory.type
    return Finding(
        code=f"diag.{item.kind}", severity="fail", action=action, test=TEST,
        message=f"{tool} diagnosis of {item.name}: {item.result} ({meaning}){details}",
        location=loc,
        evidence={"word": item.result, "details": item.details, "codes": list(item.codes), "tool": tool},
    )


@register_stage
class DiagnoseStage(Stage):
    name = "diagnose"
    Params = DiagnoseParams
    requires: ClassVar[frozenset[str]] = frozenset({"diagnostics"})
    codes: ClassVar[frozenset[str]] = frozenset(
        {"diag.*", "compute.slow", "compute.thermal_limited", "pcie.bandwidth_low", "memory.bandwidth_low",
         "power.low", "power.thermal_limited"})

    def run(self, ctx: StageContext) -> TestResult:
        prm: DiagnoseParams = ctx.params
        dev = ctx.device
        diag = dev.diagnostics
        assert diag is not None  # `requires` guarantees it
        t0 = dev.clock.now()
        findings: list[Finding] = []
        measured: list[Measurement] = []
        metrics: dict[str, Any] = {"tool": diag.tool, "unsupported": []}
        steps = 1 + len(prm.bandwidth) + len(self._dtypes(prm, ctx.profile, diag)) + (1 if prm.power_s > 0 else 0)
        done = 0

        def step(message: str, sample: bool = False) -> None:
            nonlocal done
            done += 1
            if sample:  # after the stresses: what they left the card at, in the telemetry plot
                ctx.sample(TEST)
            ctx.progress(done / steps, message)

        ctx.progress(0.0, f"{diag.tool}: diagnosing {', '.join(prm.items)}")
        items = [i for i in prm.items if i in diag.items]
        metrics["unsupported"] += [f"diagnosis item {i}" for i in prm.items if i not in diag.items]
        if items:
            result = diag.diagnose(items, prm.stress, prm.tool_timeout_s)
            metrics["diagnosis"] = [i.to_dict() for i in result.items]
            metrics["stressed"] = result.stressed
            findings += [f for f in (word_finding(i, ctx.profile, diag.tool) for i in result.items) if f]
        step("diagnosis done", sample=prm.stress)
        for dtype in self._dtypes(prm, ctx.profile, diag):
            self._flops(ctx, diag, dtype, prm, findings, measured, metrics)
            step(f"FLOPS {dtype} done")
        for kind in prm.bandwidth:
            self._bandwidth(ctx, diag, kind, prm, findings, measured, metrics)
            step(f"bandwidth {kind} done")
        if prm.power_s > 0:
            self._power(ctx, diag, prm, findings, measured, metrics)
            step("power stress done", sample=True)
        return TestResult(TEST, test_status(findings), duration_s=dev.clock.now() - t0, metrics=metrics,
                          findings=findings, measurements=measured)

    @staticmethod
    def _dtypes(prm: DiagnoseParams, profile: Profile, diag: DiagnosticsHandle) -> list[str]:
        if prm.flops is not None:
            return list(prm.flops)
        return [d for d in profile.compute.dtypes if d in diag.flops_dtypes and d in profile.compute.target]

    def _flops(self, ctx: StageContext, diag: DiagnosticsHandle, dtype: str, prm: DiagnoseParams,
               findings: list[Finding], measured: list[Measurement], metrics: dict[str, Any]) -> None:
        try:
            r = diag.flops(dtype, prm.tool_timeout_s)
        except Unsupported as e:
            metrics["unsupported"].append(str(e))
            return
        comp = ctx.profile.compute
        target = comp.target.get(dtype)
        floor = round(target * comp.slow_fraction / 100.0, 2) if target else None
        metrics.setdefault("flops", {})[dtype] = {"tflops": r.tflops, "power_w": r.power_w, "floor_tflops": floor}
        measured.append(Measurement(f"{dtype} FLOPS ({diag.tool})", round(r.tflops, 2), floor, "TFLOPS", "min"))
        if floor is None or r.tflops >= floor:
            return
        tel = ctx.device.telemetry()
        ev = {"dtype": dtype, "tflops": r.tflops, "floor_tflops": floor, "target_tflops": target,
              "power_w": r.power_w, "clock_mhz": tel.clock_mhz, "throttle": sorted(tel.throttle), "tool": diag.tool}
        if tel.throttle & THERMAL_THROTTLES:
            findings.append(Finding("compute.thermal_limited", "info", "none", TEST,
                                    f"{dtype} at {r.tflops:.1f} TFLOPS (floor {floor:.1f}): held back by thermal "
                                    "throttling (see thermal)", {}, ev))
            return
        findings.append(Finding("compute.slow", "fail", "rma", TEST,
                                f"{dtype} at {r.tflops:.1f} TFLOPS in {diag.tool}'s FLOPS test, under the floor "
                                f"{floor:.1f} ({comp.slow_fraction:.0f} % of the {target:.0f} TFLOPS target) with no "
                                "throttling", {"dtype": dtype}, ev))

    def _bandwidth(self, ctx: StageContext, diag: DiagnosticsHandle, kind: str, prm: DiagnoseParams,
                   findings: list[Finding], measured: list[Measurement], metrics: dict[str, Any]) -> None:
        try:
            r = diag.bandwidth(kind, prm.tool_timeout_s)
        except Unsupported as e:
            metrics["unsupported"].append(str(e))
            return
        prof = ctx.profile
        floor: float | None = None
        if kind in ("h2d", "d2h") and prof.pcie.h2d_bandwidth > 0:
            floor = round(prm.pcie_fraction_min * prof.pcie.h2d_bandwidth, 2)
        elif kind == "d2d":
            floor = round(prm.memory_fraction_min * prof.memory.bandwidth, 1)
        metrics.setdefault("bandwidth_gbps", {})[kind] = r.gbps
        label = {"h2d": "H2D", "d2h": "D2H", "d2d": "on-card memory", "p2p": "P2P"}.get(kind, kind)
        measured.append(Measurement(f"{label} bandwidth ({diag.tool})", round(r.gbps, 2), floor, "GB/s", "min"))
        if floor is None or r.gbps >= floor:
            return
        ev = {"kind": kind, "gbps": r.gbps, "floor_gbps": floor, "size_bytes": r.size_bytes, "tool": diag.tool}
        if kind == "d2d":
            findings.append(Finding(
                "memory.bandwidth_low", "fail", "rma" if prof.memory.kind == "hbm" else "replace_memory", TEST,
                f"{prof.memory.type} copies at {r.gbps:.0f} GB/s, under the floor {floor:.0f} GB/s "
                f"({prm.memory_fraction_min:.0%} of the {prof.memory.bandwidth:.0f} GB/s peak)",
                {"memory": prof.memory.type}, ev))
        else:
            findings.append(Finding(
                "pcie.bandwidth_low", "warn", "fix_host", TEST,
                f"{label} copies at {r.gbps:.1f} GB/s, under {floor:.1f} GB/s ({prm.pcie_fraction_min:.0%} of what "
                f"the card's link carries): host NUMA placement, IOMMU, other traffic, or the link (see pcie)",
                {"direction": kind}, ev))

    def _power(self, ctx: StageContext, diag: DiagnosticsHandle, prm: DiagnoseParams, findings: list[Finding],
               measured: list[Measurement], metrics: dict[str, Any]) -> None:
        try:
            r = diag.power_stress(prm.power_s, prm.tool_timeout_s + prm.power_s)
        except Unsupported as e:
            metrics["unsupported"].append(str(e))
            return
        prof = ctx.profile
        floor = round(prof.power.floor_w, 1)
        metrics["power_stress"] = {"seconds": r.seconds, "mean_power_w": r.mean_power_w, "max_power_w": r.max_power_w,
                                   "max_temperature_c": r.max_temperature_c, "min_clock_mhz": r.min_clock_mhz}
        mean = None if r.mean_power_w is None else round(r.mean_power_w, 1)
        measured.append(Measurement(f"power under {diag.tool} stress", mean, floor, "W", "min"))
        if r.max_temperature_c is not None:
            measured.append(Measurement(f"max temperature under {diag.tool} stress", r.max_temperature_c,
                                        prof.thermal.max_operating, "°C"))
        if mean is None or mean >= floor:
            return
        throttled = r.min_clock_mhz is not None and r.min_clock_mhz < prof.clocks.max - 1
        ev = {"mean_power_w": mean, "floor_w": floor, "target_w": prof.power.tdp, "min_clock_mhz": r.min_clock_mhz,
              "max_temperature_c": r.max_temperature_c, "tool": diag.tool}
        if throttled:
            findings.append(Finding("power.thermal_limited", "info", "none", TEST,
                                    f"{mean:.0f} W under {diag.tool}'s power stress (floor {floor:.0f} W): the AI "
                                    f"cores throttled to {r.min_clock_mhz:.0f} MHz (see thermal)", {}, ev))
            return
        findings.append(Finding("power.low", "fail", "check_power", TEST,
                                f"{mean:.0f} W under {diag.tool}'s power stress, below {prof.power.target_fraction_min:.0f} % "
                                f"of the {prof.power.tdp:.0f} W target with the clocks at rated speed", {}, ev))
