"""The bench controller's vocabulary over a real pseudo-terminal: every command, the error queue,
argument validation, and PROTOCOL.md's example session replayed byte for byte."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import serial

from drivers.instruments import (
    BenchController,
    InstrumentDisconnected,
    InstrumentRefused,
    StaticPlant,
    open_instrument,
)

PROTOCOL_MD = Path(__file__).resolve().parents[1] / "drivers" / "instruments" / "PROTOCOL.md"


@pytest.fixture
def bench():
    b = open_instrument("sim", plant=StaticPlant(fans=4, card_fans_rpm=[2400.0]), timeout_s=0.2, retries=2)
    yield b
    b.close()


def plant_of(b: BenchController) -> StaticPlant:
    assert b.simulator is not None
    plant = b.simulator.plant
    assert isinstance(plant, StaticPlant)
    return plant


def test_open_sim_goes_through_a_real_tty(bench: BenchController) -> None:
    assert bench.simulator is not None
    assert bench.simulator.tty_path is not None and bench.simulator.tty_path.startswith("/dev/pts/")
    assert Path(bench.port).resolve() == Path(bench.simulator.tty_path)
    assert bench.identity is not None and bench.identity.model == "BENCH-SIM"
    assert (bench.fans, bench.tachs, bench.slots) == (4, 2, 1)
    assert bench.simulator.received[:2] == ["*CLS", "SYST:ERR?"]


def test_every_command_round_trips(bench: BenchController) -> None:
    plant = plant_of(bench)
    assert bench.identify().manufacturer == "BURNIN"
    for ch in range(bench.fans):
        bench.set_fan_duty(ch, 10.0 * (ch + 1) + 0.25)
    assert [plant.chassis_duty(ch) for ch in range(4)] == [10.25, 20.25, 30.25, 40.25]  # really driven
    assert bench.fan_duty(2) == pytest.approx(30.25)
    assert bench.fan_rpm(2) == pytest.approx(0.3025 * 12000, abs=0.1)
    assert bench.tach_rpm(0) == pytest.approx(2400.0)
    assert bench.tach_rpm(1) is None  # no card fan in view: "not available", not 0 RPM
    assert bench.inlet_c() == pytest.approx(25.0)
    assert bench.outlet_c() == pytest.approx(41.5)
    bench.slot_power(0, False)
    assert plant.powered is False and bench.slot_powered(0) is False
    bench.slot_power(0, True)
    assert bench.slot_powered(0) is True
    bench.reset()
    assert [bench.fan_duty(ch) for ch in range(4)] == [100.0] * 4  # fails cool
    assert bench.slot_powered(0) is True  # *RST never cuts the card's power
    assert bench.errors() == []
    assert "FAN3:DUTY 30.25" in bench.simulator.received  # 0-based API, 1-based wire


def test_power_cycle_turns_power_back_on_even_if_the_wait_is_interrupted(bench: BenchController) -> None:
    plant = plant_of(bench)
    seen: list[tuple[float, bool]] = []
    bench.power_cycle(0, 2.5, sleep=lambda s: seen.append((s, plant.slot_powered())))
    assert seen == [(2.5, False)] and plant.slot_powered()

    def interrupted(s: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bench.power_cycle(0, 1.0, sleep=interrupted)
    assert plant.slot_powered()


def test_error_queue_is_fifo_and_reports_each_kind(bench: BenchController) -> None:
    for line in (
        "BOGUS:CMD",
        "FAN9:DUTY 5",
        "FAN1:DUTY fast",
        "FAN1:DUTY",
        "FAN1:DUTY 150",
        "SLOT1:POWER MAYBE",
        "TEMP:INLET? 3",
    ):
        bench.transport.write(line)
    assert [code for code, _ in bench.errors()] == [-113, -114, -104, -109, -222, -224, -108]
    assert bench.errors() == []
    bench.transport.write("BOGUS:CMD")
    assert bench.errors() == [(-113, "Undefined header")]


def test_error_queue_overflow_keeps_ten_and_marks_the_last(bench: BenchController) -> None:
    for _ in range(12):
        bench.transport.write("NOPE")
    errs = bench.errors()
    assert len(errs) == 10 and errs[-1][0] == -350 and all(c == -113 for c, _ in errs[:-1])


def test_refused_set_names_the_command() -> None:
    class ShortedFan(StaticPlant):
        def set_chassis_duty(self, ch: int, pct: float) -> None:
            raise RuntimeError("channel 2 driver shorted")

    with open_instrument("sim", plant=ShortedFan(), timeout_s=0.2) as b:
        with pytest.raises(InstrumentRefused) as err:
            b.set_fan_duty(1, 50)
        assert err.value.code == -300
        assert "FAN2:DUTY 50.00" in str(err.value) and b.port in str(err.value)
        assert "shorted" in str(err.value) and "\n" not in str(err.value)
        assert b.errors() == []  # the checked write consumed its own error


def test_bad_arguments_are_caught_before_anything_is_sent(bench: BenchController) -> None:
    assert bench.simulator is not None
    before = len(bench.simulator.received)
    for call in (
        lambda: bench.set_fan_duty(4, 50),
        lambda: bench.set_fan_duty(-1, 50),
        lambda: bench.set_fan_duty(True, 50),  # type: ignore[arg-type]
        lambda: bench.set_fan_duty(0, 100.5),
        lambda: bench.set_fan_duty(0, float("nan")),
        lambda: bench.set_fan_duty(0, "50"),  # type: ignore[arg-type]
        lambda: bench.tach_rpm(2),
        lambda: bench.slot_power(1, True),
        lambda: bench.slot_power(0, "on"),  # type: ignore[arg-type]
        lambda: bench.transport.write("FAN1:DUTY 5\nSLOT1:POWER OFF"),
    ):
        with pytest.raises(ValueError, match=r"fan|tach|slot|ASCII line"):
            call()
    assert len(bench.simulator.received) == before


def test_missing_port_is_a_one_line_disconnected_error(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyUSB-gone")
    with pytest.raises(InstrumentDisconnected) as err:
        open_instrument(port, timeout_s=0.2)
    msg = str(err.value)
    assert port in msg and "'open'" in msg and "No such file" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="only to port='sim'"):
        open_instrument(port, plant=StaticPlant())


def test_protocol_md_example_session_replays_verbatim() -> None:
    """The documented transcript is what the simulator actually says (PyMeasure-style replay)."""
    block = re.search(r"## Example session\n\n```\n(.*?)```", PROTOCOL_MD.read_text(), re.S)
    assert block is not None
    lines = block.group(1).splitlines()
    assert len(lines) > 20
    b = open_instrument("sim", timeout_s=0.2)
    try:
        b.transport.close()  # talk raw pyserial on the same tty
        with serial.serial_for_url(b.port, timeout=0.5) as raw:
            for line in lines:
                direction, text = line[:2], line[2:]
                if direction == "> ":
                    raw.write(text.encode("ascii") + b"\n")
                else:
                    assert direction == "< "
                    assert raw.readline() == text.encode("ascii") + b"\n", line
            raw.timeout = 0.05
            assert raw.read(1) == b""  # commands really get no reply
    finally:
        b.close()


def test_errors_pickle_across_processes() -> None:
    """Card sessions may run in worker processes: the error must survive the trip intact."""
    for err in (
        InstrumentDisconnected("/dev/ttyUSB0", "TEMP:INLET?", "port lost"),
        InstrumentRefused("/dev/ttyUSB0", "FAN1:DUTY 50.00", -300, "Device-specific error"),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.port == "/dev/ttyUSB0"
    assert back.code == -300
