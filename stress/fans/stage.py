"""Fan sweep (the stage): step the commanded duty and check every fan's RPM against the profile's curve.

Card fans are commanded through the device (``device.fans``) and read from the card's own tach;
a passive card's chassis fans are commanded and read through the bench controller, or without
one (mock hosts) read at the fixed duty the chassis runs them at (``HostChassisFans``). Where an
independent reading exists (the bench's optical tachometer on card fans) it tells a dead fan from
a dead tach wire; where none does, a fan that reads 0 RPM gets an airflow probe: hold full load
with that fan at full and then at minimum duty, and see whether the die's rise per watt moves.
A spinning fan moves it; a stalled one cannot. Fan settings are restored whatever happens.
The sweep changes the air every card of the chassis breathes, so it holds the chassis lease
(``airflow``) throughout: no other card's thermal soak runs meanwhile.

Findings: ``fan.stalled`` (not spinning), ``fan.weak`` (below the curve band), ``fan.tach_mismatch``
(the reading disagrees with the fan), all ``replace_fan``. They also land in
``ctx.facts.fan_findings`` so the thermal stage can attribute heat to a fan before paste.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean, median
from typing import Annotated, Any, ClassVar

from pydantic import Field

from drivers.api import Device, Unsupported
from drivers.instruments.roles import BenchRoles
from drivers.profiles import Profile
from stress.base import Stage, StageContext, StageParams, register_stage, skipped
from stress.bounds import INTERVAL_MAX_S, SMALL_COUNT_MAX
from stress.fans.fansets import CardFans, ChassisFans, FanSet, HostChassisFans, restoring
from stress.fans.link import BenchLink, inlet_reading
from stress.model import Finding, TestResult, test_status

NO_FANS = ("no card fans and no bench fan controller (a bench controller, [[hosts.instruments]] "
           "kind = \"bench\", sweeps a passive card's chassis fans)")


# -- judging readings -----------------------------------------------------------------------------
@dataclass
class Step:
    duty: float
    expected: float
    reported: float | None
    true: float | None


@dataclass
class FanVerdict:
    fan: int
    steps: list[Step] = field(default_factory=list)


def state_of(rpm: float | None, expected: float, profile: Profile, stall_fraction: float) -> str:
    """``zero`` (not turning), ``low``/``high`` (outside the curve band), ``ok`` or ``na``."""
    if rpm is None:
        return "na"
    lo, hi = profile.cooling.rpm_band(expected)
    if rpm < stall_fraction * expected:
        return "zero"
    if rpm < lo:
        return "low"
    if rpm > hi:
        return "high"
    return "ok"


def _finding(code: str, fan: int, kind: str, msg: str, step: Step, profile: Profile, extra: dict[str, Any]
             ) -> Finding:
    lo, hi = profile.cooling.rpm_band(step.expected)
    return Finding(
        code=code, severity="fail", action="replace_fan", test="fans",
        message=f"{kind} fan {fan} {msg} at {step.duty:.0f}% duty (expected {lo:.0f}-{hi:.0f} RPM)",
        location={"fan": fan, **({"chassis": True} if kind == "chassis" else {})},
        evidence={"duty_pct": step.duty, "rpm": None if step.reported is None else round(step.reported),
                  "tach_rpm": None if step.true is None else round(step.true),
                  "expected_rpm": round(step.expected), **extra},
    )


class FanParams(StageParams):
    duty_steps: list[Annotated[float, Field(ge=0, le=100)]] = Field(default=[30.0, 50.0, 70.0, 100.0], min_length=1,
                                                                   max_length=101)
    settle_s: float = Field(default=5.0, ge=0, le=INTERVAL_MAX_S)  # spin-up after a duty change
    reads: int = Field(default=3, ge=1, le=SMALL_COUNT_MAX)  # RPM readings per step (median)
    read_interval_s: float = Field(default=1.0, ge=0, le=INTERVAL_MAX_S)
    stall_fraction: float = Field(default=0.1, gt=0, lt=1)  # below this of the curve: not turning
    probe_taus: float = Field(default=5.0, gt=0, le=100)  # airflow probe: hold per phase, in thermal time constants
    probe_samples: int = Field(default=5, ge=1, le=SMALL_COUNT_MAX)  # samples averaged at the end of each probe phase
    airflow_min_change: float = Field(default=0.05, gt=0, le=1000)  # rise per watt must move this much if the fan turns


@register_stage
class FanStage(Stage):
    name = "fans"
    Params = FanParams
    codes: ClassVar[frozenset[str]] = frozenset({"fan.stalled", "fan.weak", "fan.tach_mismatch", "instrument.*"})

    def run(self, ctx: StageContext) -> TestResult:
        prm: FanParams = ctx.params
        bench = BenchLink(ctx, "fans")
        ctx.progress(0.0, "fans: waiting for the chassis (no other card's soak under way)")
        with bench.lease.airflow():  # the sweep changes the chassis's air: no other card measures heat meanwhile
            return self._run(ctx, prm, bench)

    def _run(self, ctx: StageContext, prm: FanParams, bench: BenchLink) -> TestResult:
        dev, prof = ctx.device, ctx.profile
        t0 = dev.clock.now()
        fanset: FanSet
        if dev.fans is not None and dev.fans.count > 0:
            fanset = CardFans(dev, dev.fans, bench)
        elif prof.cooling.kind == "passive" and bench.chassis is not None and bench.ok and (
                n := min(bench.chassis_count(), prof.cooling.chassis_fans)) > 0:
            fanset = ChassisFans(bench, n, prof.cooling.chassis_default_duty)
        elif prof.cooling.kind == "passive" and (host := HostChassisFans.of(dev, prof, bench)) is not None:
            fanset = host
        else:
            why = NO_FANS if prof.cooling.kind == "passive" else "fans not controllable: the card reports none"
            res = skipped("fans", why)
            res.findings = bench.findings
            return res
        findings: list[Finding] = []
        metrics: dict[str, Any] = {"fans": fanset.count(), "kind": fanset.kind}
        with restoring(fanset):
            try:
                verdicts = self._sweep(ctx, fanset, prm)
            except Unsupported as e:  # the card has fans but will not let the host command them
                res = skipped("fans", f"fan control refused: {e} (run burnin as root, on a driver that allows "
                              "fan control)", **metrics)
                res.duration_s, res.findings = dev.clock.now() - t0, bench.findings
                return res
            metrics["sweep"] = {v.fan: [[s.duty, s.reported, s.true] for s in v.steps] for v in verdicts}
            for v in verdicts:
                f = self._judge(ctx, fanset, v, prm, metrics)
                if f is not None:
                    findings.append(f)
        findings.extend(bench.findings)
        ctx.facts.fan_findings = [f for f in findings if f.code.startswith("fan.")]
        ctx.facts.fans_checked = bench.ok or not fanset.chassis or isinstance(fanset, HostChassisFans)
        return TestResult("fans", test_status(findings), duration_s=dev.clock.now() - t0,
                          metrics=metrics, findings=findings)

    @classmethod
    def cannot_run(cls, device: Device, profile: Profile, instruments: BenchRoles) -> str | None:
        """A passive card with no bench controller and no chassis the device can read: nothing to
        sweep. (A fan card whose driver refuses control is only known when it is tried; a bench
        configured but not opened, ``port`` only, counts as a bench.)"""
        if device.fans is not None or profile.cooling.kind != "passive" or instruments.fan_controller is not None \
                or instruments.port is not None:
            return None
        return None if callable(getattr(device, "chassis_fans", None)) else NO_FANS

    def _sweep(self, ctx: StageContext, fanset: FanSet, prm: FanParams) -> list[FanVerdict]:
        prof, clock = ctx.profile, ctx.device.clock
        n = fanset.count()
        verdicts = [FanVerdict(i) for i in range(n)]
        curve = [p.duty for p in prof.cooling.curve(fanset.chassis)]
        fixed = fanset.fixed_duty()
        steps = [fixed] if fixed is not None else [d for d in prm.duty_steps if min(curve) <= d <= max(curve)]
        if not steps:
            raise ValueError(f"fans: duty_steps {prm.duty_steps} all lie outside the profile's fan curve"
                             f" ({min(curve):g}-{max(curve):g} %)")
        for k, duty in enumerate(steps):
            fanset.set_all(duty)
            clock.sleep(prm.settle_s)
            reads: list[list[float | None]] = []
            for r in range(prm.reads):
                if r:
                    clock.sleep(prm.read_interval_s)
                reads.append(fanset.reported())
            ctx.sample(f"fans {duty:.0f}%")
            expected = prof.cooling.rpm_at(duty, chassis=fanset.chassis)
            for i in range(n):
                vals = [x for row in reads if (x := row[i]) is not None]
                verdicts[i].steps.append(Step(duty, expected, median(vals) if vals else None, fanset.true(i)))
            ctx.progress((k + 1) / len(steps), f"fans: {duty:.0f}% duty")
        return verdicts

    def _judge(self, ctx: StageContext, fanset: FanSet, v: FanVerdict, prm: FanParams,
               metrics: dict[str, Any]) -> Finding | None:
        prof, kind = ctx.profile, fanset.kind
        rep = [(s, state_of(s.reported, s.expected, prof, prm.stall_fraction)) for s in v.steps]
        tru = [(s, state_of(s.true, s.expected, prof, prm.stall_fraction)) for s in v.steps]
        if any(st != "na" for _, st in tru):  # an independent reading: it says what the fan does
            for s, st in tru:
                if st == "zero":
                    return _finding("fan.stalled", v.fan, kind, f"is not turning (tachometer {s.true:.0f} RPM)",
                                    s, prof, {})
            for s, st in tru:
                if st == "low":
                    return _finding("fan.weak", v.fan, kind, f"turns at {s.true:.0f} RPM (tachometer)", s, prof, {})
            tol = prof.cooling.rpm_tolerance / 100.0
            for (s, rs), (_, ts) in zip(rep, tru, strict=True):
                if rs == "na" or ts != "ok" or rs == "ok" or s.reported is None or s.true is None:
                    continue
                if abs(s.reported - s.true) > tol * s.expected:  # a real disagreement, not noise
                    return _finding("fan.tach_mismatch", v.fan, kind,
                                    f"reports {s.reported:.0f} RPM but the tachometer sees {s.true:.0f} RPM",
                                    s, prof, {})
                # the two readings agree, on either side of the band's edge: judge what both say
                both = (s.reported + s.true) / 2
                if state_of(both, s.expected, prof, prm.stall_fraction) == "low":
                    return _finding("fan.weak", v.fan, kind,
                                    f"turns at {both:.0f} RPM (card {s.reported:.0f}, tachometer {s.true:.0f})",
                                    s, prof, {})
            return None
        states = [st for _, st in rep if st != "na"]
        if not states:
            return None
        if all(st == "zero" for st in states):
            s = rep[-1][0]
            if fanset.fixed_duty() is not None:
                return _finding("fan.stalled", v.fan, kind,
                                f"reads {s.reported or 0:.0f} RPM (no bench controller to command it: a dead"
                                " tach wire would read the same)", s, prof, {"bench": False})
            probe = self._airflow_probe(ctx, fanset, v.fan, prm)
            metrics.setdefault("airflow_probe", {})[v.fan] = probe
            if probe.get("moves_air"):
                return _finding("fan.tach_mismatch", v.fan, kind,
                                f"reads {s.reported or 0:.0f} RPM but moves air (rise per watt"
                                f" {probe['change']:+.0%} from full to minimum duty)", s, prof, {"probe": probe})
            extra = {"probe": probe}
            how = "moves no air" if "change" in probe else "could not check airflow"
            return _finding("fan.stalled", v.fan, kind, f"reads {s.reported or 0:.0f} RPM and {how}", s, prof, extra)
        for s, st in rep:
            if st == "zero":
                return _finding("fan.stalled", v.fan, kind, f"reads {s.reported:.0f} RPM", s, prof, {})
        for s, st in rep:
            if st == "low":
                return _finding("fan.weak", v.fan, kind, f"reads {s.reported:.0f} RPM", s, prof, {})
        return None

    def _airflow_probe(self, ctx: StageContext, fanset: FanSet, fan: int, prm: FanParams) -> dict[str, Any]:
        """Rise per watt with ``fan`` at minimum vs full duty, the others at their default."""
        dev, prof = ctx.device, ctx.profile
        if dev.compute is None:
            return {"skipped": "no compute load to heat the card"}
        low_duty = min(p.duty for p in prof.cooling.curve(fanset.chassis))
        default = prof.cooling.default_duty_of(fanset.chassis)
        hold = prm.probe_taus * prof.thermal.tau
        step = hold / (prm.probe_samples * 5)  # the averaged samples span the last fifth of each phase
        inlet = inlet_reading(ctx, fanset.bench)
        out: dict[str, Any] = {"inlet_c": inlet}
        # minimum first: a still-warming card then biases a stalled fan's change negative, never past the bar
        for phase, duty in (("min", low_duty), ("full", 100.0)):
            fanset.set_all(default)
            fanset.set_one(fan, duty)
            ratios: list[float] = []
            held = 0.0
            while held < hold - 1e-9:
                dev.compute.load(step, 1.0)
                held += step
                tel = ctx.sample(f"fans probe {fan} {phase}")
                if hold - held < prm.probe_samples * step + 1e-9 and tel.temperature_c is not None and tel.power_w:
                    ratios.append((tel.temperature_c - inlet) / tel.power_w)
            if not ratios:
                return {**out, "skipped": "no temperature/power readings"}
            out[f"theta_{phase}"] = round(fmean(ratios), 5)
        change = out["theta_min"] / out["theta_full"] - 1.0
        out["change"] = round(change, 4)
        out["moves_air"] = change > prm.airflow_min_change
        return out
