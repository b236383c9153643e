"""A strict stand-in for CuPy (and the bits of ``cupy_backends``/``cupyx`` the CUDA handles use),
so the CUDA path runs in tests without a GPU, like ``drivers/nvml_replay.py`` does for pynvml.

Strict where real hardware would hurt:
- every allocation, stream, kernel launch and cuBLAS product happens on the *current* device, and
  the device a context was opened on is recorded (``FakeCuda.contexts``); as in CUDA 12+,
  ``cudaSetDevice`` opens a context, so leaving ``with Device(n)`` opens one on the device it
  restores (device 0 in a fresh worker); a launch or product whose arrays live on another device
  fails as it does without peer access (``cudaErrorIllegalAddress``, sticky), an elementwise op
  across devices raises CuPy's ValueError;
- kernels: ``RawModule`` takes only sources of the registry (``drivers/cuda/kernels.py``) with
  their options, each entry point runs a numpy model of its CUDA code; a compile error
  (``CompileException``), a driver that cannot load the binary (``CUDADriverError``) or a missing
  library (NVRTC, cuBLAS) can be injected at those real call sites;
- ``cupy.cuda.Memory`` past the device's capacity raises ``CUDARuntimeError`` 2 (the real
  ``runtime.malloc`` path; only pools raise ``OutOfMemoryError``); freed pool blocks stay taken
  until ``free_all_blocks``;
- streams: work is queued per stream and completes only when something waits for it (an event
  recorded behind it, the stream, the device); ``Stream.wait_event`` orders one stream behind
  another; a kernel, product or copy touching memory that another stream wrote (or reads) with
  no event between them raises ``Race``; CuPy's ``gemmEx`` queues on the *current* stream
  whatever ``setStream`` said; event timing is each stream's own clock;
- errors of queued work surface as CUDA reports them: a failed op (ECC 214, illegal address 700,
  launch timeout 702, ...) makes the device's error sticky as soon as anything asks the device
  about its work (the GPU ran ahead: an earlier event's query already returns it), then every call
  raises it; ``runtime.eventQuery`` returns the status, ``Event.done`` is only ``status == 0`` (so
  code that polls ``done`` reads a failure as "not yet" forever, as with CuPy), synchronising
  (stream, event, device, ``.get()``) raises it; a hang never completes: ``done`` stays False and
  a blocking wait raises ``Hang`` instead of blocking forever;
- implicit conversion of a device array to numpy raises TypeError, as in CuPy.

Exception classes are CuPy's own when CuPy is importable (``tests/test_fake_cupy.py`` checks the
stand-in's names against the installed CuPy), look-alikes with the same module names otherwise.
"""

from __future__ import annotations

import bisect
import importlib.machinery
import itertools
import sys
import types
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# --- exception classes: CuPy's own when it is installed ------------------------------------------------
_NAMES = {2: "cudaErrorMemoryAllocation", 35: "cudaErrorInsufficientDriver", 100: "cudaErrorNoDevice",
          101: "cudaErrorInvalidDevice", 214: "cudaErrorECCUncorrectable", 400: "cudaErrorInvalidResourceHandle",
          600: "cudaErrorNotReady", 700: "cudaErrorIllegalAddress", 702: "cudaErrorLaunchTimeout",
          719: "cudaErrorLaunchFailure", 999: "cudaErrorUnknown"}
_DRIVER_NAMES = {209: "CUDA_ERROR_NO_BINARY_FOR_GPU", 218: "CUDA_ERROR_INVALID_PTX",
                 221: "CUDA_ERROR_JIT_COMPILER_NOT_FOUND", 222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"}
try:  # importing these needs no GPU and no driver
    from cupy.cuda.compiler import CompileException
    from cupy.cuda.memory import OutOfMemoryError
    from cupy_backends.cuda.api.driver import CUDADriverError
    from cupy_backends.cuda.api.runtime import CUDARuntimeError

    REAL_CLASSES = True
except ImportError:  # CuPy is not installed: look-alikes (same names, same modules, same fields)
    REAL_CLASSES = False

    class CompileException(Exception):  # type: ignore[no-redef]
        def __init__(self, msg: str, source: str, name: str, options: tuple[str, ...],
                     backend: str = "nvrtc") -> None:
            self._msg, self.source, self.name, self.options, self.backend = msg, source, name, options, backend
            super().__init__(msg)

    class CUDADriverError(RuntimeError):  # type: ignore[no-redef]
        def __init__(self, status: int) -> None:
            self.status = status
            super().__init__(f"{_DRIVER_NAMES.get(status, 'CUDA_ERROR_UNKNOWN')}: (fake)")

    CompileException.__module__ = "cupy.cuda.compiler"
    CUDADriverError.__module__ = "cupy_backends.cuda.api.driver"

    class CUDARuntimeError(RuntimeError):  # type: ignore[no-redef]
        def __init__(self, status: int) -> None:
            self.status = status
            super().__init__(f"{_NAMES.get(status, 'cudaErrorUnknown')}: (fake)")

        def __reduce__(self) -> Any:
            return (type(self), (self.status,))

    class OutOfMemoryError(MemoryError):  # type: ignore[no-redef]
        def __init__(self, size: int, total: int, limit: int = 0) -> None:
            super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes).")

    CUDARuntimeError.__module__ = "cupy_backends.cuda.api.runtime"
    OutOfMemoryError.__module__ = "cupy.cuda.memory"


def driver_error(status: int) -> BaseException:
    """A ``CUDADriverError`` with ``status`` (the real class builds its text with libcuda, which a
    host without a driver lacks: its text is set here)."""
    err = CUDADriverError.__new__(CUDADriverError)
    err.status = status
    RuntimeError.__init__(err, f"{_DRIVER_NAMES.get(status, 'CUDA_ERROR_UNKNOWN')}: (fake)")
    return err


class Race(AssertionError):
    """Two streams touched the same memory, one of them writing, with no event ordering them: on a
    GPU the result would depend on timing."""


class Hang(AssertionError):
    """The code blocked (synchronize, a blocking copy) on work that never completes: on a real card
    the worker would hang here until the stage is killed."""


class DeviceMismatch(ValueError):
    """CuPy's refusal to run an elementwise op on arrays of another device (no peer access)."""


# --- the simulated host ----------------------------------------------------------------------------
@dataclass
class Gpu:
    total: int
    bus_id: str
    uuid: bytes
    sms: int = 132
    flops: float = 1e14  # what a product's time on the device clock is reckoned at
    allocatable: int | None = None  # what cudaMalloc really gives (less than memGetInfo's free)
    used: int = 0  # cudaMalloc'd (Memory) + pool blocks in use + pool blocks cached
    pool_cached: int = 0
    sticky: int | None = None
    stuck: list[tuple[Any, int, int, int]] = field(default_factory=list)  # (Memory, byte, bit, value)


@dataclass
class _Op:
    what: str
    device: int
    seq: int
    status: int | None = None
    hang: bool = False
    after: tuple[Any, int] | None = None  # a stream's wait for an event: (stream, sequence)


@dataclass
class _Fault:
    device: int
    op: str  # "march", "check_f32", "gemm", "memcpy", ... (a kernel's entry point or a kind of work)
    nth: int  # 1 = the next such op
    status: int | None
    hang: bool


@dataclass
class _Access:
    """Who last touched an allocation from which stream: ordering checks between streams."""

    write: tuple[Any, int] | None = None  # (stream, seq)
    reads: list[tuple[Any, int]] = field(default_factory=list)


class FakeCuda:
    """The GPUs of a test host and what tests do to them."""

    def __init__(self, gpus: list[Gpu]) -> None:
        self.gpus = gpus
        self.current = 0
        self.no_driver = False
        self.driver_version = 13000
        self.nvrtc_version = (13, 2)
        self.contexts: set[int] = set()
        self.launches: list[tuple[str, int, tuple[int, ...]]] = []  # (kernel, current device, arg devices)
        self.gemms: list[tuple[int, int]] = []  # (device, stream ptr it was queued on)
        self.modules: list[str] = []  # registry modules compiled, in order
        self.faults: list[_Fault] = []
        self.counts: dict[tuple[int, str], int] = {}
        self.streams: list[Stream] = []
        self.no_peer: set[tuple[int, int]] = set()  # (device, peer): deviceCanAccessPeer answers 0
        self.peer_enabled: set[tuple[int, int]] = set()
        self.corrupt_peer: dict[tuple[int, int], int] = {}  # (src, dst) -> words each peer copy gets wrong
        self.nccl = True  # cupy.cuda.nccl is importable and available
        self.collectives: list[tuple[int, ...]] = []  # the devices of each all-reduce group
        self.events: dict[int, Event] = {}
        self.ptrs: list[int] = []  # sorted base pointers
        self.owners: dict[int, tuple[np.ndarray, int | None]] = {}  # base -> (uint8 buffer, device|None)
        self.access: dict[int, _Access] = {}  # base -> who touched it last
        self.compile_error: dict[str, str] = {}  # registry module -> NVRTC log
        self.load_error: dict[str, int] = {}  # registry module -> CUDA driver status at load
        self.missing: set[str] = set()  # CUDA libraries absent: "nvrtc", "cublas"
        self._next = itertools.count(1)

    # steering -------------------------------------------------------------------------------------
    def inject(self, device: int, op: str, status: int | None = None, hang: bool = False, nth: int = 1) -> None:
        """The ``nth`` next ``op`` on ``device`` completes with CUDA ``status`` (or never)."""
        self.faults.append(_Fault(device, op, self.counts.get((device, op), 0) + nth, status, hang))

    def fail_compile(self, module: str, log: str = "kernel.cu(1): error: expected a \";\"") -> None:
        """NVRTC refuses registry module ``module`` (CuPy's CompileException at its load)."""
        self.compile_error[module] = log

    def fail_load(self, module: str, status: int) -> None:
        """The driver refuses the binary NVRTC made for ``module`` (CUDADriverError ``status``:
        222 unsupported PTX version from a newer toolkit, 209 no binary for this GPU, ...)."""
        self.load_error[module] = status

    def lack(self, library: str) -> None:
        """A CUDA library is not installed: "nvrtc" (every kernel) or "cublas" (the burn)."""
        self.missing.add(library)
        if library == "cublas":
            sys.modules.pop("cupy_backends.cuda.libs.cublas", None)

    def stick(self, mem: Any, byte: int, bit: int, value: int) -> None:
        """A stuck bit in a ``cupy.cuda.Memory`` allocation (re-applied after every write)."""
        self.gpus[mem.device_id].stuck.append((mem, byte, bit, value))
        _apply_stuck(self, mem.device_id)

    def pending(self) -> list[str]:
        """Work queued on any stream that nothing has waited for."""
        return [f"{op.what} on device {op.device} stream {s.ptr}" for s in self.streams for op in s.queue
                if op.what != "wait"]

    def free(self, device: int) -> int:
        return self.gpus[device].total - self.gpus[device].used

    # plumbing -------------------------------------------------------------------------------------
    def touch(self, device: int | None = None) -> int:
        """The current device (a context on it from now on); its sticky error, if any, raised."""
        d = self.current if device is None else device
        if self.no_driver:
            raise CUDARuntimeError(35)
        if not 0 <= d < len(self.gpus):
            raise CUDARuntimeError(101)
        self.contexts.add(d)
        if self.gpus[d].sticky is not None:
            raise CUDARuntimeError(self.gpus[d].sticky)
        return d

    def register(self, buf: np.ndarray, device: int | None) -> int:
        # one 16 GiB slot per allocation, whatever the device: two live buffers never share a base
        base = (1 << 44) + next(self._next) * (1 << 34)
        bisect.insort(self.ptrs, base)
        self.owners[base] = (buf, device)
        return base

    def unregister(self, base: int) -> None:
        self.owners.pop(base, None)
        self.access.pop(base, None)
        i = bisect.bisect_left(self.ptrs, base)
        if i < len(self.ptrs) and self.ptrs[i] == base:
            self.ptrs.pop(i)

    def base_of(self, ptr: int) -> int:
        i = bisect.bisect_right(self.ptrs, ptr) - 1
        if i < 0:
            raise CUDARuntimeError(700)
        return self.ptrs[i]

    def resolve(self, ptr: int, nbytes: int) -> tuple[np.ndarray, int | None]:
        """The bytes at a raw pointer: (uint8 view, device or None for host memory)."""
        base = self.base_of(ptr)
        buf, dev = self.owners[base]
        off = ptr - base
        if off + nbytes > buf.size:
            raise CUDARuntimeError(700)
        return buf[off : off + nbytes], dev

    def enqueue(self, what: str, stream: Stream, device: int) -> _Op:
        key = (device, what)
        self.counts[key] = n = self.counts.get(key, 0) + 1
        op = _Op(what, device, next(self._next))
        for f in self.faults:
            if (f.device, f.op, f.nth) == (device, what, n):
                op.status, op.hang = f.status, f.hang
        stream.queue.append(op)
        return op

    def touches(self, op: _Op, stream: Stream, reads: list[int], writes: list[int]) -> None:
        """Op ``op`` on ``stream`` reads/writes the allocations at these pointers: ``Race`` unless
        whatever another stream did to them is complete or ordered before it by an event."""
        for ptr, writing in [(p, False) for p in reads] + [(p, True) for p in writes]:
            base = self.base_of(ptr)
            if self.owners[base][1] is None:
                continue  # host memory: the host orders it
            acc = self.access.setdefault(base, _Access())
            earlier = ([acc.write] if acc.write else []) + (acc.reads if writing else [])
            for other, seq in earlier:
                if not self.ordered(other, seq, stream):
                    raise Race(f"{op.what} on stream {stream.ptr} {'writes' if writing else 'reads'} memory that "
                               f"stream {other.ptr} {'reads' if (other, seq) in acc.reads else 'writes'} with no "
                               "event ordering them")
            if writing:
                acc.write, acc.reads = (stream, op.seq), []
            else:
                acc.reads.append((stream, op.seq))

    def ordered(self, other: Stream, seq: int, stream: Stream) -> bool:
        if other is stream or not any(o.seq == seq for o in other.queue):  # (``all`` is CuPy's here)
            return True  # the same stream, or that work has completed
        return stream.waited.get(id(other), 0) >= seq

    def complete(self, stream: Stream, upto: int, blocking: bool) -> bool:
        """Complete the stream's work up to sequence ``upto``; False if it hangs (non-blocking).
        A failed op makes the device's error sticky and raises it."""
        self.run_ahead(stream.device)
        while stream.queue and stream.queue[0].seq <= upto:
            op = stream.queue[0]
            if op.after is not None and not self.complete(op.after[0], op.after[1], blocking):
                return False
            if op.hang:
                if blocking:
                    raise Hang(f"waiting for {op.what} on device {op.device}, which never completes")
                return False
            stream.queue.pop(0)
            if op.status is not None:
                self.gpus[op.device].sticky = op.status
                raise CUDARuntimeError(op.status)
        sticky = self.gpus[stream.device].sticky
        if sticky is not None:
            raise CUDARuntimeError(sticky)
        return True

    def run_ahead(self, device: int) -> None:
        """The GPU does not wait to be asked: queued work that fails, with nothing hung before it,
        has already failed, and the device's error is sticky for every later question."""
        g = self.gpus[device]
        for strm in self.streams:
            if strm.device != device:
                continue
            for op in strm.queue:
                if op.hang or op.after is not None:
                    break
                if op.status is not None:
                    g.sticky = g.sticky if g.sticky is not None else op.status
                    break

    def status(self, stream: Stream, upto: int) -> int:
        """What ``cudaEventQuery`` says about the work up to ``upto``: 0, 600 (not ready) or the error."""
        try:
            return 0 if self.complete(stream, upto, blocking=False) else 600
        except CUDARuntimeError as e:
            return int(e.status)


_STATE: FakeCuda | None = None


def st() -> FakeCuda:
    if _STATE is None:
        raise RuntimeError("fake_cupy: not installed")
    return _STATE


def _apply_stuck(s: FakeCuda, device: int) -> None:
    for mem, byte, bit, value in s.gpus[device].stuck:
        b = mem.buf
        v = int(b[byte])
        b[byte] = (v | (1 << bit)) if value else (v & ~(1 << bit) & 0xFF)


# --- arrays --------------------------------------------------------------------------------------
class _Owner:
    """One allocation from the default pool: counted while alive, cached in the pool after."""

    def __init__(self, nbytes: int, device: int) -> None:
        s = st()
        g = s.gpus[device]
        if nbytes <= g.pool_cached:  # reuse a cached block
            g.pool_cached -= nbytes
        elif g.used + nbytes > (g.allocatable if g.allocatable is not None else g.total):
            raise OutOfMemoryError(nbytes, g.used, 0)
        else:
            g.used += nbytes
        self.buf = np.zeros(max(1, nbytes), np.uint8)
        self.ptr = s.register(self.buf, device)
        weakref.finalize(self, _release_block, s, device, nbytes, self.ptr)


def _release_block(s: FakeCuda, device: int, nbytes: int, base: int) -> None:
    s.unregister(base)
    s.gpus[device].pool_cached += nbytes  # a pool keeps freed blocks


class MemoryPointer:
    def __init__(self, mem: Any, offset: int) -> None:
        self.mem = mem
        self.ptr = mem.ptr + offset
        self.device_id = mem.device_id


class _Data:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


class ndarray:  # noqa: N801 - CuPy's name
    """A device array: a numpy array plus the device it lives on."""

    __array_priority__ = 1000

    def __init__(self, shape: Any, dtype: Any = float, memptr: MemoryPointer | None = None, *,
                 _a: np.ndarray | None = None, _device: int | None = None, _keep: Any = None) -> None:
        if _a is not None:
            self._a, self._device, self._keep = _a, int(_device), _keep  # type: ignore[arg-type]
            return
        s = st()
        dt = np.dtype(dtype)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        nbytes = int(np.prod(shape)) * dt.itemsize
        if memptr is None:
            d = s.touch()
            owner = _Owner(nbytes, d)
            self._a, self._device, self._keep = owner.buf[:nbytes].view(dt).reshape(shape), d, owner
        else:
            raw, dev = s.resolve(memptr.ptr, nbytes)
            self._a, self._device, self._keep = raw.view(dt).reshape(shape), dev, memptr.mem  # type: ignore[assignment]

    # the numpy side ------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)

    @property
    def device(self) -> Device:
        return Device(self._device)

    @property
    def data(self) -> _Data:
        return _Data(self._keep.ptr + _addr(self._a) - _addr(self._keep.buf))

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct "
                        "a NumPy array explicitly.")

    def __repr__(self) -> str:
        return f"fake_cupy.ndarray(device={self._device}, {self._a!r})"

    def __len__(self) -> int:
        return len(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __iter__(self) -> Any:
        raise TypeError("fake_cupy: iterating a device array copies element by element; use .get()")

    def _mine(self) -> None:
        """An op on this array runs on the current device, which must be where the array lives."""
        d = st().touch()
        if d != self._device:
            raise DeviceMismatch(f"The device where the array resides ({self._device}) is different from the "
                                 f"current device ({d}). Peer access is unavailable between these devices.")

    def __getitem__(self, k: Any) -> ndarray:
        self._mine()
        k = _unwrap_index(k, self._device)
        r = self._a[k]
        if isinstance(r, np.ndarray) and np.may_share_memory(r, self._a):
            return ndarray(0, _a=r, _device=self._device, _keep=self._keep)
        return _new(np.asarray(r), self._device)

    def __setitem__(self, k: Any, v: Any) -> None:
        self._mine()
        self._a[_unwrap_index(k, self._device)] = _unwrap(v, self._device)
        _apply_stuck(st(), self._device)

    def fill(self, v: Any) -> None:
        self._mine()
        self._a.fill(v)
        _apply_stuck(st(), self._device)

    def get(self, stream: Stream | None = None, order: str = "C", out: np.ndarray | None = None,
            blocking: bool = True) -> np.ndarray:
        """Copy to the host: waits for the stream (the current one when none is given)."""
        s = st()
        s.touch(self._device)
        strm = stream or get_current_stream()
        if blocking:
            s.complete(strm, 1 << 62, blocking=True)
        if out is not None:
            out[...] = self._a
            return out
        return self._a.copy()

    def set(self, arr: np.ndarray, stream: Stream | None = None) -> None:
        s = st()
        s.touch(self._device)
        self._a[...] = np.asarray(arr).reshape(self._a.shape)
        _apply_stuck(s, self._device)

    def view(self, dtype: Any) -> ndarray:
        return ndarray(0, _a=self._a.view(dtype), _device=self._device, _keep=self._keep)

    def astype(self, dtype: Any, copy: bool = True) -> ndarray:
        self._mine()
        return _new(self._a.astype(dtype), self._device)

    def copy(self) -> ndarray:
        self._mine()
        return _new(self._a.copy(), self._device)

    def sum(self, axis: Any = None, dtype: Any = None) -> ndarray:
        self._mine()
        return _new(np.asarray(self._a.sum(axis=axis, dtype=dtype)), self._device)

    def ravel(self) -> ndarray:
        return ndarray(0, _a=self._a.ravel(), _device=self._device, _keep=self._keep)

    def reshape(self, *shape: Any) -> ndarray:
        return ndarray(0, _a=self._a.reshape(*shape), _device=self._device, _keep=self._keep)


def _addr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def _new(a: np.ndarray, device: int) -> ndarray:
    """A fresh pool allocation on ``device`` holding ``a``."""
    owner = _Owner(a.nbytes, device)
    view = owner.buf[: a.nbytes].view(a.dtype).reshape(a.shape)
    view[...] = a
    return ndarray(0, _a=view, _device=device, _keep=owner)


def _unwrap(v: Any, device: int) -> Any:
    if isinstance(v, ndarray):
        if v._device != device:
            raise DeviceMismatch(f"array on device {v._device} used with one on device {device}")
        return v._a
    return v


def _unwrap_index(k: Any, device: int) -> Any:
    if isinstance(k, tuple):
        return tuple(_unwrap(x, device) for x in k)
    return _unwrap(k, device)


def _binary(name: str) -> Any:
    def op(self: ndarray, other: Any = None) -> Any:
        self._mine()
        args = () if other is None and name in ("__invert__", "__neg__") else (_unwrap(other, self._device),)
        r = getattr(self._a, name)(*args)
        if r is NotImplemented:
            return r
        return _new(np.asarray(r), self._device)

    return op


for _n in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor",
           "rshift", "lshift", "eq", "ne", "lt", "le", "gt", "ge"):
    setattr(ndarray, f"__{_n}__", _binary(f"__{_n}__"))
    if _n not in ("eq", "ne", "lt", "le", "gt", "ge"):
        setattr(ndarray, f"__r{_n}__", _binary(f"__r{_n}__"))
for _n in ("invert", "neg"):
    setattr(ndarray, f"__{_n}__", _binary(f"__{_n}__"))
ndarray.__hash__ = None  # type: ignore[assignment]


# --- module-level array functions ------------------------------------------------------------------
def _here() -> int:
    return st().touch()


def zeros(shape: Any, dtype: Any = float) -> ndarray:
    return ndarray(shape, dtype)  # a fresh pool block, zeroed


def empty(shape: Any, dtype: Any = float) -> ndarray:
    return ndarray(shape, dtype)


def asarray(a: Any, dtype: Any = None) -> ndarray:
    d = _here()
    if isinstance(a, ndarray):
        if a._device == d and (dtype is None or np.dtype(dtype) == a.dtype):
            return a
        return _new(a._a.astype(dtype or a.dtype), d)  # a peer copy
    return _new(np.array(a, dtype=dtype), d)


def full(shape: Any, fill_value: Any, dtype: Any = None) -> ndarray:
    return _new(np.full(shape, fill_value, dtype=dtype), _here())


def arange(*args: Any, **kw: Any) -> ndarray:
    return _new(np.arange(*args, **kw), _here())


def _func(fn: Any) -> Any:
    def call(*args: Any, **kw: Any) -> Any:
        d = _here()
        r = fn(*(_unwrap(a, d) for a in args), **kw)
        if isinstance(r, tuple):
            return tuple(_new(np.asarray(x), d) for x in r)
        return _new(np.asarray(r), d)

    call.__name__ = fn.__name__
    return call


count_nonzero = _func(np.count_nonzero)
flatnonzero = _func(np.flatnonzero)
nonzero = _func(np.nonzero)
isfinite = _func(np.isfinite)
all = _func(np.all)  # noqa: A001 - CuPy's name


def copyto(dst: ndarray, src: ndarray) -> None:
    d = _here()
    np.copyto(dst._a, _unwrap(src, d) if dst._device == d else _unwrap(src, -1))
    _apply_stuck(st(), d)


uint8, uint16, uint32, uint64 = np.uint8, np.uint16, np.uint32, np.uint64
int32, int64, float16, float32, float64 = np.int32, np.int64, np.float16, np.float32, np.float64


# --- kernels: the registry's sources, each entry point a numpy model of its CUDA code ---------------------
def _registry() -> dict[str, Any]:
    from drivers.cuda.kernels import KERNELS

    return KERNELS


class RawModule:
    """CuPy's RawModule for the registry's sources only: compiled (and loaded) at ``get_function``."""

    def __init__(self, code: str | None = None, *, path: str | None = None, options: tuple[str, ...] = (),
                 backend: str = "nvrtc", **kw: Any) -> None:
        s = st()
        s.touch()
        match = [k for k in _registry().values() if k.source == code and tuple(options) == k.options]
        if not match:
            raise AssertionError("fake_cupy: RawModule of a source or options not in drivers/cuda/kernels.py: "
                                 "every CUDA source burnin runs must be a registry entry")
        self.kernel = match[0]
        self.code, self.options = code, tuple(options)
        self._loaded = False

    def _load(self) -> None:
        s = st()
        d = s.touch()
        if self._loaded:
            return
        name = self.kernel.name
        if "nvrtc" in s.missing:
            raise RuntimeError("CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: cannot open shared "
                               "object file: No such file or directory")
        if name in s.compile_error:
            raise CompileException(f"{s.compile_error[name]}\n\n1 error detected in the compilation of "
                                   f"\"/tmp/{name}.cu\".\n", self.code or "", f"/tmp/{name}.cu", self.options)
        if name in s.load_error:
            raise driver_error(s.load_error[name])
        s.modules.append(name)
        self._loaded = True
        self.device = d

    def get_function(self, name: str) -> RawKernel:
        self._load()
        if name not in self.kernel.entries or name not in _MODELS:
            raise AssertionError(f"fake_cupy: {self.kernel.name} has no entry point {name!r} (or no model of it)")
        return RawKernel(name, self.device)


class RawKernel:
    """A loaded kernel: launched on the current stream, touching the arrays its model says."""

    def __init__(self, name: str, device: int) -> None:
        self.name = name
        self.device = device

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...], **kw: Any) -> None:
        s = st()
        d = s.touch()
        if d != self.device:
            raise CUDARuntimeError(400)  # a module's functions belong to the context it was loaded in
        arrays = [a for a in args if isinstance(a, ndarray)]
        devs = tuple(sorted({a._device for a in arrays}))
        s.launches.append((self.name, d, devs))
        strm = get_current_stream()
        op = s.enqueue(self.name, strm, d)
        if devs != (d,):  # no peer access: the kernel faults (sticky)
            op.status = 700
            return
        model, writes = _MODELS[self.name]
        s.touches(op, strm, [a.data.ptr for a in arrays],
                  [args[i].data.ptr for i in writes if isinstance(args[i], ndarray)])
        model(*args)
        _apply_stuck(s, d)
        strm.clock += sum(a.nbytes for a in arrays) / 2e12


def _pattern(g: np.ndarray, tile: ndarray, is_addr: int, inv: Any) -> np.ndarray:
    words = g if is_addr else tile._a[(g >> np.uint64(3)) & np.uint64(511)]
    return words ^ np.uint64(inv)


NREC = 9 + 256  # memscan.cu: the record count's place in the counters


def _march(buf: ndarray, base: Any, lo: Any, hi: Any, rtile: ndarray, r_addr: Any, r_inv: Any, do_read: Any,
           wtile: ndarray, w_addr: Any, w_inv: Any, do_write: Any, descending: Any, chips: Any,
           counters: ndarray, rec_addr: ndarray, rec_exp: ndarray, rec_got: ndarray, limit: Any) -> None:
    """What ``march`` (drivers/cuda/cu/memscan.cu) does, word by word, in numpy."""
    lo, hi, base, chips, limit = int(lo), int(hi), int(base), int(chips), int(limit)
    w0, w1 = lo >> 3, (hi + 7) >> 3
    words = buf._a.view(np.uint64)[w0:w1]
    g = np.uint64(base) + np.arange(w0, w1, dtype=np.uint64) * np.uint64(8)
    mask = np.full(w1 - w0, np.uint64(0xFFFFFFFFFFFFFFFF))
    for w in {w0, w1 - 1}:  # the kernel's edge masks
        m = 0
        for j in range(8):
            m |= (0xFF << (8 * j)) if lo <= w * 8 + j < hi else 0
        mask[w - w0] = np.uint64(m)
    c = counters._a
    if int(do_read):
        e = _pattern(g, rtile, int(r_addr), r_inv)
        bad = np.flatnonzero((words ^ e) & mask)  # the words with a failing byte
        v, e, gb = words[bad].copy(), e[bad], g[bad]
        d = (v ^ e) & mask[bad]
        db = d.view(np.uint8).reshape(-1, 8)
        failing = db != 0
        c[0] += np.uint64(failing.sum())
        if bad.size:
            c[1:9] += np.unpackbits(db[failing][:, None], axis=1, bitorder="little").sum(0).astype(np.uint64)
        chip = ((gb >> np.uint64(8)) % np.uint64(chips)).astype(np.int64)
        np.add.at(c[9:NREC], chip, failing.sum(1).astype(np.uint64))
        wi, bj = np.nonzero(failing)
        n0 = int(c[NREC])
        take = max(0, min(len(wi), limit - n0))
        rec_addr._a[n0 : n0 + take] = gb[wi[:take]] + bj[:take].astype(np.uint64)
        rec_exp._a[n0 : n0 + take] = e.view(np.uint8).reshape(-1, 8)[wi[:take], bj[:take]]
        rec_got._a[n0 : n0 + take] = v.view(np.uint8).reshape(-1, 8)[wi[:take], bj[:take]]
        c[NREC] += np.uint64(len(wi))
    if int(do_write):
        nv = _pattern(g, wtile, int(w_addr), w_inv)
        words[...] = (words & ~mask) | (nv & mask)


_M64 = 0xFFFFFFFFFFFFFFFF


def _entries(count: Any, seed: Any, s: Any) -> np.ndarray:
    """abft.cu's ``entry``: 1 + splitmix64(seed * golden + i) % s, in wrapping uint64 arithmetic."""
    with np.errstate(over="ignore"):
        x = np.uint64((int(seed) * 0x9E3779B97F4A7C15) & _M64) + np.arange(int(count), dtype=np.uint64)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (np.uint64(1) + x % np.uint64(int(s))).astype(np.float64)


def _operands_f32(out: ndarray, out64: ndarray, count: Any, seed: Any, s: Any) -> None:
    v = _entries(count, seed, s)
    out._a.reshape(-1)[...] = v.astype(np.float32)
    out64._a.reshape(-1)[...] = v


def _operands_f16(out: ndarray, out64: ndarray, count: Any, seed: Any, s: Any) -> None:
    v = _entries(count, seed, s)
    out._a.reshape(-1).view(np.uint16)[...] = v.astype(np.float16).view(np.uint16)
    out64._a.reshape(-1)[...] = v


def _operands_bf16(out: ndarray, out64: ndarray, count: Any, seed: Any, s: Any) -> None:
    v = _entries(count, seed, s)
    out._a.reshape(-1).view(np.uint16)[...] = (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    out64._a.reshape(-1)[...] = v


def _operands_f64(out64: ndarray, count: Any, seed: Any, s: Any) -> None:
    out64._a.reshape(-1)[...] = _entries(count, seed, s)


def _check(c: ndarray, ref: ndarray, rows: ndarray, n: Any, full: Any, flags: ndarray, slot: Any, rec: ndarray,
           rec_cap: Any) -> None:
    """What ``check_f32``/``check_f64`` (drivers/cuda/cu/abft.cu) do, row by row, in numpy."""
    n, q, cap = int(n), int(slot), int(rec_cap)
    x = c._a.reshape(n, n)
    with np.errstate(invalid="ignore", over="ignore"):
        odd = ~(np.isfinite(x) & (x == np.rint(x)))
        sums = x.astype(np.float64).sum(axis=1)
    row_bad = odd.any(axis=1) | ~(sums == rows._a)
    u = np.uint64 if x.itemsize == 8 else np.uint32
    compared = np.ones(n, bool) if int(full) else row_bad
    diff = (x.view(u) != ref._a.reshape(n, n).view(u)) & compared[:, None]
    f = flags._a
    f[3 * q] += np.uint64(row_bad.sum())
    f[3 * q + 1] += np.uint64(diff.sum())
    f[3 * q + 2] += np.uint64((diff & ~np.isfinite(x)).sum())
    r = rec._a
    for row, col in zip(*np.nonzero(diff), strict=True):
        i = int(r[0])
        r[0] += np.uint64(1)
        if i < cap:
            r[1 + 5 * i : 6 + 5 * i] = [q, row, col, int(x.view(u)[row, col]), int(ref._a.reshape(n, n).view(u)[row, col])]


# entry point -> (model, indices of the arguments it writes)
_MODELS: dict[str, tuple[Any, tuple[int, ...]]] = {
    "march": (_march, (0, 14, 15, 16, 17)),
    "operands_f16": (_operands_f16, (0, 1)),
    "operands_bf16": (_operands_bf16, (0, 1)),
    "operands_f32": (_operands_f32, (0, 1)),
    "operands_f64": (_operands_f64, (0,)),
    "check_f32": (_check, (5, 7)),
    "check_f64": (_check, (5, 7)),
}


# --- cupy.cuda -----------------------------------------------------------------------------------
class Device:
    """As CuPy's: ``with`` remembers the current device and puts it back with ``cudaSetDevice``."""

    def __init__(self, device: int | None = None) -> None:
        self.id = st().current if device is None else int(device)
        self._prev: list[int] = []

    def __enter__(self) -> Device:
        s = st()
        self._prev.append(s.current)  # cudaGetDevice: no context
        if self.id != s.current:
            self.use()
        return self

    def __exit__(self, *exc: Any) -> None:
        setDevice(self._prev.pop())  # CUDA 12+: a context on the device put back, whichever it is

    def use(self) -> None:
        setDevice(self.id)

    def synchronize(self) -> None:
        s = st()
        with self:
            for strm in s.streams:
                if strm.device == self.id:
                    s.complete(strm, 1 << 62, blocking=True)

    @property
    def attributes(self) -> dict[str, int]:
        return {"MultiProcessorCount": st().gpus[self.id].sms}

    @property
    def compute_capability(self) -> str:
        return "90"


class Stream:
    null: Stream

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: int | None = None) -> None:
        s = st()
        self.device = s.current if null else s.touch()
        self.non_blocking = non_blocking
        self.priority = max(-5, min(0, priority or 0))  # CUDA clamps to the range, (0, -5) on an H100
        self.ptr = 0 if null else next(s._next)
        self.queue: list[_Op] = []
        self.waited: dict[int, int] = {}  # id(other stream) -> the latest sequence this stream waits for
        self.clock = 0.0
        s.streams.append(self)
        self._prev: list[Stream] = []

    def __enter__(self) -> Stream:
        cur = st().current
        if self.ptr != 0 and self.device != cur:
            raise RuntimeError(f"The device that the stream is created on ({self.device}) does not match with "
                               f"the current device ({cur})")
        self._prev.append(get_current_stream())
        _CURRENT[0] = self
        return self

    def __exit__(self, *exc: Any) -> None:
        _CURRENT[0] = self._prev.pop()

    def use(self) -> Stream:
        _CURRENT[0] = self
        return self

    @property
    def done(self) -> bool:
        return st().status(self, 1 << 62) == 0

    def synchronize(self) -> None:
        st().complete(self, 1 << 62, blocking=True)

    def record(self, event: Event | None = None) -> Event:
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        """Work queued here from now on starts after the work before ``event`` (on its stream)."""
        s = st()
        s.touch(self.device)
        if event.stream is None or event.stream is self:
            return
        op = _Op("wait", self.device, next(s._next), after=(event.stream, event.seq))
        self.queue.append(op)
        key = id(event.stream)
        self.waited[key] = max(self.waited.get(key, 0), event.seq)
        for k, v in event.stream.waited.items():  # what that stream waited for, this one now waits for too
            self.waited[k] = max(self.waited.get(k, 0), v)
        self.clock = max(self.clock, event.t)


_CURRENT: list[Stream] = []


def get_current_stream(device_id: int | None = None) -> Stream:
    return _CURRENT[0]


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False) -> None:
        s = st()
        self.ptr = next(s._next)
        s.events[self.ptr] = self
        self.stream: Stream | None = None
        self.seq = 0
        self.t = 0.0
        self.disable_timing = disable_timing

    def record(self, stream: Stream | None = None) -> None:
        s = st()
        strm = stream or get_current_stream()
        s.touch(strm.device)
        self.stream, self.seq, self.t = strm, next(s._next), strm.clock

    @property
    def done(self) -> bool:
        """As CuPy's: ``eventQuery(ptr) == 0`` -- False for work that failed, never an exception."""
        return eventQuery(self.ptr) == 0

    def synchronize(self) -> None:
        if self.stream is not None:
            st().complete(self.stream, self.seq, blocking=True)


def get_elapsed_time(start: Event, end: Event) -> float:
    if start.disable_timing or end.disable_timing:
        raise CUDARuntimeError(400)
    for ev in (start, end):
        status = eventQuery(ev.ptr)
        if status:
            raise CUDARuntimeError(status)  # 600 (cudaErrorNotReady): timing before the work completed
    return (end.t - start.t) * 1e3


class Memory:
    """cudaMalloc'd bytes (``cupy.cuda.Memory``): straight from the driver, no pool."""

    def __init__(self, size: int) -> None:
        s = st()
        d = s.touch()
        g = s.gpus[d]
        cap = g.allocatable if g.allocatable is not None else g.total
        if g.used + size > cap:
            raise CUDARuntimeError(2)  # runtime.malloc: cudaErrorMemoryAllocation, not OutOfMemoryError
        g.used += size
        self.size, self.device_id = size, d
        self.buf = np.zeros(size, np.uint8)
        self.ptr = s.register(self.buf, d)
        weakref.finalize(self, _free_memory, s, d, size, self.ptr)


def _free_memory(s: FakeCuda, device: int, size: int, ptr: int) -> None:
    s.unregister(ptr)
    s.gpus[device].used -= size


class _PinnedMemory:
    def __init__(self, size: int) -> None:
        s = st()
        self.size = size
        self.buf = np.zeros(size, np.uint8)
        self.ptr = s.register(self.buf, None)


def alloc_pinned_memory(size: int) -> _PinnedMemory:
    st().touch()
    return _PinnedMemory(size)


class _Pool:
    def __init__(self, pinned: bool = False) -> None:
        self.pinned = pinned

    def free_all_blocks(self, stream: Any = None) -> None:
        s = st()
        if not self.pinned:
            g = s.gpus[s.current]
            g.used -= g.pool_cached
            g.pool_cached = 0

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        s = st()
        return s.gpus[s.current].pool_cached


_POOL, _PINNED_POOL = _Pool(), _Pool(pinned=True)


def get_default_memory_pool() -> _Pool:
    return _POOL


def get_default_pinned_memory_pool() -> _Pool:
    return _PINNED_POOL


# --- cupy.cuda.runtime ---------------------------------------------------------------------------
memcpyHostToHost, memcpyHostToDevice, memcpyDeviceToHost, memcpyDeviceToDevice = 0, 1, 2, 3


def getDeviceCount() -> int:  # noqa: N802 - CuPy's names
    s = st()
    if s.no_driver:
        raise CUDARuntimeError(35)
    if not s.gpus:
        raise CUDARuntimeError(100)
    return len(s.gpus)


def getDevice() -> int:  # noqa: N802
    return st().current


def getDeviceProperties(device: int) -> dict[str, Any]:  # noqa: N802
    s = st()
    getDeviceCount()
    if not 0 <= device < len(s.gpus):
        raise CUDARuntimeError(101)
    g = s.gpus[device]
    dom, bus, rest = g.bus_id.split(":")
    dev_, fn = rest.split(".")
    return {"name": b"Fake GPU", "uuid": g.uuid, "totalGlobalMem": g.total, "multiProcessorCount": g.sms,
            "pciDomainID": int(dom, 16), "pciBusID": int(bus, 16), "pciDeviceID": int(dev_, 16)}


def deviceGetByPCIBusId(pciBusId: str) -> int:  # noqa: N802, N803
    s = st()
    getDeviceCount()
    for i, g in enumerate(s.gpus):
        if g.bus_id.lower() == pciBusId.lower():
            return i
    raise CUDARuntimeError(101)


def setDevice(device: int) -> None:  # noqa: N802
    """CUDA 12+: makes ``device`` current and opens its primary context."""
    s = st()
    s.touch(device)
    s.current = device


def driverGetVersion() -> int:  # noqa: N802
    s = st()
    if s.no_driver:
        raise CUDARuntimeError(35)
    return s.driver_version


def runtimeGetVersion() -> int:  # noqa: N802
    major, minor = st().nvrtc_version
    return major * 1000 + minor * 10


def eventQuery(event: int) -> int:  # noqa: N802
    """The status, not an exception: 0 done, 600 not yet, else the error of the work before it."""
    s = st()
    ev = s.events[event]
    if ev.stream is None:
        return 0
    return s.status(ev.stream, ev.seq)


def streamQuery(stream: int) -> int:  # noqa: N802
    s = st()
    strm = next(x for x in s.streams if x.ptr == stream)
    return s.status(strm, 1 << 62)


def _stream_of(ptr: int, device: int) -> Stream:
    s = st()
    strm = next((x for x in s.streams if x.ptr == ptr), None)
    if strm is None or (strm.ptr != 0 and strm.device != device):
        raise CUDARuntimeError(400)
    return strm


def memsetAsync(ptr: int, value: int, size: int, stream: int) -> None:  # noqa: N802
    s = st()
    d = s.touch()
    strm = _stream_of(stream, d)
    buf, dev = s.resolve(ptr, size)
    op = s.enqueue("memset", strm, d)
    if dev != d:
        op.status = 700
        return
    s.touches(op, strm, [], [ptr])
    buf[...] = value


def memGetInfo() -> tuple[int, int]:  # noqa: N802
    s = st()
    d = s.touch()
    return s.free(d), s.gpus[d].total


def deviceSynchronize() -> None:  # noqa: N802
    Device(st().current).synchronize()


def memcpyAsync(dst: int, src: int, size: int, kind: int, stream: int) -> None:  # noqa: N802
    s = st()
    d = s.touch()
    strm = _stream_of(stream, d)
    dbuf, ddev = s.resolve(dst, size)
    sbuf, sdev = s.resolve(src, size)
    for dev in (ddev, sdev):
        if dev is not None and dev != d:
            s.enqueue("memcpy", strm, d).status = 700
            return
    op = s.enqueue("memcpy", strm, d)
    s.touches(op, strm, [src], [dst])
    dbuf[...] = sbuf
    strm.clock += size / 25e9


def deviceCanAccessPeer(device: int, peerDevice: int) -> int:  # noqa: N802, N803
    s = st()
    s.touch(device)
    s.touch(peerDevice)
    return 0 if device == peerDevice or (device, peerDevice) in s.no_peer else 1


def deviceEnablePeerAccess(peerDevice: int) -> None:  # noqa: N802, N803
    s = st()
    d = s.touch()
    s.touch(peerDevice)
    if (d, peerDevice) in s.no_peer or d == peerDevice:
        raise CUDARuntimeError(217)  # cudaErrorPeerAccessUnsupported
    if (d, peerDevice) in s.peer_enabled:
        raise CUDARuntimeError(704)  # cudaErrorPeerAccessAlreadyEnabled
    s.peer_enabled.add((d, peerDevice))


def memcpyPeerAsync(dst: int, dstDevice: int, src: int, srcDevice: int, size: int, stream: int) -> None:  # noqa: N802, N803
    """As CUDA's: works with or without peer access (staged through the host, slower, without);
    each pointer must lie on the device it is said to; ``corrupt_peer`` flips words on arrival."""
    s = st()
    d = s.touch()
    s.touch(dstDevice)
    s.touch(srcDevice)
    strm = _stream_of(stream, d)
    dbuf, ddev = s.resolve(dst, size)
    sbuf, sdev = s.resolve(src, size)
    op = s.enqueue("peercopy", strm, d)
    if ddev != dstDevice or sdev != srcDevice:
        op.status = 700
        return
    s.touches(op, strm, [src], [dst])
    dbuf[...] = sbuf
    for k in range(min(s.corrupt_peer.get((srcDevice, dstDevice), 0), size // 8)):
        dbuf[8 * k * 97 % (size - size % 8 or 8)] ^= 0x04
    direct = (srcDevice, dstDevice) in s.peer_enabled or (dstDevice, srcDevice) in s.peer_enabled
    strm.clock += size / (360e9 if direct else 20e9)


# --- cupy_backends.cuda.libs.cublas --------------------------------------------------------------
_HANDLES: dict[int, dict[str, Any]] = {}


def get_cublas_handle() -> int:
    s = st()
    d = s.touch()
    _HANDLES.setdefault(d, {"device": d, "stream": 0, "pointer_mode": None})
    return 1000 + d


def setStream(handle: int, stream: int) -> None:  # noqa: N802
    _HANDLES[handle - 1000]["stream"] = stream


def getStream(handle: int) -> int:  # noqa: N802
    return _HANDLES[handle - 1000]["stream"]


def setPointerMode(handle: int, mode: int) -> None:  # noqa: N802
    _HANDLES[handle - 1000]["pointer_mode"] = mode


_CUDA_TYPES = {2: np.float16, 0: np.float32, 1: np.float64, 14: np.uint16}


def gemmEx(handle: int, transa: int, transb: int, m: int, n: int, k: int, alpha: int, A: int, Atype: int,  # noqa: N802, N803
           lda: int, B: int, Btype: int, ldb: int, beta: int, C: int, Ctype: int, ldc: int,  # noqa: N803
           computeType: int, algo: int) -> None:  # noqa: N803
    """As CuPy's: the handle is pointed at the *current* stream first, whatever setStream said."""
    s = st()
    h = _HANDLES[handle - 1000]
    d = s.touch(h["device"])
    strm = get_current_stream()
    h["stream"] = strm.ptr  # CuPy's _setStream(handle)
    s.gemms.append((d, strm.ptr))
    op = s.enqueue("gemm", strm, d)
    ta, tb, tc = _CUDA_TYPES[Atype], _CUDA_TYPES[Btype], _CUDA_TYPES[Ctype]
    isz = np.dtype(ta).itemsize
    abuf, adev = s.resolve(A, m * k * isz)
    bbuf, bdev = s.resolve(B, k * n * isz)
    cbuf, cdev = s.resolve(C, m * n * np.dtype(tc).itemsize)
    if {adev, bdev, cdev} != {d}:
        op.status = 700
        return
    s.touches(op, strm, [A, B], [C])

    def val(buf: np.ndarray, t: Any, shape: tuple[int, int]) -> np.ndarray:
        x = buf.view(t).reshape(shape)
        if t is np.uint16:  # bf16 bits
            return (x.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return x.astype(np.float64)

    # column-major C(m x n) = A(m x k) B(k x n), i.e. row-major C^T(n x m) = B^T(n x k) A^T(k x m)
    ct = val(bbuf, tb, (n, k)) @ val(abuf, ta, (k, m))
    cbuf.view(tc).reshape(n, m)[...] = ct.astype(tc)
    strm.clock += 2.0 * m * n * k / s.gpus[d].flops


# --- cupy.cuda.nccl ----------------------------------------------------------------------------------
NCCL_FLOAT32 = 7
NCCL_SUM = 0
_GROUP: list[list[tuple[Any, int, int, int, int]]] = []


class NcclCommunicator:
    """One rank of a single-process communicator (``initAll``); ``allReduce`` of float32 sums."""

    def __init__(self, ndev: int, commId: Any, rank: int) -> None:  # noqa: N803 - CuPy's names
        self._ndev, self._rank, self._devices = ndev, rank, [rank]

    @staticmethod
    def initAll(devices: Any) -> list[NcclCommunicator]:  # noqa: N802
        s = st()
        devs = list(range(devices)) if isinstance(devices, int) else list(devices)
        comms = []
        for r, d in enumerate(devs):
            s.touch(d)
            c = NcclCommunicator.__new__(NcclCommunicator)
            c._ndev, c._rank, c._devices = len(devs), r, devs
            comms.append(c)
        return comms

    def device_id(self) -> int:
        return self._devices[self._rank]

    def rank_id(self) -> int:
        return self._rank

    def allReduce(self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int, stream: int) -> None:  # noqa: N802
        if datatype != NCCL_FLOAT32 or op != NCCL_SUM:
            raise ValueError("the stand-in sums float32 only")
        if not _GROUP:
            raise RuntimeError("fake nccl: allReduce outside groupStart/groupEnd")
        _GROUP[-1].append((self, sendbuf, recvbuf, count, stream))


def groupStart() -> None:  # noqa: N802
    _GROUP.append([])


def groupEnd() -> None:  # noqa: N802
    s = st()
    calls = _GROUP.pop()
    total = None
    for comm, sendbuf, _, count, _ in calls:
        buf, dev = s.resolve(sendbuf, count * 4)
        if dev != comm.device_id():
            raise CUDARuntimeError(700)
        x = buf.view(np.float32).astype(np.float64)
        total = x if total is None else total + x
    s.collectives.append(tuple(c.device_id() for c, *_ in calls))
    for comm, sendbuf, recvbuf, count, stream in calls:
        buf, _ = s.resolve(recvbuf, count * 4)
        strm = _stream_of(stream, comm.device_id())
        op = s.enqueue("allreduce", strm, comm.device_id())
        s.touches(op, strm, [sendbuf], [recvbuf])
        buf.view(np.float32)[...] = total
        strm.clock += count * 4 * 2 / 300e9


# --- installing ------------------------------------------------------------------------------------
def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec("cupy") finds it
    mod.__dict__.update(attrs)
    return mod


def install(monkeypatch: Any, gpus: int | list[Gpu] = 2, total: int = 1 << 30, nccl: bool = True) -> FakeCuda:
    """Put the stand-in in ``sys.modules`` (undone by monkeypatch): ``gpus`` cards of ``total``
    bytes at bus ids ``0000:1N:00.0`` with UUIDs ``GPU-0000000N-...``; ``nccl`` False: CuPy
    without NCCL (``cupy.cuda.nccl.available`` is False, as when the library is missing)."""
    global _STATE
    if isinstance(gpus, int):
        gpus = [Gpu(total, f"0000:{0x18 + i:02x}:00.0", bytes([0, 0, 0, i + 1]) + bytes(12)) for i in range(gpus)]
    state = FakeCuda(gpus)
    monkeypatch.setattr(sys.modules[__name__], "_STATE", state)
    _HANDLES.clear()
    null = Stream.__new__(Stream)
    null.device, null.non_blocking, null.ptr, null.queue, null.clock, null._prev = 0, False, 0, [], 0.0, []
    null.waited = {}
    state.streams.append(null)
    Stream.null = null
    _CURRENT[:] = [null]
    this = sys.modules[__name__]
    runtime = _module("cupy_backends.cuda.api.runtime", CUDARuntimeError=CUDARuntimeError,
                      **{n: getattr(this, n) for n in RUNTIME_NAMES})
    memory = _module("cupy.cuda.memory", OutOfMemoryError=OutOfMemoryError, Memory=Memory,
                     MemoryPointer=MemoryPointer)
    device = _module("cupy.cuda.device", Device=Device, get_cublas_handle=get_cublas_handle)
    state.nccl = nccl
    ncclmod = _module("cupy.cuda.nccl", available=nccl, NcclCommunicator=NcclCommunicator, groupStart=groupStart,
                      groupEnd=groupEnd, NCCL_FLOAT32=NCCL_FLOAT32, NCCL_SUM=NCCL_SUM)
    _GROUP.clear()
    compiler = _module("cupy.cuda.compiler", CompileException=CompileException)
    nvrtc = _module("cupy.cuda.nvrtc", getVersion=lambda: state.nvrtc_version)
    cuda = _module("cupy.cuda", Device=Device, Memory=Memory, MemoryPointer=MemoryPointer, Stream=Stream,
                   Event=Event, get_elapsed_time=get_elapsed_time, alloc_pinned_memory=alloc_pinned_memory,
                   get_current_stream=get_current_stream, runtime=runtime, memory=memory, device=device,
                   compiler=compiler, nvrtc=nvrtc, nccl=ncclmod)
    cupy = _module("cupy", cuda=cuda, **{n: getattr(this, n) for n in CUPY_NAMES})
    cupy.__path__ = []  # a package, so ``import cupy.cuda`` works
    cublas = _module("cupy_backends.cuda.libs.cublas", setStream=setStream, getStream=getStream,
                     setPointerMode=setPointerMode, gemmEx=gemmEx)
    cupyx = _module("cupyx", empty_pinned=lambda shape, dtype=float: np.zeros(shape, dtype))
    mods = {"cupy": cupy, "cupy.cuda": cuda, "cupy.cuda.runtime": runtime, "cupy.cuda.memory": memory,
            "cupy.cuda.device": device, "cupy.cuda.compiler": compiler, "cupy.cuda.nvrtc": nvrtc, "cupyx": cupyx,
            "cupy_backends.cuda.libs.cublas": cublas, "cupy.cuda.nccl": ncclmod}
    for pkg in ("cupy_backends", "cupy_backends.cuda", "cupy_backends.cuda.api"):
        if pkg not in sys.modules:
            p = _module(pkg)
            p.__path__ = []
            mods[pkg] = p

    def libs_attr(name: str) -> Any:  # the real package loads libcublas(Lt) when cublas is imported
        if name == "cublas":
            if "cublas" in state.missing:
                raise ImportError("libcublasLt.so.12: cannot open shared object file: No such file or directory")
            return cublas
        raise AttributeError(name)

    libs = _module("cupy_backends.cuda.libs", __getattr__=libs_attr)
    libs.__path__ = []
    mods["cupy_backends.cuda.libs"] = libs
    if "cupy_backends.cuda.api.runtime" not in sys.modules:
        mods["cupy_backends.cuda.api.runtime"] = runtime
    if "cupy_backends.cuda.api.driver" not in sys.modules:
        mods["cupy_backends.cuda.api.driver"] = _module("cupy_backends.cuda.api.driver", CUDADriverError=CUDADriverError)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return state


CUPY_NAMES = ("ndarray", "zeros", "empty", "full", "asarray", "arange", "count_nonzero", "flatnonzero", "nonzero",
              "isfinite", "all", "copyto", "RawModule", "RawKernel", "get_default_memory_pool",
              "get_default_pinned_memory_pool", "uint8", "uint16", "uint32", "uint64", "int32", "int64",
              "float16", "float32", "float64")
RUNTIME_NAMES = ("getDeviceCount", "getDevice", "setDevice", "getDeviceProperties", "deviceGetByPCIBusId",
                 "memGetInfo", "deviceSynchronize", "driverGetVersion", "runtimeGetVersion", "eventQuery",
                 "streamQuery", "memsetAsync", "memcpyAsync", "memcpyHostToHost", "memcpyHostToDevice",
                 "memcpyDeviceToHost", "memcpyDeviceToDevice", "deviceCanAccessPeer", "deviceEnablePeerAccess",
                 "memcpyPeerAsync")
