"""Thermal soak: the fit recovers theta and tau, dried paste is called repaste, a fan fault is
never called repaste, healthy cards of every profile never fail, and the curve reaches the store."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.instruments import open_instrument
from stress.facts import SessionFacts
from stress.thermal import fit_first_order
from tests.test_fans_helpers import PROFILES, DirectBench, codes, fails, make_dev, run_stage

SOAK = {"soak_s": 240.0, "sample_interval_s": 5.0}
FAN_FAULTS = (
    {"kind": "fan.stalled", "fan": 0},
    {"kind": "fan.weak", "fan": 0, "max_fraction": 0.4},
)


def test_fit_recovers_a_known_curve() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(0, 241, 5.0)
    temp = 80.0 - 45.0 * np.exp(-t / 37.0) + rng.normal(0, 0.3, t.size)
    fit = fit_first_order(t, temp)
    assert fit is not None
    assert abs(fit.t_inf - 80.0) < 0.3
    assert abs(fit.tau - 37.0) / 37.0 < 0.05
    assert fit_first_order(t[:3], temp[:3]) is None


@pytest.mark.parametrize("profile", PROFILES)
def test_soak_measures_the_card(profile: str) -> None:
    dev = make_dev(profile, seed=4)
    res, ctx, events = run_stage("thermal", dev, DirectBench(dev), **SOAK)
    assert res.status == "pass" and not res.findings
    theta_true = dev.physics.theta_eff()
    assert abs(res.metrics["theta_c_per_w"] - theta_true) / theta_true < 0.03
    assert abs(res.metrics["tau_s"] - dev.profile.thermal.tau) / dev.profile.thermal.tau < 0.15
    assert ctx.facts.theta_c_per_w == pytest.approx(res.metrics["theta_c_per_w"], abs=1e-5)
    assert ctx.facts.thermal is not None and ctx.facts.thermal.tau_s == pytest.approx(res.metrics["tau_s"], abs=0.01)
    # it stopped once settled: 3 fitted time constants and a steady asymptote, before the 240 s limit
    assert res.metrics["stop_reason"] == "settled" and "asymptote" in res.metrics["stop_why"]
    assert 3 * res.metrics["tau_s"] <= res.duration_s < 240.0
    curve = [d for k, d in events if k == "sample" and d["tag"] == "thermal"]
    assert len(curve) == round(res.duration_s / 5) + 1 and curve[-1]["temperature_c"] > curve[0]["temperature_c"] + 20
    assert any(d["tag"] == "thermal bench" and "outlet_c" in d for k, d in events if k == "sample")


def test_a_fixed_soak_runs_its_whole_time() -> None:
    dev = make_dev("h100-sxm5-80gb", seed=4)
    res, _, events = run_stage("thermal", dev, None, stop_early=False, cooldown_s=10, **SOAK)
    assert res.duration_s == pytest.approx(240.0) and res.metrics["stop_reason"] == "fixed"
    assert res.metrics["cooldown_s"] == 10 and res.metrics["cooldown_stop"] == "fixed"
    assert len([d for k, d in events if k == "sample" and d["tag"] == "thermal"]) == 49


@pytest.mark.parametrize("profile", PROFILES)
def test_short_soak_extrapolates_to_steady_state(profile: str) -> None:
    # 150 s is ~3-5 time constants: the die is still climbing, the fitted transient makes up for it
    dev = make_dev(profile, seed=11)
    res, _, _ = run_stage("thermal", dev, DirectBench(dev), soak_s=150.0)
    assert abs(res.metrics["theta_c_per_w"] / dev.physics.theta_eff() - 1) < 0.02


@pytest.mark.parametrize("profile", PROFILES)
def test_healthy_cards_never_fail(profile: str) -> None:
    for seed in range(20):
        dev = make_dev(profile, seed=seed, serial=f"OK-{seed}")
        bench = DirectBench(dev) if seed % 2 else None
        fans, ctx, _ = run_stage("fans", dev, bench)
        res, _, _ = run_stage("thermal", dev, bench, facts=ctx.facts, cooldown_s=120, **SOAK)
        assert not fails(res), (seed, res.findings)
        assert res.metrics["theta_judged"]
        assert res.metrics["theta_c_per_w"] <= dev.profile.thermal.theta_max * 1.05


@pytest.mark.parametrize("profile", PROFILES)
def test_dried_paste_is_repaste(profile: str) -> None:
    for seed in range(8):
        dev = make_dev(profile, [{"kind": "thermal.resistance", "factor": 1.7}], seed=seed)
        res, _, _ = run_stage("thermal", dev, DirectBench(dev), **SOAK)
        assert ("thermal.high_resistance", "repaste") in codes(res), (seed, res.metrics)
        assert {f.action for f in fails(res)} == {"repaste"}


@pytest.mark.parametrize("fans_first", [True, False])
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("fault", FAN_FAULTS)
def test_fan_fault_is_never_called_repaste(profile: str, fault: dict, fans_first: bool) -> None:
    for seed in range(6):
        dev = make_dev(profile, [fault], seed=seed)
        bench = DirectBench(dev)
        facts = SessionFacts()
        if fans_first:
            run_stage("fans", dev, bench, facts=facts)
        res, _, _ = run_stage("thermal", dev, bench, facts=facts, cooldown_s=200, **SOAK)
        assert all(f.action != "repaste" for f in res.findings), (seed, res.findings)
        assert {f.action for f in fails(res)} <= {"replace_fan"}


def test_stalled_blower_slowdown_is_attributed_to_the_fan() -> None:
    dev = make_dev("rtx4090-blower-48gb", [{"kind": "fan.stalled", "fan": 0}])
    res, _, _ = run_stage("thermal", dev, None, **SOAK)
    assert ("thermal.slowdown", "replace_fan") in codes(res)
    slow = next(f for f in res.findings if f.code == "thermal.slowdown")
    assert slow.evidence["power_at_slowdown_w"] < dev.profile.power.tdp
    assert res.metrics["thermal_throttle_samples"] > 0


def test_paste_and_slowdown_on_hbm_card_through_the_pty_simulator() -> None:
    dev = make_dev("h100-sxm5-80gb", [{"kind": "thermal.resistance", "factor": 2.0}], seed=9)
    with open_instrument("sim", plant=dev) as bench:
        res, _, _ = run_stage("thermal", dev, bench, **SOAK)
    assert res.metrics["inlet_source"] == "bench"
    assert codes(res) == {("thermal.high_resistance", "repaste"), ("thermal.slowdown", "repaste")}


def test_bench_unplugged_mid_soak_keeps_the_soak() -> None:
    dev = make_dev("ascend-910b", seed=2)
    with open_instrument("sim", plant=dev, timeout_s=0.05, retries=0) as bench:
        assert bench.simulator is not None
        bench.simulator.inject(disconnect_after=12)
        res, _, _ = run_stage("thermal", dev, bench, **SOAK)
    assert {f.code for f in res.findings} == {"instrument.disconnected"}
    assert res.status == "pass" and res.metrics["inlet_source"] == "bench"
    assert res.metrics["theta_c_per_w"] is not None and res.metrics["stop_reason"] == "settled"


def test_low_power_card_is_not_judged_on_theta() -> None:
    # aux unplugged: ~75 W, a rise too small to read theta against an unmeasured inlet
    dev = make_dev("h100-sxm5-80gb", [{"kind": "power.aux_unplugged"}], seed=1)
    res, ctx, _ = run_stage("thermal", dev, None, **SOAK)
    assert res.metrics["theta_judged"] is False and not res.findings
    assert ctx.facts.theta_c_per_w is None
