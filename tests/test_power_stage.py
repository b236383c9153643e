"""Power stage: a cap under the profile is fix_host, missing aux power is check_power, a card held
back by heat is not a power fault, and healthy cards of every profile reach their target."""

from __future__ import annotations

import pytest

from tests.test_fans_helpers import PROFILES, codes, fails, make_dev, run_stage

HOLD = {"hold_s": 60.0, "sample_interval_s": 5.0, "settle_s": 10.0}


@pytest.mark.parametrize("profile", PROFILES)
def test_healthy_cards_reach_the_target(profile: str) -> None:
    for seed in range(20):
        res, _, _ = run_stage("power", make_dev(profile, seed=seed, serial=f"OK-{seed}"), **HOLD)
        assert res.status == "pass" and not res.findings, (seed, res.findings)
        assert 0.9 < res.metrics["fraction_of_target"] < 1.0


@pytest.mark.parametrize("profile", PROFILES)
def test_cap_under_the_profile_is_fix_host(profile: str) -> None:
    dev = make_dev(profile, [{"kind": "power.capped", "watts": 150}])
    res, _, events = run_stage("power", dev, **HOLD)
    assert codes(res) == {("power.capped", "fix_host")}
    f = fails(res)[0]
    assert f.evidence["enforced_limit_w"] == 150 and f.evidence["mean_power_w"] < 0.75 * dev.profile.power.tdp
    assert res.duration_s == pytest.approx(60.0)
    assert sum(1 for k, d in events if k == "sample" and d["tag"] == "power") == 12


def test_mild_cap_above_the_floor_is_only_a_warning() -> None:
    res, _, _ = run_stage("power", make_dev("h100-sxm5-80gb", [{"kind": "power.capped", "watts": 600}]), **HOLD)
    assert not fails(res) and codes(res, "warn") == {("power.capped", "fix_host")}


@pytest.mark.parametrize("profile", PROFILES)
def test_aux_unplugged_is_check_power(profile: str) -> None:
    dev = make_dev(profile, [{"kind": "power.aux_unplugged"}])
    res, ctx, _ = run_stage("power", dev, **HOLD)
    assert codes(res) == {("power.aux_unplugged", "check_power")}
    assert "XID 54 seen" in fails(res)[0].evidence["why"]
    assert any(e.code == 54 for e in ctx.facts.events)  # kept for later stages


def test_thermally_held_card_is_not_a_power_fault() -> None:
    res, _, _ = run_stage("power", make_dev("rtx4090-blower-48gb", [{"kind": "fan.stalled", "fan": 0}]), **HOLD)
    assert not fails(res)
    assert {f.code for f in res.findings} == {"power.thermal_limited"}


def test_low_power_without_cap_or_aux_is_power_low(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = make_dev("h100-sxm5-80gb")
    dev.physics.full_load_w = 400.0  # a sagging supply: the card cannot pull its power
    res, _, _ = run_stage("power", dev, **HOLD)
    assert codes(res) == {("power.low", "check_power")}
