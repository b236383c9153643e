"""The ascend backend end to end against the npu-smi simulator (subprocesses, no hardware)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.api import THROTTLE_SW_THERMAL, BackendUnavailable, DeviceError, DeviceLost, ErrorCounters
from drivers.ascend import AscendBackend, AscendConfig, AscendDevice, resolve_npu_smi
from drivers.ascend.codes import classify_health_code, load_catalogue, lookup, worst_level
from drivers.ascend.parse import ParseError
from drivers.registry import get_backend
from stress.model import ACTIONS, Finding

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "ascend"
SIM = FIX / "npu_smi_sim.py"


def write_state(tmp_path: Path, base: str, edit: Any = None) -> Path:
    state = json.loads((FIX / base).read_text())
    state["writable"] = True
    if edit:
        edit(state)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    return path


def card(state: dict[str, Any], npu_id: int) -> dict[str, Any]:
    return next(c for c in state["cards"] if c["npu_id"] == npu_id)


@pytest.fixture
def healthy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_state(tmp_path, "sim_state.json")
    monkeypatch.setenv("NPU_SMI_SIM_STATE", str(path))
    return path


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_state(tmp_path, "sim_state_faults.json")
    monkeypatch.setenv("NPU_SMI_SIM_STATE", str(path))
    return path


def discover(**cfg: Any) -> list[dict[str, Any]]:
    backend = get_backend("ascend")
    cfg.setdefault("npu_smi", f"{sys.executable} {SIM}")
    return backend.discover(AscendConfig(backend="ascend", **cfg), {"config_dir": str(FIX)})


def open_npu(npu_id: int, **cfg: Any) -> AscendDevice:
    (loc,) = discover(npu_id=npu_id, **cfg)
    dev = AscendBackend().open(loc)
    assert isinstance(dev, AscendDevice)
    return dev


# --------------------------------------------------------------------------- simulator


def sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SIM), *args], capture_output=True, text=True, check=False)


def test_sim_errors_and_exit_codes(faulty: Path) -> None:
    r = sim("info", "-t", "board", "-i", "6")  # dropped card
    assert r.returncode == 215 and r.stdout.splitlines()[:2] == ["Invalid card id.", "Error parameter of -i"]
    assert sim("info", "-t", "board", "-i", "2", "-c", "5").returncode == 215
    assert sim("info", "-t", "nonsense", "-i", "2").returncode == 215
    assert sim("set", "-t", "reset", "-i", "2").returncode == 215  # reset needs -c


def test_sim_layout_pads_labels(healthy: Path) -> None:
    lines = sim("info", "-t", "common", "-i", "1").stdout.splitlines()
    assert lines[0] == "\tNPU ID                         : 1"
    ecc = sim("info", "-t", "ecc", "-i", "1").stdout.splitlines()
    assert ecc[1] == "\tHBM Single Bit Error Count               : 0"
    table = sim("info").stdout.splitlines()
    assert {len(ln) for ln in table if ln.startswith(("|", "+"))} == {98}


def test_default_state_is_bundled_and_launcher_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NPU_SMI_SIM_STATE", raising=False)
    r = subprocess.run([str(FIX / "npu-smi"), "info", "-l"], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "Total Count                    : 8" in r.stdout


# --------------------------------------------------------------------------- discover


def test_discover_one_locator_per_npu_chip_not_mcu(healthy: Path) -> None:
    locs = discover()
    assert [loc["npu_id"] for loc in locs] == [1, 2, 3, 4, 5, 6, 8, 9]
    assert all(loc["chip_id"] == 0 and loc["backend"] == "ascend" for loc in locs)
    assert [loc["logic_id"] for loc in locs] == list(range(8))
    assert [loc["slot"] for loc in locs] == [1, 2, 3, 4, 5, 6, 8, 9]
    assert [loc["slot"] for loc in discover(slot=10)][:2] == [10, 11]


def test_discover_via_launcher_relative_to_config_dir(healthy: Path) -> None:
    locs = discover(npu_smi="./npu-smi")
    assert len(locs) == 8 and locs[0]["argv"] == [str((FIX / "npu-smi").resolve())]


def test_discover_skips_a_dropped_card(faulty: Path) -> None:
    assert 6 not in [loc["npu_id"] for loc in discover()]


def test_named_missing_card_is_still_listed_and_lost(faulty: Path) -> None:
    dev = open_npu(6)
    with pytest.raises(DeviceLost, match="NPU 6"):
        dev.identity()


@pytest.mark.parametrize("spec", ["no-such-npu-smi-binary", "./not/here/npu-smi", "/nonexistent/npu-smi"])
def test_missing_binary_is_backend_unavailable(spec: str) -> None:
    with pytest.raises(BackendUnavailable, match="npu-smi not found"):
        discover(npu_smi=spec)


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError):
        AscendConfig(backend="ascend", npu_smi="x", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AscendConfig(backend="ascend", npu_id=-1)


def test_resolve_keeps_arguments_and_resolves_scripts() -> None:
    argv = resolve_npu_smi(f"{sys.executable} npu_smi_sim.py --state sim_state_faults.json", FIX)
    assert argv[1] == str(SIM) and argv[2:] == ["--state", str(FIX / "sim_state_faults.json")]


def test_state_given_on_the_npu_smi_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NPU_SMI_SIM_STATE", raising=False)
    locs = discover(npu_smi="./npu-smi --state sim_state_faults.json")
    assert [loc["npu_id"] for loc in locs] == [1, 2, 3, 4, 5, 8, 9]  # NPU 6 is off the bus


# --------------------------------------------------------------------------- device


def test_identity(healthy: Path) -> None:
    ident = open_npu(3).identity()
    assert (ident.vendor, ident.model, ident.serial) == ("huawei", "910B3", "1024A31B0003X")
    assert ident.pci_bus_id == "0000:C2:00.0"
    assert ident.firmware == {"software_version": "24.1.rc2", "firmware_version": "7.3.0.1.231",
                              "chip_firmware_version": "7.3.0.1.231"}
    assert ident.profile == "ascend-910b" and ident.memory_total_mib == 65536


def test_telemetry(healthy: Path) -> None:
    t = open_npu(1).telemetry()
    assert (t.temperature_c, t.power_w, t.clock_mhz, t.clock_max_mhz) == (41, 93.4, 1000, 1000)
    assert (t.memory_total_mib, t.memory_used_mib, t.utilization_pct) == (65536, 6317, 12)
    assert t.fans_rpm == [] and t.throttle == frozenset() and t.power_limit_w is None
    assert t.pcie is not None and t.pcie.gen is None and t.pcie.max_width is None


def test_throttle_is_thermal_only_when_hot(faulty: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = open_npu(4).telemetry()
    assert (t.clock_mhz, t.clock_max_mhz, t.temperature_c) == (800, 1000, 89)
    assert t.throttle == frozenset({THROTTLE_SW_THERMAL})
    cool = write_state(tmp_path, "sim_state.json", lambda s: card(s, 4).update(aicore_cur_freq=800))
    monkeypatch.setenv("NPU_SMI_SIM_STATE", str(cool))
    t = open_npu(4).telemetry()
    assert t.clock_mhz == 800 and t.throttle == frozenset()  # cause not knowable from npu-smi


def test_counters(faulty: Path) -> None:
    c = open_npu(2).counters()
    assert (c.sbe_volatile, c.dbe_volatile, c.sbe_aggregate, c.dbe_aggregate) == (12, 2, 40, 3)
    assert (c.retired_pages_sbe, c.retired_pages_dbe) == (1, 2)
    assert c.retired_pages_pending is None  # 23.0.x prints no next-isolated counts


def test_counters_pending_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_state(tmp_path, "sim_state.json",
                       lambda s: card(s, 9).update(ecc={"dbe": 1, "dbe_next_isolated": 1}))
    monkeypatch.setenv("NPU_SMI_SIM_STATE", str(path))
    c = open_npu(9).counters()
    assert c.dbe_volatile == 1 and c.retired_pages_pending is True
    assert open_npu(8).counters().retired_pages_pending is False


def test_health_events_once_and_classified(faulty: Path) -> None:
    dev = open_npu(8)
    events = dev.events()
    assert [(e.kind, e.code) for e in events] == [("health", "80E9F001"), ("health", "80E20207")]
    assert events[0].message == "Unrecognised fault on ring 3"
    assert dev.events() == []  # each code once
    unknown = classify_health_code(events[0].code, events[0].message)
    assert unknown["code"] == "npu.80E9F001" and unknown["severity"] == "fail"
    assert unknown["action"] == "reset_and_retest" and "SeparateNPU" in unknown["message"]
    soc = classify_health_code(events[1].code)
    assert (soc["code"], soc["severity"]) == ("thermal.over_temp", "warn")
    Finding(test="health", **unknown)  # the dict is a valid finding


def test_dbe_code_event_and_reset(faulty: Path) -> None:
    dev = open_npu(2)
    (ev,) = dev.events()
    assert ev.code == "80E01801" and ev.message == "HBM multi-bit ECC error"
    assert classify_health_code(ev.code)["code"] == "ecc.dbe"
    assert "successful" in dev.reset()
    after = open_npu(2)
    assert after.events() == [] and after.counters().dbe_volatile == 0


def test_card_dropping_mid_session_is_device_lost(healthy: Path) -> None:
    dev = open_npu(5)
    dev.identity()
    state = json.loads(healthy.read_text())
    card(state, 5)["dropped"] = True
    healthy.write_text(json.dumps(state))
    for call in (dev.telemetry, dev.counters, dev.events):
        with pytest.raises(DeviceLost, match="NPU 5"):
            call()


def test_inner_error_is_a_device_error_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_state(tmp_path, "sim_state.json", lambda s: card(s, 3).update(inner_error=True))
    monkeypatch.setenv("NPU_SMI_SIM_STATE", str(path))
    with pytest.raises(DeviceError, match="exit status 211") as ei:
        open_npu(3).counters()
    assert not isinstance(ei.value, DeviceLost)


def test_timeout_is_a_device_error(tmp_path: Path) -> None:
    slow = tmp_path / "slow-npu-smi"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    if shutil.which("sh") is None:
        pytest.skip("no sh")
    from drivers.ascend import NpuSmi

    dev = AscendDevice(NpuSmi([str(slow)], timeout_s=0.2), npu_id=1)
    with pytest.raises(DeviceError, match="did not answer"):
        dev.counters()


# --------------------------------------------------------------------------- codes catalogue


def test_catalogue_uses_the_contract_vocabulary() -> None:
    codes, unknown = load_catalogue()
    assert {"80E01801", "80E18402", "80E0020B", "40F84E00", "80C98008"} <= set(codes)
    prefixes = ("ecc.", "thermal.", "bus.", "power.", "npu.")
    for hc in [*codes.values(), unknown]:
        assert hc.action in ACTIONS
        assert hc.severity in ("info", "warn", "fail")
    for hc in codes.values():
        assert hc.finding.startswith(prefixes), hc.code


def test_lookup_normalises_and_ranks() -> None:
    assert lookup("0x80e01801").finding == "ecc.dbe"
    assert lookup(0x80E18402).action == "rma"
    assert lookup("40F84E00").finding == "bus.lost"
    assert worst_level(["80E00209", "80E01801"]) == "RestartBusiness"
    assert worst_level(["80E01801", "DEADBEEF"]) == "SeparateNPU"  # unknown counts as SeparateNPU
    assert worst_level([]) is None
    with pytest.raises(ValueError):
        lookup("not-a-code")


# --------------------------------------------------------------------------- degraded npu-smi

REPLAY = FIX / "replay_npu_smi.py"
CAPTURE_SET = FIX / "captures" / "sets" / "atlas800t-a2-v23rc3"


def replay_dir(tmp_path: Path, drop: tuple[str, ...] = (), extra: dict[str, str] | None = None) -> Path:
    """A copy of the 2-NPU capture set without the ``drop`` captures (npu-smi "does not support")."""
    d = tmp_path / "set"
    d.mkdir()
    for p in CAPTURE_SET.iterdir():
        if p.stem not in drop:
            (d / p.name).write_bytes(p.read_bytes())
    for name, text in (extra or {}).items():
        (d / name).write_text(text)
    return d


def replay_npu(d: Path, npu_id: int) -> AscendDevice:
    (loc,) = discover(npu_smi=f"{sys.executable} -S -E {REPLAY} {d}", npu_id=npu_id)
    dev = AscendBackend().open(loc)
    assert isinstance(dev, AscendDevice)
    return dev


def test_views_a_product_does_not_support_fall_back_to_the_table(tmp_path: Path) -> None:
    d = replay_dir(tmp_path, drop=("info_t_common_i_3", "info_t_memory_i_3_c_0", "info_t_board_i_3_c_0",
                                   "info_t_ecc_i_3", "info_m"))
    dev = replay_npu(d, 3)
    ident = dev.identity()
    assert (ident.model, ident.memory_total_mib, ident.pci_bus_id) == ("910B1", 65536, "0000:C1:00.0")
    assert (ident.profile, ident.profile_source) == ("ascend-910b1", "matched")
    t = dev.telemetry()
    assert (t.temperature_c, t.power_w, t.utilization_pct, t.clock_mhz) == (41, 271.1, 55, None)
    assert dev.counters() == ErrorCounters()  # no ECC view: unknown, not zero


def test_a_failing_ecc_view_is_not_silently_empty(tmp_path: Path) -> None:
    d = replay_dir(tmp_path, extra={"info_t_ecc_i_3.txt": "Failed to query the information.\n",
                                    "info_t_ecc_i_3.exit": "211\n"})
    with pytest.raises(DeviceError, match="exit status 211"):
        replay_npu(d, 3).counters()


def test_invalid_card_id_with_exit_status_0_is_lost(tmp_path: Path) -> None:
    d = replay_dir(tmp_path, extra={"info_t_ecc_i_4.txt": "Invalid card id.\nError parameter of -i\n"})
    with pytest.raises(DeviceLost, match="NPU 4"):
        replay_npu(d, 4).counters()


def test_unreadable_view_is_a_one_line_parse_error(tmp_path: Path) -> None:
    d = replay_dir(tmp_path, extra={"info_t_common_i_3.txt": "\tTemperature(C) : 4#1\n"})
    with pytest.raises(ParseError) as ei:
        replay_npu(d, 3).telemetry()
    assert str(ei.value).startswith("npu-smi info -t common -i 3: line 1: ") and "\n" not in str(ei.value)


def test_discover_with_only_one_of_list_and_mapping(tmp_path: Path) -> None:
    d = replay_dir(tmp_path, drop=("info_l",))
    locs = discover(npu_smi=f"{sys.executable} -S -E {REPLAY} {d}")
    assert [(loc["npu_id"], loc["logic_id"], loc["name"]) for loc in locs] == [(3, 0, "Ascend 910B1"), (4, 1, "Ascend 910B1")]
    (d / "info_m.txt").unlink()
    with pytest.raises(BackendUnavailable, match="cannot list NPUs"):
        discover(npu_smi=f"{sys.executable} -S -E {REPLAY} {d}")
    (d / "info_l.txt").write_text("\tTotal Count : 2\n\n\tNPU ID : 3\n")  # cut off
    with pytest.raises(BackendUnavailable, match=r"npu-smi info -l: line 1: .*Total Count is 2 but 1"):
        discover(npu_smi=f"{sys.executable} -S -E {REPLAY} {d}")


def test_stderr_noise_and_crlf_do_not_reach_the_parsers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_state(tmp_path, "sim_state.json", lambda s: s.update(stderr_noise=True, crlf=True))
    monkeypatch.setenv("NPU_SMI_SIM_STATE", str(path))
    dev = open_npu(2)
    assert dev.telemetry().temperature_c == 39 and dev.identity().serial == "1024A31B0002X"


def test_card_dropping_after_some_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_state(tmp_path, "sim_state.json", lambda s: card(s, 5).update(drop_after_calls=3))
    monkeypatch.setenv("NPU_SMI_SIM_STATE", str(path))
    dev = open_npu(5)
    assert dev.identity().serial == "1024A31B0005X"  # 3 answers: board, board -c 0, memory
    with pytest.raises(DeviceLost, match="NPU 5: missing from 'npu-smi info'"):
        dev.telemetry()
    with pytest.raises(DeviceLost, match="NPU 5: npu-smi no longer knows the card"):
        dev.counters()
