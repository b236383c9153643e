"""burnin's own checks on an Ascend NPU through torch + torch_npu: memory, compute, transfers.

The handles are plain torch on one device, so the same code runs on ``npu:N`` (torch_npu) and,
for the tests, on torch's ``cpu`` device (``--device-type cpu``). What they give the stages:

- memory: one uint8 tensor over most of the free HBM; reads and writes are copies, the scan
  primitives compare on the device and bring back only the mismatching bytes;
- compute: exact products for the verified burn (drivers/abft.py's integer operands): fp32 as it
  is, fp16 as fp16 products over K-slices short enough that every partial result is an integer
  fp16 holds exactly (<= 2048), summed in fp32 on the device; ``load`` runs large fp16 products;
- transfers: timed copies between a pinned host buffer and the device.

torch and torch_npu are imported when the runtime opens, never at import: without them opening
raises BackendUnavailable naming what to install. Device errors map onto the device API: an HBM
multi-bit / UCE error is MemoryFault, a lost device DeviceLost, anything else DeviceError. A
product that hangs is caught by the stage's watchdog (torch offers no timed wait on an NPU
stream); one that returns late is KernelTimeout.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from drivers.api import (
    BackendUnavailable,
    ComputeHandle,
    DeviceError,
    DeviceLost,
    KernelTimeout,
    LoadReport,
    MemoryFault,
    MemoryHandle,
    Mismatches,
    Pattern,
    TransferHandle,
)
from drivers.ascend.runtime import NpuRuntime

INSTALL_HINT = "install torch and the torch_npu build matching the host's CANN (pip install torch torch_npu)"
RESERVE_BYTES = 1 << 30  # left free for the runtime's own workspace
CHUNK = 1 << 26  # scan and copy chunk (64 MiB)
FP16_EXACT = 2048  # largest integer with every smaller one exact in fp16
LOAD_SIZE = 4096
CPU_LOAD_SIZE = 128  # the tests' CPU device: fp16 products are emulated there and slow
_MEMORY_TEXT = ("multi-bit", "multi bit", "uce", "ecc", "hbm error")
_LOST_TEXT = ("device lost", "heartbeat", "not exist", "device is unavailable", "link down")
_DTYPES = {"fp16": "float16", "fp32": "float32"}


@contextlib.contextmanager
def npu_errors(what: str, offset: int | None = None, nbytes: int | None = None) -> Iterator[None]:
    """torch/torch_npu RuntimeErrors as the device API's exceptions."""
    try:
        yield
    except (DeviceError, ValueError):
        raise
    except RuntimeError as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        low = str(e).lower()
        if any(t in low for t in _LOST_TEXT):
            raise DeviceLost(f"{what}: {text}") from None
        if any(t in low for t in _MEMORY_TEXT):
            raise MemoryFault(f"{what}: {text}", offset, nbytes) from None
        raise DeviceError(f"{what}: {text}") from None


class TorchRuntime(NpuRuntime):
    def __init__(self, where: dict[str, Any], device_type: str = "npu", memory_mib: int | None = None) -> None:
        # asked first, so a host with torch but no torch_npu does not pay torch's import to learn it
        if device_type == "npu" and importlib.util.find_spec("torch_npu") is None:
            what = "torch_npu is" if importlib.util.find_spec("torch") is not None else "torch and torch_npu are"
            raise BackendUnavailable(f"{what} not installed: {INSTALL_HINT}")
        try:
            import torch
        except ImportError:
            raise BackendUnavailable(f"torch is not installed: {INSTALL_HINT}") from None
        if device_type == "npu":
            try:
                import torch_npu  # noqa: F401 - registers the npu device with torch
            except ImportError:
                raise BackendUnavailable(f"torch_npu is not installed: {INSTALL_HINT}") from None
            except Exception as e:  # noqa: BLE001 - a torch_npu that cannot load its CANN libraries
                raise BackendUnavailable(f"torch_npu does not load ({type(e).__name__}: {e}): {INSTALL_HINT}") from None
        self.torch: Any = torch
        index = where.get("logic_id")
        if index is None:
            index = where.get("npu_id", 0)
        self.device = torch.device(device_type if device_type == "cpu" else f"{device_type}:{int(index)}")
        self.label = f"NPU {where.get('npu_id')} ({self.device})"
        self._backend = getattr(torch, device_type, None)
        self.memory_mib = memory_mib
        self._handles: dict[str, Any] = {}

    def sync(self) -> None:
        fn = getattr(self._backend, "synchronize", None) if self.device.type != "cpu" else None
        if fn is not None:
            fn(self.device)

    def free_bytes(self) -> int:
        if self.memory_mib is not None:
            return self.memory_mib << 20
        info = getattr(self._backend, "mem_get_info", None)
        if info is None:
            raise DeviceError(f"{self.label}: cannot read free memory; give --memory-mib")
        free, _total = info(self.device)
        return max(0, int(free) - RESERVE_BYTES)

    def handle(self, kind: str) -> Any:
        if kind not in self._handles:
            cls = {"memory": TorchMemory, "compute": TorchCompute, "transfer": TorchTransfer}[kind]
            with npu_errors(f"{self.label}: opening the {kind} handle"):
                self._handles[kind] = cls(self)
        return self._handles[kind]

    def release(self) -> None:
        self._handles.clear()
        empty = getattr(self._backend, "empty_cache", None) if self.device.type != "cpu" else None
        if empty is not None:
            with contextlib.suppress(Exception):
                empty()


class TorchMemory(MemoryHandle):
    def __init__(self, rt: TorchRuntime) -> None:
        self.rt = rt
        torch = rt.torch
        self._size = rt.free_bytes()
        self.buf = torch.empty(self._size, dtype=torch.uint8, device=rt.device)

    @property
    def size(self) -> int:
        return self._size

    def _check(self, offset: int, nbytes: int) -> None:
        if offset < 0 or nbytes < 0 or offset + nbytes > self._size:
            raise ValueError(f"{self.rt.label}: range [{offset}, {offset + nbytes}) outside {self._size} bytes")

    def write(self, offset: int, data: np.ndarray, descending: bool = False) -> None:
        self._check(offset, int(data.size))
        with npu_errors(f"{self.rt.label}: writing {data.size} B at {offset}", offset, int(data.size)):
            self.buf[offset:offset + data.size].copy_(self.rt.torch.from_numpy(np.ascontiguousarray(data, np.uint8)))
            self.rt.sync()

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        self._check(offset, nbytes)
        with npu_errors(f"{self.rt.label}: reading {nbytes} B at {offset}", offset, nbytes):
            out: np.ndarray = self.buf[offset:offset + nbytes].cpu().numpy().copy()
        return out

    def _expected(self, pattern: Pattern, lo: int, n: int) -> Any:
        return self.rt.torch.from_numpy(pattern.expand(lo, n)).to(self.rt.device)

    def write_pattern(self, offset: int, nbytes: int, pattern: Pattern, descending: bool = False) -> None:
        self._check(offset, nbytes)
        for lo, n in self._chunks(offset, nbytes, descending):
            with npu_errors(f"{self.rt.label}: writing a pattern at {lo}", lo, n):
                self.buf[lo:lo + n].copy_(self._expected(pattern, lo, n))
        self.rt.sync()

    def _verify(self, lo: int, n: int, expect: Pattern, limit: int, chips: int) -> Mismatches:
        """Compare on the device; only the failing bytes come back to the host."""
        torch = self.rt.torch
        with npu_errors(f"{self.rt.label}: verifying [{lo}, {lo + n})", lo, n):
            want = self._expected(expect, lo, n)
            got = self.buf[lo:lo + n]
            idx = torch.nonzero(got != want).flatten()
            if idx.numel() == 0:
                return Mismatches.empty(chips)
            bad = idx.cpu().numpy()
            g, w = got[idx].cpu().numpy(), want[idx].cpu().numpy()
        return _mismatches(lo, bad, w, g, limit, chips)

    def _chunks(self, offset: int, nbytes: int, descending: bool) -> list[tuple[int, int]]:
        out = [(o, min(CHUNK, offset + nbytes - o)) for o in range(offset, offset + nbytes, CHUNK)]
        return out[::-1] if descending else out

    def march_element(self, offset: int, nbytes: int, expect: Pattern | None, write: Pattern | None,
                      descending: bool = False, limit: int = 4096, chips: int = 1) -> Mismatches:
        self._check(offset, nbytes)
        acc = Mismatches.empty(chips)
        for lo, n in self._chunks(offset, nbytes, descending):
            if expect is not None:
                acc = acc.merge(self._verify(lo, n, expect, limit, chips), limit)
            if write is not None:
                with npu_errors(f"{self.rt.label}: writing at {lo}", lo, n):
                    self.buf[lo:lo + n].copy_(self._expected(write, lo, n))
        self.rt.sync()
        return acc

    def verify_repeat(self, offset: int, nbytes: int, expect: Pattern, repeats: int = 1,
                      limit: int = 4096, chips: int = 1) -> Mismatches:
        self._check(offset, nbytes)
        acc = Mismatches.empty(chips, repeats)
        for _ in range(repeats):
            for lo, n in self._chunks(offset, nbytes, False):
                acc = acc.merge(self._verify(lo, n, expect, limit, chips), limit)
        acc.reads = repeats
        return acc


def _mismatches(lo: int, idx: np.ndarray, want: np.ndarray, got: np.ndarray, limit: int, chips: int) -> Mismatches:
    """Mismatches.of for the failing bytes alone (their offsets relative to ``lo``)."""
    m = Mismatches.empty(chips)
    diff = np.bitwise_xor(got, want)
    m.total = int(idx.size)
    m.bit_counts = np.unpackbits(diff[:, None], axis=1, bitorder="little").sum(0).astype(np.int64)
    m.chip_counts = np.bincount(((idx + lo) // 256) % max(1, chips), minlength=max(1, chips)).astype(np.int64)
    keep = slice(0, limit)
    m.address, m.expected, m.got = (idx[keep] + lo).astype(np.int64), want[keep].copy(), got[keep].copy()
    m.hits = np.ones(m.address.size, np.int64)
    return m


class TorchCompute(ComputeHandle):
    def __init__(self, rt: TorchRuntime) -> None:
        self.rt = rt
        self._load: tuple[Any, Any] | None = None

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(_DTYPES)

    def matmul(self, a: np.ndarray, b: np.ndarray, timeout_s: float = 60.0, dtype: str | None = None) -> np.ndarray:
        torch = self.rt.torch
        dt = dtype or {np.dtype(np.float16): "fp16", np.dtype(np.float32): "fp32"}.get(a.dtype, "")
        if dt not in _DTYPES:
            raise ValueError(f"{self.rt.label}: no {dtype or a.dtype} products on this path (have: fp16, fp32)")
        tdt = getattr(torch, _DTYPES[dt])
        t0 = time.monotonic()
        with npu_errors(f"{self.rt.label}: {dt} product {a.shape} x {b.shape}"):
            ta = torch.from_numpy(np.ascontiguousarray(a)).to(self.rt.device, tdt)
            tb = torch.from_numpy(np.ascontiguousarray(b)).to(self.rt.device, tdt)
            if dt == "fp32":
                c = torch.matmul(ta, tb)
            else:
                c = self._fp16_exact(ta, tb, a, b)
            out: np.ndarray = c.float().cpu().numpy()
        if time.monotonic() - t0 > timeout_s:
            raise KernelTimeout(f"{self.rt.label}: {dt} product took longer than {timeout_s:g} s")
        return out

    def _fp16_exact(self, ta: Any, tb: Any, a: np.ndarray, b: np.ndarray) -> Any:
        """fp16 products over K-slices whose results stay exact in fp16, summed in fp32."""
        torch = self.rt.torch
        amax = float(np.abs(a).max(initial=0.0))
        bmax = float(np.abs(b).max(initial=0.0))
        step = max(1, int(FP16_EXACT // max(1.0, amax * bmax)))
        k = a.shape[1]
        acc = torch.zeros((a.shape[0], b.shape[1]), dtype=torch.float32, device=self.rt.device)
        for k0 in range(0, k, step):
            acc += torch.matmul(ta[:, k0:k0 + step], tb[k0:k0 + step, :]).float()
        return acc

    def load(self, seconds: float, intensity: float = 1.0) -> LoadReport:
        torch = self.rt.torch
        n = LOAD_SIZE if self.rt.device.type != "cpu" else CPU_LOAD_SIZE
        if self._load is None:
            with npu_errors(f"{self.rt.label}: preparing the load"):
                x = torch.rand((n, n), device=self.rt.device).to(torch.float16 if n == LOAD_SIZE else torch.float32)
                self._load = (x, x.clone())
        a, b = self._load
        flops = 0.0
        t0 = time.monotonic()
        with npu_errors(f"{self.rt.label}: holding load"):
            while (busy := time.monotonic() - t0) < seconds:
                torch.matmul(a, b)
                self.rt.sync()
                flops += 2.0 * n ** 3
                if intensity < 1.0:  # idle for the rest of each step
                    time.sleep(min(seconds - busy, (time.monotonic() - t0 - busy) * (1 - intensity) / intensity))
        return LoadReport(seconds=time.monotonic() - t0, flops=flops)


class TorchTransfer(TransferHandle):
    def __init__(self, rt: TorchRuntime) -> None:
        self.rt = rt
        torch = rt.torch
        pin = rt.device.type != "cpu"
        self.host = torch.empty(CHUNK, dtype=torch.uint8, pin_memory=pin)
        self.dev = torch.empty(CHUNK, dtype=torch.uint8, device=rt.device)

    def _copy(self, nbytes: int, to_device: bool) -> float:
        if nbytes <= 0:
            raise ValueError(f"{self.rt.label}: a copy needs a positive byte count, got {nbytes}")
        what = f"{self.rt.label}: {'host->device' if to_device else 'device->host'} copy of {nbytes} B"
        with npu_errors(what):
            self.rt.sync()
            t0 = time.perf_counter()
            left = nbytes
            while left > 0:
                n = min(left, CHUNK)
                if to_device:
                    self.dev[:n].copy_(self.host[:n], non_blocking=True)
                else:
                    self.host[:n].copy_(self.dev[:n], non_blocking=True)
                left -= n
            self.rt.sync()
            return time.perf_counter() - t0

    def host_to_device(self, nbytes: int) -> float:
        return self._copy(nbytes, True)

    def device_to_host(self, nbytes: int) -> float:
        return self._copy(nbytes, False)


def open_runtime(where: dict[str, Any], args: list[str]) -> TorchRuntime:
    """``args``: ``--device-type TYPE`` (default npu; cpu for tests), ``--memory-mib N``."""
    device_type, memory_mib = "npu", None
    it = iter(args)
    for a in it:
        if a == "--device-type":
            device_type = next(it, "npu")
        elif a == "--memory-mib":
            memory_mib = int(next(it, "0"))
        else:
            raise BackendUnavailable(f"drivers.ascend.torch_npu: unknown argument {a!r}")
    return TorchRuntime(where, device_type, memory_mib)
