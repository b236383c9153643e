"""Compute burn-in: sustained, verified matrix products that catch silent data corruption.

gpu-burn loads every card and compares results but only says OK/FAULTY; DCGM's targeted_stress
checks throughput per SKU but says "run a field diagnostic". This stage keeps the card at full
load for the plan's duration, checks every product (ABFT row checksums; periodically the whole
result against an exact reference), measures sustained throughput per datatype against the
profile and, at run level, against identical cards, and names the repair:

- wrong results -> retest cooler (lower load, fans up); hot-only on a card with high theta ->
  ``repaste``, persisting cool -> ``rma`` (``compute.miscompare`` / ``compute.nan`` with the
  element, its expected and actual value and the flipped bit);
- slow -> throttle reasons first (heat -> ``thermal.slowdown`` with its cause, power cap ->
  advice), unthrottled -> ``compute.slow`` (``rma``);
- a product that misses its watchdog deadline -> ``compute.hang`` (``reset_and_retest``); the
  stage stops at once and the harness abandons this card's worker.

Products are interleaved across datatypes so every datatype sees the whole heat curve. Where the
products are small (mock cards), the card is held at load between verified batches so the die
heats as it would under real sizes.

The hot phase stops once it has seen enough (``stress/compute/settle.py``: the products for the
statistics, a die settled under load, a steady throughput), at most ``duration_s``; its metrics
say why (``stop_reason``). Where the thermal stage measured theta, the idle settle before the
load (a baseline for the burn's own rough theta) is skipped: the die stays at the temperature
the soak left it, which is where heat-dependent errors show.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from typing import Any, ClassVar

from pydantic import Field

from drivers.api import DeviceError, DeviceLost, KernelTimeout, MemoryFault, Telemetry, Unsupported
from drivers.profiles import Profile
from stress.base import Stage, StageContext, StageParams, register_stage
from stress.bounds import CELSIUS_MAX, COUNT_MAX, INTERVAL_MAX_S, PHASE_MAX_S, SEED_MAX, SMALL_COUNT_MAX
from stress.compute.engine import VerifiedGemm, open_engine
from stress.compute.findings import (
    TEST,
    Tally,
    fan_suspect,
    hang_finding,
    heat_call,
    rate_measurements,
    rate_metrics,
    throughput_findings,
    wrong_result_findings,
)
from stress.compute.heat import Airflow, theta_from_steps
from stress.compute.settle import BurnSettle
from stress.model import Finding, TestResult, test_status
from stress.settle import StopReason

_EPS_S = 1e-9


class BurnParams(StageParams):
    duration_s: float = Field(120.0, gt=0, le=PHASE_MAX_S)  # hot phase, at full load, at most (or exactly: stop_early = false)
    stop_early: bool = True  # end the hot phase once it has seen enough (stress/compute/settle.py)
    settle_window_min_s: float = Field(10.0, gt=0, le=PHASE_MAX_S)  # shortest window the die must be flat over under load
    hot_delta_c: float = Field(1.0, gt=0, le=CELSIUS_MAX)  # drift over that window counted as settled
    rate_tolerance: float = Field(0.05, gt=0, lt=1)  # throughput change across the window counted as steady
    dtypes: list[str] | None = None  # default: the profile's
    size: int | None = Field(None, ge=8, le=65536)  # square products; default: the engine's
    products_min: int = Field(400, ge=1, le=COUNT_MAX)  # verified products in the hot phase, all dtypes together
    batch: int = Field(8, ge=1, le=SMALL_COUNT_MAX)  # products between two looks at the clock/telemetry
    full_check_every: int = Field(50, ge=1, le=COUNT_MAX)  # products per dtype between full reference checks
    kernel_timeout_s: float = Field(30.0, gt=0, le=INTERVAL_MAX_S)  # watchdog per product
    intensity: float = Field(1.0, gt=0, le=1)
    sample_interval_s: float = Field(2.0, gt=0, le=INTERVAL_MAX_S)
    settle_max_s: float = Field(120.0, ge=0, le=PHASE_MAX_S)  # idle settle before loading (theta needs a baseline)
    settle_step_s: float = Field(10.0, gt=0, le=INTERVAL_MAX_S)
    settle_delta_c: float = Field(0.5, gt=0, le=CELSIUS_MAX)  # settled when one step moves less than this
    cool_retest: bool = True
    cool_intensity: float = Field(0.4, gt=0, le=1)
    cool_margin_c: float = Field(8.0, ge=0, le=CELSIUS_MAX)  # the retest must stay this far below the coolest error
    cool_settle_max_s: float = Field(240.0, ge=0, le=PHASE_MAX_S)
    cool_duration_s: float = Field(60.0, gt=0, le=PHASE_MAX_S)
    cool_products_min: int = Field(200, ge=1, le=COUNT_MAX)
    cool_products_max: int = Field(5000, ge=1, le=COUNT_MAX)
    cool_confidence: float = Field(5.0, gt=0, le=1000)  # expected errors in the retest had the rate not changed
    seed: int | None = Field(None, ge=0, le=SEED_MAX // 2)  # operand data; default derived from the serial


def _seed(serial: str, seed: int | None) -> int:
    if seed is not None:
        return seed
    return int.from_bytes(hashlib.sha256(f"burn/{serial}".encode()).digest()[:8], "little")


class _Run:
    """One card's burn-in; keeps what was measured so a hang can still report it."""

    def __init__(self, ctx: StageContext, p: BurnParams, dtypes: list[str]) -> None:
        self.ctx = ctx
        self.p = p
        self.dtypes = dtypes
        self.clock = ctx.device.clock
        self.compute = ctx.device.compute
        self.engines: list[VerifiedGemm] = []
        self.hot = Tally()
        self.cool: Tally | None = None
        self.current: tuple[str, int] | None = None  # dtype, size of the batch in flight
        self.t0 = self.clock.now()

    def sample(self, tally: Tally | None, tag: str) -> Telemetry:
        t = self.ctx.sample(tag)
        if tally is not None:
            tally.note(t)
        return t

    def settle(self, max_s: float, until_c: float | None, tag: str) -> Telemetry:
        """Idle until the die stops moving (or drops to ``until_c``), at most ``max_s``."""
        prev = self.sample(None, tag)
        waited = 0.0
        while waited < max_s - _EPS_S:
            step = min(self.p.settle_step_s, max_s - waited)
            self.clock.sleep(step)
            waited += step
            cur = self.sample(None, tag)
            if cur.temperature_c is None or prev.temperature_c is None:
                return cur
            if until_c is not None and cur.temperature_c <= until_c:
                return cur
            if until_c is None and abs(cur.temperature_c - prev.temperature_c) < self.p.settle_delta_c:
                return cur
            prev = cur
        return prev

    def phase(self, tally: Tally, duration_s: float, products_min: int, intensity: float, tag: str,
              span: tuple[float, float], rule: BurnSettle | None = None) -> StopReason:
        """Verified batches round-robin over the datatypes, held at ``intensity`` to schedule:
        ``products_min`` spread over ``duration_s``, or over the rule's window when it may stop
        early (then on at the same pace until it has seen enough, at most ``duration_s``)."""
        p = self.p
        n_batches = max(1, math.ceil(products_min / p.batch))
        planned = duration_s if rule is None else min(duration_s, max(rule.window_s, rule.horizon_s))
        tally.started_s = t0 = self.clock.now()
        last_sample = -math.inf
        reason: StopReason = "fixed" if rule is None else "limit"
        fresh = False  # a sample arrived since the rule last looked
        i = 0
        while True:
            now = self.clock.now()
            if i >= n_batches and now - t0 >= duration_s - 1e-6:
                break
            if i >= n_batches and rule is not None and fresh:
                fresh = False
                if rule.settled(now):
                    reason = "settled"
                    break
            eng = self.engines[i % len(self.engines)]
            self.current = (eng.dtype, eng.size)
            rep = eng.run(p.batch, p.kernel_timeout_s)
            self.current = None
            tally.add(rep)
            if rule is not None:
                rule.add_batch(self.clock.now(), rep.dtype, rep.flops, rep.seconds)
            if rep.wrong_elements or self.clock.now() - last_sample >= p.sample_interval_s:
                tel = self.sample(tally, tag)
                last_sample = self.clock.now()
                if rule is not None:
                    rule.add_sample(tel)
                    fresh = True
                if rep.wrong_elements:
                    temp = tel.temperature_c
                    if temp is not None:
                        tally.error_temps.append(temp)
                    room = max(0, 8 - len(tally.examples))
                    tally.examples.extend((e, temp) for e in rep.errors[:room])
            if intensity < 1.0 and rep.seconds > 0:
                self.clock.sleep(rep.seconds * (1.0 - intensity) / intensity)  # duty cycle
            i += 1
            # past products_min the pace is kept (at most a batch of every datatype per sample), so
            # the throughput rule sees every datatype in each half of its window
            pace = planned / n_batches
            after = max(pace, p.sample_interval_s / len(self.engines))
            target = t0 + min(duration_s, pace * min(i, n_batches) + after * max(0, i - n_batches))
            hold = target - self.clock.now()
            if hold > _EPS_S and self.compute is not None:
                lr = self.compute.load(hold, intensity)
                tally.throttle |= set(lr.throttle)
            elif i > n_batches and self.clock.now() <= now:
                break  # a clock that does not move: nothing more to schedule
            done = min(1.0, max(i / n_batches, (self.clock.now() - t0) / duration_s))
            self.ctx.progress(span[0] + (span[1] - span[0]) * done, f"{tag}: {tally.total_products} products")
        tally.ended_s = self.clock.now()
        self.sample(tally, tag)
        return reason


@register_stage
class BurnStage(Stage):
    """Stage ``burn``: see the module docstring."""

    name: ClassVar[str] = "burn"
    Params: ClassVar[type[StageParams]] = BurnParams
    codes: ClassVar[frozenset[str]] = frozenset({
        "compute.miscompare", "compute.nan", "compute.slow", "compute.power_limited", "compute.hang",
        "compute.fault", "thermal.slowdown", "ecc.dbe"})
    watchdog_code: ClassVar[str] = "compute.hang"
    requires: ClassVar[frozenset[str]] = frozenset({"compute"})

    def run(self, ctx: StageContext) -> TestResult:
        p: BurnParams = ctx.params
        prof = ctx.profile
        if ctx.device.compute is None:
            return TestResult(TEST, "skipped", error="the device offers no compute handle")
        dtypes = list(p.dtypes or prof.compute.dtypes)
        missing = [d for d in dtypes if d not in prof.compute.target or d not in ctx.device.compute.dtypes]
        if missing:
            return TestResult(TEST, "error", error=f"burn: dtypes: {', '.join(missing)} not offered by "
                                                   f"{prof.name} (have: {', '.join(prof.compute.dtypes)})")
        run = _Run(ctx, p, dtypes)
        findings: list[Finding] = []
        metrics: dict[str, Any] = {}
        airflow = Airflow(ctx)
        try:
            seed = _seed(ctx.serial, p.seed)
            for j, d in enumerate(dtypes):
                run.engines.append(open_engine(ctx.device, d, p.size, p.full_check_every, seed + j))
            known = ctx.facts.theta_c_per_w is not None and p.stop_early
            t_idle = run.clock.now()
            idle = run.sample(None, "burn.idle") if known else run.settle(p.settle_max_s, None, "burn.idle")
            metrics["idle_settle_s"] = round(run.clock.now() - t_idle, 1)
            if known:
                metrics["idle_settle"] = "skipped: theta from the thermal stage"
            rule = self._rule(ctx, p, idle) if p.stop_early else None
            metrics["stop_reason"] = run.phase(run.hot, p.duration_s, p.products_min, p.intensity, "burn",
                                               (0.0, 0.8), rule)
            if rule is not None:
                metrics["settle_window_s"] = round(rule.window_s, 1)
                if rule.why:
                    metrics["stop_why"] = rule.why
            theta, src = self._theta(ctx, run, idle)
            findings += throughput_findings(run.hot, prof, dtypes, theta, fan_suspect(run.hot.samples, prof))
            if run.hot.wrong:
                raised: list[str] = []
                if p.cool_retest:
                    run.cool = Tally()
                    raised = airflow.boost()
                    t_err = min(run.hot.error_temps) if run.hot.error_temps else None
                    until = None if t_err is None else t_err - p.cool_margin_c
                    run.settle(p.cool_settle_max_s, until, "burn.cool")
                    rate = run.hot.bad_products / max(1, run.hot.total_products)
                    n_cool = min(p.cool_products_max, max(p.cool_products_min, math.ceil(p.cool_confidence / rate)))
                    run.phase(run.cool, p.cool_duration_s, n_cool, p.cool_intensity, "burn.cool", (0.8, 1.0))
                    airflow.restore()
                call = heat_call(run.hot, run.cool, theta, src, prof, p.cool_margin_c, raised)
                findings += wrong_result_findings(run.hot, call)
            metrics["theta_c_per_w"] = None if theta is None else round(theta, 4)
            metrics["theta_source"] = src
        except KernelTimeout as e:
            dtype, size = run.current or (None, None)
            findings.append(hang_finding(e, dtype, size, p.kernel_timeout_s, run.hot.total_products,
                                         self._elapsed(run)))
        except (DeviceLost, Unsupported):
            raise
        except MemoryFault as e:  # an uncorrectable ECC error under the burn: the DBE rule's case
            findings.append(Finding("ecc.dbe", "fail", "reset_and_retest", TEST,
                                    f"uncorrectable ECC error during the compute burn-in: {e}", {},
                                    {"error": str(e)}))
        except DeviceError as e:
            findings.append(Finding("compute.fault", "fail", "reset_and_retest", TEST,
                                    f"the compute burn-in failed on the device: {e}", {}, {"error": str(e)}))
        finally:
            airflow.restore()
            for eng in run.engines:
                with contextlib.suppress(Exception):
                    eng.close()
        metrics.update(self._metrics(run, prof, dtypes))
        return TestResult(TEST, test_status(findings), duration_s=self._elapsed(run), metrics=metrics,
                          findings=findings, measurements=rate_measurements(metrics, prof, dtypes))

    @staticmethod
    def _rule(ctx: StageContext, p: BurnParams, start: Telemetry) -> BurnSettle:
        """The hot phase's stop rule, its window one time constant: the soak's fitted tau where
        it measured one (the real die), else the profile's. Its horizon: a first-order die
        ``gap`` below its steady state is within ``delta`` after ``tau ln(gap / delta)``, the gap
        from the soak's asymptote where known, else the profile's band at its rated power."""
        soak, th = ctx.facts.thermal, ctx.profile.thermal
        tau = soak.tau_s if soak is not None and soak.tau_s else th.tau
        window = max(p.settle_window_min_s, tau)
        steady = (soak.t_steady_c if soak is not None and soak.t_steady_c is not None
                  else th.inlet + ctx.profile.power.tdp * (th.theta_min + th.theta_max) / 2)
        gap = steady - start.temperature_c if start.temperature_c is not None else 0.0
        horizon = window + tau * math.log(max(1.0, gap / p.hot_delta_c))
        return BurnSettle(window_s=window, horizon_s=horizon, delta_c=p.hot_delta_c, rate_tol=p.rate_tolerance)

    @staticmethod
    def _now(run: _Run) -> float:
        with contextlib.suppress(Exception):
            return run.clock.now()
        return run.t0

    @staticmethod
    def _elapsed(run: _Run) -> float:
        with contextlib.suppress(Exception):
            return run.clock.now() - run.t0
        return 0.0

    @staticmethod
    def _theta(ctx: StageContext, run: _Run, idle: Telemetry) -> tuple[float | None, str]:
        """The thermal stage's theta where it measured one, else a rough one from this burn."""
        stored = ctx.facts.theta_c_per_w
        if stored is not None and math.isfinite(stored) and stored > 0:
            return float(stored), "thermal stage"
        hot = run.hot
        loaded = hot.ended_s - hot.started_s
        tail = [s for s in hot.samples if s.time_s >= hot.ended_s - 0.1 * loaded] or hot.samples[-3:]
        throttled = any(s.throttle & {"hw_thermal", "sw_thermal"} for s in tail)
        theta = theta_from_steps(idle, tail, loaded, ctx.profile.thermal.tau, throttled)
        return theta, "burn estimate"

    @staticmethod
    def _metrics(run: _Run, prof: Profile, dtypes: list[str]) -> dict[str, Any]:
        hot = run.hot
        m: dict[str, Any] = {
            "products": hot.total_products, "full_checks": hot.full_checks, "bad_products": hot.bad_products,
            "wrong_elements": hot.wrong, "nonfinite": hot.nonfinite, "max_temp_c": hot.max_temp,
            "throttle": sorted(hot.throttle), "size": run.engines[0].size if run.engines else None,
            "hot_s": round(max(0.0, (hot.ended_s or BurnStage._now(run)) - hot.started_s), 3),
        }
        m.update(rate_metrics(hot, prof, dtypes))
        if run.cool is not None:
            m.update({"cool_products": run.cool.total_products, "cool_wrong": run.cool.wrong,
                      "cool_max_temp_c": run.cool.max_temp})
        return m

    @classmethod
    def compare_peers(cls, results: list[tuple[str, Profile, TestResult]]) -> dict[str, list[Finding]]:
        """More than ``peer_gap`` behind the best identical card in the run: slow, unless throttled."""
        out: dict[str, list[Finding]] = {}
        groups: dict[str, list[tuple[str, Profile, TestResult]]] = {}
        for key, prof, res in results:
            if res.status in ("pass", "fail") and not any(f.code == "compute.hang" for f in res.findings):
                groups.setdefault(prof.name, []).append((key, prof, res))
        for members in groups.values():
            if len(members) < 2:
                continue
            prof = members[0][1]
            gap = prof.compute.peer_gap / 100.0
            for d in prof.compute.dtypes:
                measured = [(k, r.metrics.get(f"tflops_{d}")) for k, _, r in members]
                rates = [(k, x) for k, x in measured if isinstance(x, int | float) and x > 0]
                if len(rates) < 2:
                    continue
                best_key, best = max(rates, key=lambda kv: kv[1])
                for key, rate in rates:
                    if rate >= best * (1.0 - gap):
                        continue
                    res = next(r for k, _, r in members if k == key)
                    if any(f.code in ("compute.slow", "thermal.slowdown", "compute.power_limited")
                           for f in res.findings + out.get(key, [])):
                        continue  # already explained on this card
                    behind = 1.0 - rate / best
                    ev = {"dtype": d, "tflops": rate, "best_tflops": best, "best_card": best_key,
                          "peer_gap": gap, "throttle": res.metrics.get("throttle", [])}
                    throttle = set(res.metrics.get("throttle") or [])
                    if throttle & {"hw_thermal", "sw_thermal"}:
                        f = Finding("thermal.slowdown", "warn", "none", TEST,
                                    f"{d} {rate:.1f} TFLOPS, {behind:.0%} behind the best identical card "
                                    f"({best:.1f}) while thermally throttled", {"dtype": d}, ev)
                    elif throttle & {"sw_power_cap", "hw_power_brake"}:
                        f = Finding("compute.power_limited", "warn", "none", TEST,
                                    f"{d} {rate:.1f} TFLOPS, {behind:.0%} behind the best identical card "
                                    f"({best:.1f}) at the power limit; see the power stage", {"dtype": d}, ev)
                    else:
                        f = Finding("compute.slow", "fail", "rma", TEST,
                                    f"{d} {rate:.1f} TFLOPS, {behind:.0%} behind the best identical card "
                                    f"({best:.1f} TFLOPS) with no throttle reason", {"dtype": d}, ev)
                    out.setdefault(key, []).append(f)
        return out
