"""The ascend backend through the whole harness (``burnin devices`` / ``burnin run``): the npu-smi
simulator with one fault per NPU, and a directory of real-layout captures replayed as npu-smi.
Verdicts and actions must follow verdict-rules.md and fixtures/ascend/fault_codes.toml."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "ascend"
SIM = FIX / "npu_smi_sim.py"
REPLAY = FIX / "replay_npu_smi.py"
CAPTURE_SET = FIX / "captures" / "sets" / "atlas800t-a2-v23rc3"

# The quick plan's stages with short windows: the health stage's observe window is wall time
# on a real backend. These racks have npu-smi only (no ascend-dmi, no torch_npu), so the stages
# that need memory/compute handles cannot run: this plan accepts them skipped on Huawei cards
# (``optional_for``), so these tests judge what npu-smi reads; without that a card is retest
# (tests/test_ascend_stress.py runs them with the simulated tools).
PLAN = """name = "quick-ascend-test"
description = "quick's stages, short windows"
[[stages]]
stage = "preflight"
[[stages]]
stage = "health"
observe_s = 0
[[stages]]
stage = "memory"
algorithms = ["march_c-"]
backgrounds = ["00"]
optional_for = ["huawei"]
[[stages]]
stage = "pcie"
duration_s = 1
optional_for = ["huawei"]
[[stages]]
stage = "fans"
duty_steps = [30, 100]
settle_s = 0
reads = 1
optional_for = ["passive"]
[[stages]]
stage = "thermal"
soak_s = 1
cooldown_s = 0
sample_interval_s = 1
optional_for = ["huawei"]
[[stages]]
stage = "burn"
duration_s = 1
optional_for = ["huawei"]
[[stages]]
stage = "power"
hold_s = 1
settle_s = 0
optional_for = ["huawei"]
[[stages]]
stage = "health"
final = true
observe_s = 0
"""


def rack(tmp_path: Path, npu_smi: str, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[rack]\nname = "{name}"\n\n[[hosts]]\nname = "local"\n\n[[hosts.devices]]\n'
                    f'backend = "ascend"\nnpu_smi = {json.dumps(npu_smi)}\n', encoding="utf-8")
    return path


def sim_rack(tmp_path: Path, state_name: str, tag: str) -> Path:
    """A rack on a private, writable copy of a bundled simulator state (cards may drop mid-run)."""
    state = json.loads((FIX / state_name).read_text(encoding="utf-8"))
    state["writable"] = True
    path = tmp_path / f"{tag}-state.json"
    path.write_text(json.dumps(state), encoding="utf-8")
    return rack(tmp_path, f"{sys.executable} -S -E {SIM} --state {path}", tag)


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    p = tmp_path / "quick-ascend-test.toml"
    p.write_text(PLAN, encoding="utf-8")
    return p


def devices(burnin: Any, cfg: Path) -> dict[int, dict[str, Any]]:
    code, out, err = burnin("devices", str(cfg), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "burnin.devices/1"
    return {d["slot"]: d for d in doc["devices"]}


def run(burnin: Any, cfg: Path, plan: Path, expect_exit: int) -> dict[int, dict[str, Any]]:
    out_json = cfg.with_suffix(".json")
    code, _, err = burnin("run", str(cfg), "--plan", str(plan), "--json", str(out_json),
                          "--db", str(cfg.with_suffix(".db")), "--quiet")
    assert code == expect_exit, err
    doc = json.loads(out_json.read_text(encoding="utf-8"))
    assert doc["schema"] == "burnin.result/1" and doc["plan"] == "quick-ascend-test"
    return {c["slot"]: c for c in doc["cards"]}


def fail_codes(card: dict[str, Any]) -> set[str]:
    return {f["code"] for f in card["findings"] if f["severity"] == "fail"}


def warn_codes(card: dict[str, Any]) -> set[str]:
    return {f["code"] for f in card["findings"] if f["severity"] == "warn"}


# --------------------------------------------------------------------------- healthy server


def test_healthy_eight_npu_server_passes(burnin: Any, tmp_path: Path, plan: Path) -> None:
    """Eight healthy NPUs; one of them runs someone's python3 (npu-smi's process table): that one
    is not ready to test and says so, the others pass."""
    cfg = sim_rack(tmp_path, "sim_state.json", "healthy")
    devs = devices(burnin, cfg)
    assert sorted(devs) == [1, 2, 3, 4, 5, 6, 8, 9]  # npu ids: from 1, 7 missing
    busy = devs.pop(1)
    (f,) = busy["findings"]
    assert (f["code"], f["action"], busy["ready"]) == ("host.busy", "fix_host", False)
    assert "214733" in f["message"] and "python3" in f["message"] and f["evidence"]["used_mib"] == 3156
    devs[1] = busy
    for slot, d in devs.items():
        assert (d["backend"], d["vendor"], d["model"]) == ("ascend", "huawei", "910B3")
        assert d["findings"] == [] or slot == 1
        # no ascend-dmi, no torch_npu on this host: the stages that need them say what to install
        assert {"memory", "burn", "diagnose"} <= set(d["cannot_run"])
        assert "torch_npu" in d["cannot_run"]["burn"]["reason"]
        assert "ascend-dmi is not installed" in d["cannot_run"]["diagnose"]["reason"]
        assert d["telemetry"]["memory_total_mib"] == 65536 and d["telemetry"]["fans_rpm"] == []
        assert d["telemetry"]["power_limit_w"] is None and d["telemetry"]["pcie"]["gen"] is None
    one = devs[1]
    assert (one["serial"], one["pci_bus_id"]) == ("1024A31B0001X", "0000:C1:00.0")
    t = one["telemetry"]
    assert (t["temperature_c"], t["power_w"], t["memory_used_mib"], t["utilization_pct"]) == (41, 93.4, 6317, 12)
    assert (t["clock_mhz"], t["clock_max_mhz"]) == (1000, 1000)
    assert one["firmware"]["firmware_version"] == "7.3.0.1.231"

    cards = run(burnin, cfg, plan, expect_exit=1)
    assert sorted(cards) == sorted(devs)
    for slot, c in cards.items():
        want = ("retest", ["fix_host"]) if slot == 1 else ("pass", [])
        assert (c["verdict"], c["actions"], c["backend"]) == (*want, "ascend"), (slot, c["findings"])
        statuses = {t["name"]: t["status"] for t in c["tests"]}
        assert statuses["health"] == "pass"
        assert {statuses[s] for s in ("memory", "pcie", "thermal", "burn", "power")} == {"skipped"}
    assert fail_codes(cards[1]) == {"host.busy"}


def test_stages_an_npu_cannot_run_make_it_retest_unless_the_plan_allows_it(burnin: Any, tmp_path: Path) -> None:
    strict = tmp_path / "strict-plan.toml"
    strict.write_text(PLAN.replace('optional_for = ["huawei"]\n', ""), encoding="utf-8")
    cards = run(burnin, sim_rack(tmp_path, "sim_state.json", "strict"), strict, expect_exit=1)
    c = cards[2]
    assert (c["verdict"], c["actions"]) == ("retest", ["fix_host"])
    (f,) = c["findings"]
    assert f["code"] == "host.stages_skipped"
    assert f["evidence"]["stages"] == ["memory", "pcie", "thermal", "burn", "power"]
    assert f["evidence"]["optional_skipped"] == ["fans"]  # passive: the plan allows it
    assert "torch_npu is not installed" in f["message"] or "torch and torch_npu are not installed" in f["message"]


# --------------------------------------------------------------------------- one fault per NPU

# slot (= NPU id): verdict, actions, fail finding codes, warn codes that must be there
EXPECT: dict[int, tuple[str, list[str], set[str], set[str]]] = {
    1: ("pass", [], set(), set()),
    2: ("retest", ["reset_and_retest"], {"ecc.dbe"}, set()),  # 80E01801 + DBE counter
    3: ("rma", ["rma"], {"ecc.retired_pages"}, set()),  # 80E18402 + 64 isolated pages
    4: ("retest", ["reset_and_retest"], {"thermal.over_temp"}, set()),  # 106 C >= shutdown
    5: ("repair", ["reseat"], {"bus.lost"}, set()),  # answered 4 calls, then invalid id
    6: ("retest", ["reset_and_retest"], {"npu.8C03A000"}, set()),  # heartbeat
    8: ("retest", ["reset_and_retest"], {"npu.80E9F001"}, {"thermal.over_temp"}),  # unknown code + SoC hot
    9: ("pass", [], set(), set()),  # curFreq 800 at 45 C: throttled, cause unknown, no finding
    10: ("pass", [], set(), {"thermal.slowdown"}),  # curFreq 800 at 88 C: thermal throttle, warn
    12: ("repair", ["check_power"], {"power.overcurrent"}, set()),
    14: ("repair", ["repaste"], {"thermal.over_temp"}, set()),  # HBM fatal high temperature
    15: ("retest", ["reset_and_retest"], {"npu.8C084E00", "npu.8C204E00"}, set()),  # status says OK
}


def test_fault_catalogue_bench(burnin: Any, tmp_path: Path, plan: Path) -> None:
    devs = devices(burnin, sim_rack(tmp_path, "sim_state_catalogue.json", "devices"))
    assert sorted(devs) == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 14, 15]  # 13 is off the bus
    for slot, (_, _, fails, warns) in EXPECT.items():
        d = devs[slot]
        assert fail_codes(d) == fails, (slot, d["findings"])
        assert warns <= warn_codes(d), (slot, d["findings"])
    lost = devs[5]  # identity and telemetry answered; the health read found it gone
    assert lost["model"] == "910B3" and lost["telemetry"] is not None
    assert "NPU 5" in lost["findings"][0]["message"]
    p310 = devs[11]  # a 310P3 with 24 GB: the Atlas 300I Pro profile judges it
    assert (p310["model"], p310["profile"], p310["profile_source"]) == ("310P3", "ascend-310p", "matched")
    assert p310["telemetry"]["memory_total_mib"] == 21527 and p310["telemetry"]["power_w"] is None
    assert devs[4]["telemetry"]["temperature_c"] == 106
    assert devs[10]["telemetry"]["clock_mhz"] == 800 and devs[10]["telemetry"]["clock_max_mhz"] == 1000
    dbe = next(f for f in devs[2]["findings"] if f["code"] == "ecc.dbe")
    assert dbe["action"] == "reset_and_retest"
    unknown = next(f for f in devs[8]["findings"] if f["code"] == "npu.80E9F001")
    assert "SeparateNPU" in unknown["message"] and unknown["evidence"]["error_code"] == "80E9F001"

    cards = run(burnin, sim_rack(tmp_path, "sim_state_catalogue.json", "run"), plan, expect_exit=1)
    assert sorted(cards) == sorted(devs)
    for slot, (verdict, actions, fails, warns) in EXPECT.items():
        c = cards[slot]
        assert (c["verdict"], c["actions"]) == (verdict, actions), (slot, c["findings"])
        assert fail_codes(c) == fails, (slot, c["findings"])
        assert warns <= warn_codes(c), (slot, c["findings"])
    assert (cards[11]["model"], cards[11]["profile"], cards[11]["profile_source"]) == ("310P3", "ascend-310p", "matched")
    statuses = [t["status"] for t in cards[5]["tests"]]
    lost_at = statuses.index("error")  # lost in the first stage that reads more than its identity
    assert lost_at <= 1 and set(statuses[lost_at + 1:]) == {"skipped"}, statuses


# --------------------------------------------------------------------------- replayed captures


def test_replayed_captures_of_a_real_layout(burnin: Any, tmp_path: Path, plan: Path) -> None:
    cfg = rack(tmp_path, f"{sys.executable} -S -E {REPLAY} {CAPTURE_SET}", "replay")
    devs = devices(burnin, cfg)
    assert sorted(devs) == [3, 4]
    a, b = devs[3], devs[4]
    assert (a["model"], a["serial"], a["pci_bus_id"]) == ("910B1", "102310QKD10N4C000043", "0000:C1:00.0")
    assert (a["telemetry"]["power_w"], a["telemetry"]["temperature_c"]) == (271.1, 41)
    assert (a["telemetry"]["memory_used_mib"], a["telemetry"]["memory_total_mib"]) == (65099, 65536)
    # a real capture: two python processes hold 60 of the 64 GiB of NPU 3 (npu-smi's process table)
    assert [f["code"] for f in a["findings"]] == ["host.busy"]
    assert "1180522" in a["findings"][0]["message"] and a["findings"][0]["evidence"]["used_mib"] == 61930 + 112
    # NA in the table, the common view knows the temperature; the power stays unknown
    assert (b["telemetry"]["temperature_c"], b["telemetry"]["power_w"]) == (52, None)
    assert fail_codes(b) == {"ecc.dbe"} and {"ecc.retired_pages", "ecc.sbe_rate", "thermal.over_temp"} <= warn_codes(b)

    cards = run(burnin, cfg, plan, expect_exit=1)
    assert (cards[3]["verdict"], cards[3]["actions"], fail_codes(cards[3])) == ("retest", ["fix_host"], {"host.busy"})
    assert (cards[4]["verdict"], cards[4]["actions"]) == ("retest", ["reset_and_retest"])


def test_unreadable_npu_smi_is_one_line_exit_3(burnin: Any, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus-npu-smi"
    bogus.write_text("#!/bin/sh\necho 'dcmi model initialized failed, because the device is used. ret is -8020'\n")
    bogus.chmod(0o755)
    code, out, err = burnin("devices", str(rack(tmp_path, str(bogus), "bogus")), "--json")
    assert code == 3 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "npu-smi info -l: line 1" in lines[0] and "-8020" in lines[0]
