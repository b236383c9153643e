"""The memory stage finds, classifies and locates every injected memory fault (issue 3)."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest

from drivers.api import DeviceLost
from drivers.mock import faults as F
from drivers.mock.device import MockDevice
from drivers.profiles import load_profile
from drivers.registry import get_backend
from stress import model
from stress.base import StageContext, get_stage

MIB = 1 << 20
N = MIB  # 1 MiB cards keep the suite fast; the semantics do not depend on the size
MID = N // 2 + 4133
HBM, GDDR = "h100-sxm5-80gb", "rtx4090-blower-48gb"
PROFILES = (HBM, GDDR)
QUICK: dict[str, Any] = {"algorithms": ["march_c-", "address", "repeated_reads"], "repeat_reads": 256}
STANDARD: dict[str, Any] = {
    "algorithms": ["march_c-", "walking_ones", "walking_zeros", "address", "moving_inversions",
                   "repeated_reads", "bit_fade", "bandwidth"],
    "repeat_reads": 256, "fade_wait_s": 300, "random_patterns": 2, "bandwidth_max_passes": 4,
}


def run(profile: str, faults: list[dict[str, Any]], params: dict[str, Any] | None = None,
        mib: int = 1, seed: int | None = None) -> model.TestResult:
    be = get_backend("mock")
    cfg = be.Config(backend="mock", profile=profile, serial="MEM-1", memory_mib=mib, seed=seed, faults=faults)
    dev = be.open(be.discover(cfg, {})[0])
    stage = get_stage("memory")
    ctx = StageContext(device=dev, profile=load_profile(profile), params=stage.Params(**(params or QUICK)),
                       serial="MEM-1")
    return stage().run(ctx)


def where(profile: str, address: int) -> dict[str, int]:
    mem = load_profile(profile).memory
    return {"stack" if mem.kind == "hbm" else "chip": (address // 256) % mem.chips}


def only(res: model.TestResult, profile: str, code: str, address: int, bit: int | None = None) -> dict[str, Any]:
    assert res.status == "fail", res.findings
    assert len(res.findings) == 1, [(f.code, f.location) for f in res.findings]
    f = res.findings[0]
    assert f.code == code and f.severity == "fail" and f.test == "memory"
    assert f.action == ("rma" if profile == HBM else "replace_memory")
    assert f.location["address"] == address
    if bit is not None:
        assert f.location["bit"] == bit
    assert "bit" in f.location
    assert {k: v for k, v in f.location.items() if k in ("chip", "stack")} == where(profile, address)
    return f.evidence


POSITIONS = {"first": 0, "middle": MID, "last": N - 1}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("value", [0, 1])
def test_stuck_bit(profile: str, pos: str, value: int) -> None:
    a, bit = POSITIONS[pos], (5 if value else 2)
    ev = only(run(profile, [{"kind": "memory.stuck_bit", "address": a, "bit": bit, "value": value}]),
              profile, "memory.stuck_bit", a, bit)
    assert ev["value"] == value


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("direction", ["up", "down"])
def test_transition(profile: str, pos: str, direction: str) -> None:
    a, bit = POSITIONS[pos], (0 if direction == "up" else 7)
    ev = only(run(profile, [{"kind": "memory.transition", "address": a, "bit": bit, "direction": direction}]),
              profile, "memory.transition", a, bit)
    assert ev["direction"] == direction


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("pos", POSITIONS)
def test_intermittent(profile: str, pos: str) -> None:
    a = POSITIONS[pos]
    only(run(profile, [{"kind": "memory.intermittent", "address": a, "bit": 3, "probability": 0.2}]),
         profile, "memory.intermittent", a, 3)


@pytest.mark.parametrize("profile", PROFILES)
def test_intermittent_rare_and_always(profile: str) -> None:
    for p in (0.02, 1.0):
        only(run(profile, [{"kind": "memory.intermittent", "address": MID, "bit": 6, "probability": p}]),
             profile, "memory.intermittent", MID, 6)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("pos", POSITIONS)
def test_retention_needs_the_fade_wait(profile: str, pos: str) -> None:
    a = POSITIONS[pos]
    fault = [{"kind": "memory.retention", "address": a, "bit": 1, "seconds": 60}]
    ev = only(run(profile, fault, STANDARD), profile, "memory.retention", a, 1)
    assert ev["wait_s"] == 300
    assert run(profile, fault, QUICK).findings == []  # quick has no bit-fade wait


# (aggressor, victim): below/above the victim, first/last byte, far apart and the same byte
COUPLINGS = [
    (0, N - 1, "up", "invert"),
    (N - 1, 0, "down", "set"),
    (MID, MID + 70000, "any", "reset"),
    (MID + 70000, MID, "up", "set"),
    (MID - 1, MID, "down", "reset"),
    (MID + 1, MID, "any", "invert"),
    (N - 1, N - 1, "up", "reset"),
    (0, 0, "down", "invert"),
    (MID, MID, "any", "set"),
]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("agg,vic,trigger,effect", COUPLINGS)
def test_coupling(profile: str, agg: int, vic: int, trigger: str, effect: str) -> None:
    ab, vb = (6, 1) if agg != vic or trigger != "up" else (1, 6)
    fault = {"kind": "memory.coupling", "aggressor": agg, "aggressor_bit": ab, "victim": vic,
             "victim_bit": vb, "trigger": trigger, "effect": effect}
    ev = only(run(profile, [fault]), profile, "memory.coupling", vic, vb)
    assert (ev["aggressor"], ev["aggressor_bit"], ev["trigger"], ev["effect"]) == (agg, ab, trigger, effect)


DECODERS = [(0, N - 1), (N - 1, 0), (MID, MID - 5000), (MID, MID + 5000), (MID, MID + 1)]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("address,alias", DECODERS)
def test_address_decoder(profile: str, address: int, alias: int) -> None:
    fault = {"kind": "memory.address_decoder", "address": address, "alias": alias}
    ev = only(run(profile, [fault]), profile, "memory.address_decoder", address)
    assert ev["alias"] == alias


def test_every_kind_at_once_on_a_64_mib_card_with_quick() -> None:
    n = 64 * MIB
    faults = [
        {"kind": "memory.stuck_bit", "address": 0, "bit": 3, "value": 1},
        {"kind": "memory.stuck_bit", "address": n - 1, "bit": 0, "value": 0},
        {"kind": "memory.transition", "address": 12345, "bit": 5, "direction": "up"},
        {"kind": "memory.transition", "address": 7777777, "bit": 1, "direction": "down"},
        {"kind": "memory.coupling", "aggressor": 1000, "aggressor_bit": 2, "victim": 500000,
         "victim_bit": 6, "trigger": "up", "effect": "set"},
        {"kind": "memory.coupling", "aggressor": n - 2, "aggressor_bit": 7, "victim": 300,
         "victim_bit": 0, "trigger": "down", "effect": "invert"},
        {"kind": "memory.address_decoder", "address": 9999, "alias": 88888},
        {"kind": "memory.intermittent", "address": 5555555, "bit": 4, "probability": 0.05},
    ]
    res = run(GDDR, faults, QUICK, mib=64)
    got = {(f.code, f.location["address"], f.location["bit"]) for f in res.findings}
    assert got == {
        ("memory.stuck_bit", 0, 3), ("memory.stuck_bit", n - 1, 0), ("memory.transition", 12345, 5),
        ("memory.transition", 7777777, 1), ("memory.coupling", 500000, 6), ("memory.coupling", 300, 0),
        ("memory.address_decoder", 9999, 0), ("memory.intermittent", 5555555, 4),
    }
    assert res.metrics["bytes_tested"] == n and res.metrics["errors_total"] > 0


@pytest.mark.parametrize("profile", PROFILES)
def test_healthy_cards_get_no_memory_finding(profile: str) -> None:
    for seed in range(12):
        res = run(profile, [], QUICK, seed=seed)
        assert res.status == "pass" and res.findings == [] and res.metrics["errors_total"] == 0
    res = run(profile, [], STANDARD, seed=99)
    assert res.findings == [] and res.metrics["bytes_verified"] > 10 * N
    assert res.metrics["bandwidth"]["passes"] == 4


@pytest.mark.parametrize("profile,chip", [(GDDR, 5), (HBM, 2)])
def test_dead_chip_is_one_bounded_finding_naming_it(profile: str, chip: int) -> None:
    prof = load_profile(profile)
    chips = prof.memory.chips
    addrs = [a for a in range(N) if (a // 256) % chips == chip]
    # every byte of the chip has a stuck bit (model_construct: 40k-200k faults, no validation cost)
    faults = [F.StuckBit.model_construct(kind="memory.stuck_bit", address=a, bit=a % 8, value=(a >> 3) & 1)
              for a in addrs]
    dev = MockDevice(prof, "DEAD-1", memory_mib=1, faults=faults)
    stage = get_stage("memory")
    ctx = StageContext(device=dev, profile=prof, params=stage.Params(**QUICK, max_errors=512), serial="DEAD-1")
    res = stage().run(ctx)
    key = "stack" if prof.memory.kind == "hbm" else "chip"
    assert res.status == "fail" and 1 <= len(res.findings) <= 3
    f = res.findings[0]
    assert f.code == "memory.chip" and f.location[key] == chip
    assert f.action == ("rma" if prof.memory.kind == "hbm" else "replace_memory")
    m = res.metrics
    assert m["errors_total"] >= len(addrs) // 2
    assert m[f"errors_by_{key}"] == {str(chip): m["errors_total"]}
    assert m["records_kept"] <= 512 and len(m["records"]) <= 16
    doc = json.dumps({"metrics": m, "findings": [x.to_dict() for x in res.findings]})
    assert len(doc) < 64_000


def test_stuck_bits_on_a_few_cells_of_several_chips_are_itemised() -> None:
    faults = [{"kind": "memory.stuck_bit", "address": a, "bit": 4, "value": 1} for a in (10, 300, 600, 900)]
    res = run(GDDR, faults)
    assert sorted(f.location["chip"] for f in res.findings) == [0, 1, 2, 3]
    assert all(f.code == "memory.stuck_bit" for f in res.findings)


def test_bad_plan_values_are_errors_naming_the_field() -> None:
    stage = get_stage("memory")
    with pytest.raises(pydantic.ValidationError, match="backgrounds"):
        stage.Params(backgrounds=["zz"])
    with pytest.raises(pydantic.ValidationError, match="algorithms"):
        stage.Params(algorithms=["march_x"])
    with pytest.raises(pydantic.ValidationError, match="fade_wait"):
        stage.Params(fade_wait_s=-1)


def test_a_card_that_falls_off_the_bus_raises_device_lost() -> None:
    with pytest.raises(DeviceLost):
        run(HBM, [{"kind": "bus.fall_off", "at_s": 0}])


def test_algorithms_run_alone_on_the_memory_api() -> None:
    import numpy as np

    from drivers.mock.memory import MockMemory
    from stress.memory import algorithms as A
    from stress.memory.records import ErrorLog

    class Clock:
        t = 0.0

        def now(self) -> float:
            return self.t

        def sleep(self, s: float) -> None:
            self.t += s

    m = MockMemory(1 << 16, [F.Retention(kind="memory.retention", address=99, bit=0, seconds=5)], Clock(),
                   np.random.default_rng(0))
    log = ErrorLog(chips=4)
    scan = A.Scan(m, log, m._clock)
    assert A.march_c_minus(scan, [b"\x00"]) == 0 and A.walking(scan, True, 8) == 0
    assert A.bit_fade(scan, 10.0) == 1 and log.records[0].address == 99 and log.records[0].bits == [0]
    assert A.parse_march("down(r1,w0); any(r0)")[0].descending
    with pytest.raises(ValueError, match="march element"):
        A.parse_march("up(w0,r1)")


def test_same_config_same_findings_and_json_ready() -> None:
    faults = [{"kind": "memory.intermittent", "address": MID, "bit": 2, "probability": 0.1},
              {"kind": "memory.coupling", "aggressor": 7, "aggressor_bit": 0, "victim": N - 9, "victim_bit": 3,
               "trigger": "any", "effect": "invert"}]
    a, b = run(HBM, faults, STANDARD, seed=3), run(HBM, faults, STANDARD, seed=3)
    da = json.dumps([f.to_dict() for f in a.findings] + [a.to_dict()], sort_keys=True)
    db = json.dumps([f.to_dict() for f in b.findings] + [b.to_dict()], sort_keys=True)
    assert len(a.findings) == 2
    assert json.loads(da)[:2] == json.loads(db)[:2]
