"""A faithful stand-in for the ``pynvml`` module (nvidia-ml-py 13.x), driven by a snapshot.

Same function names and parameter names, same constant values, the same ``NVMLError`` class with
one subclass per return code (``NVMLError_NotSupported``, ``.value``), and answers that look like
the real ones (strings, ints, tuples, objects with the ctypes struct's attribute names). Answers
come from a snapshot in the format ``drivers.nvml_record`` writes, so a recording of a real GPU
replays here. ``tests/test_nvml_backend.py`` checks the names and values against the installed
nvidia-ml-py, so the fake cannot drift from it unnoticed.

``replay = "snapshot.json"`` on an nvml device serves a recording through the whole harness
(``load``). The tests' steering (lose a card, queue an XID, change an answer, fail init) lives
with the tests, in ``tests/fake_pynvml.py``.
"""

from __future__ import annotations

import copy
import json
import string
import sys
from collections import deque
from pathlib import Path
from typing import Any

from drivers.nvml_record import SCHEMA, VALUE_MEMBERS, snapshot_key

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvml"

# --- constants (values as in nvidia-ml-py) --------------------------------------------------------
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_FREQ_NOT_SUPPORTED = 24
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_DEPRECATED = 26
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30
NVML_ERROR_UNKNOWN = 999

NVML_FEATURE_DISABLED = 0
NVML_FEATURE_ENABLED = 1
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_INFOROM_OEM = 0
NVML_INFOROM_ECC = 1
NVML_INFOROM_POWER = 2
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_MEMORY_LOCATION_DRAM = 2
NVML_MEMORY_LOCATION_SRAM = 7
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
NVML_FI_DEV_MEMORY_TEMP = 82
NVML_FI_DEV_PCIE_REPLAY_COUNTER = 94
NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG = 2
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4
NVML_VALUE_TYPE_SIGNED_INT = 5
NVML_VALUE_TYPE_UNSIGNED_SHORT = 6
NVML_COMPUTEMODE_DEFAULT = 0
NVML_COMPUTEMODE_EXCLUSIVE_THREAD = 1
NVML_COMPUTEMODE_PROHIBITED = 2
NVML_COMPUTEMODE_EXCLUSIVE_PROCESS = 3
NVML_DEVICE_MIG_DISABLE = 0x0
NVML_DEVICE_MIG_ENABLE = 0x1
NVML_FI_DEV_GET_GPU_RECOVERY_ACTION = 230
NVML_GPU_RECOVERY_ACTION_NONE = 0
NVML_GPU_RECOVERY_ACTION_GPU_RESET = 1
NVML_GPU_RECOVERY_ACTION_NODE_REBOOT = 2
NVML_GPU_RECOVERY_ACTION_DRAIN_P2P = 3
NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET = 4
NVML_FAN_POLICY_TEMPERATURE_CONTINOUS_SW = 0
NVML_FAN_POLICY_MANUAL = 1

nvmlEventTypeSingleBitEccError = 0x0000000000000001
nvmlEventTypeDoubleBitEccError = 0x0000000000000002
nvmlEventTypePState = 0x0000000000000004
nvmlEventTypeXidCriticalError = 0x0000000000000008
nvmlEventTypeClock = 0x0000000000000010
nvmlEventTypeNone = 0x0000000000000000

nvmlClocksEventReasonGpuIdle = 0x0000000000000001
nvmlClocksEventReasonApplicationsClocksSetting = 0x0000000000000002
nvmlClocksEventReasonSwPowerCap = 0x0000000000000004
nvmlClocksEventReasonHwSlowdown = 0x0000000000000008
nvmlClocksEventReasonSyncBoost = 0x0000000000000010
nvmlClocksEventReasonSwThermalSlowdown = 0x0000000000000020
nvmlClocksEventReasonHwThermalSlowdown = 0x0000000000000040
nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x0000000000000080
nvmlClocksEventReasonDisplayClockSetting = 0x0000000000000100
nvmlClocksEventReasonNone = 0x0000000000000000
nvmlClocksThrottleReasonGpuIdle = 0x0000000000000001
nvmlClocksThrottleReasonApplicationsClocksSetting = 0x0000000000000002
nvmlClocksThrottleReasonSwPowerCap = 0x0000000000000004
nvmlClocksThrottleReasonHwSlowdown = 0x0000000000000008
nvmlClocksThrottleReasonSyncBoost = 0x0000000000000010
nvmlClocksThrottleReasonSwThermalSlowdown = 0x0000000000000020
nvmlClocksThrottleReasonHwThermalSlowdown = 0x0000000000000040
nvmlClocksThrottleReasonHwPowerBrakeSlowdown = 0x0000000000000080
nvmlClocksThrottleReasonDisplayClockSetting = 0x0000000000000100
nvmlClocksThrottleReasonNone = 0x0000000000000000


# --- errors: the real class's behaviour (NVMLError(code) builds the per-code subclass) ---------
class NVMLError(Exception):
    value: int  # set by __new__
    _valClassMapping: dict[int, type] = dict()  # the real attribute's name
    _errcode_to_string = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
        NVML_ERROR_INSUFFICIENT_POWER: "Insufficient External Power",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_IRQ_ISSUE: "Interrupt Request Issue",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_CORRUPTED_INFOROM: "Corrupted infoROM",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_RESET_REQUIRED: "GPU requires restart",
        NVML_ERROR_OPERATING_SYSTEM: "The operating system has blocked the request.",
        NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
        NVML_ERROR_MEMORY: "Insufficient Memory",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }

    def __new__(typ, value):  # mirrors the real signature
        if typ == NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value
        return obj

    def __str__(self) -> str:
        # the real class asks libnvidia-ml (nvmlErrorString) for codes missing from its table and
        # says this when the library cannot answer, as with no driver
        return NVMLError._errcode_to_string.get(self.value, f"NVML Error with code {self.value:d}")

    def __eq__(self, other):  # as in the real class (which makes errors unhashable too)
        return self.value == other.value


def _extractNVMLErrorsAsClasses() -> None:  # the real function's name
    this_module = sys.modules[__name__]
    for err_name in [x for x in dir(this_module) if x.startswith("NVML_ERROR_")]:
        class_name = "NVMLError_" + string.capwords(err_name.replace("NVML_ERROR_", ""), "_").replace("_", "")
        err_val = getattr(this_module, err_name)

        def gen_new(val: int) -> Any:
            def new(typ: type, *args: Any) -> NVMLError:
                return NVMLError.__new__(typ, val)

            return new

        cls = type(class_name, (NVMLError,), {"__new__": gen_new(err_val)})
        cls.__module__ = __name__
        setattr(this_module, class_name, cls)
        NVMLError._valClassMapping[err_val] = cls


_extractNVMLErrorsAsClasses()


def nvmlExceptionClass(nvmlErrorCode: int) -> type:
    if nvmlErrorCode not in NVMLError._valClassMapping:
        raise ValueError(f"nvmlErrorCode {nvmlErrorCode} is not valid")
    return NVMLError._valClassMapping[nvmlErrorCode]


def nvmlErrorString(result: int) -> str:
    return NVMLError._errcode_to_string.get(result, "Unknown Error")


def _code(name: str) -> int:
    """An error name of a snapshot as its code; ``NVML_ERROR_CODE_<n>`` is how the recorder
    writes a code its nvidia-ml-py had no name for (raised as a plain ``NVMLError(n)``)."""
    if name.startswith("NVML_ERROR_CODE_") and name[16:].isdigit():
        return int(name[16:])
    value = globals().get(name)
    if not isinstance(value, int) or not name.startswith("NVML_ERROR_"):
        raise ValueError(f"fake_pynvml: unknown NVML error name {name!r} in snapshot")
    return value


def _check_error_names(v: Any, where: str) -> None:
    """Every ``{"error": NAME}`` of a snapshot names a code: a bad one fails at load, in one line."""
    if isinstance(v, dict):
        if set(v) == {"error"}:
            _code(str(v["error"]))
            return
        for k, x in v.items():
            _check_error_names(x, f"{where}.{k}")
    elif isinstance(v, list):
        for x in v:
            _check_error_names(x, where)


# --- struct stand-ins: the ctypes structs' attribute names, plain values ------------------------
class _Struct:
    """Attribute access like a pynvml ``_PrintableStructure`` (strings already decoded)."""

    def __init__(self, **fields: Any) -> None:
        self._fields_ = [(k, None) for k in fields]
        for k, v in fields.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return "fake(" + ", ".join(f"{k}={getattr(self, k)!r}" for k, _ in self._fields_) + ")"


def _value_union(d: dict[str, Any]) -> _Struct:
    members = {m: 0 for m in VALUE_MEMBERS.values()}
    members.update(d)
    return _Struct(**members)


def _struct(d: dict[str, Any]) -> _Struct:
    return _Struct(**{k: (_value_union(v) if k == "value" and isinstance(v, dict) else v) for k, v in d.items()})


class _Handle:
    """An opaque device handle (a ``c_nvmlDevice_t`` pointer in the real module)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<fake c_nvmlDevice_t {self.index}>"


class _EventSet:
    def __init__(self) -> None:
        self.registered: list[tuple[int, int]] = []  # (device index, event type mask)
        self.freed = False


class SnapshotMiss(LookupError):
    """The backend asked something the snapshot has no answer for (the snapshot is incomplete).

    Raised in tests (``strict``), so an incomplete fixture shows; a replay run (``strict=False``)
    answers such a call as an older driver does, FUNCTION_NOT_FOUND ("cannot tell"), and keeps it
    in ``FakeNvml.misses``."""


# --- the simulated host ---------------------------------------------------------------------------
class FakeNvml:
    """The GPUs of one snapshot plus what tests do to them (loss, XIDs, fan commands)."""

    def __init__(self, snapshot: dict[str, Any], strict: bool = True) -> None:
        if snapshot.get("schema") != SCHEMA:
            raise ValueError(f"fake_pynvml: snapshot schema {snapshot.get('schema')!r}, expected {SCHEMA!r}")
        for i, dev in enumerate(snapshot.get("devices", [])):
            _check_error_names(dev, f"devices[{i}]")
            if dev.get("handle_error"):
                _code(str(dev["handle_error"]))
        _check_error_names(snapshot.get("system", {}), "system")
        self.strict = strict
        self.misses: list[str] = []
        self.snapshot = copy.deepcopy(snapshot)
        self.system: dict[str, Any] = self.snapshot.get("system", {})
        self.devices: list[dict[str, Any]] = self.snapshot["devices"]
        # the recording process itself (burnin's recorder, leaving its own pid out live as the backend
        # does): replayed, it is no one, not another process holding the card
        self.recorder_pid: int | None = snapshot.get("recorder_pid")
        self.refcount = 0
        self.init_error: str | None = None
        self.lost: dict[int, str] = {}  # device index -> error name every call now raises
        self.vanished: set[int] = set()
        self.fan_speed: dict[tuple[int, int], int] = {}  # (index, fan) -> commanded %
        self.fan_commands: list[tuple[int, int, int | None]] = []  # (index, fan, % or None = default)
        self.queues: dict[int, deque[tuple[int, int]]] = {i: deque() for i in range(len(self.devices))}
        self.event_sets: list[_EventSet] = []
        self.calls: list[str] = []
        for i, dev in enumerate(self.devices):
            for ev in dev.get("events", []):
                self.queues[i].append((int(ev["eventType"]), int(ev["eventData"])))

    # answering --------------------------------------------------------------------------------
    def check_init(self) -> None:
        if self.refcount <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def visible(self) -> list[int]:
        return [i for i in range(len(self.devices)) if i not in self.vanished]

    def device(self, handle: Any) -> int:
        self.check_init()
        if not isinstance(handle, _Handle):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if handle.index in self.lost:
            raise NVMLError(_code(self.lost[handle.index]))
        return handle.index

    def answer(self, fn: str, handle: Any, *args: Any) -> Any:
        index = self.device(handle)
        key = snapshot_key(fn, args)
        self.calls.append(f"{index}:{key}")
        calls = self.devices[index]["calls"]
        if key not in calls:
            self._miss(f"fake_pynvml: the snapshot of GPU {index} has no answer for {key}")
        return _unwrap(calls[key])

    def system_answer(self, fn: str, *args: Any) -> Any:
        self.check_init()
        key = snapshot_key(fn, args)
        if key not in self.system:
            self._miss(f"fake_pynvml: the snapshot has no system answer for {key}")
        return _unwrap(self.system[key])

    def _miss(self, why: str) -> None:
        if self.strict:
            raise SnapshotMiss(why)
        self.misses.append(why)
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)


def _unwrap(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"error"}:
        raise NVMLError(_code(v["error"]))
    return copy.deepcopy(v)


_STATE: FakeNvml | None = None


def _st() -> FakeNvml:
    if _STATE is None:
        raise RuntimeError("fake_pynvml: no snapshot loaded (call fake_pynvml.load first)")
    return _STATE


def load(snapshot: dict[str, Any], strict: bool = True, host: type[FakeNvml] | None = None) -> FakeNvml:
    """Make ``snapshot`` the simulated host (of class ``host``: the tests' steerable one). ``strict``:
    a call the snapshot has no answer for raises SnapshotMiss (else FUNCTION_NOT_FOUND)."""
    global _STATE
    _STATE = (host or FakeNvml)(snapshot, strict)
    return _STATE


def read_snapshot(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = FIXTURES / p
    return json.loads(p.read_text(encoding="utf-8"))


def from_snapshot(path: str | Path) -> FakeNvml:
    """Load a snapshot file (a path, or a name under fixtures/nvml/) as the simulated host."""
    return load(read_snapshot(path))


def combine(*snapshots: dict[str, Any]) -> dict[str, Any]:
    """One host holding the GPUs of several snapshots, in order (the system answers of the first)."""
    out = copy.deepcopy(snapshots[0])
    for snap in snapshots[1:]:
        out["devices"] += copy.deepcopy(snap["devices"])
    for i, dev in enumerate(out["devices"]):
        dev["index"] = i
    return out


# --- the pynvml functions (same names and parameter names as nvidia-ml-py) ---------------------
def nvmlInitWithFlags(flags):
    st = _st()
    if st.init_error:
        raise NVMLError(_code(st.init_error))
    st.refcount += 1


def nvmlInit():
    nvmlInitWithFlags(0)
    return None


def nvmlShutdown():
    st = _st()
    st.check_init()
    st.refcount -= 1
    return None


def nvmlSystemGetDriverVersion():
    return _st().system_answer("nvmlSystemGetDriverVersion")


def nvmlSystemGetCudaDriverVersion():
    return _st().system_answer("nvmlSystemGetCudaDriverVersion")


def nvmlSystemGetProcessName(pid):
    return _st().system_answer("nvmlSystemGetProcessName", pid)


def nvmlDeviceGetCount():
    st = _st()
    st.check_init()
    return len(st.visible())


def nvmlDeviceGetHandleByIndex(index):
    st = _st()
    st.check_init()
    visible = st.visible()
    if not 0 <= index < len(visible):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    i = visible[index]
    err = st.devices[i].get("handle_error")
    if err:
        raise NVMLError(_code(err))
    return _Handle(i)


def nvmlDeviceGetHandleByUUID(uuid):
    st = _st()
    st.check_init()
    for i in st.visible():
        if st.devices[i]["calls"].get("nvmlDeviceGetUUID") == uuid:
            if i in st.lost:
                raise NVMLError(_code(st.lost[i]))
            return _Handle(i)
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetName(handle):
    return _st().answer("nvmlDeviceGetName", handle)


def nvmlDeviceGetSerial(handle):
    return _st().answer("nvmlDeviceGetSerial", handle)


def nvmlDeviceGetUUID(handle):
    return _st().answer("nvmlDeviceGetUUID", handle)


def nvmlDeviceGetPciInfo(handle):
    return _struct(_st().answer("nvmlDeviceGetPciInfo", handle))


def nvmlDeviceGetVbiosVersion(handle):
    return _st().answer("nvmlDeviceGetVbiosVersion", handle)


def nvmlDeviceGetInforomVersion(handle, infoRomObject):
    return _st().answer("nvmlDeviceGetInforomVersion", handle, infoRomObject)


def nvmlDeviceGetInforomImageVersion(handle):
    return _st().answer("nvmlDeviceGetInforomImageVersion", handle)


def nvmlDeviceValidateInforom(handle):
    _st().answer("nvmlDeviceValidateInforom", handle)
    return None


def nvmlDeviceGetMemoryInfo(handle, version=None):
    return _struct(_st().answer("nvmlDeviceGetMemoryInfo", handle))


def nvmlDeviceGetTemperature(handle, sensor):
    return _st().answer("nvmlDeviceGetTemperature", handle, sensor)


def nvmlDeviceGetPowerUsage(handle):
    return _st().answer("nvmlDeviceGetPowerUsage", handle)


def nvmlDeviceGetEnforcedPowerLimit(handle):
    return _st().answer("nvmlDeviceGetEnforcedPowerLimit", handle)


def nvmlDeviceGetClockInfo(handle, type):  # the real parameter's name
    return _st().answer("nvmlDeviceGetClockInfo", handle, type)


def nvmlDeviceGetMaxClockInfo(handle, type):
    return _st().answer("nvmlDeviceGetMaxClockInfo", handle, type)


def nvmlDeviceGetUtilizationRates(handle):
    return _struct(_st().answer("nvmlDeviceGetUtilizationRates", handle))


def nvmlDeviceGetNumFans(device):
    return _st().answer("nvmlDeviceGetNumFans", device)


def nvmlDeviceGetFanSpeed_v2(handle, fan):
    st = _st()
    recorded = st.answer("nvmlDeviceGetFanSpeed_v2", handle, fan)
    return st.fan_speed.get((handle.index, fan), recorded)


def nvmlDeviceGetFanSpeedRPM(handle):
    """Fan 0 only, as in nvidia-ml-py; follows a commanded duty in proportion to the recording."""
    st = _st()
    rpm = st.answer("nvmlDeviceGetFanSpeedRPM", handle)
    commanded = st.fan_speed.get((handle.index, 0))
    if commanded is not None:
        pct = st.devices[handle.index]["calls"].get("nvmlDeviceGetFanSpeed_v2:0")
        if isinstance(pct, int) and pct > 0:
            rpm = round(rpm * commanded / pct)
    return rpm


def _fan_control(fn: str, handle: Any, index: int, speed: int | None) -> int:
    st = _st()
    i = st.device(handle)
    calls = st.devices[i]["calls"]
    if fn in calls:  # a recorded refusal, e.g. {"error": "NVML_ERROR_NO_PERMISSION"}
        _unwrap(calls[fn])
    fans = calls.get("nvmlDeviceGetNumFans", 0)
    if not isinstance(fans, int) or fans == 0:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    if not 0 <= index < fans or (speed is not None and not 0 <= speed <= 100):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    st.fan_commands.append((i, index, speed))
    if speed is None:
        st.fan_speed.pop((i, index), None)
    else:
        st.fan_speed[(i, index)] = speed
    return NVML_SUCCESS


def nvmlDeviceSetFanSpeed_v2(handle, index, speed):
    return _fan_control("nvmlDeviceSetFanSpeed_v2", handle, index, int(speed))


def nvmlDeviceSetDefaultFanSpeed_v2(handle, index):
    return _fan_control("nvmlDeviceSetDefaultFanSpeed_v2", handle, index, None)


def nvmlDeviceGetCurrentClocksEventReasons(handle):
    return _st().answer("nvmlDeviceGetCurrentClocksEventReasons", handle)


def nvmlDeviceGetCurrentClocksThrottleReasons(handle):
    return _st().answer("nvmlDeviceGetCurrentClocksThrottleReasons", handle)


def nvmlDeviceGetCurrPcieLinkGeneration(handle):
    return _st().answer("nvmlDeviceGetCurrPcieLinkGeneration", handle)


def nvmlDeviceGetCurrPcieLinkWidth(handle):
    return _st().answer("nvmlDeviceGetCurrPcieLinkWidth", handle)


def nvmlDeviceGetMaxPcieLinkGeneration(handle):
    return _st().answer("nvmlDeviceGetMaxPcieLinkGeneration", handle)


def nvmlDeviceGetMaxPcieLinkWidth(handle):
    return _st().answer("nvmlDeviceGetMaxPcieLinkWidth", handle)


def nvmlDeviceGetPcieReplayCounter(handle):
    return _st().answer("nvmlDeviceGetPcieReplayCounter", handle)


def nvmlDeviceGetFieldValues(handle, fieldIds):
    """Field ids, or (field id, scope) pairs (per-link NVLink fields), as the recording asked them."""
    ids = [f if isinstance(f, int) else tuple(f) for f in fieldIds]
    return [_struct(v) for v in _st().answer("nvmlDeviceGetFieldValues", handle, ids)]


# NVLink and the NVSwitch fabric (drivers/nvml/links.py) ------------------------------------------

def nvmlDeviceGetArchitecture(device):
    return int(_st().answer("nvmlDeviceGetArchitecture", device))


def nvmlDeviceGetNvLinkState(device, link):
    return int(_st().answer("nvmlDeviceGetNvLinkState", device, link))


def nvmlDeviceGetNvLinkVersion(device, link):
    return int(_st().answer("nvmlDeviceGetNvLinkVersion", device, link))


def nvmlDeviceGetNvLinkRemotePciInfo(device, link):
    return _struct(_st().answer("nvmlDeviceGetNvLinkRemotePciInfo", device, link))


def nvmlDeviceGetNvLinkRemoteDeviceType(handle, link):
    return int(_st().answer("nvmlDeviceGetNvLinkRemoteDeviceType", handle, link))


def nvmlDeviceGetNvLinkErrorCounter(device, link, counter):
    return int(_st().answer("nvmlDeviceGetNvLinkErrorCounter", device, link, counter))


class c_nvmlGpuFabricInfoV_t:  # noqa: N801 - pynvml's name
    """The fabric-info struct the caller passes by reference (its fields as in nvidia-ml-py)."""

    _fields_ = [("version", None), ("clusterUuid", None), ("status", None), ("cliqueId", None), ("state", None),
                ("healthMask", None)]

    def __init__(self) -> None:
        self.version = self.status = self.cliqueId = self.state = self.healthMask = 0
        self.clusterUuid = [0] * 16


nvmlGpuFabricInfo_v2 = 0x2000024  # sizeof | 2 << 24, as nvidia-ml-py computes it


def nvmlDeviceGetGpuFabricInfoV(device, gpuFabricInfo):
    info = getattr(gpuFabricInfo, "_obj", gpuFabricInfo)  # ctypes.byref(info) or the struct itself
    for k, v in dict(_st().answer("nvmlDeviceGetGpuFabricInfoV", device)).items():
        setattr(info, k, v)
    return NVML_SUCCESS


def nvmlDeviceGetEccMode(handle):
    return list(_st().answer("nvmlDeviceGetEccMode", handle))


def nvmlDeviceGetTotalEccErrors(handle, errorType, counterType):
    return _st().answer("nvmlDeviceGetTotalEccErrors", handle, errorType, counterType)


def nvmlDeviceGetMemoryErrorCounter(handle, errorType, counterType, locationType):
    return _st().answer("nvmlDeviceGetMemoryErrorCounter", handle, errorType, counterType, locationType)


def nvmlDeviceGetRemappedRows(device):
    return tuple(_st().answer("nvmlDeviceGetRemappedRows", device))


def nvmlDeviceGetRetiredPages(device, sourceFilter):
    return list(_st().answer("nvmlDeviceGetRetiredPages", device, sourceFilter))


def nvmlDeviceGetRetiredPagesPendingStatus(device):
    return int(_st().answer("nvmlDeviceGetRetiredPagesPendingStatus", device))


def nvmlDeviceGetComputeRunningProcesses(handle):
    """A list of process objects (``pid``, ``usedGpuMemory`` in bytes or None), as recorded, less
    the recording process itself."""
    return _processes("nvmlDeviceGetComputeRunningProcesses", handle)


def nvmlDeviceGetGraphicsRunningProcesses(handle):
    return _processes("nvmlDeviceGetGraphicsRunningProcesses", handle)


def _processes(fn: str, handle: Any) -> list[_Struct]:
    st = _st()
    return [_Struct(**p) for p in st.answer(fn, handle) if st.recorder_pid is None or p.get("pid") != st.recorder_pid]


def nvmlDeviceGetMigMode(device):
    """``[current, pending]``."""
    return list(_st().answer("nvmlDeviceGetMigMode", device))


def nvmlDeviceGetDisplayActive(handle):
    return int(_st().answer("nvmlDeviceGetDisplayActive", handle))


def nvmlDeviceGetComputeMode(handle):
    return int(_st().answer("nvmlDeviceGetComputeMode", handle))


def nvmlDeviceGetApplicationsClock(handle, type):
    return _st().answer("nvmlDeviceGetApplicationsClock", handle, type)


def nvmlDeviceGetDefaultApplicationsClock(handle, type):
    return _st().answer("nvmlDeviceGetDefaultApplicationsClock", handle, type)


def nvmlDeviceGetPowerManagementLimit(handle):
    return _st().answer("nvmlDeviceGetPowerManagementLimit", handle)


def nvmlDeviceGetPowerManagementDefaultLimit(handle):
    return _st().answer("nvmlDeviceGetPowerManagementDefaultLimit", handle)


def nvmlEventSetCreate():
    st = _st()
    st.check_init()
    es = _EventSet()
    st.event_sets.append(es)
    return es


def nvmlDeviceRegisterEvents(handle, eventTypes, eventSet):
    st = _st()
    st.answer("nvmlDeviceRegisterEvents", handle, eventTypes)  # a recorded refusal raises here
    eventSet.registered.append((handle.index, int(eventTypes)))
    return None


def nvmlEventSetWait_v2(eventSet, timeoutms):
    """The oldest queued event of a registered card; Timeout when none (no real waiting)."""
    st = _st()
    st.check_init()
    for index, mask in eventSet.registered:
        queue = st.queues[index]
        for n, (etype, edata) in enumerate(queue):
            if etype & mask:
                del queue[n]
                return _Struct(
                    device=_Handle(index), eventType=etype, eventData=edata,
                    gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF,
                )
    for index, _ in eventSet.registered:
        if index in st.lost:
            raise NVMLError(_code(st.lost[index]))
    raise NVMLError(NVML_ERROR_TIMEOUT)


def nvmlEventSetWait(eventSet, timeoutms):
    return nvmlEventSetWait_v2(eventSet, timeoutms)


def nvmlEventSetFree(eventSet):
    _st().check_init()
    eventSet.freed = True
    return None
