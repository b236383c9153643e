"""ascend-dmi: its parsers (text tables, JSON, drifted layouts, garbage), the simulator on the
npu-smi state (faults visible in both tools), the diagnostics handle, and how the diagnose stage
maps the vendor's words to verdicts and actions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from drivers.api import (
    DIAG_EMERGENCY_WARN,
    DIAG_GENERAL_WARN,
    DIAG_IMPORTANT_WARN,
    DIAG_PASS,
    DeviceLost,
    DiagnosisItem,
    Unsupported,
)
from drivers.ascend import AscendBackend, AscendConfig, AscendDevice
from drivers.ascend.parse import ParseError
from drivers.ascend.parse import dmi as P
from drivers.profiles import load_profile
from stress.diagnose import word_finding

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "ascend"
NPU_SMI = FIX / "npu_smi_sim.py"
DMI = FIX / "ascend_dmi_sim.py"


# --------------------------------------------------------------------------- parsers

def test_diagnosis_table_json_and_drifted_layouts() -> None:
    table = ("Diagnosis of device 3 (stress)\n+----+----+\n| Item | Result | Details |\n+----+----+\n"
             "| HBM | PASS | - |\n| AI Core | EMERGENCY_WARN | AI core 7 failed the check (80C98008) |\n+---+\n")
    rows = P.parse_diagnosis(table)
    assert [(r.name, r.result) for r in rows] == [("HBM", "PASS"), ("AI Core", "EMERGENCY_WARN")]
    assert rows[1].codes == ("80C98008",) and rows[0].details == ""
    assert [P.item_kind(r.name) for r in rows] == ["hbm", "aicore"]
    # columns swapped, extra log noise, CRLF: read by label
    swapped = "[INFO] dmi start\r\n| Result | Item |\r\n| IMPORTANT_WARN | HBM |\r\n"
    assert [(r.name, r.result) for r in P.parse_diagnosis(swapped)] == [("HBM", "IMPORTANT_WARN")]
    dotted = "HBM ............ PASS\nAI Core: GENERAL_WARN (rerun)\n"
    assert [(r.name, r.result, r.details) for r in P.parse_diagnosis(dotted)] == [
        ("HBM", "PASS", ""), ("AI Core", "GENERAL_WARN", "rerun")]
    js = json.dumps({"device_id": 0, "diagnosis": [{"Item": "HBM", "Result": "pass", "Details": ""}]})
    assert [(r.name, r.result) for r in P.parse_diagnosis(js)] == [("HBM", "PASS")]


@pytest.mark.parametrize("text", ["", "dcmi init failed, ret -8020\n", "{not json", "| Item | Result |\n"])
def test_garbage_is_one_line_parse_error(text: str) -> None:
    with pytest.raises(ParseError) as e:
        P.parse_diagnosis(text, "ascend-dmi --dg -i hbm -s")
    assert "\n" not in str(e.value) and str(e.value).startswith("ascend-dmi --dg")


def test_figures_tables_and_json() -> None:
    bw = "Device ID    Transfer Type    Transfer Size(Bytes)    Bandwidth(GB/s)\n0    h2d    1073741824    24.60\n"
    ((row, gbps),) = P.parse_bandwidth(bw)
    assert gbps == 24.6 and P.column(row, "size") == "1073741824"
    fl = json.dumps({"flops": [{"Device ID": 0, "Data Type": "fp16", "TFLOPS": "163.80", "Power(W)": "360.0"}]})
    assert P.parse_flops(fl) == (163.8, 360.0)
    pw = ("Device ID  Time(s)  Power(W)  Temperature(C)  AI Core Freq(MHz)\n0  5  351.0  55  1000\n"
          "0  10  325.0  90  800\nsummary: done\n")
    rows = P.parse_power_stress(pw)
    assert (rows.powers, rows.temperatures, rows.clocks, rows.seconds) == ([351.0, 325.0], [55, 90], [1000, 800], 10)
    with pytest.raises(ParseError, match="bandwidth is not a number"):
        P.parse_bandwidth("Device ID  Bandwidth(GB/s)\n0  fast\n", "ascend-dmi --bw -t h2d")
    with pytest.raises(ParseError, match="no table with the labels flops"):
        P.parse_flops("nothing here\n")


# --------------------------------------------------------------------------- simulator + handle

def state_copy(tmp_path: Path, name: str = "sim_state_stress.json", **edits: Any) -> Path:
    state = json.loads((FIX / name).read_text(encoding="utf-8"))
    state.update(writable=True, **edits)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state), encoding="utf-8")
    return path


def tool(script: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-S", "-E", str(script), "--state", str(state), *args],
                          capture_output=True, text=True, timeout=30)


def open_card(state: Path, npu_id: int) -> AscendDevice:
    backend = AscendBackend()
    cfg = AscendConfig(backend="ascend", npu_smi=f"{sys.executable} -S -E {NPU_SMI} --state {state}",
                       ascend_dmi=f"{sys.executable} -S -E {DMI} --state {state}",
                       npu_runtime=f"fixtures.ascend.npu_runtime_sim --state {state}", npu_id=npu_id)
    (loc,) = backend.discover(cfg, {"config_dir": str(FIX)})
    dev = backend.open(loc)
    assert isinstance(dev, AscendDevice)
    return dev


def test_hbm_fault_under_stress_shows_in_both_tools(tmp_path: Path) -> None:
    state = state_copy(tmp_path)
    quick = tool(DMI, state, "--dg", "-i", "hbm,aicore", "-d", "1", "-q")  # NPU 2 is logic id 1
    assert quick.returncode == 0 and "PASS" in quick.stdout and "WARN" not in quick.stdout  # needs stress
    ecc = tool(NPU_SMI, state, "info", "-t", "ecc", "-i", "2").stdout
    assert "HBM Double Bit Error Count               : 0" in ecc
    dev = open_card(state, 2)
    diag = dev.diagnostics
    assert diag is not None and dev.unavailable("diagnostics") is None
    res = diag.diagnose(["hbm", "aicore"], stress=True, timeout_s=30)
    assert [(i.kind, i.result) for i in res.items] == [("hbm", DIAG_IMPORTANT_WARN), ("aicore", DIAG_PASS)]
    assert res.items[0].codes == ("80E01801",)
    c = dev.counters()
    assert (c.dbe_volatile, c.retired_pages_pending) == (2, True)
    assert "80E01801" in dev.health().chip.codes
    t = dev.telemetry()  # the stress heated it, npu-smi says so
    assert t.temperature_c is not None and t.temperature_c > 40


def test_healthy_figures_and_unknown_tests(tmp_path: Path) -> None:
    dev = open_card(state_copy(tmp_path), 1)
    diag = dev.diagnostics
    assert diag is not None
    assert [i.result for i in diag.diagnose(["hbm", "aicore"], True, 30).items] == [DIAG_PASS, DIAG_PASS]
    assert diag.flops("fp16", 30).tflops == pytest.approx(163.8)
    assert diag.bandwidth("d2d", 30).gbps == pytest.approx(1250.0)
    p2p = diag.bandwidth("p2p", 30)
    assert p2p.gbps == pytest.approx(56.0) and p2p.peer is not None
    t0 = dev.clock.now()
    ps = diag.power_stress(20, 30)
    assert ps.mean_power_w is not None and ps.mean_power_w > 300 and ps.min_clock_mhz == 1000
    assert dev.clock.now() - t0 == pytest.approx(20, abs=0.5)  # simulated time moved on by the stress
    with pytest.raises(Unsupported):
        diag.flops("int4", 30)
    with pytest.raises(Unsupported):
        diag.diagnose(["network"], True, 30)


def test_a_card_dropping_under_stress_is_device_lost(tmp_path: Path) -> None:
    dev = open_card(state_copy(tmp_path), 8)
    diag = dev.diagnostics
    assert diag is not None
    with pytest.raises(DeviceLost, match="NPU 8"):
        diag.power_stress(10, 30)
    with pytest.raises(DeviceLost):
        dev.telemetry()


def test_missing_tool_and_runtime_say_what_to_install(tmp_path: Path) -> None:
    state = state_copy(tmp_path)
    backend = AscendBackend()
    cfg = AscendConfig(backend="ascend", npu_smi=f"{sys.executable} -S -E {NPU_SMI} --state {state}",
                       ascend_dmi="no-such-ascend-dmi", npu_id=1)
    (loc,) = backend.discover(cfg, {"config_dir": str(FIX)})
    dev = backend.open(loc)
    assert dev.diagnostics is None and dev.memory is None and dev.compute is None
    assert "ascend-dmi is not installed" in (dev.unavailable("diagnostics") or "")
    assert "torch_npu" in (dev.unavailable("compute") or "")  # torch missing, or torch_npu missing


# --------------------------------------------------------------------------- words -> verdicts

@pytest.mark.parametrize(("word", "kind", "profile", "action"), [
    (DIAG_GENERAL_WARN, "aicore", "ascend-910b", "reset_and_retest"),
    (DIAG_IMPORTANT_WARN, "hbm", "ascend-910b", "reset_and_retest"),
    (DIAG_EMERGENCY_WARN, "hbm", "ascend-910b", "rma"),
    (DIAG_EMERGENCY_WARN, "aicore", "ascend-910b", "rma"),
    (DIAG_EMERGENCY_WARN, "hbm", "ascend-310p", "replace_memory"),  # LPDDR4X chips a bench can replace
    ("FAIL", "hbm", "ascend-910b", "reset_and_retest"),  # a word we do not know: rerun, and say so
])
def test_words_map_to_actions(word: str, kind: str, profile: str, action: str) -> None:
    f = word_finding(DiagnosisItem(name=kind.upper(), kind=kind, result=word, details="x"), load_profile(profile),
                     "ascend-dmi")
    assert f is not None and (f.code, f.severity, f.action) == (f"diag.{kind}", "fail", action)
    assert word in f.message and f.evidence["word"] == word
    if word == "FAIL":
        assert "does not know" in f.message
    assert word_finding(DiagnosisItem("HBM", "hbm", DIAG_PASS), load_profile(profile), "ascend-dmi") is None
