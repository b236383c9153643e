"""The nvml backend against tests/fake_pynvml.py (no GPU): the fake is checked against the real
nvidia-ml-py first, then every reading, every "not supported" path, loss and the recorder."""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from drivers import nvml_replay
from drivers.api import (
    THROTTLE_HW_POWER_BRAKE,
    THROTTLE_HW_SLOWDOWN,
    THROTTLE_HW_THERMAL,
    THROTTLE_IDLE,
    THROTTLE_SW_POWER_CAP,
    THROTTLE_SW_THERMAL,
    BackendUnavailable,
    DeviceError,
    DeviceLost,
    Unsupported,
)
from drivers.nvml import NvmlBackend, NvmlConfig, NvmlDevice
from drivers.nvml_record import main as record_main
from drivers.nvml_record import record
from drivers.registry import get_backend
from tests import fake_pynvml

ROOT = Path(__file__).resolve().parent.parent
H100 = "h100-sxm5-synthetic.json"
RTX = "rtx4090-synthetic.json"
NS = {"error": "NVML_ERROR_NOT_SUPPORTED"}


def snap(name: str) -> dict[str, Any]:
    return fake_pynvml.read_snapshot(name)


def with_serial(s: dict[str, Any], serial: str, uuid: str, bus: str) -> dict[str, Any]:
    out = copy.deepcopy(s)
    calls = out["devices"][0]["calls"]
    calls["nvmlDeviceGetSerial"], calls["nvmlDeviceGetUUID"] = serial, uuid
    calls["nvmlDeviceGetPciInfo"]["busId"] = bus
    return out


def open_first(monkeypatch: pytest.MonkeyPatch, s: dict[str, Any] | str) -> tuple[fake_pynvml.FakeNvml, NvmlDevice]:
    fake = fake_pynvml.install(monkeypatch, s)
    backend = NvmlBackend()
    loc = backend.discover(NvmlConfig(backend="nvml", index=0), {})[0]
    dev = backend.open(loc)
    assert isinstance(dev, NvmlDevice)
    return fake, dev


# --- the fake is faithful to the installed nvidia-ml-py ------------------------------------------
def test_fake_matches_installed_pynvml() -> None:
    real = importlib.import_module("pynvml")
    assert real is not fake_pynvml
    checked = 0
    for name, obj in vars(nvml_replay).items():
        if not name.lower().startswith("nvml") or name.startswith("_"):
            continue
        assert hasattr(real, name), f"fake_pynvml.{name} does not exist in nvidia-ml-py"
        ref = getattr(real, name)
        if isinstance(obj, int):
            assert obj == ref, f"{name}: fake {obj} != real {ref}"
        elif inspect.isfunction(obj):
            want = list(inspect.signature(ref).parameters)
            assert list(inspect.signature(obj).parameters) == want, f"{name}: parameters differ"
        elif isinstance(obj, type) and issubclass(obj, Exception):
            assert obj.__name__ == ref.__name__
        checked += 1
    assert checked > 80
    # the error class hierarchy behaves like the real one
    e = fake_pynvml.NVMLError(fake_pynvml.NVML_ERROR_NOT_SUPPORTED)
    assert type(e) is fake_pynvml.NVMLError_NotSupported and e.value == 3
    assert isinstance(fake_pynvml.NVMLError_GpuIsLost(), fake_pynvml.NVMLError)
    assert str(real.NVMLError(real.NVML_ERROR_GPU_IS_LOST)) == str(fake_pynvml.NVMLError_GpuIsLost())


def test_the_fake_knows_every_error_of_the_real_module_and_raises_like_it() -> None:
    real = importlib.import_module("pynvml")
    codes = {n: getattr(real, n) for n in dir(real) if n.startswith("NVML_ERROR_")}
    assert codes == {n: getattr(nvml_replay, n) for n in dir(nvml_replay) if n.startswith("NVML_ERROR_")}
    classes = {n for n in dir(real) if n.startswith("NVMLError_")}
    assert classes == {n for n in dir(nvml_replay) if n.startswith("NVMLError_")}
    for name, code in codes.items():
        r, f = real.NVMLError(code), fake_pynvml.NVMLError(code)
        assert type(r).__name__ == type(f).__name__ and r.value == f.value == code, name
        if code in real.NVMLError._errcode_to_string:
            assert str(f) == str(r), name
        else:  # the real one asks the driver; without one it says this
            assert str(f) == f"NVML Error with code {code}", name
    assert type(fake_pynvml.NVMLError(77)) is fake_pynvml.NVMLError  # a code the module has no name for
    assert fake_pynvml.nvmlExceptionClass(27) is fake_pynvml.NVMLError_NotReady


def test_a_replay_serves_every_error_code_and_answers_a_missing_call_as_cannot_tell(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = snap(H100)
    s["devices"][0]["calls"]["nvmlDeviceGetPcieReplayCounter"] = {"error": "NVML_ERROR_NOT_READY"}
    del s["devices"][0]["calls"]["nvmlDeviceGetEnforcedPowerLimit"]
    path = tmp_path / "h100.json"
    path.write_text(json.dumps(s))
    backend = NvmlBackend()
    (loc,) = backend.discover(NvmlConfig(backend="nvml", replay=str(path)), {})
    dev = backend.open(loc)
    assert dev.counters().pcie_replays is None and dev.counters().ecc_enabled is True
    t = dev.telemetry()
    assert t.power_limit_w is None and t.power_w is not None
    assert fake_pynvml._st().misses and "nvmlDeviceGetEnforcedPowerLimit" in fake_pynvml._st().misses[0]
    dev.close()


def test_a_replay_with_an_unknown_error_name_fails_in_one_line(tmp_path: Path) -> None:
    s = snap(H100)
    s["devices"][0]["calls"]["nvmlDeviceGetPcieReplayCounter"] = {"error": "NVML_ERROR_FROM_THE_FUTURE"}
    path = tmp_path / "h100.json"
    path.write_text(json.dumps(s))
    with pytest.raises(BackendUnavailable, match="NVML_ERROR_FROM_THE_FUTURE") as ei:
        NvmlBackend().discover(NvmlConfig(backend="nvml", replay=str(path)), {})
    assert "\n" not in str(ei.value)


def test_every_call_the_backend_makes_exists_in_nvidia_ml_py() -> None:
    real = importlib.import_module("pynvml")
    src = "\n".join(p.read_text() for p in sorted((ROOT / "drivers" / "nvml").glob("*.py")))
    import re

    names = set(re.findall(r'"(nvml[A-Z]\w+)"', src)) | set(re.findall(r"nv\.(nvml\w+|NVML_\w+)", src))
    names -= {"nvmlClocksEventReason", "nvmlClocksThrottleReason"}  # prefixes, completed at run time
    missing = sorted(n for n in names if not hasattr(real, n))
    assert not missing, missing
    assert len(names) > 35


# --- without NVML ---------------------------------------------------------------------------------
def test_module_imports_without_pynvml() -> None:
    code = "import sys; sys.modules['pynvml'] = None; import drivers.nvml, drivers.nvml_record; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_pynvml_missing_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(BackendUnavailable, match=r"^nvml: .*is the NVIDIA driver installed\?\)$"):
        NvmlBackend().discover(NvmlConfig(backend="nvml"), {})


@pytest.mark.parametrize("err", ["NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED"])
def test_library_or_driver_missing_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch, err: str) -> None:
    fake = fake_pynvml.install(monkeypatch, H100)
    fake.fail_init(err)
    with pytest.raises(BackendUnavailable) as ei:
        NvmlBackend().discover(NvmlConfig(backend="nvml"), {})
    msg = str(ei.value)
    assert msg.startswith("nvml: ") and err in msg and "(is the NVIDIA driver installed?)" in msg
    assert "\n" not in msg


# --- enumeration ------------------------------------------------------------------------------------
def test_discover_several_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    host = fake_pynvml.combine(
        snap(H100),
        with_serial(snap(H100), "1654922099999", "GPU-00000000-1111-2222-3333-444444444444", "00000000:2A:00.0"),
        snap(RTX),
    )
    fake = fake_pynvml.install(monkeypatch, host)
    backend = get_backend("nvml")
    locs = backend.discover(NvmlConfig(backend="nvml"), {"host": "bench-a"})
    assert [(loc["index"], loc["slot"], loc["serial"]) for loc in locs] == [
        (0, 0, "1654922012345"), (1, 1, "1654922099999"), (2, 2, None)]
    assert all(loc["backend"] == "nvml" and loc["host"] == "bench-a" for loc in locs)
    assert locs[2]["uuid"] == "GPU-8f2a6c41-0b3d-4e7a-b5c9-71e4d2a9f608"
    assert json.loads(json.dumps(locs)) == locs  # picklable plain data
    assert fake.refcount == 0  # discover released NVML

    one = backend.discover(NvmlConfig(backend="nvml", index=1, slot=7), {})
    assert [(loc["index"], loc["slot"]) for loc in one] == [(1, 7)]
    shifted = backend.discover(NvmlConfig(backend="nvml", slot=4), {})
    assert [loc["slot"] for loc in shifted] == [4, 5, 6]
    by_serial = backend.discover(NvmlConfig(backend="nvml", serial="1654922099999"), {})
    assert [loc["index"] for loc in by_serial] == [1]

    dev = backend.open(locs[1])
    assert dev.identity().serial == "1654922099999"
    dev.close()


def test_named_gpu_absent_opens_as_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pynvml.install(monkeypatch, H100)
    backend = NvmlBackend()
    (loc,) = backend.discover(NvmlConfig(backend="nvml", index=3), {})
    with pytest.raises(DeviceLost, match="no GPU at index 3"):
        backend.open(loc)
    (loc,) = backend.discover(NvmlConfig(backend="nvml", serial="NOPE"), {})
    with pytest.raises(DeviceLost, match="serial NOPE"):
        backend.open(loc)


def test_config_is_strict() -> None:
    with pytest.raises(ValueError):
        NvmlConfig.model_validate({"backend": "nvml", "index": -1})
    with pytest.raises(ValueError):
        NvmlConfig.model_validate({"backend": "nvml", "npu_smi": "x"})


# --- identity and telemetry ---------------------------------------------------------------------------
def test_identity_h100(monkeypatch: pytest.MonkeyPatch) -> None:
    _, dev = open_first(monkeypatch, H100)
    ident = dev.identity()
    assert (ident.vendor, ident.model, ident.serial) == ("nvidia", "NVIDIA H100 80GB HBM3", "1654922012345")
    assert ident.uuid == "GPU-3c5e1d9a-7f42-4b8e-9a61-2d0f8c7b5e13"
    assert ident.pci_bus_id == "00000000:18:00.0"
    assert ident.firmware == {
        "vbios": "96.00.74.00.0D", "inforom_image": "G520.0200.00.05", "inforom_oem": "2.1",
        "inforom_ecc": "7.16", "driver": "550.90.07", "cuda_driver": "12.4",
    }
    assert ident.profile == "h100-sxm5-80gb"
    assert ident.memory_total_mib == 81559


def test_identity_rtx4090_without_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, RTX)
    ident = dev.identity()
    assert ident.serial is None and ident.profile == "rtx4090-blower-48gb"
    assert "inforom_ecc" not in ident.firmware and ident.firmware["inforom_oem"] == "2.0"
    fake.set_answer(0, "nvmlDeviceGetName", "NVIDIA Mystery GPU")
    mystery = dev.identity()  # no profile file: one is derived from what the card reports
    assert (mystery.profile, mystery.profile_source) == ("derived-nvidia-mystery-gpu", "derived")
    assert mystery.facts["power_limit_w"] == 450.0 and mystery.facts["fans"] == 1


def test_telemetry_units_h100(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, H100)
    t = dev.telemetry()
    assert t.power_w == pytest.approx(71.234) and t.power_limit_w == pytest.approx(700.0)  # mW -> W
    assert (t.temperature_c, t.memory_temperature_c) == (33.0, 36.0)
    assert (t.clock_mhz, t.clock_max_mhz, t.utilization_pct) == (345.0, 1980.0, 0.0)
    assert (t.memory_total_mib, t.memory_used_mib) == (81559, 581)
    assert t.throttle == frozenset({THROTTLE_IDLE})
    assert t.pcie is not None and t.pcie.to_dict() == {"gen": 5, "width": 16, "max_gen": 5, "max_width": 16}
    assert t.fans_rpm == [] and t.fans_duty_pct == [] and dev.fans is None  # SXM: no card fans
    assert json.dumps(t.to_dict())
    fake.set_answer(0, "nvmlDeviceGetPowerUsage", 512345)
    assert dev.telemetry().power_w == pytest.approx(512.345)


def test_fanless_card_reporting_not_supported_has_no_fans(monkeypatch: pytest.MonkeyPatch) -> None:
    s = snap(H100)
    s["devices"][0]["calls"]["nvmlDeviceGetNumFans"] = NS
    _, dev = open_first(monkeypatch, s)
    assert dev.telemetry().fans_rpm == [] and dev.fans is None


def test_telemetry_rtx4090_not_supported_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, RTX)
    t = dev.telemetry()
    assert t.fans_rpm == [1480] and t.fans_duty_pct == [30.0]
    assert t.memory_temperature_c is None  # field value answered NOT_SUPPORTED
    assert t.pcie is not None and (t.pcie.gen, t.pcie.max_gen) == (1, 4)
    fake.set_answer(0, "nvmlDeviceGetFanSpeedRPM", {"error": "NVML_ERROR_FUNCTION_NOT_FOUND"})
    fake.set_answer(0, "nvmlDeviceGetTemperature:0", {"error": "NVML_ERROR_NO_PERMISSION"})
    t = dev.telemetry()
    assert t.fans_rpm == [None] and t.fans_duty_pct == [30.0] and t.temperature_c is None


@pytest.mark.parametrize(
    ("bits", "want"),
    [
        (0x0, set()),
        (0x1, {THROTTLE_IDLE}),
        (0x4, {THROTTLE_SW_POWER_CAP}),
        (0x8 | 0x40, {THROTTLE_HW_SLOWDOWN, THROTTLE_HW_THERMAL}),
        (0x20, {THROTTLE_SW_THERMAL}),
        (0x80 | 0x4, {THROTTLE_HW_POWER_BRAKE, THROTTLE_SW_POWER_CAP}),
        (0x10 | 0x2, {"sync_boost", "applications_clocks"}),
        (0x100, set()),  # display clock setting: not a throttle the bench cares about
    ],
)
def test_throttle_reason_mapping(monkeypatch: pytest.MonkeyPatch, bits: int, want: set[str]) -> None:
    fake, dev = open_first(monkeypatch, H100)
    fake.set_answer(0, "nvmlDeviceGetCurrentClocksEventReasons", bits)
    assert dev.telemetry().throttle == frozenset(want)


def test_throttle_falls_back_to_the_older_call(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, H100)
    fake.set_answer(0, "nvmlDeviceGetCurrentClocksEventReasons", {"error": "NVML_ERROR_FUNCTION_NOT_FOUND"})
    fake.set_answer(0, "nvmlDeviceGetCurrentClocksThrottleReasons", 0x40)
    assert dev.telemetry().throttle == frozenset({THROTTLE_HW_THERMAL})


# --- counters ---------------------------------------------------------------------------------------
def test_counters_h100(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, H100)
    c = dev.counters()
    assert c.ecc_enabled is True
    assert (c.sbe_volatile, c.dbe_volatile, c.sbe_aggregate, c.dbe_aggregate) == (0, 0, 3, 0)
    assert c.sram_uncorrectable == 0
    assert (c.row_remap_pending, c.row_remap_failure) == (False, False)
    assert (c.remapped_rows_correctable, c.remapped_rows_uncorrectable) == (0, 0)
    assert (c.retired_pages_sbe, c.retired_pages_dbe, c.retired_pages_pending) == (None, None, None)
    assert (c.pcie_replays, c.inforom_valid, c.aux_power_ok) == (0, True, None)

    fake.set_answer(0, "nvmlDeviceGetRemappedRows", [5, 2, 1, 1])
    fake.set_answer(0, "nvmlDeviceGetTotalEccErrors:1,0", 4)
    fake.set_answer(0, "nvmlDeviceGetMemoryErrorCounter:1,1,7", {"error": "NVML_ERROR_INVALID_ARGUMENT"})
    fake.set_answer(0, "nvmlDeviceValidateInforom", {"error": "NVML_ERROR_CORRUPTED_INFOROM"})
    fake.set_answer(0, "nvmlDeviceGetEccMode", [0, 1])
    c = dev.counters()
    assert (c.remapped_rows_correctable, c.remapped_rows_uncorrectable) == (5, 2)
    assert (c.row_remap_pending, c.row_remap_failure) == (True, True)
    assert c.dbe_volatile == 4 and c.sram_uncorrectable is None
    assert c.inforom_valid is False and c.ecc_enabled is False


def test_counters_rtx4090_no_ecc(monkeypatch: pytest.MonkeyPatch) -> None:
    _, dev = open_first(monkeypatch, RTX)
    c = dev.counters()
    for f in ("ecc_enabled", "sbe_volatile", "dbe_volatile", "sbe_aggregate", "dbe_aggregate",
              "sram_uncorrectable", "row_remap_pending", "row_remap_failure", "retired_pages_sbe",
              "inforom_valid"):
        assert getattr(c, f) is None, f
    assert c.pcie_replays == 0


def test_retired_pages_and_replays(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, H100)  # as a pre-Ampere card would answer
    fake.set_answer(0, "nvmlDeviceGetRetiredPages:0", [0x1000, 0x2000, 0x3000])
    fake.set_answer(0, "nvmlDeviceGetRetiredPages:1", [0x9000])
    fake.set_answer(0, "nvmlDeviceGetRetiredPagesPendingStatus", 1)
    fake.set_answer(0, "nvmlDeviceGetPcieReplayCounter", 117)
    fake.set_answer(0, "nvmlDeviceGetCurrPcieLinkGeneration", 3)
    fake.set_answer(0, "nvmlDeviceGetCurrPcieLinkWidth", 8)
    c = dev.counters()
    assert (c.retired_pages_sbe, c.retired_pages_dbe, c.retired_pages_pending) == (3, 1, True)
    assert c.pcie_replays == 117
    link = dev.telemetry().pcie
    assert link is not None and (link.gen, link.width, link.max_gen, link.max_width) == (3, 8, 5, 16)


@pytest.mark.parametrize("code", ["NVML_ERROR_IRQ_ISSUE", "NVML_ERROR_NOT_READY", "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
                                  "NVML_ERROR_CODE_77"])
def test_an_unexpected_nvml_code_is_cannot_tell_for_that_field_only(monkeypatch: pytest.MonkeyPatch,
                                                                    code: str) -> None:
    fake, dev = open_first(monkeypatch, H100)
    before = dev.counters()
    fake.set_answer(0, "nvmlDeviceGetPcieReplayCounter", {"error": code})
    fake.set_answer(0, "nvmlDeviceGetTemperature:0", {"error": code})
    c = dev.counters()
    assert c.pcie_replays is None
    assert c.to_dict() == {**before.to_dict(), "pcie_replays": None}  # every other field still read
    t = dev.telemetry()
    assert t.temperature_c is None and t.power_w is not None
    assert set(dev.unreadable) == {"nvmlDeviceGetPcieReplayCounter", "nvmlDeviceGetTemperature"}
    assert dev.unreadable["nvmlDeviceGetPcieReplayCounter"].endswith(f"[{code}]")


def test_fan_control_still_fails_loudly_on_an_unexpected_code(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, snap(RTX))
    fake.set_answer(0, "nvmlDeviceSetFanSpeed_v2", {"error": "NVML_ERROR_IRQ_ISSUE"})
    assert dev.fans is not None
    with pytest.raises(DeviceError, match=r"GPU 0 .*nvmlDeviceSetFanSpeed_v2") as ei:
        dev.fans.set_duty(0, 50)
    assert not isinstance(ei.value, DeviceLost)


# --- events -----------------------------------------------------------------------------------------
def test_xid_events_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, H100)
    assert dev.events() == []
    fake.queue_xid(0, 48)
    fake.queue_xid(0, 63)
    evs = dev.events()
    assert [(e.kind, e.code) for e in evs] == [("xid", 48), ("xid", 63)]
    assert "Double Bit ECC" in evs[0].message
    assert dev.events() == []  # drained
    dev.telemetry()  # still alive


def test_xid_79_marks_the_card_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, H100)
    fake.queue_xid(0, 79)
    assert [e.code for e in dev.events()] == [79]
    for call in (dev.telemetry, dev.counters, dev.identity, dev.events):
        with pytest.raises(DeviceLost, match=r"GPU 0 \(serial 1654922012345\).*XID 79"):
            call()
    dev.close()
    assert fake.refcount == 0


def test_xid_then_loss_delivers_the_event_first(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, H100)
    fake.queue_xid(0, 79)
    fake.lose(0)
    assert [e.code for e in dev.events()] == [79]
    with pytest.raises(DeviceLost):
        dev.events()


def test_events_not_supported_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    s = snap(RTX)
    s["devices"][0]["calls"]["nvmlDeviceRegisterEvents:8"] = NS
    fake, dev = open_first(monkeypatch, s)
    fake.queue_xid(0, 13)
    assert dev.events() == []
    assert fake.event_sets[-1].freed


# --- fan control ------------------------------------------------------------------------------------
def test_fan_control_set_and_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, RTX)
    fans = dev.fans
    assert fans is not None and fans.count == 1
    fans.set_duty(0, 80.4)
    assert fake.fan_commands == [(0, 0, 80)]
    assert fans.duty(0) == 80.0
    t = dev.telemetry()
    assert t.fans_duty_pct == [80.0] and t.fans_rpm == [round(1480 * 80 / 30)]
    fans.restore()
    assert fake.fan_commands[-1] == (0, 0, None) and fans.duty(0) == 30.0
    fans.set_duty(0, 55)
    dev.close()  # close restores what the session changed
    assert fake.fan_commands[-1] == (0, 0, None) and fake.refcount == 0
    dev.close()  # idempotent


def test_fan_control_bad_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    _, dev = open_first(monkeypatch, RTX)
    assert dev.fans is not None
    with pytest.raises(ValueError, match="fan 1 out of range"):
        dev.fans.set_duty(1, 50)
    with pytest.raises(ValueError, match="outside 0-100"):
        dev.fans.set_duty(0, 120)


@pytest.mark.parametrize("err", ["NVML_ERROR_NO_PERMISSION", "NVML_ERROR_NOT_SUPPORTED"])
def test_fan_control_refused(monkeypatch: pytest.MonkeyPatch, err: str) -> None:
    fake, dev = open_first(monkeypatch, RTX)
    fake.set_answer(0, "nvmlDeviceSetFanSpeed_v2", {"error": err})
    assert dev.fans is not None
    with pytest.raises(Unsupported, match=err):
        dev.fans.set_duty(0, 60)
    assert fake.fan_commands == []
    dev.fans.restore()  # nothing was changed, nothing to restore
    assert fake.fan_commands == []


def test_fan_control_on_lost_card(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, RTX)
    assert dev.fans is not None
    fake.lose(0)
    with pytest.raises(DeviceLost):
        dev.fans.set_duty(0, 60)


# --- a card vanishing -------------------------------------------------------------------------------
def test_gpu_lost_mid_session(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, H100)
    dev.telemetry()
    fake.lose(0)
    with pytest.raises(DeviceLost, match=r"^nvml: GPU 0 \(serial 1654922012345\): .*GPU is lost"):
        dev.telemetry()
    fake.lost.clear()  # even if NVML answered again, the session stays lost
    with pytest.raises(DeviceLost):
        dev.counters()
    dev.close()
    assert fake.refcount == 0


def test_unknown_error_after_the_card_vanished_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, RTX)
    fake.lose(0, error="NVML_ERROR_UNKNOWN", vanish=True)
    with pytest.raises(DeviceLost, match=r"GPU 0 \(uuid GPU-8f2a6c41.*no longer answers"):
        dev.counters()


def test_transient_unknown_error_is_just_a_missing_field(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, dev = open_first(monkeypatch, H100)
    fake.set_answer(0, "nvmlDeviceGetTemperature:0", {"error": "NVML_ERROR_UNKNOWN"})
    t = dev.telemetry()
    assert t.temperature_c is None and t.power_w == pytest.approx(71.234)


def test_open_after_the_card_vanished(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_pynvml.install(monkeypatch, H100)
    backend = NvmlBackend()
    (loc,) = backend.discover(NvmlConfig(backend="nvml"), {})
    fake.lose(0, vanish=True)
    with pytest.raises(DeviceLost, match=r"GPU 0 \(serial 1654922012345\) not found"):
        backend.open(loc)
    assert fake.refcount == 0


# --- recorder and replay ----------------------------------------------------------------------------
def _answers(dev: NvmlDevice) -> dict[str, Any]:
    t = dev.telemetry().to_dict()
    t.pop("time_s")
    return {"identity": dev.identity().to_dict(), "telemetry": t, "counters": dev.counters().to_dict()}


@pytest.mark.parametrize("name", [H100, RTX])
def test_snapshot_round_trip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    original = snap(name)
    assert original["synthetic"] is True and "SYNTHETIC" in original["note"]
    fake_pynvml.install(monkeypatch, original)
    _, dev = open_first(monkeypatch, original)
    before = _answers(dev)
    dev.close()

    out = tmp_path / "rec.json"
    fake_pynvml.load(original)
    assert record_main([str(out), "--note", "ci"]) == 0
    recorded = json.loads(out.read_text())
    assert recorded["schema"] == fake_pynvml.SCHEMA and recorded["synthetic"] is False
    # the recorder asked exactly what the backend asks: the snapshot is complete and nothing more
    assert recorded["devices"][0]["calls"] == original["devices"][0]["calls"]
    assert recorded["system"] == original["system"]

    fake_pynvml.from_snapshot(out)
    _, dev = open_first(monkeypatch, recorded)
    assert _answers(dev) == before


def test_recorder_keeps_errors_by_name_and_host_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    host = fake_pynvml.combine(snap(RTX), snap(H100))
    fake = fake_pynvml.install(monkeypatch, host)
    got = record(sys.modules["pynvml"])
    assert [d["index"] for d in got["devices"]] == [0, 1]
    assert got["devices"][0]["calls"]["nvmlDeviceGetSerial"] == NS
    assert got["devices"][1]["calls"]["nvmlDeviceGetFieldValues:[82]"][0]["value"] == {"uiVal": 36}
    assert fake.refcount == 0 and fake.fan_commands == []  # reads only


def test_recorder_without_nvml_exits_3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    fake = fake_pynvml.install(monkeypatch, H100)
    fake.fail_init()
    assert record_main([str(tmp_path / "x.json")]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("nvml: ") and "\n" not in err
    assert not (tmp_path / "x.json").exists()


def test_fake_reports_an_incomplete_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    s = snap(H100)
    del s["devices"][0]["calls"]["nvmlDeviceGetPcieReplayCounter"]
    _, dev = open_first(monkeypatch, s)
    with pytest.raises(fake_pynvml.SnapshotMiss, match="nvmlDeviceGetPcieReplayCounter"):
        dev.counters()


def test_open_tolerates_a_quirky_answer_but_not_a_lost_card(monkeypatch: pytest.MonkeyPatch) -> None:
    s = snap(H100)
    s["devices"][0]["calls"]["nvmlDeviceGetSerial"] = {"error": "NVML_ERROR_IRQ_ISSUE"}
    _, dev = open_first(monkeypatch, s)
    assert dev.serial is None and dev.identity().uuid == "GPU-3c5e1d9a-7f42-4b8e-9a61-2d0f8c7b5e13"
    s["devices"][0]["calls"]["nvmlDeviceGetSerial"] = {"error": "NVML_ERROR_GPU_IS_LOST"}
    fake = fake_pynvml.install(monkeypatch, s)
    (loc,) = NvmlBackend().discover(NvmlConfig(backend="nvml"), {})
    with pytest.raises(DeviceLost, match="GPU 0"):
        NvmlBackend().open(loc)
    assert fake.refcount == 0
