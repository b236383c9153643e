"""Preflight and honest verdicts on mock cards: each host condition makes a card retest with what
to fix and skips its stress stages; the same card without it passes; --force runs anyway and says
so; the memory scan's coverage is measured, shown, and warned about below the plan's minimum."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from drivers.api import Conditions, DeviceProcess, Identity
from stress.preflight import check
from tests.conftest import mock_card

IDENT = Identity(vendor="nvidia", model="m", serial="S", pci_bus_id="0000:18:00.0")
LOAD = "tests.stages_for_tests:LoadStage"
PLAN = ('[[stages]]\nstage = "preflight"\n[[stages]]\nstage = "health"\nobserve_s = 0\n'
        '[[stages]]\nstage = "memory"\nalgorithms = ["march_c-"]\nbackgrounds = ["00"]\n'
        f'[[stages]]\nstage = "{LOAD}"\n')

# serial -> (faults, the finding code, words its message must hold)
MOCK_CONDITIONS = {
    "BUSY": ([{"kind": "host.busy", "pid": 4242, "name": "python3", "memory_mib": 48}], "host.busy",
             ["pid 4242", "python3", "48 MiB", "kill 4242"]),
    "GFX": ([{"kind": "host.busy", "pid": 77, "name": "Xorg", "graphics": True}], "host.busy", ["Xorg", "graphics"]),
    "MIG": ([{"kind": "host.mig"}], "host.mig", ["nvidia-smi -i 0000:", "-mig 0"]),
    "MIGP": ([{"kind": "host.mig", "pending": True}], "host.pending_reset", ["MIG", "-r"]),
    "DISP": ([{"kind": "host.display"}], "host.display", ["display"]),
    "LOCK": ([{"kind": "host.clocks_locked", "mhz": 1000}], "host.clocks_locked", ["1000 MHz", "-rac", "-rgc"]),
    "CAP": ([{"kind": "power.capped", "watts": 400}], "power.capped", ["400 W", "700 W", "-pl 700"]),
}


def _run(burnin, write_rack, tmp_path: Path, cards: list[dict], plan: str = PLAN, *args: str) -> dict[str, dict]:
    (tmp_path / "plan.toml").write_text(plan)
    code, out, err = burnin("run", str(write_rack(cards)), "--plan", str(tmp_path / "plan.toml"),
                            "--json", "r.json", *args)
    assert code in (0, 1), out + err
    doc = json.loads((tmp_path / "r.json").read_text())
    return {c["serial"]: c | {"stdout": out} for c in doc["cards"]}


def test_each_host_condition_is_retest_with_its_fix_and_skips_the_stress_stages(burnin, write_rack, tmp_path):
    cards = [mock_card(s, i, "h100-sxm5-80gb", faults) for i, (s, (faults, _, _)) in enumerate(MOCK_CONDITIONS.items())]
    cards.append(mock_card("READY", len(cards), "h100-sxm5-80gb"))
    got = _run(burnin, write_rack, tmp_path, cards)
    for serial, (_, code, words) in MOCK_CONDITIONS.items():
        c = got[serial]
        assert c["verdict"] == "retest" and c["actions"] == ["fix_host"], (serial, c["findings"])
        f = next(f for f in c["findings"] if f["code"] == code and f["test"] == "preflight")
        assert f["severity"] == "fail" and all(w in f["message"] for w in words), f["message"]
        tests = {t["name"]: t for t in c["tests"]}
        assert tests["preflight"]["status"] == "fail" and tests["preflight"]["metrics"]["ready"] is False
        assert tests["health"]["status"] != "skipped"
        for stress in ("memory", LOAD):
            assert tests[stress]["status"] == "skipped" and code in tests[stress]["error"], (serial, stress)
            assert tests[stress]["metrics"]["skip"]["kind"] == "not_ready"
        assert not any(f["code"] == "host.stages_skipped" for f in c["findings"])  # the condition says why
    ready = got["READY"]  # the same card without the condition: every stage ran, pass, nothing found
    assert ready["verdict"] == "pass" and ready["findings"] == []
    assert [t["status"] for t in ready["tests"]] == ["pass"] * 4


def test_force_runs_anyway_marks_every_finding_and_measures_coverage(burnin, write_rack, tmp_path):
    busy = [{"kind": "host.busy", "pid": 4242, "name": "python3", "memory_mib": 40},
            {"kind": "memory.stuck_bit", "address": 0x100, "bit": 2, "value": 1}]
    got = _run(burnin, write_rack, tmp_path, [mock_card("BUSY", 0, "rtx4090-blower-48gb", busy, memory_mib=64)],
               PLAN, "--force")
    c = got["BUSY"]
    tests = {t["name"]: t for t in c["tests"]}
    assert all(t["status"] != "skipped" for t in c["tests"]) and tests["preflight"]["metrics"]["forced"] is True
    pre = next(f for f in c["findings"] if f["code"] == "host.busy")
    assert pre["severity"] == "warn" and "forced" in pre["message"]
    stuck = next(f for f in c["findings"] if f["code"] == "memory.stuck_bit")  # still found, and marked
    assert stuck["evidence"]["measured_under"][0].startswith("host.busy") and "measured under" in stuck["message"]
    cov = tests["memory"]["metrics"]["coverage"]
    assert (cov["tested_bytes"], cov["total_bytes"], cov["fraction"]) == (24 << 20, 64 << 20, 0.375)
    assert cov["other_processes_bytes"] == 40 << 20
    low = next(f for f in c["findings"] if f["code"] == "memory.coverage_low")
    assert low["severity"] == "warn" and "37.5%" in low["message"] and "pid 4242 (python3)" in low["message"]
    assert "37.5% < 90%" in c["stdout"]  # the verdict table's coverage column
    assert c["verdict"] == "repair"  # the stuck bit lies in the part it could scan


def test_coverage_is_shown_and_below_the_plan_minimum_is_a_warning(burnin, write_rack, tmp_path):
    plan = PLAN.replace('backgrounds = ["00"]\n', 'backgrounds = ["00"]\nmax_bytes = 1048576\ncoverage_min = 0.95\n')
    got = _run(burnin, write_rack, tmp_path, [mock_card("FULL", 0, memory_mib=1), mock_card("PART", 1, memory_mib=2)],
               plan)
    full, part = got["FULL"], got["PART"]
    cov = next(t for t in full["tests"] if t["name"] == "memory")["metrics"]["coverage"]
    assert cov["fraction"] == 1.0 and full["verdict"] == "pass" and full["findings"] == []
    assert "100.0%" in full["stdout"]
    (w,) = part["findings"]
    assert (w["code"], w["severity"], part["verdict"]) == ("memory.coverage_low", "warn", "pass")
    assert "50.0%" in w["message"] and "95%" in w["message"] and "left out by the plan" in w["message"]
    assert "50.0% < 95%" in part["stdout"]


def test_the_tui_says_up_front_what_a_card_cannot_run_and_its_coverage() -> None:
    from harness.tui.render import readiness_lines
    from harness.tui.state import CardState

    card = CardState(key="local/0", host="local", slot=0, serial="S", model="m", n_stages=3)
    card.tests = [{"name": "preflight", "status": "pass", "metrics": {
        "ready": True, "cannot_run": {"burn": {"reason": "no compute handle: CuPy is not installed: pip install "
                                               "'burnin[cuda]'", "optional": False}}}}]
    text = " | ".join(t.plain for t in readiness_lines(card))
    assert "cannot run: burn: no compute handle" in text and "burnin[cuda]" in text
    card.tests.append({"name": "memory", "status": "pass", "metrics": {"coverage": {"fraction": 0.5, "minimum": 0.9}}})
    out = Console(width=200, record=True)
    for t in readiness_lines(card):
        out.print(t)
    assert "memory coverage: 50.0% < 90%" in out.export_text()
    card.tests[0]["metrics"] = {"ready": False}
    assert "not ready" in readiness_lines(card)[0].plain


@pytest.mark.parametrize("fault, field", [
    ({"kind": "host.busy", "pid": 1, "memory_mib": 65}, "memory_mib"),
    ({"kind": "host.busy", "memory_mib": 1}, "pid"),
    ({"kind": "host.mig", "slices": 7}, "slices"),
    ({"kind": "host.clocks_locked", "mhz": 0}, "mhz"),
])
def test_bad_host_fault_is_exit_2_naming_it(burnin, write_rack, fault, field):
    code, _, err = burnin("validate", str(write_rack([mock_card("BAD", 0, faults=[fault])])))
    assert code == 2 and "BAD" in err and "faults[0]" in err and field in err, err


def test_conditions_each_give_their_finding() -> None:
    ok = Conditions(processes=[], mig_enabled=False, display_active=False, compute_mode="default",
                    app_clock_mhz=1980, default_app_clock_mhz=1980, power_limit_w=700, default_power_limit_w=700,
                    ecc_pending=False, driver_api_version="12.4", runtime_version="12.4")
    assert check(ok, IDENT, 81559) == [] and check(Conditions(), IDENT, None) == []
    cases = {
        "host.compute_mode": Conditions(compute_mode="prohibited"),
        "host.reset_required": Conditions(reset_required="gpu_reset"),
        "host.pending_reset": Conditions(ecc_pending=True),
        "host.clocks_locked": Conditions(app_mem_clock_mhz=5000, default_app_mem_clock_mhz=10501),
        "host.driver_old": Conditions(driver_version="470.82", driver_api_version="11.4", runtime_version="12.8"),
    }
    for code, cond in cases.items():
        (f,) = check(cond, IDENT, None)
        assert (f.code, f.severity, f.action) == (code, "fail", "fix_host"), f
    # minor-version compatibility (the H200: CuPy's 13.2 runtime over a 13.0 driver, every kernel
    # loaded): nothing here; a kernel that fails to load is host.driver_old from the CUDA path
    assert check(Conditions(driver_api_version="13.0", runtime_version="13.2"), IDENT, None) == []
    # exclusive mode alone is fine; exclusive with another process holding the card is not
    assert check(Conditions(compute_mode="exclusive_process", processes=[]), IDENT, None) == []
    excl = check(Conditions(compute_mode="exclusive_process", processes=[DeviceProcess(9, "x", 10)]), IDENT, None)
    assert {f.code for f in excl} == {"host.busy", "host.compute_mode"}


def test_recorder_keeps_process_lists_and_names(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    from drivers import nvml_replay
    from drivers.nvml_record import record, to_jsonable
    from tests import fake_pynvml

    raw = pynvml.c_nvmlProcessInfo_v2_t(pid=31, usedGpuMemory=5 << 30, gpuInstanceId=0, computeInstanceId=0)
    friendly = pynvml.nvmlStructToFriendlyObject(raw)
    assert to_jsonable(friendly)["pid"] == 31 and to_jsonable(friendly)["usedGpuMemory"] == 5 << 30
    snap = nvml_replay.read_snapshot("rtx4090-synthetic.json")
    snap["devices"][0]["calls"]["nvmlDeviceGetComputeRunningProcesses"] = [{"pid": 31, "usedGpuMemory": 5 << 30}]
    snap["system"]["nvmlSystemGetProcessName:31"] = "trainer"
    fake_pynvml.install(monkeypatch, snap)
    got = record(sys.modules["pynvml"])
    calls = got["devices"][0]["calls"]
    assert calls["nvmlDeviceGetComputeRunningProcesses"] == [{"pid": 31, "usedGpuMemory": 5 << 30}]
    assert calls["nvmlDeviceGetMigMode"] == {"error": "NVML_ERROR_NOT_SUPPORTED"}
    assert got["system"]["nvmlSystemGetProcessName:31"] == "trainer"
