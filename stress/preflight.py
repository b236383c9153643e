"""Preflight: is the card ready to be tested, or would the plan measure someone else's workload?

Runs first in every bundled plan (and in ``burnin devices``). It reads the host's conditions
through the device API (``Device.conditions``) and makes each one that would bend a measurement
a ``fail`` finding with action ``fix_host`` naming what to change: another process on the card
(a busy card reads as slow and its memory cannot be scanned), MIG enabled, a display attached
(kernels under the display watchdog), compute mode prohibited or exclusive to another process,
applications or locked clocks below the default, a power limit below the default, an ECC or MIG
mode change pending a reset, a reset the driver asks for, a driver of an older CUDA major version
than the runtime (a newer minor runtime is fine unless a kernel fails to load: the CUDA path says
so then).

On a card that is not ready the session skips every stress stage with the reason. ``force = true``
in the plan (``burnin run --force``) runs them anyway: the conditions become warnings and every
finding of the card says it was measured under them. The stage also lists the plan's stages this
card will not be able to run (``metrics.cannot_run``), for ``devices`` and the TUI up front.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from drivers.api import Conditions, DeviceProcess, Identity
from stress.base import Stage, StageContext, StageParams, register_stage
from stress.bounds import WATCHDOG_MAX_S
from stress.model import Finding, TestResult, test_status
from stress.readiness import cannot_run

POWER_TOLERANCE_W = 0.5  # a limit this close to the default is the default
CLOCK_TOLERANCE_MHZ = 1.0


class PreflightParams(StageParams):
    force: bool = False  # run the stress stages on a card that is not ready, and say so in every finding
    timeout_s: float = Field(default=120.0, gt=0, le=WATCHDOG_MAX_S)


def _f(code: str, message: str, **evidence: Any) -> Finding:
    return Finding(code=code, severity="fail", action="fix_host", test="preflight", message=message,
                   evidence=evidence)


def _mib(v: int | None) -> str:
    return "memory unknown" if v is None else f"{v / 1024:.1f} GiB" if v >= 1024 else f"{v} MiB"


def _who(p: DeviceProcess) -> str:
    return f"pid {p.pid} ({p.name or 'unnamed'}, {p.kind}, {_mib(p.used_mib)})"


class Fixes:
    """The commands that fix each condition, in the vendor's own tool."""

    def __init__(self, ident: Identity) -> None:
        self.nvidia = ident.vendor == "nvidia"
        self.card = ident.pci_bus_id or "N"

    def smi(self, args: str) -> str:
        return f"nvidia-smi -i {self.card} {args}" if self.nvidia else ""


def check(cond: Conditions, ident: Identity, total_mib: int | None) -> list[Finding]:
    """Each condition that would make the plan measure the wrong thing, as a fix_host finding."""
    fx = Fixes(ident)
    out: list[Finding] = []
    procs = cond.processes or []
    if procs:
        held = sum(p.used_mib or 0 for p in procs)
        share = f" of {_mib(total_mib)}" if total_mib else ""
        pids = " ".join(str(p.pid) for p in procs)
        out.append(_f("host.busy",
                      f"{len(procs)} other process{'es' if len(procs) > 1 else ''} on the card "
                      f"({', '.join(_who(p) for p in procs)}; {_mib(held)}{share} held): stop "
                      f"{'them' if len(procs) > 1 else 'it'} (kill {pids}) or move the work to another card",
                      processes=[p.to_dict() for p in procs], used_mib=held, total_mib=total_mib))
    if cond.mig_enabled:
        out.append(_f("host.mig", "MIG is enabled: the plan would test one slice, not the card; disable it "
                      f"({fx.smi('-mig 0') or 'turn MIG off'}, then reset the GPU)", mig_enabled=True))
    if cond.mig_pending:
        out.append(_f("host.pending_reset", "a MIG mode change waits for a GPU reset: reset the GPU "
                      f"({fx.smi('-r') or 'reset it'}) before testing", mig_pending=True))
    if cond.display_active:
        out.append(_f("host.display", "a display is active on the card: kernels run under the display "
                      "watchdog and share the GPU with the desktop; unplug the display or stop the display "
                      "server (e.g. systemctl isolate multi-user.target)", display_active=True))
    if cond.compute_mode == "prohibited":
        out.append(_f("host.compute_mode", "compute mode is Prohibited: no compute context may open; set it "
                      f"back to Default ({fx.smi('-c DEFAULT') or 'default compute mode'})",
                      compute_mode=cond.compute_mode))
    elif cond.compute_mode in ("exclusive_process", "exclusive_thread") and procs:
        out.append(_f("host.compute_mode", f"compute mode is {cond.compute_mode} and another process holds the "
                      f"card: burnin cannot open a context; stop it or set Default ({fx.smi('-c DEFAULT')})",
                      compute_mode=cond.compute_mode))
    out += _clock_findings(cond, fx)
    if (cond.power_limit_w is not None and cond.default_power_limit_w is not None
            and cond.power_limit_w < cond.default_power_limit_w - POWER_TOLERANCE_W):
        out.append(_f("power.capped",
                      f"power limit {cond.power_limit_w:.0f} W is below the card's default "
                      f"{cond.default_power_limit_w:.0f} W: a host setting; restore it "
                      f"({fx.smi(f'-pl {cond.default_power_limit_w:.0f}') or 'the default power limit'})",
                      power_limit_w=cond.power_limit_w, default_power_limit_w=cond.default_power_limit_w))
    if cond.ecc_pending:
        out.append(_f("host.pending_reset", "an ECC mode change waits for a reset: reset the GPU "
                      f"({fx.smi('-r') or 'reset it'}) or reboot before testing", ecc_pending=True))
    if cond.reset_required:
        how = {"gpu_reset": fx.smi("-r") or "reset the card", "node_reboot": "reboot the host",
               "system_reboot": "reboot the host", "bus_reset": "reset the PCIe bus (or reboot)"}
        out.append(_f("host.reset_required",
                      f"the driver asks for a {cond.reset_required.replace('_', ' ')} before the card is used: "
                      f"{how.get(cond.reset_required, cond.reset_required.replace('_', ' '))}",
                      reset_required=cond.reset_required))
    out += _driver_findings(cond)
    return out


def _clock_findings(cond: Conditions, fx: Fixes) -> list[Finding]:
    low = []
    for what, cur, dflt in (("graphics", cond.app_clock_mhz, cond.default_app_clock_mhz),
                            ("memory", cond.app_mem_clock_mhz, cond.default_app_mem_clock_mhz)):
        if cur is not None and dflt is not None and cur < dflt - CLOCK_TOLERANCE_MHZ:
            low.append(f"{what} applications clock {cur:.0f} MHz, default {dflt:.0f} MHz")
    if not low and not cond.clocks_locked:
        return []
    why = "; ".join(low) or "clocks held down by an applications- or locked-clocks setting"
    fix = (f"{fx.smi('-rac')}; {fx.smi('-rgc')}; {fx.smi('-rmc')}" if fx.nvidia
           else "restore the default clocks")
    return [_f("host.clocks_locked", f"{why}: throughput would read low; restore the defaults ({fix})",
               app_clock_mhz=cond.app_clock_mhz, default_app_clock_mhz=cond.default_app_clock_mhz,
               app_mem_clock_mhz=cond.app_mem_clock_mhz, default_app_mem_clock_mhz=cond.default_app_mem_clock_mhz,
               clocks_locked=cond.clocks_locked)]


def _version(v: str | None) -> tuple[int, int] | None:
    try:
        major, minor = (v or "").split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def _driver_findings(cond: Conditions) -> list[Finding]:
    """A driver of an older CUDA major version than the runtime loads nothing: fix it first. A
    newer minor runtime (CuPy's 13.2 over a 13.0 driver) runs under minor-version compatibility:
    nothing to say unless a kernel then fails to load, which the CUDA path reports itself as
    ``host.driver_old`` (naming the versions) on the stage that met it."""
    drv, rt = _version(cond.driver_api_version), _version(cond.runtime_version)
    if drv is None or rt is None or drv[0] >= rt[0]:
        return []
    return [_f("host.driver_old",
               f"driver {cond.driver_version} supports CUDA {cond.driver_api_version}, older than the CUDA "
               f"{cond.runtime_version} runtime burnin's CuPy uses: update the NVIDIA driver (or install the "
               f"CuPy built for CUDA {drv[0]})", driver_version=cond.driver_version,
               driver_api_version=cond.driver_api_version, runtime_version=cond.runtime_version)]


def conditions_summary(findings: list[Finding]) -> list[str]:
    return [f"{f.code}: {f.message.split(':')[0]}" for f in findings]


@register_stage
class PreflightStage(Stage):
    name = "preflight"
    Params = PreflightParams
    codes: ClassVar[frozenset[str]] = frozenset({
        "host.busy", "host.mig", "host.pending_reset", "host.display", "host.compute_mode", "host.reset_required",
        "host.clocks_locked", "host.driver_old", "power.capped"})
    stress = False
    listing_params: ClassVar[dict[str, Any] | None] = {}  # `burnin devices` runs it on each card

    def run(self, ctx: StageContext) -> TestResult:
        p: PreflightParams = ctx.params
        dev = ctx.device
        t0 = dev.clock.now()
        ident = dev.identity()
        cond = dev.conditions()
        ctx.facts.conditions = cond
        total = ident.memory_total_mib
        findings = check(cond, ident, total)
        blocking = [f for f in findings if f.severity == "fail"]
        metrics: dict[str, Any] = {
            "conditions": cond.to_dict(),
            "ready": not blocking,
            "forced": bool(blocking and p.force),
        }
        plan = ctx.facts.plan
        if plan:
            metrics["cannot_run"] = cannot_run(plan, dev, ctx.profile, ctx.instruments)
        if blocking and p.force:
            under = conditions_summary(blocking)
            for f in blocking:
                f.severity = "warn"
                f.message += " (forced: the plan ran anyway; every finding is measured under this condition)"
            ctx.facts.measured_under = under
        elif blocking:
            ctx.facts.not_ready = "card not ready: " + "; ".join(f"{f.code} ({f.message})" for f in blocking)
        ctx.progress(1.0, "ready" if not blocking else ("forced" if p.force else "not ready"))
        return TestResult(self.name, test_status(findings), duration_s=dev.clock.now() - t0,
                          metrics=metrics, findings=findings)
