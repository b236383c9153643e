"""NVIDIA backend through NVML (nvidia-ml-py, imported as ``pynvml``).

Reads identity, telemetry, error counters and XID events, and drives the card's own fans where the
driver allows it. Memory and compute handles come from a CUDA path elsewhere, so they are None here.

Three rules shape every read:
- "NVML cannot tell" (NOT_SUPPORTED, FUNCTION_NOT_FOUND, NO_PERMISSION) is a value: the field is
  None (``fans_rpm == []`` on a fanless SXM card, ECC fields None on a GeForce card). Any other
  unexpected code (NOT_READY, ARGUMENT_VERSION_MISMATCH, ...) makes that one field "cannot tell"
  too, never the whole read; ``NvmlDevice.unreadable`` keeps what each such call said.
- A card that no longer answers (GPU_IS_LOST; UNKNOWN / NOT_FOUND when a re-lookup of the card by
  UUID also fails; XID 79) is ``DeviceLost``, with a message naming the index and serial.
- ``pynvml`` is imported lazily, so this module imports on hosts without a GPU; without NVML,
  ``discover`` raises ``BackendUnavailable`` (the CLI's exit 3).

The device takes the pynvml module as a parameter, so the recorder (``drivers.nvml_record``) can
wrap it and tests can hand it a fake.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import Field

from drivers.api import (
    THROTTLE_APP_CLOCKS,
    THROTTLE_HW_POWER_BRAKE,
    THROTTLE_HW_SLOWDOWN,
    THROTTLE_HW_THERMAL,
    THROTTLE_IDLE,
    THROTTLE_SW_POWER_CAP,
    THROTTLE_SW_THERMAL,
    THROTTLE_SYNC_BOOST,
    BackendUnavailable,
    Clock,
    ComputeHandle,
    Conditions,
    Device,
    DeviceError,
    DeviceEvent,
    DeviceLost,
    DeviceProcess,
    ErrorCounters,
    FanControl,
    HostUnfit,
    Identity,
    MemoryHandle,
    PcieLink,
    Telemetry,
    TransferHandle,
    Unsupported,
    WallClock,
)
from drivers.registry import (
    Backend,
    BackendConfig,
    handle_failure,
    make_handle,
    note_handle_failure,
    register_backend,
)
from drivers.units import MIB
from drivers.xid import xid_description

# CUDA numbers GPUs fastest-first unless told otherwise; NVML numbers them by PCI bus. Make them
# agree, so the CUDA handle of NVML GPU i is CUDA device i (set before CUDA initialises).
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


# NVML return codes by meaning (names, resolved against the module in use)
_SOFT = frozenset({"NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_NO_PERMISSION"})
_LOST = frozenset({"NVML_ERROR_GPU_IS_LOST"})
_MAYBE_LOST = frozenset({"NVML_ERROR_UNKNOWN", "NVML_ERROR_NOT_FOUND"})
_NO_DRIVER = frozenset({"NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED"})
_CONTROL_REFUSED = _SOFT | {"NVML_ERROR_INVALID_ARGUMENT"}

# clocks-event (formerly "throttle") reason suffixes -> vendor-neutral names
_THROTTLE_BITS = (
    ("GpuIdle", THROTTLE_IDLE),
    ("ApplicationsClocksSetting", THROTTLE_APP_CLOCKS),
    ("SwPowerCap", THROTTLE_SW_POWER_CAP),
    ("HwSlowdown", THROTTLE_HW_SLOWDOWN),
    ("SyncBoost", THROTTLE_SYNC_BOOST),
    ("SwThermalSlowdown", THROTTLE_SW_THERMAL),
    ("HwThermalSlowdown", THROTTLE_HW_THERMAL),
    ("HwPowerBrakeSlowdown", THROTTLE_HW_POWER_BRAKE),
)

_XID_FELL_OFF = 79
_MAX_DRAIN = 4096  # events per drain: a bound, not a budget

# nvmlValueType_t -> the c_nvmlValue_t member that holds a field value
VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}

_NA = object()  # "NVML cannot tell" inside this module; fields turn it into None

# preflight reads
_APP_CLOCKS = ("nvmlDeviceGetApplicationsClock", "nvmlDeviceGetDefaultApplicationsClock")
_COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}
_FI_RECOVERY_ACTION = 230  # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION (R550+)
_RECOVERY_ACTIONS = {0: None, 1: "gpu_reset", 2: "node_reboot", 3: "drain_p2p", 4: "drain_and_reset",
                     5: "recover_imex_domain", 6: "bus_reset", 7: "system_reboot"}


def cuda_runtime_version() -> str | None:
    """The CUDA runtime version the compute path (CuPy) was built for, or None without CuPy."""
    if importlib.util.find_spec("cupy") is None:
        return None
    try:
        import cupy

        return _cuda_version(int(cupy.cuda.runtime.runtimeGetVersion()))
    except Exception:  # noqa: BLE001 - a CuPy that cannot load has no runtime to compare
        return None


def import_pynvml() -> ModuleType:
    """The pynvml module, or BackendUnavailable with one line saying why."""
    try:
        return importlib.import_module("pynvml")
    except ImportError as e:
        raise BackendUnavailable(
            f"nvml: cannot import pynvml ({e}; pip install nvidia-ml-py) (is the NVIDIA driver installed?)"
        ) from None


def _error_names(module: Any) -> dict[int, str]:
    names = _ERROR_NAMES.get(id(module))
    if names is None:
        names = {}
        for name in dir(module):
            if name.startswith("NVML_ERROR_"):
                names.setdefault(getattr(module, name), name)
        _ERROR_NAMES[id(module)] = names
    return names


_ERROR_NAMES: dict[int, dict[int, str]] = {}


def error_name(nv: Any, err: BaseException) -> str:
    """``NVML_ERROR_NOT_SUPPORTED`` for an NVMLError, by the constants of the module that raised it."""
    code = getattr(err, "value", None)
    module = sys.modules.get(type(err).__module__, nv)
    return _error_names(module).get(code) or _error_names(nv).get(code) or f"NVML_ERROR_CODE_{code}"


def nvml_init(nv: Any) -> None:
    """``nvmlInit``; an NVML that cannot start is BackendUnavailable (exit 3), not a traceback."""
    try:
        nv.nvmlInit()
    except nv.NVMLError as e:
        name = error_name(nv, e)
        hint = "is the NVIDIA driver installed?" if name in _NO_DRIVER else "is the NVIDIA driver healthy?"
        raise BackendUnavailable(f"nvml: NVML did not start: {e} [{name}] ({hint})") from None
    except OSError as e:
        raise BackendUnavailable(f"nvml: cannot load libnvidia-ml: {e} (is the NVIDIA driver installed?)") from None


def nvml_shutdown(nv: Any) -> None:
    try:
        nv.nvmlShutdown()
    except nv.NVMLError:
        pass


def _cuda_version(v: int) -> str:
    """NVML reports the CUDA driver API version as 1000*major + 10*minor (12040 -> "12.4")."""
    return f"{v // 1000}.{(v % 1000) // 10}"


class NvmlDevice(Device):
    """One NVIDIA GPU through NVML. Every public call raises DeviceLost once the card is gone."""

    backend = "nvml"

    def __init__(
        self,
        nv: Any,
        handle: Any,
        index: int,
        uuid: str | None = None,
        clock: Clock | None = None,
        owns_init: bool = True,
        replay: bool = False,
    ) -> None:
        self._nv = nv
        # a replayed recording: CUDA runs only on the recorded card itself (found by its UUID or
        # bus id on this host), never on whatever other GPU the host has
        self._replay = replay
        self.unreadable: dict[str, str] = {}  # call -> the unexpected NVML error it answered
        self._h = handle
        self.index = index
        self.clock = clock or WallClock()
        self._owns_init = owns_init
        self._closed = False
        self._lost: str | None = None
        self._label = f"GPU {index}"
        self._uuid: str | None = uuid  # _gone() needs it while the UUID is read
        self._uuid = uuid or self._read_at_open("nvmlDeviceGetUUID")
        self.serial: str | None = self._read_at_open("nvmlDeviceGetSerial") or None
        self._label = f"GPU {index} ({self._describe()})"
        self._num_fans = int(self._read_at_open("nvmlDeviceGetNumFans") or 0)
        self._fans = NvmlFanControl(self) if self._num_fans > 0 else None
        self._xid_bit = int(nv.nvmlEventTypeXidCriticalError)
        self._event_set = self._register_events()
        self._handles: dict[str, Any] = {}

    def _describe(self) -> str:
        return f"serial {self.serial}" if self.serial else f"uuid {self._uuid}" if self._uuid else "no serial"

    # error handling -----------------------------------------------------------------------------
    def _guard(self) -> None:
        if self._lost is not None:
            raise DeviceLost(self._lost)

    def _mark_lost(self, why: str) -> DeviceLost:
        if self._lost is None:
            self._lost = f"nvml: {self._label}: {why}"
        return DeviceLost(self._lost)

    def _gone(self) -> bool:
        """After UNKNOWN/NOT_FOUND: is the card really gone? Look it up again by UUID."""
        nv = self._nv
        try:
            if self._uuid:
                nv.nvmlDeviceGetHandleByUUID(self._uuid)
            else:
                nv.nvmlDeviceGetHandleByIndex(self.index)
            nv.nvmlDeviceGetUUID(self._h)
        except nv.NVMLError:
            return True
        return False

    def _classify(self, err: Any, call: str, on: dict[str, Any] | None = None, soft: frozenset[str] = _SOFT,
                  strict: bool = False) -> Any:
        """Turn an NVML error into a field value (``_NA`` or ``on[name]``) or raise.

        A code that says nothing about the card's presence and is not expected for this call is
        "cannot tell" for a read (remembered in ``unreadable``), DeviceError when ``strict``.
        """
        name = error_name(self._nv, err)
        if on and name in on:
            return on[name]
        if name in _LOST:
            raise self._mark_lost(f"{call}: {err} (the GPU fell off the bus or the driver lost it)")
        if name in _MAYBE_LOST:
            if self._gone():
                raise self._mark_lost(f"{call}: {err}, and the GPU no longer answers by UUID")
            return _NA
        if name in soft:
            return _NA
        if not strict:
            self.unreadable[call] = f"{err} [{name}]"
            return _NA
        raise DeviceError(f"nvml: {self._label}: {call} failed: {err} [{name}]")

    def _try(self, fn: str, *args: Any, on: dict[str, Any] | None = None, device: bool = True) -> Any:
        """Call ``pynvml.fn(handle, *args)``; ``_NA`` where NVML cannot tell."""
        self._guard()
        nv = self._nv
        func = getattr(nv, fn, None)
        if func is None:  # an older nvidia-ml-py without this call
            return _NA
        try:
            return func(self._h, *args) if device else func(*args)
        except nv.NVMLError as e:
            return self._classify(e, fn, on)

    def _read(self, fn: str, *args: Any, device: bool = True) -> Any:
        v = self._try(fn, *args, device=device)
        return None if v is _NA else v

    def _read_at_open(self, fn: str) -> Any:
        """Open must not fail on a quirky answer: only a lost card stops it (DeviceLost)."""
        try:
            return self._read(fn)
        except DeviceLost:
            raise
        except DeviceError:
            return None

    def _field(self, field_id: int, what: str) -> int | float | None:
        """One ``nvmlDeviceGetFieldValues`` value; each field carries its own return code."""
        values = self._read("nvmlDeviceGetFieldValues", [field_id])
        if not values:
            return None
        v = values[0]
        if v.nvmlReturn != self._nv.NVML_SUCCESS:
            self._classify(self._nv.NVMLError(v.nvmlReturn), f"nvmlDeviceGetFieldValues({what})")
            return None
        return getattr(v.value, VALUE_MEMBERS.get(int(v.valueType), "ullVal"))

    # identity ----------------------------------------------------------------------------------
    def identity(self) -> Identity:
        from drivers.derived import derived_name
        from drivers.profiles import profile_for_model

        nv = self._nv
        name = self._read("nvmlDeviceGetName") or "unknown NVIDIA GPU"
        pci = self._read("nvmlDeviceGetPciInfo")
        fw: dict[str, str] = {}
        for key, fn, args in (
            ("vbios", "nvmlDeviceGetVbiosVersion", ()),
            ("inforom_image", "nvmlDeviceGetInforomImageVersion", ()),
            ("inforom_oem", "nvmlDeviceGetInforomVersion", (nv.NVML_INFOROM_OEM,)),
            ("inforom_ecc", "nvmlDeviceGetInforomVersion", (nv.NVML_INFOROM_ECC,)),
        ):
            v = self._read(fn, *args)
            if v:
                fw[key] = str(v)
        driver = self._read("nvmlSystemGetDriverVersion", device=False)
        if driver:
            fw["driver"] = str(driver)
        cuda = self._read("nvmlSystemGetCudaDriverVersion", device=False)
        if cuda:
            fw["cuda_driver"] = _cuda_version(int(cuda))
        mem = self._read("nvmlDeviceGetMemoryInfo")
        mem_mib = int(mem.total) // MIB if mem is not None else None
        prof = profile_for_model(name, mem_mib, self._num_fans)
        facts = self._facts(name, mem_mib)
        return Identity(
            vendor="nvidia",
            model=name,
            serial=self.serial,
            uuid=self._uuid,
            pci_bus_id=str(pci.busId) if pci is not None else None,
            firmware=fw,
            profile=prof.name if prof else derived_name(name),
            memory_total_mib=mem_mib,
            profile_source="matched" if prof else "derived",
            facts=facts,
        )

    def _fact(self, fn: str, *args: Any) -> Any:
        """A figure for a derived profile: absent (None) whatever NVML answers, unless the card is lost."""
        try:
            return self._read(fn, *args)
        except DeviceLost:
            raise
        except DeviceError:
            return None

    def _facts(self, name: str, mem_mib: int | None) -> dict[str, Any]:
        """What a derived profile is built from (``drivers.derived``); every field may be None."""
        nv = self._nv
        mw = {k: self._fact(fn) for k, fn in (("limit", "nvmlDeviceGetEnforcedPowerLimit"),
                                              ("default", "nvmlDeviceGetPowerManagementDefaultLimit"))}
        cons = self._fact("nvmlDeviceGetPowerManagementLimitConstraints")
        ecc = self._fact("nvmlDeviceGetEccMode")
        temps = {k: self._fact("nvmlDeviceGetTemperatureThreshold", getattr(nv, c, i)) for k, c, i in (
            ("temp_shutdown_c", "NVML_TEMPERATURE_THRESHOLD_SHUTDOWN", 0),
            ("temp_slowdown_c", "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN", 1),
            ("temp_max_operating_c", "NVML_TEMPERATURE_THRESHOLD_GPU_MAX", 3))}
        return {
            "vendor": "nvidia", "model": name, "memory_total_mib": mem_mib,
            "power_limit_w": mw["limit"] / 1000.0 if mw["limit"] else None,
            "power_default_w": mw["default"] / 1000.0 if mw["default"] else None,
            "power_min_w": cons[0] / 1000.0 if cons else None,
            "clock_max_mhz": self._fact("nvmlDeviceGetMaxClockInfo", nv.NVML_CLOCK_SM),
            "pcie_max_gen": self._fact("nvmlDeviceGetMaxPcieLinkGeneration"),
            "pcie_max_width": self._fact("nvmlDeviceGetMaxPcieLinkWidth"),
            "fans": self._num_fans,
            "ecc": bool(ecc[0]) if ecc else None,
            **temps,
        }

    # telemetry ---------------------------------------------------------------------------------
    def telemetry(self) -> Telemetry:
        nv = self._nv
        self._guard()
        t = self.clock.now()
        temp = self._read("nvmlDeviceGetTemperature", nv.NVML_TEMPERATURE_GPU)
        power_mw = self._read("nvmlDeviceGetPowerUsage")
        limit_mw = self._read("nvmlDeviceGetEnforcedPowerLimit")
        clock = self._read("nvmlDeviceGetClockInfo", nv.NVML_CLOCK_SM)
        clock_max = self._read("nvmlDeviceGetMaxClockInfo", nv.NVML_CLOCK_SM)
        util = self._read("nvmlDeviceGetUtilizationRates")
        mem = self._read("nvmlDeviceGetMemoryInfo")
        rpm, duty = self._fan_readings()
        mem_temp = self._field(nv.NVML_FI_DEV_MEMORY_TEMP, "NVML_FI_DEV_MEMORY_TEMP")
        return Telemetry(
            time_s=t,
            temperature_c=float(temp) if temp is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            clock_mhz=float(clock) if clock is not None else None,
            clock_max_mhz=float(clock_max) if clock_max is not None else None,
            utilization_pct=float(util.gpu) if util is not None else None,
            memory_total_mib=int(mem.total) // MIB if mem is not None else None,
            memory_used_mib=int(mem.used) // MIB if mem is not None else None,
            fans_rpm=rpm,
            fans_duty_pct=duty,
            throttle=self._throttle(),
            pcie=self._pcie(),
            memory_temperature_c=float(mem_temp) if mem_temp is not None else None,
        )

    def _fan_readings(self) -> tuple[list[int | None], list[float | None]]:
        """Per fan: RPM where the driver measures it, and NVML's intended speed in percent.

        nvidia-ml-py's ``nvmlDeviceGetFanSpeedRPM(handle)`` only asks for fan 0, so further fans
        report RPM None (their duty is still known).
        """
        if self._num_fans == 0:
            return [], []
        duty: list[float | None] = []
        for fan in range(self._num_fans):
            d = self._read("nvmlDeviceGetFanSpeed_v2", fan)
            duty.append(float(d) if d is not None else None)
        rpm0 = self._read("nvmlDeviceGetFanSpeedRPM")
        rpm: list[int | None] = [int(rpm0) if rpm0 is not None else None]
        rpm += [None] * (self._num_fans - 1)
        return rpm, duty

    def _throttle(self) -> frozenset[str]:
        reasons = self._read("nvmlDeviceGetCurrentClocksEventReasons")
        if reasons is None:  # drivers before 535 only know the older name
            reasons = self._read("nvmlDeviceGetCurrentClocksThrottleReasons")
        if reasons is None:
            return frozenset()
        out = set()
        for suffix, neutral in _THROTTLE_BITS:
            bit = getattr(self._nv, "nvmlClocksEventReason" + suffix, None)
            if bit is None:
                bit = getattr(self._nv, "nvmlClocksThrottleReason" + suffix)
            if int(reasons) & int(bit):
                out.add(neutral)
        return frozenset(out)

    def _pcie(self) -> PcieLink | None:
        vals = [
            self._read(fn)
            for fn in (
                "nvmlDeviceGetCurrPcieLinkGeneration",
                "nvmlDeviceGetCurrPcieLinkWidth",
                "nvmlDeviceGetMaxPcieLinkGeneration",
                "nvmlDeviceGetMaxPcieLinkWidth",
            )
        ]
        if all(v is None for v in vals):
            return None
        gen, width, max_gen, max_width = (int(v) if v is not None else None for v in vals)
        return PcieLink(gen=gen, width=width, max_gen=max_gen, max_width=max_width)

    # counters ----------------------------------------------------------------------------------
    def counters(self) -> ErrorCounters:
        nv = self._nv
        self._guard()
        mode = self._read("nvmlDeviceGetEccMode")
        cor, unc = nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        vol, agg = nv.NVML_VOLATILE_ECC, nv.NVML_AGGREGATE_ECC

        def ecc(kind: int, counter: int) -> int | None:
            v = self._read("nvmlDeviceGetTotalEccErrors", kind, counter)
            return int(v) if v is not None else None

        # drivers without the SRAM location answer INVALID_ARGUMENT: "cannot tell", not a bug
        sram = self._try(
            "nvmlDeviceGetMemoryErrorCounter", unc, agg, nv.NVML_MEMORY_LOCATION_SRAM,
            on={"NVML_ERROR_INVALID_ARGUMENT": _NA},
        )
        rows = self._read("nvmlDeviceGetRemappedRows")
        sbe_pages = self._read("nvmlDeviceGetRetiredPages", nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
        dbe_pages = self._read("nvmlDeviceGetRetiredPages", nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
        pending = self._read("nvmlDeviceGetRetiredPagesPendingStatus")
        replays = self._read("nvmlDeviceGetPcieReplayCounter")
        inforom = self._try("nvmlDeviceValidateInforom", on={"NVML_ERROR_CORRUPTED_INFOROM": False})
        return ErrorCounters(
            ecc_enabled=bool(mode[0] == nv.NVML_FEATURE_ENABLED) if mode is not None else None,
            sbe_volatile=ecc(cor, vol),
            dbe_volatile=ecc(unc, vol),
            sbe_aggregate=ecc(cor, agg),
            dbe_aggregate=ecc(unc, agg),
            sram_uncorrectable=int(sram) if sram is not _NA else None,
            remapped_rows_correctable=int(rows[0]) if rows is not None else None,
            remapped_rows_uncorrectable=int(rows[1]) if rows is not None else None,
            row_remap_pending=bool(rows[2]) if rows is not None else None,
            row_remap_failure=bool(rows[3]) if rows is not None else None,
            retired_pages_sbe=len(sbe_pages) if sbe_pages is not None else None,
            retired_pages_dbe=len(dbe_pages) if dbe_pages is not None else None,
            retired_pages_pending=bool(pending) if pending is not None else None,
            pcie_replays=int(replays) if replays is not None else None,
            inforom_valid=None if inforom is _NA else inforom is not False,
        )

    # events ------------------------------------------------------------------------------------
    def _register_events(self) -> Any:
        """An event set for critical XIDs, registered now: NVML only queues events after this."""
        nv = self._nv
        try:
            event_set = nv.nvmlEventSetCreate()
        except nv.NVMLError as e:
            self._classify(e, "nvmlEventSetCreate")
            return None
        if self._try("nvmlDeviceRegisterEvents", self._xid_bit, event_set) is _NA:
            try:
                nv.nvmlEventSetFree(event_set)
            except nv.NVMLError:
                pass
            return None
        return event_set

    def events(self) -> list[DeviceEvent]:
        """XIDs since the last call (drained with a zero timeout). XID 79 marks the card lost."""
        nv = self._nv
        self._guard()
        out: list[DeviceEvent] = []
        if self._event_set is None:
            return out
        for _ in range(_MAX_DRAIN):
            try:
                data = nv.nvmlEventSetWait_v2(self._event_set, 0)
            except nv.NVMLError as e:
                if error_name(nv, e) == "NVML_ERROR_TIMEOUT":
                    break
                if out:  # deliver what we drained; the loss shows on the next call
                    try:
                        self._classify(e, "nvmlEventSetWait_v2")
                    except DeviceLost:
                        pass
                    break
                if self._classify(e, "nvmlEventSetWait_v2") is _NA:
                    break
                continue
            if int(data.eventType) & self._xid_bit:
                code = int(data.eventData)
                text = xid_description(code)
                out.append(DeviceEvent(self.clock.now(), "xid", code, f"XID {code}" + (f": {text}" if text else "")))
        if any(e.code == _XID_FELL_OFF for e in out):
            self._mark_lost(f"XID {_XID_FELL_OFF} ({xid_description(_XID_FELL_OFF)})")
        return out

    # host conditions (preflight) -------------------------------------------------------------
    def conditions(self) -> Conditions:
        """Processes on the card, MIG, display, compute mode, clocks and power against their
        defaults, pending ECC mode, the driver's recovery action, driver vs CUDA runtime."""
        nv = self._nv
        self._guard()
        procs = self._processes()
        mig = self._read("nvmlDeviceGetMigMode")
        display = self._read("nvmlDeviceGetDisplayActive")
        mode = self._read("nvmlDeviceGetComputeMode")
        sm, mem = nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM
        app, app_default = (self._read(fn, sm) for fn in _APP_CLOCKS)
        app_mem, app_mem_default = (self._read(fn, mem) for fn in _APP_CLOCKS)
        limit = self._read("nvmlDeviceGetPowerManagementLimit")
        default_limit = self._read("nvmlDeviceGetPowerManagementDefaultLimit")
        ecc = self._read("nvmlDeviceGetEccMode")
        recovery = self._field(_FI_RECOVERY_ACTION, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION")
        cuda = self._read("nvmlSystemGetCudaDriverVersion", device=False)

        def mhz(v: Any) -> float | None:
            return float(v) if v else None  # 0: the card has no applications clocks

        return Conditions(
            processes=procs,
            mig_enabled=bool(mig[0]) if mig is not None else None,
            mig_pending=bool(mig[1]) != bool(mig[0]) if mig is not None else None,
            display_active=bool(display) if display is not None else None,
            compute_mode=_COMPUTE_MODES.get(int(mode), f"mode {mode}") if mode is not None else None,
            app_clock_mhz=mhz(app), default_app_clock_mhz=mhz(app_default),
            app_mem_clock_mhz=mhz(app_mem), default_app_mem_clock_mhz=mhz(app_mem_default),
            clocks_locked=THROTTLE_APP_CLOCKS in self._throttle(),
            power_limit_w=limit / 1000.0 if limit is not None else None,
            default_power_limit_w=default_limit / 1000.0 if default_limit is not None else None,
            ecc_pending=bool(ecc[0] != ecc[1]) if ecc is not None else None,
            reset_required=_RECOVERY_ACTIONS.get(int(recovery)) if recovery is not None else None,
            driver_version=self._read("nvmlSystemGetDriverVersion", device=False),
            driver_api_version=_cuda_version(int(cuda)) if cuda else None,
            runtime_version=cuda_runtime_version(),
        )

    def _processes(self) -> list[DeviceProcess] | None:
        """Compute and graphics processes on the card, named by NVML (not us: our own pid)."""
        out: list[DeviceProcess] = []
        known = False
        for fn, kind in (("nvmlDeviceGetComputeRunningProcesses", "compute"),
                         ("nvmlDeviceGetGraphicsRunningProcesses", "graphics")):
            procs = self._read(fn)
            if procs is None:
                continue
            known = True
            for p in procs:
                pid = int(p.pid)
                if pid == os.getpid() or any(q.pid == pid for q in out):
                    continue
                used = getattr(p, "usedGpuMemory", None)
                name = self._read("nvmlSystemGetProcessName", pid, device=False)
                out.append(DeviceProcess(pid=pid, name=str(name) if name else None,
                                         used_mib=int(used) // MIB if used is not None else None, kind=kind))
        return out if known else None

    def unavailable(self, handle: str) -> str | None:
        """Without building the handle: the CUDA path's reason when it was tried and failed,
        else CuPy missing from this install."""
        if handle == "fans":
            return None if self._fans is not None else "the card reports no fans of its own"
        if handle in ("memory", "compute", "transfer") and importlib.util.find_spec("cupy") is None:
            return "CuPy is not installed: pip install 'burnin[cuda]'"
        if handle in self._handles and self._handles[handle] is None:
            why = handle_failure("cuda", handle) or "the CUDA path could not open this GPU"
            return f"a replayed recording, its card is not on this host ({why})" if self._replay else why
        return None

    # fans and lifetime ---------------------------------------------------------------------------
    @property
    def fans(self) -> FanControl | None:
        return self._fans

    # device memory, compute and PCIe transfers: the CUDA path (CuPy, the optional [cuda] extra) ----
    def _cuda(self, kind: str) -> Any:
        """The CUDA handle of this GPU, found by PCI bus id or UUID (never by the NVML index, which
        ignores ``CUDA_VISIBLE_DEVICES``); None without CuPy (stages needing it are skipped). A
        handle that cannot be built raises (the session reports it), except for a replayed
        recording whose card this host cannot run CUDA on: that is None (nothing to stress)."""
        self._guard()
        if kind not in self._handles:
            pci = self._read("nvmlDeviceGetPciInfo")
            where = {"index": self.index, "uuid": self._uuid,
                     "pci_bus_id": str(pci.busId) if pci is not None else None}
            try:
                self._handles[kind] = make_handle("cuda", kind, where)
            except HostUnfit as e:
                if not self._replay:
                    raise
                note_handle_failure("cuda", kind, str(e))
                self._handles[kind] = None
        return self._handles[kind]

    @property
    def memory(self) -> MemoryHandle | None:
        return self._cuda("memory")

    @property
    def compute(self) -> ComputeHandle | None:
        return self._cuda("compute")

    @property
    def transfer(self) -> TransferHandle | None:
        return self._cuda("transfer")

    def release_handles(self) -> None:
        """Free the CUDA handles: the memory scan holds nearly all GPU memory, the burn needs it."""
        for handle in self._handles.values():
            if handle is not None and hasattr(handle, "close"):
                try:
                    handle.close()
                except Exception:  # noqa: BLE001 - releasing GPU memory on a lost card may fail
                    pass
        self._handles.clear()

    def close(self) -> None:
        """Restore the fans, free the event set, release NVML; safe to call twice, even when lost."""
        if self._closed:
            return
        self._closed = True
        self.release_handles()
        nv = self._nv
        if self._fans is not None and self._lost is None:
            try:
                self._fans.restore()
            except DeviceError:
                pass
        if self._event_set is not None:
            try:
                nv.nvmlEventSetFree(self._event_set)
            except nv.NVMLError:
                pass
            self._event_set = None
        if self._owns_init:
            nvml_shutdown(nv)


class NvmlFanControl(FanControl):
    """The card's own fans via ``nvmlDeviceSetFanSpeed_v2`` (root, and a driver that allows it)."""

    def __init__(self, dev: NvmlDevice) -> None:
        self._dev = dev
        self._touched: set[int] = set()

    @property
    def count(self) -> int:
        return self._dev._num_fans

    def _check(self, fan: int) -> None:
        if not 0 <= fan < self.count:
            raise ValueError(f"nvml: {self._dev._label}: fan {fan} out of range (card has {self.count})")

    def _control(self, fn: str, fan: int, *args: Any) -> None:
        dev, nv = self._dev, self._dev._nv
        dev._guard()
        try:
            getattr(nv, fn)(dev._h, fan, *args)
        except AttributeError:
            raise Unsupported(f"nvml: {dev._label}: this nvidia-ml-py has no {fn}") from None
        except nv.NVMLError as e:
            name = error_name(nv, e)
            if name in _CONTROL_REFUSED:
                raise Unsupported(
                    f"nvml: {dev._label}: fan {fan} control refused by the driver ({name}; needs root)"
                ) from None
            dev._classify(e, fn, soft=frozenset(), strict=True)  # DeviceLost when the card is gone
            raise DeviceError(f"nvml: {dev._label}: {fn} on fan {fan} failed: {e} [{name}]") from None

    def set_duty(self, fan: int, duty_pct: float) -> None:
        self._check(fan)
        if not 0.0 <= duty_pct <= 100.0:
            raise ValueError(f"nvml: {self._dev._label}: fan duty {duty_pct} % outside 0-100 %")
        self._control("nvmlDeviceSetFanSpeed_v2", fan, int(round(duty_pct)))
        self._touched.add(fan)

    def duty(self, fan: int) -> float | None:
        """NVML's intended fan speed in percent (what the card aims for, not a tach reading)."""
        self._check(fan)
        v = self._dev._read("nvmlDeviceGetFanSpeed_v2", fan)
        return float(v) if v is not None else None

    def restore(self) -> None:
        """Hand every fan we commanded back to the driver's automatic policy."""
        first: DeviceError | None = None
        for fan in sorted(self._touched):
            try:
                self._control("nvmlDeviceSetDefaultFanSpeed_v2", fan)
            except DeviceError as e:
                first = first or e
            else:
                self._touched.discard(fan)
        if first is not None:
            raise first


class NvmlConfig(BackendConfig):
    index: int | None = Field(default=None, ge=0)  # None = every local NVIDIA GPU
    # a recorded snapshot (python -m drivers.nvml_record) served instead of the driver: replays a
    # real card's answers through the whole harness, with no GPU (relative to the config file)
    replay: str | None = None


def _nvml_module(replay: str | None) -> ModuleType:
    """pynvml itself, or the replay module serving a recorded snapshot."""
    if replay is None:
        return import_pynvml()
    from drivers import nvml_replay

    try:
        snapshot = nvml_replay.read_snapshot(replay)
    except (OSError, ValueError) as e:
        raise BackendUnavailable(f"nvml: cannot read replay snapshot {replay}: {e}") from None
    try:
        nvml_replay.load(snapshot, strict=False)  # a call it has no answer for: "cannot tell"
    except ValueError as e:
        raise BackendUnavailable(f"nvml: cannot replay snapshot {replay}: {e}") from None
    return nvml_replay


@register_backend
class NvmlBackend(Backend):
    name = "nvml"
    Config = NvmlConfig

    def vendor_record(self, locator: dict[str, Any], out_dir: Path) -> list[tuple[str, str]]:
        """NVML's answers for the GPUs of this host (drivers/nvml_record), or the snapshot a
        replayed run was served from."""
        import json
        import shutil

        if locator.get("replay"):
            shutil.copyfile(locator["replay"], out_dir / "nvml-snapshot.json")
            return [("nvml-snapshot.json", "the recorded NVML snapshot this run replayed")]
        from drivers.nvml_record import record

        snap = record(import_pynvml(), note=f"burnin evidence {locator.get('serial') or ''}".strip())
        (out_dir / "nvml-snapshot.json").write_text(json.dumps(snap, indent=2, default=str) + "\n", encoding="utf-8")
        return [("nvml-snapshot.json", "NVML's answers for every GPU of this host, read when the pack was written")]

    def discover(self, cfg: BackendConfig, context: dict[str, Any]) -> list[dict[str, Any]]:
        """One locator per GPU this entry names.

        A GPU the entry names but the host lacks (``index`` past the count, or a ``serial`` no GPU
        has) still gets a locator marked ``missing``: opening it raises DeviceLost, so the card is
        listed with a ``bus.lost`` finding instead of silently dropping out of the run.
        """
        assert isinstance(cfg, NvmlConfig)
        replay = None
        if cfg.replay is not None:
            path = Path(cfg.replay)
            if not path.is_absolute():
                path = Path(context.get("config_dir", ".")) / path
            replay = str(path)
        nv = _nvml_module(replay)
        nvml_init(nv)
        try:
            try:
                count = int(nv.nvmlDeviceGetCount())
            except nv.NVMLError as e:
                raise BackendUnavailable(f"nvml: cannot count GPUs: {e} (is the NVIDIA driver healthy?)") from None
            gpus = [_probe(nv, i) for i in range(count)]
        finally:
            nvml_shutdown(nv)
        host = context.get("host", "local")
        if cfg.index is not None:
            chosen = [gpus[cfg.index]] if cfg.index < count else [
                _missing(cfg.index, cfg.serial, f"no GPU at index {cfg.index} (this host has {count})")
            ]
        else:
            if count == 0:
                raise BackendUnavailable("nvml: NVML found no NVIDIA GPU on this host (is the NVIDIA driver installed?)")
            chosen = gpus
        if cfg.serial is not None:
            matching = [g for g in chosen if g["serial"] == cfg.serial]
            where = f"index {cfg.index}" if cfg.index is not None else "this host"
            chosen = matching or [_missing(cfg.index, cfg.serial, f"no GPU with serial {cfg.serial} at {where}")]
        for pos, loc in enumerate(chosen):
            loc["host"] = host
            loc["replay"] = replay
            if cfg.slot is not None:
                loc["slot"] = cfg.slot + pos
        return chosen

    def open(self, locator: dict[str, Any]) -> Device:
        if locator.get("missing"):
            raise DeviceLost(f"nvml: {locator['missing']}")
        nv = _nvml_module(locator.get("replay"))
        nvml_init(nv)
        index, uuid = int(locator["index"]), locator.get("uuid")
        try:
            handle = nv.nvmlDeviceGetHandleByUUID(uuid) if uuid else nv.nvmlDeviceGetHandleByIndex(index)
        except nv.NVMLError as e:
            nvml_shutdown(nv)
            who = f"serial {locator.get('serial')}" if locator.get("serial") else f"uuid {uuid}"
            raise DeviceLost(f"nvml: GPU {index} ({who}) not found: {e} (it left the bus or the driver lost it)") from None
        try:
            return NvmlDevice(nv, handle, index=index, uuid=uuid, replay=locator.get("replay") is not None)
        except DeviceError:
            nvml_shutdown(nv)
            raise


def _probe(nv: Any, index: int) -> dict[str, Any]:
    """Locator for GPU ``index``; a card that does not answer keeps its place (open says why)."""
    loc: dict[str, Any] = {"backend": "nvml", "index": index, "slot": index, "serial": None, "uuid": None}
    try:
        h = nv.nvmlDeviceGetHandleByIndex(index)
        loc["uuid"] = nv.nvmlDeviceGetUUID(h)
    except nv.NVMLError:
        return loc
    try:
        loc["serial"] = nv.nvmlDeviceGetSerial(h) or None
    except nv.NVMLError:
        pass  # GeForce cards have no serial through NVML
    try:
        loc["pci_bus_id"] = nv.nvmlDeviceGetPciInfo(h).busId
    except nv.NVMLError:
        pass
    return loc


def _missing(index: int | None, serial: str | None, why: str) -> dict[str, Any]:
    return {
        "backend": "nvml", "index": index, "slot": index if index is not None else 0,
        "serial": serial, "uuid": None, "missing": why,
    }
