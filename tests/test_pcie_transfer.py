"""PCIe under load: the mock transfer model follows the trained link, and the stage judges
bandwidth, link and replays the way the rules say."""

from __future__ import annotations

import pytest

from drivers.api import DeviceLost
from drivers.mock.transfer import MockTransfer, link_gbps
from tests.test_fans_helpers import PROFILES, codes, fails, make_dev, run_stage

MIB = 1 << 20
TRAFFIC = {"duration_s": 30.0, "transfer_mib": 256}


def _rate(dev, direction: str = "h2d", n: int = 20) -> float:
    x = dev.transfer
    assert isinstance(x, MockTransfer)
    fn = x.host_to_device if direction == "h2d" else x.device_to_host
    secs = sum(fn(256 * MIB) for _ in range(n))
    return n * 256 * MIB / secs / 1e9


def test_link_rates() -> None:
    assert link_gbps(4, 16) == pytest.approx(31.5, rel=1e-3)
    assert link_gbps(5, 16) == pytest.approx(63.0, rel=1e-3)
    assert link_gbps(2, 8) == pytest.approx(4.0)
    assert link_gbps(None, 16) == 0.0


@pytest.mark.parametrize("profile", PROFILES)
def test_bandwidth_matches_the_profile_on_a_full_link(profile: str) -> None:
    dev = make_dev(profile)
    want = dev.profile.pcie.h2d_bandwidth
    assert _rate(dev, "h2d") == pytest.approx(want, rel=0.03)
    assert _rate(dev, "d2h") == pytest.approx(want, rel=0.03)


def test_downtrained_link_is_slower_and_time_is_simulated() -> None:
    full, half = make_dev("h100-sxm5-80gb"), make_dev("h100-sxm5-80gb", [{"kind": "pcie.downtrained", "gen": 5, "width": 8}])
    assert _rate(half) == pytest.approx(_rate(full) / 2, rel=0.03)
    t0 = half.clock.now()
    secs = half.transfer.host_to_device(1024 * MIB)  # type: ignore[union-attr]
    assert half.clock.now() - t0 == pytest.approx(secs)


def test_transfer_errors() -> None:
    dev = make_dev("h100-sxm5-80gb", [{"kind": "bus.fall_off", "at_s": 1.0}])
    with pytest.raises(ValueError, match="positive byte count"):
        dev.transfer.host_to_device(0)  # type: ignore[union-attr]
    with pytest.raises(DeviceLost):
        for _ in range(10_000):
            dev.transfer.host_to_device(256 * MIB)  # type: ignore[union-attr]


@pytest.mark.parametrize("profile", PROFILES)
def test_healthy_cards_pass(profile: str) -> None:
    for seed in range(20):
        res, _, events = run_stage("pcie", make_dev(profile, seed=seed, serial=f"OK-{seed}"), **TRAFFIC)
        assert res.status == "pass" and not res.findings, (seed, res.findings)
        assert res.metrics["replays"] == 0
        assert res.metrics["h2d_gbps"] == pytest.approx(res.metrics["expected_gbps"], rel=0.03)
    assert sum(1 for k, d in events if k == "sample" and d["tag"] == "pcie") == 4


def test_replays_during_load_are_reseat() -> None:
    res, _, _ = run_stage("pcie", make_dev("h100-sxm5-80gb", [{"kind": "pcie.replays", "per_minute": 120}]), **TRAFFIC)
    assert codes(res) == {("pcie.replays", "reseat")}
    assert res.metrics["replays_per_min"] == pytest.approx(120, rel=0.05)
    quiet, _, _ = run_stage("pcie", make_dev("h100-sxm5-80gb", [{"kind": "pcie.replays", "per_minute": 10}]), **TRAFFIC)
    assert not quiet.findings  # under the Gen5 x16 limit of 31/min


def test_replay_count_cap_per_test() -> None:
    res, _, _ = run_stage("pcie", make_dev("ascend-910b", [{"kind": "pcie.replays", "per_minute": 15}]),
                          duration_s=400.0, transfer_mib=1024)
    assert res.metrics["replays"] > 80 and ("pcie.replays", "reseat") in codes(res)


@pytest.mark.parametrize("gen, width, severity", [(4, 16, "fail"), (5, 8, "fail"), (2, 16, "fail")])
def test_downtrained_link_is_reported(gen: int, width: int, severity: str) -> None:
    dev = make_dev("h100-sxm5-80gb", [{"kind": "pcie.downtrained", "gen": gen, "width": width}])
    res, _, _ = run_stage("pcie", dev, **TRAFFIC)
    f = next(f for f in res.findings if f.code == "pcie.link_degraded")
    assert (f.severity, f.action) == (severity, "reseat")
    assert f.location == {"link": f"gen{gen}x{width}"}
    assert res.metrics["h2d_gbps"] < 0.6 * dev.profile.pcie.h2d_bandwidth
    assert not [x for x in res.findings if x.code == "pcie.bandwidth_low"]  # the link explains the rate
    assert fails(res) == ([f] if severity == "fail" else [])
