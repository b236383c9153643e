"""CUDA failures as device-API exceptions, waiting on the GPU, and the CUDA device of an NVML card.

CuPy raises ``CUDARuntimeError``/``CUDADriverError`` with the CUDA status code, ``CUBLASError``,
``OutOfMemoryError`` (only from its pools; ``cupy.cuda.Memory`` raises ``CUDARuntimeError`` 2),
``CompileException``/``NVRTCError`` when a kernel does not compile, ``ImportError`` or a
``RuntimeError`` ("CuPy failed to load libnvrtc...") for a missing library. The harness
understands only drivers.api exceptions, so every CUDA call of the handles goes through
``cuda_errors``, and the failure is blamed on whoever owns it:

- the card: a kernel past its deadline (``cudaErrorLaunchTimeout``) -> ``KernelTimeout``
  (``compute.hang``); uncorrectable ECC -> ``MemoryFault`` with the range being touched (a memory
  finding); a kernel that faulted (illegal address, launch failure, ...) -> ``KernelFault``
  (``compute.fault``, reset and retest); a card that stopped answering -> ``DeviceLost``;
- the host: missing libraries, a card CUDA cannot see -> ``HostUnfit``
  (``harness.handle_unavailable``); a driver too old for the runtime or for the code NVRTC made
  -> ``HostUnfit`` ``host.driver_old``;
- the harness: one of its kernels that does not compile or has no binary for the card ->
  ``HostUnfit`` ``harness.kernel_unavailable``;
- anything else CUDA says -> ``DeviceError``.

A sticky error leaves the device unusable for the rest of the worker: it is remembered per CUDA
device, and a later handle on that device fails at once with the first error's story.

Asynchronous work is waited for by ``wait``: it polls ``cudaEventQuery`` and raises the status
of failed work at once. (CuPy's ``Event.done`` is ``eventQuery(...) == 0``: on an illegal
address or an ECC error it stays False forever, so polling it reads a card fault as a hang.)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from drivers.api import (
    BackendUnavailable,
    DeviceError,
    DeviceLost,
    HostUnfit,
    KernelFault,
    KernelTimeout,
    MemoryFault,
)

# cudaError_t values (CUDA runtime API; the driver API's CUresult uses the same numbers for these)
OUT_OF_MEMORY = 2
INITIALIZATION_ERROR = 3
CUDART_UNLOADING = 4
STUB_LIBRARY = 34
INSUFFICIENT_DRIVER = 35
DEVICES_UNAVAILABLE = 46
NO_DEVICE = 100
INVALID_DEVICE = 101
NO_KERNEL_IMAGE = 209
ECC_UNCORRECTABLE = 214
INVALID_PTX = 218
NVLINK_UNCORRECTABLE = 220
JIT_COMPILER_NOT_FOUND = 221
UNSUPPORTED_PTX_VERSION = 222
JIT_COMPILATION_DISABLED = 223
NOT_READY = 600
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

# a kernel faulted: the context is unusable ("sticky"), the card is still there
FAULTS = frozenset({NVLINK_UNCORRECTABLE, ILLEGAL_ADDRESS, ASSERT, HARDWARE_STACK_ERROR, ILLEGAL_INSTRUCTION,
                    MISALIGNED_ADDRESS, INVALID_ADDRESS_SPACE, INVALID_PC, LAUNCH_FAILURE})
# errors after which the context is unusable: the process must exit to recover
STICKY = FAULTS | {ECC_UNCORRECTABLE, LAUNCH_TIMEOUT}
# the card (or the driver's hold on it) is gone
GONE = frozenset({UNKNOWN, CUDART_UNLOADING})
# the driver cannot run this runtime, or cannot load the code NVRTC made for it: update the driver
DRIVER_OLD = frozenset({INSUFFICIENT_DRIVER, UNSUPPORTED_PTX_VERSION, INVALID_PTX, JIT_COMPILER_NOT_FOUND,
                        JIT_COMPILATION_DISABLED})
# the host, not the card: no usable driver or runtime for it
HOST = frozenset({INITIALIZATION_ERROR, STUB_LIBRARY, NO_DEVICE, SYSTEM_NOT_READY, SYSTEM_DRIVER_MISMATCH,
                  COMPAT_NOT_SUPPORTED, DEVICES_UNAVAILABLE}) | DRIVER_OLD

KERNEL_UNAVAILABLE = "harness.kernel_unavailable"
DRIVER_OLD_CODE = "host.driver_old"
_LIBRARIES = ("libcuda", "libnvrtc", "libcublas", "libcurand", "libnvjitlink", "libcudart")

# CUDA device ordinal -> (what poisoned its context in this process, whether that was a lost card)
_POISONED: dict[int, tuple[str, bool]] = {}


def import_cupy() -> Any:
    """CuPy, or BackendUnavailable (the handles are then absent and their stages skipped)."""
    try:
        import cupy
    except ImportError as e:  # the [cuda] extra is not installed
        raise BackendUnavailable(f"CuPy is not installed ({e}): pip install 'burnin[cuda]'") from None
    return cupy


def use_card(cp: Any, device: int) -> Any:
    """Make the card under test this worker's current CUDA device, and return its ``Device``.

    CuPy's ``with Device(n)`` puts the previous device back on exit with ``cudaSetDevice``, which
    since CUDA 12 opens that device's primary context: in a fresh worker that is device 0, so a
    worker testing card 5 would hold a context (and ~0.5 GiB) on card 0 too, and fail outright
    where card 0 is in exclusive-process mode. With the card current from the start, every later
    ``with`` block puts the card back, and nothing touches another device.
    """
    dev = cp.cuda.Device(device)
    dev.use()
    return dev


def on_card(cp: Any, dev: Any) -> None:
    """Make sure the card is the current device before work is queued on it (something may have
    moved it), never with ``with dev:``: its exit would put another device back (a context there)
    and, after a sticky error, raise that error again from outside the code that maps it."""
    if int(cp.cuda.runtime.getDevice()) != dev.id:
        dev.use()


def status_of(err: BaseException) -> int | None:
    """The CUDA status code of a CuPy CUDA error, else None."""
    if not _from_cupy(err):
        return None
    status = getattr(err, "status", None)
    return int(status) if isinstance(status, int) else None


def _from_cupy(err: BaseException) -> bool:
    return (type(err).__module__ or "").startswith(("cupy", "cupy_backends", "cupyx"))


def _compile_error(err: BaseException) -> bool:
    return _from_cupy(err) and type(err).__name__ in ("CompileException", "NVRTCError")


def _missing_library(err: BaseException) -> bool:
    """An ImportError, or CuPy's RuntimeError/OSError for a CUDA library it could not load."""
    if isinstance(err, ImportError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError | OSError) and any(lib in text for lib in _LIBRARIES)


def poisoned(device: int) -> str | None:
    entry = _POISONED.get(device)
    return entry[0] if entry else None


def mark_poisoned(device: int, why: str, lost: bool = False) -> None:
    """Remember that ``device``'s context is unusable in this process (first story wins)."""
    _POISONED.setdefault(device, (why, lost))


def check_usable(device: int) -> None:
    """Refuse a device whose context an earlier sticky error made unusable: DeviceLost when that
    error said the card was gone, else DeviceError (an ECC error, a fault or a hang, already
    reported by the stage that met it: later stages need a reset first, not a reseat)."""
    entry = _POISONED.get(device)
    if entry is not None:
        why, lost = entry
        msg = f"CUDA device {device}: unusable since {why} (the card needs a reset)"
        raise DeviceLost(msg) if lost else DeviceError(msg)


def versions() -> str:
    """The driver's CUDA version and NVRTC's, as far as they can be read (for a host.driver_old message)."""
    out: list[str] = []
    try:
        import cupy as cp
    except ImportError:
        return "versions unknown"
    with contextlib.suppress(Exception):
        v = int(cp.cuda.runtime.driverGetVersion())
        out.append(f"driver CUDA {v // 1000}.{v % 1000 // 10}")
    with contextlib.suppress(Exception):
        major, minor = cp.cuda.nvrtc.getVersion()
        out.append(f"NVRTC {major}.{minor}")
    return ", ".join(out) or "versions unknown"


def _first_lines(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[:n]) + ("\n..." if len(lines) > n else "")


def map_error(err: BaseException, what: str, device: int, fault_range: tuple[int, int] | None = None,
              kernel: str | None = None) -> BaseException:
    """The drivers.api exception for ``err`` raised while doing ``what`` on CUDA ``device``
    (``kernel``: the registered module being loaded, if that is what ``what`` is)."""
    if isinstance(err, DeviceError | HostUnfit | BackendUnavailable):
        return err
    name = type(err).__name__
    if _compile_error(err):
        return HostUnfit(f"{what}: burnin's {kernel or 'CUDA'} kernel source does not compile here ({name}): "
                         f"{_first_lines(str(err))} -- a burnin bug, not the card's: report it with this log and "
                         f"retest with a burnin whose kernels compile (tests/test_cuda_kernels.py)", KERNEL_UNAVAILABLE)
    if _missing_library(err):  # libcublasLt.so.12, libnvrtc, libcuda not found
        return HostUnfit(f"{what}: a CUDA library is missing ({name}: {err}); install the NVIDIA driver and "
                         "pip install 'burnin[cuda]'")
    if not _from_cupy(err):
        return err
    status = status_of(err)
    text = f"{what}: {name}: {err}"
    if isinstance(err, MemoryError) or status == OUT_OF_MEMORY:
        return DeviceError(f"{what}: out of device memory ({err})")
    if status in STICKY or status in GONE:
        mark_poisoned(device, f"{what}: {err}", lost=status in GONE)
    if status == LAUNCH_TIMEOUT:
        return KernelTimeout(text)
    if status == ECC_UNCORRECTABLE:
        if fault_range is None:
            return MemoryFault(text)
        lo, n = fault_range
        return MemoryFault(f"{text} (while touching {lo:#x}..{lo + n:#x})", lo, n)
    if status in FAULTS:
        return KernelFault(f"{text} (a kernel faulted: the context is unusable until the card is reset)")
    if status in GONE:
        return DeviceLost(f"{text} (the card stopped answering: it faulted or left the bus)")
    if status == NO_KERNEL_IMAGE:
        return HostUnfit(f"{text}: burnin's {kernel or 'CUDA'} kernels were built for another GPU architecture "
                         "(update CuPy/NVRTC so they are built for this card)", KERNEL_UNAVAILABLE)
    if status in DRIVER_OLD:
        return HostUnfit(f"{text} ({versions()}): the NVIDIA driver cannot load what this CUDA runtime/NVRTC "
                         "builds; update the driver (or install the CuPy and NVRTC of the driver's CUDA version)",
                         DRIVER_OLD_CODE)
    if status in HOST:
        return HostUnfit(f"{text} (the host's NVIDIA driver cannot run this CUDA runtime)")
    return DeviceError(text)


@contextlib.contextmanager
def cuda_errors(what: str, device: int, fault_range: tuple[int, int] | None = None,
                kernel: str | None = None) -> Iterator[None]:
    """Raise CUDA failures inside the block as drivers.api exceptions (see ``map_error``)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised, mapped
        mapped = map_error(e, what, device, fault_range, kernel)
        if mapped is e:
            raise
        raise mapped from e


# --- waiting on the GPU ------------------------------------------------------------------------------
SPIN_S = 0.002  # ask without sleeping this long first: a pass or a batch often ends within it
POLL_MIN_S = 50e-6
POLL_MAX_S = 1e-3


def done(cp: Any, event: Any) -> bool:
    """Whether the work before ``event`` has finished; the CUDA error of failed work is raised
    here (``CUDARuntimeError``), not read as "not yet"."""
    status = int(cp.cuda.runtime.eventQuery(event.ptr))
    if status == 0:
        return True
    if status == NOT_READY:
        return False
    raise cp.cuda.runtime.CUDARuntimeError(status)


def wait(cp: Any, event: Any, deadline_s: float, what: str, device: int) -> None:
    """Wait for ``event`` without blocking in the driver (a hung kernel would block the worker
    for good): KernelTimeout past ``deadline_s``, the CUDA error of failed work at once. It asks
    without sleeping for ``SPIN_S`` (the end of a short pass is seen within microseconds), then
    sleeps between questions, longer and longer up to ``POLL_MAX_S``."""
    start = time.monotonic()
    end = start + deadline_s
    pause = POLL_MIN_S
    while not done(cp, event):
        now = time.monotonic()
        if now > end:
            mark_poisoned(device, f"{what} hung")
            raise KernelTimeout(f"{what} did not finish within {deadline_s:g} s")
        if now - start > SPIN_S:
            time.sleep(pause)
            pause = min(POLL_MAX_S, pause * 2)


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
