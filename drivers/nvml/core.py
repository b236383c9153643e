"""The pynvml module, its return codes and what they mean to burnin, init/shutdown, and the
constants every NVML read shares (clock-event bits, field value members, preflight fields)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

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
)

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
    if not isinstance(code, int):
        return f"NVML_ERROR_CODE_{code}"
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
