"""The bench controller when the bench misbehaves, over a real pseudo-terminal: garbage,
silence, a pulled cable mid-soak, and recovery when it comes back. Short timeouts, no sleeps."""

from __future__ import annotations

import os
import time

import pytest

from drivers.instruments import (
    BenchController,
    InstrumentDisconnected,
    InstrumentError,
    InstrumentGarbled,
    InstrumentTimeout,
    StaticPlant,
    open_instrument,
)
from drivers.instruments.simulator import BenchSimulator

TIMEOUT_S = 0.2
RETRIES = 2


@pytest.fixture
def bench():
    b = open_instrument("sim", plant=StaticPlant(), timeout_s=TIMEOUT_S, retries=RETRIES)
    yield b
    b.close()


def sim_of(b: BenchController) -> BenchSimulator:
    assert b.simulator is not None
    return b.simulator


def one_line_naming(err: InstrumentError, port: str, command: str) -> bool:
    text = str(err)
    return port in text and repr(command) in text and "\n" not in text


def test_garbage_once_is_retried_transparently(bench: BenchController) -> None:
    sim = sim_of(bench)
    start = len(sim.received)
    sim.inject(garbage_replies=2)  # line noise, then a torn number that is printable
    assert bench.inlet_c() == pytest.approx(25.0)
    assert sim.received[start:] == ["TEMP:INLET?"] * 3
    sim.inject(garbage_replies=1)
    bench.set_fan_duty(3, 42.0)  # a checked write whose SYST:ERR? reply was garbled: resent
    assert bench.fan_duty(3) == pytest.approx(42.0)


def test_garbage_beyond_retries_raises_garbled(bench: BenchController) -> None:
    sim = sim_of(bench)
    start = len(sim.received)
    sim.inject(garbage_replies=RETRIES + 1)
    with pytest.raises(InstrumentGarbled) as err:
        bench.fan_rpm(0)
    assert one_line_naming(err.value, bench.port, "FAN1:RPM?")
    assert f"({RETRIES + 1} attempts)" in str(err.value)
    assert sim.received[start:] == ["FAN1:RPM?"] * (RETRIES + 1)
    assert bench.fan_rpm(0) == pytest.approx(0.6 * 12000)  # the next call is clean again


def test_a_number_out_of_range_is_garbled_not_accepted(bench: BenchController) -> None:
    plant = sim_of(bench).plant
    assert isinstance(plant, StaticPlant)
    plant.inlet = 900.0  # parses as a number, but no inlet probe reads 900 C
    with pytest.raises(InstrumentGarbled, match="outside"):
        bench.inlet_c()


def test_dropped_reply_is_retried(bench: BenchController) -> None:
    sim_of(bench).inject(drop_replies=1)
    t0 = time.monotonic()
    assert bench.outlet_c() == pytest.approx(41.5)
    assert TIMEOUT_S <= time.monotonic() - t0 < TIMEOUT_S + 0.5


def test_silence_raises_timeout_within_the_configured_time(bench: BenchController) -> None:
    sim_of(bench).inject(silent=True)
    t0 = time.monotonic()
    with pytest.raises(InstrumentTimeout) as err:
        bench.tach_rpm(0)
    elapsed = time.monotonic() - t0
    budget = TIMEOUT_S * (RETRIES + 1)
    assert budget - 0.05 <= elapsed < budget + 0.5
    assert one_line_naming(err.value, bench.port, "TACH1:RPM?")
    sim_of(bench).inject(silent=False)
    assert bench.tach_rpm(0) == pytest.approx(2400.0)


def test_cable_pulled_mid_soak_then_back(bench: BenchController) -> None:
    """A soak samples the probes every step; the cable goes at step 5 and comes back later."""
    sim = sim_of(bench)
    sim.inject(disconnect_after=2 * 5)  # two queries per step: five clean steps
    readings: list[tuple[float, float]] = []
    failure: InstrumentDisconnected | None = None
    for _ in range(8):
        t0 = time.monotonic()
        try:
            readings.append((bench.inlet_c(), bench.outlet_c()))
        except InstrumentDisconnected as e:
            failure = e
            break
    assert time.monotonic() - t0 < TIMEOUT_S  # a pulled cable is noticed at once, not by timeout
    assert failure is not None and one_line_naming(failure, bench.port, "TEMP:INLET?")
    assert readings == [(25.0, 41.5)] * 5  # the caller keeps what it had
    assert not os.path.exists(bench.port)  # the port really vanished
    with pytest.raises(InstrumentDisconnected, match="cannot open port"):
        bench.inlet_c()  # still gone: fails fast on every call
    sim.plug()
    assert bench.inlet_c() == pytest.approx(25.0)  # the driver reopened by itself
    bench.set_fan_duty(0, 80.0)
    assert bench.fan_duty(0) == pytest.approx(80.0)


def test_brief_unplug_between_calls_is_absorbed(bench: BenchController) -> None:
    sim = sim_of(bench)
    old_tty = sim.tty_path
    sim.unplug()
    sim.plug()  # the adapter re-enumerated: a new tty behind the same stable path
    assert sim.tty_path is not None and old_tty is not None
    assert bench.slot_powered(0) is True  # stale fd fails, one reopen, then the query succeeds


def test_disconnect_during_a_set_command(bench: BenchController) -> None:
    sim_of(bench).inject(disconnect_after=0)
    with pytest.raises(InstrumentDisconnected) as err:
        bench.slot_power(0, False)
    assert one_line_naming(err.value, bench.port, "SLOT1:POWER OFF")
    bench.close()
    bench.close()  # idempotent, and quiet about a port that is already gone


def test_close_stops_the_simulator_and_removes_its_port() -> None:
    b = open_instrument("sim", timeout_s=TIMEOUT_S)
    port = b.port
    assert os.path.exists(port)
    b.close()
    assert not os.path.exists(port) and not os.path.exists(os.path.dirname(port))
