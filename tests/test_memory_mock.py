"""The mock memory's fault semantics (mock-faults.md) and the scan primitives of the device API."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.api import DeviceLost, ManualClock, MemoryHandle, Mismatches, Pattern
from drivers.mock import faults as F
from drivers.mock.memory import MockMemory

N = 1 << 16
Z, ONES = Pattern(b"\x00"), Pattern(b"\xff")


def mem(*faults: F.Fault, size: int = N, seed: int = 1) -> MockMemory:
    return MockMemory(size, list(faults), ManualClock(), np.random.default_rng(seed))


def cpl(a: int, ab: int, v: int, vb: int, trigger: str = "up", effect: str = "invert") -> F.Coupling:
    return F.Coupling(kind="memory.coupling", aggressor=a, aggressor_bit=ab, victim=v, victim_bit=vb,
                      trigger=trigger, effect=effect)


def test_starts_zero_and_round_trips() -> None:
    m = mem()
    assert not m.read(0, N).any()
    data = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)
    m.write(123, data)
    assert np.array_equal(m.read(123, 5000), data)
    assert m.compare(123, 5000, b"\x00").size > 4000


def test_stuck_bit_reads_its_value_whatever_is_written() -> None:
    m = mem(F.StuckBit(kind="memory.stuck_bit", address=N - 1, bit=7, value=1))
    assert m.read(N - 1, 1)[0] == 0x80
    m.write_pattern(0, N, ONES)
    m.write_pattern(0, N, Z)
    assert m.read(N - 1, 1)[0] == 0x80 and not m.read(0, N - 1).any()


@pytest.mark.parametrize("direction", ["up", "down"])
def test_transition_fault_blocks_one_transition(direction: str) -> None:
    m = mem(F.Transition(kind="memory.transition", address=0, bit=2, direction=direction))
    # powers up in the state its broken transition would reach
    assert m.read(0, 1)[0] == (4 if direction == "up" else 0)
    m.write(0, np.array([0x00], np.uint8))
    m.write(0, np.array([0xFF], np.uint8))
    m.write(0, np.array([0x00], np.uint8))
    assert m.read(0, 1)[0] == (0 if direction == "up" else 4)
    m.write(0, np.array([0xFF], np.uint8))
    assert m.read(0, 1)[0] == (0xFB if direction == "up" else 0xFF)


def test_coupling_victim_written_later_in_same_operation_is_overwritten() -> None:
    m = mem(cpl(10, 0, 20, 3, "up", "invert"))
    m.write_pattern(0, N, ONES)  # ascending: aggressor 10 goes up, victim 20 then written 0xFF itself
    assert m.read(20, 1)[0] == 0xFF
    m.write_pattern(0, N, Z)
    m.write_pattern(0, N, ONES, descending=True)  # victim written first, then flipped by 10
    assert m.read(20, 1)[0] == 0xF7


def test_coupling_aggressor_above_victim() -> None:
    m = mem(cpl(N - 1, 7, 0, 0, "down", "set"))
    m.write_pattern(0, N, ONES)
    m.write_pattern(0, N, Z)  # ascending: victim 0 written first, then set by N-1 going down
    assert m.read(0, 1)[0] == 1
    m.write_pattern(0, N, ONES)
    m.write_pattern(0, N, Z, descending=True)  # aggressor first: victim overwritten after
    assert m.read(0, 1)[0] == 0


def test_march_element_reads_before_writes_per_address() -> None:
    m = mem(cpl(5, 1, 9, 6, "up", "reset"))
    m.write_pattern(0, N, ONES)
    m.write_pattern(0, N, Z)
    m.write(9, np.array([0xFF], np.uint8))
    mm = m.march_element(0, 16, Z, ONES)  # at 5: 0->FF resets victim bit 6 before 9 is read
    assert mm.address.tolist() == [9] and mm.got.tolist() == [0xBF] and mm.expected.tolist() == [0]
    assert m.read(9, 1)[0] == 0xFF  # then 9 got its own new value


def test_same_byte_coupling_lands_on_the_new_value() -> None:
    m = mem(cpl(100, 0, 100, 7, "up", "invert"))
    m.write(100, np.array([0x01], np.uint8))
    assert m.read(100, 1)[0] == 0x81
    m.write(100, np.array([0x01], np.uint8))  # no transition: written value stands
    assert m.read(100, 1)[0] == 0x01


@pytest.mark.parametrize("address,alias", [(8, N - 8), (N - 8, 8)])
def test_address_decoder_writes_alias_too(address: int, alias: int) -> None:
    m = mem(F.AddressDecoder(kind="memory.address_decoder", address=address, alias=alias))
    m.write(address, np.array([0x5A], np.uint8))
    assert m.read(alias, 1)[0] == 0x5A
    m.write(alias, np.array([0x11], np.uint8))
    assert m.read(address, 1)[0] == 0x5A
    m.write_pattern(0, N, ONES)
    # ascending: the later of the two writes wins at the alias
    assert m.read(alias, 1)[0] == 0xFF
    m.write_pattern(0, N, Pattern(address=True))
    want = Pattern(address=True).expand(0, N)
    got = m.read(0, N)
    bad = np.flatnonzero(got != want).tolist()
    assert bad == ([] if alias > address else [alias])
    if bad:
        assert got[alias] == want[address]


def test_retention_decays_after_its_time_without_a_write() -> None:
    m = mem(F.Retention(kind="memory.retention", address=7, bit=1, seconds=10.0))
    m.write_pattern(0, N, ONES)
    m._clock.sleep(9.0)
    assert m.read(7, 1)[0] == 0xFF
    m.write(7, np.array([0xFF], np.uint8))  # a write restarts the clock
    m._clock.sleep(9.5)
    assert m.read(7, 1)[0] == 0xFF
    m._clock.sleep(0.6)
    assert m.read(7, 1)[0] == 0xFD


def test_intermittent_is_seeded_and_near_its_probability() -> None:
    f = F.Intermittent(kind="memory.intermittent", address=N // 2, bit=4, probability=0.25)
    a, b = mem(f, seed=5), mem(f, seed=5)
    ra = a.verify_repeat(0, N, Z, 2000)
    rb = b.verify_repeat(0, N, Z, 2000)
    assert ra.address.tolist() == [N // 2] and ra.hits.tolist() == rb.hits.tolist()
    assert 400 < ra.hits[0] < 600 and ra.bit_counts[4] == ra.hits[0] == ra.total
    flips = sum(int(a.read(N // 2, 1)[0]) for _ in range(400)) // 16
    assert 60 < flips < 140


def test_counts_are_exact_past_the_record_limit() -> None:
    faults = [F.StuckBit.model_construct(kind="memory.stuck_bit", address=a, bit=a % 8, value=1)
              for a in range(0, N, 3)]
    m = mem(*faults)
    mm = m.march_element(0, N, Z, None, limit=10, chips=5)
    assert mm.address.size == 10 and mm.total == len(faults)
    assert mm.bit_counts.sum() == len(faults) and mm.chip_counts.sum() == len(faults)
    rep = m.verify_repeat(0, N, Z, 7, limit=10, chips=5)
    assert rep.total == 7 * len(faults) and rep.hits[:3].tolist() == [7, 7, 7]


def test_guard_and_range_errors() -> None:
    lost = [False]

    def guard() -> None:
        if lost[0]:
            raise DeviceLost("gone")

    m = MockMemory(N, [], ManualClock(), np.random.default_rng(0), guard=guard)
    with pytest.raises(ValueError, match="outside"):
        m.read(N - 1, 2)
    lost[0] = True
    with pytest.raises(DeviceLost):
        m.march_element(0, N, Z, ONES)


def test_mock_device_builds_memory_with_its_faults() -> None:
    from drivers.registry import get_backend

    be = get_backend("mock")
    cfg = be.Config(backend="mock", profile="h100-sxm5-80gb", serial="M1", memory_mib=1,
                    faults=[{"kind": "memory.stuck_bit", "address": 5, "bit": 0, "value": 1}])
    dev = be.open(be.discover(cfg, {})[0])
    t0 = dev.clock.now()
    assert dev.memory.size == 1 << 20 and dev.memory.read(5, 1)[0] == 1
    dev.memory.write_pattern(0, 1 << 20, ONES)
    assert dev.clock.now() > t0  # memory traffic takes simulated time


class PlainMemory(MemoryHandle):
    """A backend with only read/write: the default scan primitives must work on it."""

    def __init__(self, size: int) -> None:
        self.buf = np.zeros(size, np.uint8)

    @property
    def size(self) -> int:
        return self.buf.size

    def write(self, offset: int, data: np.ndarray, descending: bool = False) -> None:
        self.buf[offset : offset + data.size] = data

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        return self.buf[offset : offset + nbytes].copy()


def test_default_primitives_match_the_mock() -> None:
    plain, mock = PlainMemory(N), mem()
    for h in (plain, mock):
        h.write_pattern(0, N, Pattern(address=True))
    plain.buf[77] ^= 0x10
    mock.write(77, np.array([Pattern(address=True).expand(77, 1)[0] ^ 0x10], np.uint8))
    a = plain.march_element(0, N, Pattern(address=True), Pattern(b"\x0f"), limit=8, chips=3)
    b = mock.march_element(0, N, Pattern(address=True), Pattern(b"\x0f"), limit=8, chips=3)
    for x, y in ((a, b), (plain.verify_repeat(0, N, Pattern(b"\x0f"), 3), mock.verify_repeat(0, N, Pattern(b"\x0f"), 3))):
        assert x.address.tolist() == y.address.tolist() and x.total == y.total
        assert x.bit_counts.tolist() == y.bit_counts.tolist()
    assert a.address.tolist() == [77] and a.bit_counts[4] == 1
    assert a.chip_counts[(77 // 256) % 3] == 1


def test_pattern_and_merge() -> None:
    assert Pattern(address=True).expand(8, 8).view("<u8")[0] == 8
    assert Pattern(b"\x01\x02", invert=True).expand(1, 3).tolist() == [0xFD, 0xFE, 0xFD]
    with pytest.raises(ValueError):
        Pattern(b"\x01\x02\x03")
    one = Mismatches.of(0, np.zeros(4, np.uint8), np.array([0, 1, 0, 0], np.uint8), 8)
    two = one.merge(one, 8)
    assert two.hits.tolist() == [2] and two.total == 2 and two.address.tolist() == [1]
