"""One NVIDIA card read through NVML: identity, telemetry, counters, events, preflight conditions."""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

from drivers.api import (
    THROTTLE_APP_CLOCKS,
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
    LinkReport,
    MemoryHandle,
    PcieLink,
    PeerGroup,
    Telemetry,
    TransferHandle,
    WallClock,
)
from drivers.nvml.core import (
    _APP_CLOCKS,
    _COMPUTE_MODES,
    _FI_RECOVERY_ACTION,
    _LOST,
    _MAX_DRAIN,
    _MAYBE_LOST,
    _NA,
    _RECOVERY_ACTIONS,
    _SOFT,
    _THROTTLE_BITS,
    _XID_FELL_OFF,
    VALUE_MEMBERS,
    _cuda_version,
    cuda_runtime_version,
    error_name,
    nvml_shutdown,
)
from drivers.nvml.fans import NvmlFanControl
from drivers.registry import (
    handle_failure,
    make_handle,
    note_handle_failure,
)
from drivers.units import MIB
from drivers.xid import xid_description


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
        if handle in ("memory", "compute", "transfer", "peer") and importlib.util.find_spec("cupy") is None:
            return "CuPy is not installed: pip install 'burnin[cuda]'"
        if handle in self._handles and self._handles[handle] is None:
            why = handle_failure("cuda", handle) or "the CUDA path could not open this GPU"
            return f"a replayed recording, its card is not on this host ({why})" if self._replay else why
        return None

    def _where(self) -> dict[str, Any]:
        """Where the card is, as the CUDA path finds it (by bus id or UUID, never NVML's index)."""
        pci = self._read("nvmlDeviceGetPciInfo")
        return {"index": self.index, "uuid": self._uuid, "pci_bus_id": str(pci.busId) if pci is not None else None}

    # links and peers (the interconnect stage) -----------------------------------------------------
    def links(self) -> LinkReport | None:
        """The card's NVLinks (drivers/nvml/links.py); a report with no links on a PCIe card."""
        from drivers.nvml.links import read_links

        self._guard()
        return read_links(self)

    def peer_group(self, devices: list[Device]) -> PeerGroup | None:
        """Every card of ``devices`` (NVML cards) in one CUDA peer group, found by bus id or UUID
        (drivers/cuda/peer.py); None when CUDA is not here (``unavailable("peer")`` says why)."""
        if self._replay or not all(isinstance(d, NvmlDevice) for d in devices):
            why = "a replayed recording has no peers to copy to" if self._replay else "cards of several backends"
            note_handle_failure("cuda", "peer", why)
            self._handles["peer"] = None
            return None
        where = {"devices": [d._where() for d in devices if isinstance(d, NvmlDevice)]}
        try:
            group = make_handle("cuda", "peer", where)
        except HostUnfit as e:
            note_handle_failure("cuda", "peer", str(e))
            group = None
        self._handles["peer"] = group
        return group

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
            try:
                self._handles[kind] = make_handle("cuda", kind, self._where())
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
