"""The mock card's matrix engine: exact products on simulated time, and its compute faults."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.api import DeviceLost, KernelTimeout, Unsupported
from drivers.mock.device import MockDevice
from drivers.mock.faults import parse_fault
from drivers.profiles import load_profile

PROFILES = ("h100-sxm5-80gb", "rtx4090-blower-48gb", "ascend-910b")


def card(profile: str = "h100-sxm5-80gb", faults: list[dict] | None = None, serial: str = "SIM-1") -> MockDevice:
    return MockDevice(load_profile(profile), serial, faults=[parse_fault(f) for f in faults or []])


def ints(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 9, size=(n, n)).astype(np.float32)


@pytest.mark.parametrize("profile", PROFILES)
def test_healthy_products_are_exact_and_take_the_targets_time(profile: str) -> None:
    dev = card(profile)
    comp = dev.compute
    assert comp is not None and comp.dtypes == tuple(dev.profile.compute.dtypes)
    a, b = ints(64, 1), ints(64, 2)
    for d in comp.dtypes:
        t0 = dev.clock.now()
        c = comp.matmul(a, b, dtype=d)
        dt = dev.clock.now() - t0
        assert c.dtype == (np.float64 if d == "fp64" else np.float32)
        assert np.array_equal(c, a.astype(np.float64) @ b.astype(np.float64))
        assert dt == pytest.approx(2 * 64**3 / (dev.profile.compute.target[d] * 1e12), rel=1e-3)


def test_sdc_every_n_flips_exactly_one_bit_of_every_nth_product() -> None:
    comp = card(faults=[{"kind": "compute.sdc", "every": 3}]).compute
    a, b = ints(32, 1), ints(32, 2)
    want = (a.astype(np.float64) @ b).astype(np.float32)
    for i in range(1, 10):
        c = comp.matmul(a, b)
        x = c.view(np.uint32) ^ want.view(np.uint32)
        flips = [bin(int(v)).count("1") for v in x.ravel() if v]
        assert flips == ([1] if i % 3 == 0 else []), f"product {i}"


def test_sdc_probability_and_temperature_gate() -> None:
    comp = card(faults=[{"kind": "compute.sdc", "probability": 0.3}]).compute
    a, b = ints(16), ints(16, 5)
    want = (a.astype(np.float64) @ b).astype(np.float32)
    bad = sum(not np.array_equal(comp.matmul(a, b), want) for _ in range(400))
    assert 80 < bad < 160
    # above_temp_c: cold card -> clean; after a long full load -> corrupt
    dev = card(faults=[{"kind": "compute.sdc", "every": 1, "above_temp_c": 60}])
    assert np.array_equal(dev.compute.matmul(a, b), want)
    dev.compute.load(300.0, 1.0)
    assert dev.physics.temperature > 60
    assert not np.array_equal(dev.compute.matmul(a, b), want)


def test_hang_is_a_timeout_in_simulated_time_never_a_block() -> None:
    dev = card(faults=[{"kind": "compute.hang", "at_s": 50}])
    comp = dev.compute
    comp.matmul(ints(8), ints(8))
    wall = time.monotonic()
    with pytest.raises(KernelTimeout):
        comp.load(100.0)
    assert dev.clock.now() == pytest.approx(100.0, abs=1e-6)
    t = dev.clock.now()
    with pytest.raises(KernelTimeout):
        comp.matmul(ints(8), ints(8), timeout_s=7.0)
    assert dev.clock.now() == pytest.approx(t + 7.0)
    assert time.monotonic() - wall < 1.0


def test_slow_factor_and_load_report() -> None:
    dev = card("rtx4090-blower-48gb", faults=[{"kind": "compute.slow", "factor": 0.5}])
    rep = dev.compute.load(60.0, 1.0)
    assert rep.flops / rep.seconds == pytest.approx(0.5 * 150e12, rel=1e-6)
    assert rep.throttle == frozenset() and rep.mean_power_w > dev.profile.power.idle
    healthy = card("rtx4090-blower-48gb").compute.load(60.0, 0.5)
    assert healthy.flops / healthy.seconds == pytest.approx(0.5 * 150e12, rel=1e-6)


def test_bad_input_and_bus_loss() -> None:
    comp = card("ascend-910b", faults=[{"kind": "bus.fall_off", "at_s": 10}]).compute
    with pytest.raises(ValueError, match="shapes"):
        comp.matmul(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(Unsupported, match="bf16"):
        comp.matmul(ints(4), ints(4), dtype="bf16")
    with pytest.raises(ValueError, match="intensity"):
        comp.load(1.0, 2.0)
    with pytest.raises(DeviceLost):
        comp.load(20.0)
