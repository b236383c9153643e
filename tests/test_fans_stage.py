"""Fan sweep: stalled, weak and tach faults on card fans and on chassis fans through the bench,
healthy cards never fail, and fan settings come back whatever happens."""

from __future__ import annotations

import pytest

from drivers.api import DeviceLost
from drivers.instruments import InstrumentDisconnected, open_instrument
from drivers.mock.device import MockDevice
from tests.test_fans_helpers import PROFILES, DirectBench, codes, fails, make_dev, run_stage

BLOWER = "rtx4090-blower-48gb"
PASSIVE = ("h100-sxm5-80gb", "ascend-910b")


@pytest.mark.parametrize("with_tach", [False, True])
@pytest.mark.parametrize(
    "fault, code",
    [
        ({"kind": "fan.stalled", "fan": 0}, "fan.stalled"),
        ({"kind": "fan.weak", "fan": 0, "max_fraction": 0.5}, "fan.weak"),
        ({"kind": "fan.tach_fault", "fan": 0}, "fan.tach_mismatch"),
    ],
)
def test_card_fan_faults(fault: dict, code: str, with_tach: bool) -> None:
    dev = make_dev(BLOWER, [fault], seed=3)
    res, ctx, _ = run_stage("fans", dev, DirectBench(dev) if with_tach else None)
    assert codes(res) == {(code, "replace_fan")}
    assert fails(res)[0].location["fan"] == 0
    assert ctx.facts.fan_findings[0].code == code
    assert dev.fans is not None and dev.fans.duty(0) == dev.profile.cooling.default_duty  # restored
    if with_tach:  # an independent reading decides at once: no airflow probe needed
        assert "airflow_probe" not in res.metrics


def test_zero_reading_without_tach_is_decided_by_airflow() -> None:
    stalled, _, _ = run_stage("fans", make_dev(BLOWER, [{"kind": "fan.stalled", "fan": 0}]))
    tach, _, _ = run_stage("fans", make_dev(BLOWER, [{"kind": "fan.tach_fault", "fan": 0}]))
    assert stalled.metrics["airflow_probe"][0]["moves_air"] is False
    assert tach.metrics["airflow_probe"][0]["moves_air"] is True
    assert tach.metrics["airflow_probe"][0]["change"] > 0.3  # a blower at 30 % vs 100 % duty


@pytest.mark.parametrize("profile", PASSIVE)
@pytest.mark.parametrize(
    "fault, code",
    [
        ({"kind": "fan.stalled", "fan": 1}, "fan.stalled"),
        ({"kind": "fan.weak", "fan": 1, "max_fraction": 0.6}, "fan.weak"),
        ({"kind": "fan.tach_fault", "fan": 1}, "fan.tach_mismatch"),
    ],
)
def test_chassis_fan_faults_through_the_simulated_bench(profile: str, fault: dict, code: str) -> None:
    dev = make_dev(profile, [fault], seed=5)
    with open_instrument("sim", plant=dev) as bench:
        res, _, _ = run_stage("fans", dev, bench)
        assert codes(res) == {(code, "replace_fan")}
        f = fails(res)[0]
        assert f.location == {"fan": 1, "chassis": True}
        assert [bench.fan_duty(ch) for ch in range(4)] == [dev.profile.cooling.chassis_default_duty] * 4


@pytest.mark.parametrize("profile", PROFILES)
def test_healthy_cards_never_fail(profile: str) -> None:
    for seed in range(20):
        dev = make_dev(profile, seed=seed, serial=f"OK-{seed}")
        res, _, _ = run_stage("fans", dev, DirectBench(dev))
        assert res.status == "pass", (seed, res.findings)
        assert not res.findings
        if profile == BLOWER:
            res2, _, _ = run_stage("fans", make_dev(profile, seed=seed, serial=f"OK-{seed}"))
            assert res2.status == "pass", (seed, res2.findings)


def test_passive_card_without_bench_reads_chassis_fans_at_their_fixed_duty() -> None:
    res, _, _ = run_stage("fans", make_dev("h100-sxm5-80gb"))
    assert res.status == "pass" and not fails(res)
    assert [s[0] for s in res.metrics["sweep"][0]] == [60.0]  # one step: nothing can command them
    stalled, _, _ = run_stage("fans", make_dev("ascend-910b", [{"kind": "fan.stalled", "fan": 3}]))
    assert codes(stalled) == {("fan.stalled", "replace_fan")}
    assert fails(stalled)[0].location == {"fan": 3, "chassis": True}


class _LostMidSweep(MockDevice):
    """Falls off the bus after a few telemetry reads, in the middle of the sweep."""

    reads_left = 5

    def telemetry(self):  # type: ignore[override]
        self.reads_left -= 1
        if self.reads_left < 0:
            raise DeviceLost(f"{self.serial}: gone mid-sweep")
        return super().telemetry()


def test_card_fans_restored_when_device_raises_mid_sweep() -> None:
    base = make_dev(BLOWER)
    dev = _LostMidSweep(base.profile, serial="LOST", seed=1)
    assert dev.fans is not None
    dev.fans.set_duty(0, 42.0)  # the policy the card had before the stage (MockFans restores the initial one)
    before = dev.physics.fan_states[0].duty_pct
    dev.fans._initial = [before]  # type: ignore[attr-defined]
    with pytest.raises(DeviceLost):
        run_stage("fans", dev)
    assert dev.physics.fan_states[0].duty_pct == 42.0


class _FlakyBench(DirectBench):
    """Unplugged after some RPM reads; comes back for the restore (the driver reconnects)."""

    def __init__(self, plant: MockDevice, fail_after: int, raise_device: bool = False) -> None:
        super().__init__(plant)
        self.left = fail_after
        self.raise_device = raise_device

    def fan_rpm(self, ch: int) -> float:
        self.left -= 1
        if self.left == 0:
            if self.raise_device:
                raise DeviceLost("card gone")
            raise InstrumentDisconnected("/dev/bench", "FAN2:RPM?", "cable pulled")
        return super().fan_rpm(ch)


@pytest.mark.parametrize("raise_device", [False, True])
def test_chassis_fans_restored_after_failure_mid_sweep(raise_device: bool) -> None:
    dev = make_dev("h100-sxm5-80gb", seed=2)
    for ch in range(4):
        dev.set_chassis_duty(ch, 55.0)
    bench = _FlakyBench(dev, fail_after=9, raise_device=raise_device)
    if raise_device:
        with pytest.raises(DeviceLost):
            run_stage("fans", dev, bench)
    else:
        res, _, _ = run_stage("fans", dev, bench)
        assert {f.code for f in res.findings} == {"instrument.disconnected"}
        assert not fails(res)  # a bench failure never blames the card
    assert [dev.chassis_duty(ch) for ch in range(4)] == [55.0] * 4
    assert "set 0 30.0" in bench.calls  # the sweep did move the fans before the failure


class _LockedFans(MockDevice):
    """A card whose fans exist but refuse host control (as many consumer boards do)."""

    @property
    def fans(self):  # type: ignore[override]
        from drivers.api import Unsupported

        fans = super().fans
        assert fans is not None

        def refuse(fan: int, duty: float) -> None:
            raise Unsupported("fan policy is locked")

        fans.set_duty = refuse  # type: ignore[method-assign]
        return fans


def test_locked_fan_control_is_skipped_not_an_error() -> None:
    base = make_dev(BLOWER)
    res, _, _ = run_stage("fans", _LockedFans(base.profile, serial="LOCK", seed=1))
    assert res.status == "skipped" and "refused" in res.metrics["reason"]
