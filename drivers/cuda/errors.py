"""CUDA failures as device-API exceptions, and the CUDA device of an NVML card.

CuPy raises ``CUDARuntimeError``/``CUDADriverError`` with the CUDA status code, ``CUBLASError``,
``OutOfMemoryError`` (only from its pools; ``cupy.cuda.Memory`` raises ``CUDARuntimeError`` 2),
``ImportError`` for a missing cuBLAS/cuRAND/NVRTC library and ``RuntimeError`` when libcuda
cannot be loaded. The harness understands only drivers.api exceptions, so every CUDA call of
the handles goes through ``cuda_errors``:

- a kernel past its deadline (``cudaErrorLaunchTimeout``) -> ``KernelTimeout`` (``compute.hang``);
- an uncorrectable ECC error -> ``MemoryFault`` with the range being touched (a memory finding);
- an error that poisons the context (illegal address, launch failure, ...) or a card that stopped
  answering -> ``DeviceLost`` (``bus.lost``): nothing more can run on it in this process;
- missing libraries, a driver older than the runtime, a card CUDA cannot see -> ``HostUnfit``;
- anything else CUDA says -> ``DeviceError``.

A sticky error leaves the device unusable for the rest of the worker: it is remembered per CUDA
device, and a later handle on that device fails at once with the first error's story.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from drivers.api import BackendUnavailable, DeviceError, DeviceLost, HostUnfit, KernelTimeout, MemoryFault

# cudaError_t values (CUDA runtime API; the driver API's CUresult uses the same numbers for these)
OUT_OF_MEMORY = 2
INITIALIZATION_ERROR = 3
CUDART_UNLOADING = 4
STUB_LIBRARY = 34
INSUFFICIENT_DRIVER = 35
DEVICES_UNAVAILABLE = 46
NO_DEVICE = 100
INVALID_DEVICE = 101
ECC_UNCORRECTABLE = 214
NVLINK_UNCORRECTABLE = 220
ILLEGAL_ADDRESS = 700
LAUNCH_TIMEOUT = 702
ASSERT = 710
HARDWARE_STACK_ERROR = 714
ILLEGAL_INSTRUCTION = 715
MISALIGNED_ADDRESS = 716
INVALID_ADDRESS_SPACE = 717
INVALID_PC = 718
LAUNCH_FAILURE = 719
SYSTEM_NOT_READY = 802
SYSTEM_DRIVER_MISMATCH = 803
COMPAT_NOT_SUPPORTED = 804
UNKNOWN = 999

# errors after which the context is unusable ("sticky"): the process must exit to recover
STICKY = frozenset({ECC_UNCORRECTABLE, NVLINK_UNCORRECTABLE, ILLEGAL_ADDRESS, LAUNCH_TIMEOUT, ASSERT,
                    HARDWARE_STACK_ERROR, ILLEGAL_INSTRUCTION, MISALIGNED_ADDRESS, INVALID_ADDRESS_SPACE,
                    INVALID_PC, LAUNCH_FAILURE})
# the card (or the driver's hold on it) is gone
GONE = frozenset({UNKNOWN, CUDART_UNLOADING})
# the host, not the card: no usable driver or runtime for it
HOST = frozenset({INITIALIZATION_ERROR, STUB_LIBRARY, INSUFFICIENT_DRIVER, NO_DEVICE, SYSTEM_NOT_READY,
                  SYSTEM_DRIVER_MISMATCH, COMPAT_NOT_SUPPORTED, DEVICES_UNAVAILABLE})

# CUDA device ordinal -> (what poisoned its context in this process, whether that was a lost card)
_POISONED: dict[int, tuple[str, bool]] = {}


def import_cupy() -> Any:
    """CuPy, or BackendUnavailable (the handles are then absent and their stages skipped)."""
    try:
        import cupy
    except ImportError as e:  # the [cuda] extra is not installed
        raise BackendUnavailable(f"CuPy is not installed ({e}): pip install 'burnin[cuda]'") from None
    return cupy


def status_of(err: BaseException) -> int | None:
    """The CUDA status code of a CuPy CUDA error, else None."""
    if not _from_cupy(err):
        return None
    status = getattr(err, "status", None)
    return int(status) if isinstance(status, int) else None


def _from_cupy(err: BaseException) -> bool:
    return (type(err).__module__ or "").startswith(("cupy", "cupy_backends", "cupyx"))


def poisoned(device: int) -> str | None:
    entry = _POISONED.get(device)
    return entry[0] if entry else None


def mark_poisoned(device: int, why: str, lost: bool = False) -> None:
    """Remember that ``device``'s context is unusable in this process (first story wins)."""
    _POISONED.setdefault(device, (why, lost))


def check_usable(device: int) -> None:
    """Refuse a device whose context an earlier sticky error made unusable: DeviceLost when that
    error said the card was gone, else DeviceError (an ECC error or a hang, already reported by
    the stage that met it: later stages need a reset first, not a reseat)."""
    entry = _POISONED.get(device)
    if entry is not None:
        why, lost = entry
        msg = f"CUDA device {device}: unusable since {why} (the card needs a reset)"
        raise DeviceLost(msg) if lost else DeviceError(msg)


def map_error(err: BaseException, what: str, device: int,
              fault_range: tuple[int, int] | None = None) -> BaseException:
    """The drivers.api exception for ``err`` raised while doing ``what`` on CUDA ``device``."""
    if isinstance(err, (DeviceError, HostUnfit, BackendUnavailable)):
        return err
    name = type(err).__name__
    if isinstance(err, ImportError):  # libcublasLt.so.12, libcurand, libnvrtc not found
        return HostUnfit(f"{what}: a CUDA library is missing ({err}); pip install 'burnin[cuda]'")
    if not _from_cupy(err):
        if isinstance(err, RuntimeError) and "libcuda" in str(err):  # no driver library at all
            return HostUnfit(f"{what}: {err}")
        return err
    status = status_of(err)
    text = f"{what}: {name}: {err}"
    if isinstance(err, MemoryError) or status == OUT_OF_MEMORY:
        return DeviceError(f"{what}: out of device memory ({err})")
    if status in STICKY or status in GONE:
        mark_poisoned(device, f"{what}: {err}", lost=status not in (LAUNCH_TIMEOUT, ECC_UNCORRECTABLE))
    if status == LAUNCH_TIMEOUT:
        return KernelTimeout(text)
    if status == ECC_UNCORRECTABLE:
        if fault_range is None:
            return MemoryFault(text)
        lo, n = fault_range
        return MemoryFault(f"{text} (while touching {lo:#x}..{lo + n:#x})", lo, n)
    if status in STICKY or status in GONE:
        return DeviceLost(f"{text} (the context is unusable: the card faulted or left the bus)")
    if status in HOST:
        return HostUnfit(f"{text} (the host's NVIDIA driver cannot run this CUDA runtime)")
    if isinstance(err, RuntimeError) and "libcuda" in str(err):
        return HostUnfit(text)
    return DeviceError(text)


@contextlib.contextmanager
def cuda_errors(what: str, device: int, fault_range: tuple[int, int] | None = None) -> Iterator[None]:
    """Raise CUDA failures inside the block as drivers.api exceptions (see ``map_error``)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised, mapped
        mapped = map_error(e, what, device, fault_range)
        if mapped is e:
            raise
        raise mapped from e


# --- which CUDA device is this card ---------------------------------------------------------------
def uuid_text(raw: bytes) -> str:
    """CUDA's 16 UUID bytes as NVML writes them: ``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``."""
    h = bytes(raw).hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def bus_id_text(bus_id: str) -> str:
    """NVML's ``00000000:C1:00.0`` as CUDA takes it (``0000:c1:00.0``)."""
    parts = bus_id.strip().lower().split(":")
    if len(parts) == 3 and len(parts[0]) > 4 and set(parts[0][:-4]) <= {"0"}:
        parts[0] = parts[0][-4:]
    return ":".join(parts)


def find_device(cp: Any, where: dict[str, Any]) -> int:
    """The CUDA ordinal of the card NVML calls ``where`` (``pci_bus_id``, ``uuid``).

    Never the NVML index: NVML ignores ``CUDA_VISIBLE_DEVICES`` (Slurm, containers), so its
    index can name another physical card than CUDA's ordinal of the same number.
    """
    bus, uuid = where.get("pci_bus_id"), where.get("uuid")
    label = f"GPU {where.get('index')} ({bus or uuid or 'no bus id or UUID'})"
    rt = cp.cuda.runtime
    with cuda_errors(f"{label}: finding its CUDA device", -1):
        if bus:
            try:
                return int(rt.deviceGetByPCIBusId(bus_id_text(str(bus))))
            except rt.CUDARuntimeError as e:
                if status_of(e) in HOST:
                    raise
        if uuid:
            for i in range(int(rt.getDeviceCount())):
                raw = rt.getDeviceProperties(i).get("uuid")
                if raw is not None and uuid_text(raw).lower() == str(uuid).lower():
                    return i
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hint = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    raise HostUnfit(f"{label}: CUDA cannot see this card in this process{hint}")
