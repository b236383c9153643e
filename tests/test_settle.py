"""Stages that wait on physics stop when it has settled (issue 19 item 6): the stop rules on their
own, on a real H200's heating curve, and the health watch on mock cards."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivers.api import Telemetry
from drivers.profiles import load_profile
from stress.compute.settle import BurnSettle
from stress.settle import count_lower, count_upper, drift_over, slope_per_s
from stress.thermal.judge import Soak, judge_soak
from stress.thermal.settle import SoakSettle
from tests.test_fans_helpers import make_dev, run_stage

# The thermal soak of `burnin run --plan quick` on a healthy H200 (driver 580.159.04; issue 19's
# quick-h200.json): 5 s samples at 555 W, integer temperatures, inlet taken as the profile's 25 C.
# It fitted tau 2.6 s and theta 0.0414 C/W over its full 150 s.
H200_SOAK = [(0.0, 32, 117.0)] + [(5.0 * i, t, 555.0) for i, t in enumerate(
    [46, 47, 47, 47, 47, 47, 47, 47, 47, 47, 47, 48, 47, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48,
     48, 48, 48, 48], start=1)]


def tel(t: float, temp: float | None, power: float = 500.0, throttle: frozenset[str] = frozenset()) -> Telemetry:
    return Telemetry(t, temp, power, 700.0, 1980.0, 1980.0, 100.0, None, None, throttle=throttle)


def test_poisson_bounds_and_drift() -> None:
    assert count_upper(0) == pytest.approx(2.996, abs=1e-3)  # none seen: at most 3 expected, at 95 %
    assert count_upper(10) == pytest.approx(16.96, abs=0.01)
    assert count_lower(0) == 0.0 and count_lower(1) == pytest.approx(0.0513, abs=1e-4)
    assert count_lower(12) == pytest.approx(6.924, abs=1e-3)  # chi2(0.05, 24) / 2
    assert slope_per_s([0, 1], [0, 1]) is None  # two points say nothing about noise
    assert drift_over([0, 5, 10], [40, 41, 40], 20) is None  # the window is not covered yet
    assert drift_over([0, 5, 10, 15, 20], [30, 40, 41, 40, 41], 10) == pytest.approx(0.0)


def _soak_until_settled(points: list[tuple[float, float, float]], rule: SoakSettle) -> int | None:
    for i, (t, temp, power) in enumerate(points):
        rule.add(tel(t, temp, power))
        if i > 0 and rule.settled():
            return i
    return None


def _theta(points: list[tuple[float, float, float]]) -> float:
    soak = Soak([tel(t, temp, p) for t, temp, p in points], 25.0, "profile", [], True, 0.25, points[-1][0],
                {"stop_reason": "settled"})
    res, _ = judge_soak(soak, load_profile("h200-sxm5-141gb"), [])
    return float(res.metrics["theta_c_per_w"])


def test_the_h200_soak_stops_within_a_minute_with_the_same_theta() -> None:
    rule = SoakSettle()
    stop = _soak_until_settled(H200_SOAK, rule)
    assert stop is not None and H200_SOAK[stop][0] <= 40.0, rule.why  # not 150 s
    short, full = _theta(H200_SOAK[:stop + 1]), _theta(H200_SOAK)
    assert full == pytest.approx(0.0414, abs=5e-4)  # what the run itself reported
    assert abs(short / full - 1) < 0.05  # the slow creep of the last 1 C is within the tolerance


def test_a_slow_die_is_not_settled_before_three_time_constants() -> None:
    rng = np.random.default_rng(3)
    pts = [(t, 80 - 50 * math.exp(-t / 45.0) + float(rng.normal(0, 0.3)), 650.0) for t in np.arange(0, 300, 5.0)]
    rule = SoakSettle()
    stop = _soak_until_settled(pts, rule)
    assert stop is not None and 3 * 45 * 0.9 <= pts[stop][0] <= 3 * 45 + 30, (pts[stop][0], rule.why)
    # the same curve cut short never settles: 100 s is barely two time constants
    assert _soak_until_settled(pts[:21], SoakSettle()) is None


def test_a_clamped_die_settles_once_flat_and_a_flat_one_at_once() -> None:
    hot = frozenset({"hw_thermal"})
    rule = SoakSettle()
    for t in range(0, 30, 5):
        rule.add(tel(t, 60 + t, 600.0))
    assert not rule.settled()
    for t in range(30, 50, 5):
        rule.add(tel(t, 87.0 + 0.1 * (t % 2), 500.0, hot))
    assert rule.settled() and "clamped" in rule.why
    flat = SoakSettle()
    for t in range(0, 30, 5):
        flat.add(tel(t, 70.0, 600.0))
    assert flat.settled() and "no heating curve" in flat.why


def _burn(rule: BurnSettle, temps: list[float], rates: dict[str, list[float]], dt: float = 1.0) -> None:
    for i, temp in enumerate(temps):
        rule.add_sample(tel(i * dt, temp))
        for d, rs in rates.items():
            rule.add_batch(i * dt, d, rs[i] * 1e12, 1.0)


def test_the_burn_settles_on_a_flat_die_and_a_steady_throughput() -> None:
    n = 21
    flat, rising = [70.0 + 0.05 * (i % 2) for i in range(n)], [60.0 + 0.3 * i for i in range(n)]
    steady = {"fp16": [600.0] * n, "fp32": [48.0] * n}
    throttling = {"fp16": [600.0] * 15 + [520.0] * 6, "fp32": [48.0] * n}
    ok = BurnSettle(window_s=20.0)
    _burn(ok, flat, steady)
    assert ok.settled(20.0) and "throughput steady" in ok.why
    hot = BurnSettle(window_s=20.0)
    _burn(hot, rising, steady)
    assert not hot.settled(20.0)  # still heating: 6 C over the window
    slow = BurnSettle(window_s=20.0)
    _burn(slow, flat, throttling)
    assert not slow.settled(20.0)  # fp16 fell 13 % in the second half
    short = BurnSettle(window_s=30.0)
    _burn(short, flat, steady)
    assert not short.settled(20.0)  # not yet a whole window under load


@pytest.mark.parametrize(("faults", "reason", "watched", "code"), [
    ([], "decided", 18.0, None),  # 3 / (10 SBE per min) = 0.3 min
    ([{"kind": "pcie.replays", "per_minute": 120}], "decided", 18.0, "pcie.replays"),
    ([{"kind": "ecc.sbe_storm", "per_minute": 500}], "decided", 6.0, "ecc.sbe_rate"),
    ([{"kind": "pcie.replays", "per_minute": 40}], "limit", 30.0, "pcie.replays"),  # near its limit: the whole window
])
def test_the_health_watch_stops_once_the_counts_decide(faults: list[dict], reason: str, watched: float,
                                                       code: str | None) -> None:
    dev = make_dev("h100-sxm5-80gb", faults, seed=1)
    res, _, _ = run_stage("health", dev, None, observe_s=30)
    assert (res.metrics["stop_reason"], res.metrics["watch_s"]) == (reason, watched)
    assert res.duration_s == pytest.approx(watched)
    assert [f.code for f in res.findings] == ([code] if code else [])


def test_the_re_probe_watches_its_whole_minute() -> None:
    from stress.health import HealthStage

    dev = make_dev("h100-sxm5-80gb", seed=1)
    res, _, _ = run_stage("health", dev, None, **(HealthStage.reprobe_params or {}))
    assert res.metrics["stop_reason"] == "fixed" and res.duration_s == pytest.approx(60.0)
