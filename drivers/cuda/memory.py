"""The memory scan primitives on one NVIDIA GPU, through CuPy (optional extra: ``pip install .[cuda]``).

``CudaMemory(device_index)`` is a drivers.api.MemoryHandle over (nearly) all free memory of one
NVIDIA GPU (a CUDA ordinal; the nvml backend finds it by PCI bus id): plain ``cudaMalloc`` chunks
(``cupy.cuda.Memory``, never managed memory, never the pool), leaving ``reserve_bytes`` free for
the driver and other contexts. Offsets are byte offsets into that region, chunks laid end to
end. The stage and algorithms of stress/memory run on it unchanged.

One kernel does it all (``march`` in ``drivers/cuda/cu/memscan.cu``, from the kernel registry):
a March element over a byte range, reading and checking one pattern and writing another, the
patterns generated on the device from a 4 KiB tile or the word's own offset, the first
``limit`` mismatches recorded, counts kept per bit and per chip. A GPU runs many addresses at
once, so the model's strict per-address order holds neither across the grid nor within a
thread's group of in-flight loads (as in cuda_memtest). Repeated reads are whole passes, so
each re-read comes from DRAM.

Speed: a pass queues its chunks back to back on one stream and waits only when more than
``window_bytes`` are in flight (and at the end of a pass that reads, for its counts), so the
GPU never idles between chunks; a write-only pass is left in flight behind the next call. An
error surfaces at the next wait and is reported for the range in flight then (an uncorrectable
ECC error is a ``MemoryFault`` naming that range). Every buffer and launch is on the card under
test, which is made this worker's current device first (``use_card``). CuPy is imported only
when a handle is built.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Any

import numpy as np

from drivers.api import BackendUnavailable, MemoryHandle, Mismatches, Pattern
from drivers.cuda import kernels
from drivers.cuda.errors import (
    OUT_OF_MEMORY,
    check_usable,
    cuda_errors,
    find_device,
    import_cupy,
    on_card,
    status_of,
    use_card,
    wait,
)
from drivers.registry import register_handle
from drivers.units import GIB, MIB

TILE = 4096  # repeating patterns are tiled to this many bytes on the device
THREADS = 256
UNROLL = 4  # 16-byte vectors in flight per thread (memscan.cu's UNROLL)
BLOCKS_PER_SM = 4
MAX_CHIPS = 256
NREC = 9 + MAX_CHIPS  # counters: total, 8 bits, MAX_CHIPS chips, then the record count
KERNEL_TIMEOUT_S = 60.0  # one chunk's pass (<= 1 GiB); a healthy card takes milliseconds
WINDOW_BYTES = 8 * GIB  # at most this much scan work queued before the host waits
MIN_CHUNK = 64 * MIB


def _is_oom(err: BaseException) -> bool:
    """``cupy.cuda.Memory`` raises CUDARuntimeError(cudaErrorMemoryAllocation), pools OutOfMemoryError."""
    return isinstance(err, MemoryError) or status_of(err) == OUT_OF_MEMORY


class CudaMemory(MemoryHandle):
    """Nearly all free memory of CUDA device ``device_index`` as one tested region (module doc)."""

    def __init__(self, device_index: int = 0, reserve_bytes: int | None = None, max_bytes: int | None = None,
                 chunk_bytes: int = 1 << 30, kernel_timeout_s: float | None = None,
                 window_bytes: int = WINDOW_BYTES) -> None:
        cp = import_cupy()
        check_usable(device_index)
        self._cp = cp
        self.device_index = device_index
        self._timeout = KERNEL_TIMEOUT_S if kernel_timeout_s is None else kernel_timeout_s
        self._window = max(1, window_bytes)
        self._label = f"CUDA device {device_index}"
        chunk_bytes = max(TILE, chunk_bytes // TILE * TILE)
        self._blocks: list[tuple[int, int, Any]] = []  # the chunks: (global offset, bytes, uint8 ndarray)
        self._mems: list[Any] = []
        self._tiles: dict[Pattern, Any] = {}
        self._records: dict[int, tuple[Any, Any, Any]] = {}
        self._inflight: deque[tuple[Any, int, int]] = deque()  # (event, first byte, end byte) queued
        free = 0
        with cuda_errors(f"{self._label}: preparing the memory scan", device_index):
            self._dev = use_card(cp, device_index)  # everything below lives on the card under test
            self._stream = cp.cuda.Stream(non_blocking=True)
            self._kernel = kernels.load(cp, "memscan", device_index)["march"]
            self._sms = int(self._dev.attributes["MultiProcessorCount"])
            with self._stream:
                self._counters = cp.zeros(NREC + 1, cp.uint64)
            free, total = cp.cuda.runtime.memGetInfo()
            reserve = reserve_bytes if reserve_bytes is not None else max(256 * MIB, total // 100)
            want = max(0, free - reserve)
            if max_bytes is not None:
                want = min(want, max_bytes)
            want = want // TILE * TILE
            self._size = self._allocate(want, chunk_bytes)
        if not self._size:
            self.close()
            raise BackendUnavailable(f"{self._label}: no free memory to test ({free} B free)")

    def _allocate(self, want: int, chunk_bytes: int) -> int:
        """cudaMalloc chunks up to ``want`` bytes; a chunk that does not fit is halved."""
        cp = self._cp
        off = 0
        while off < want:
            n = min(chunk_bytes, want - off)
            try:
                m = cp.cuda.Memory(n)  # cudaMalloc: plain device memory, not managed, not pooled
            except Exception as e:
                if not _is_oom(e):
                    raise
                if n <= MIN_CHUNK:
                    break
                chunk_bytes = max(MIN_CHUNK, n // 2 // TILE * TILE)
                continue
            self._mems.append(m)
            self._blocks.append((off, n, cp.ndarray((n,), cp.uint8, cp.cuda.MemoryPointer(m, 0))))
            off += n
        return off

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        """Give the memory back to the driver, and empty CuPy's pools of what this handle used."""
        with contextlib.suppress(Exception):  # freeing memory under queued kernels waits for them anyway
            self._drain()
        self._inflight.clear()
        self._blocks.clear()
        self._mems.clear()
        self._tiles.clear()
        self._records.clear()
        self._counters = None
        release_pools(self._cp, self._dev)

    # plumbing ----------------------------------------------------------------------------------------
    def _spans(self, offset: int, nbytes: int, descending: bool = False) -> list[tuple[int, int, int, Any]]:
        """(chunk base, local lo, local hi, array) for each chunk the range overlaps, in order."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self._size:
            raise ValueError(f"{self._label}: range {offset:#x}+{nbytes:#x} is outside 0..{self._size:#x}")
        out = []
        for base, n, arr in self._blocks:
            lo, hi = max(offset, base), min(offset + nbytes, base + n)
            if lo < hi:
                out.append((base, lo - base, hi - base, arr))
        return out[::-1] if descending else out

    def _tile(self, p: Pattern | None) -> tuple[Any, int, Any]:
        cp = self._cp
        key = Pattern(b"\x00") if p is None or p.address else Pattern(p.repeat)
        t = self._tiles.get(key)
        if t is None:
            t = self._tiles[key] = cp.asarray(key.expand(0, TILE).view(np.uint64))
        inv = np.uint64(0xFFFFFFFFFFFFFFFF) if (p is not None and p.invert) else np.uint64(0)
        return t, int(bool(p is not None and p.address)), inv

    def _record_buffers(self, limit: int) -> tuple[Any, Any, Any]:
        bufs = self._records.get(limit)
        if bufs is None:
            cp = self._cp
            bufs = self._records[limit] = (cp.zeros(limit, cp.uint64), cp.zeros(limit, cp.uint8),
                                           cp.zeros(limit, cp.uint8))
        return bufs

    def _card(self) -> None:
        with cuda_errors(f"{self._label}: making it the current device", self.device_index):
            on_card(self._cp, self._dev)

    def _queued(self, lo: int, hi: int) -> None:
        """Note the work just queued for bytes [lo, hi); wait while more than the window is queued."""
        ev = self._cp.cuda.Event(block=False, disable_timing=True)
        ev.record(self._stream)
        self._inflight.append((ev, lo, hi))
        self._drain(self._window)

    def _drain(self, keep_bytes: int = 0) -> None:
        """Wait for queued work, oldest first, until at most ``keep_bytes`` of it is left. A CUDA
        error surfaces here, for the whole range still in flight (a sticky error is reported by
        whichever wait comes next, not necessarily the one of the work that failed)."""
        while self._inflight and sum(hi - lo for _, lo, hi in self._inflight) > keep_bytes:
            ev, lo, hi = self._inflight[0]
            first = min(a for _, a, _ in self._inflight)
            last = max(b for _, _, b in self._inflight)
            what = f"{self._label}: the scan of {lo:#x}..{hi:#x}"
            try:
                with cuda_errors(what, self.device_index, (first, last - first)):
                    wait(self._cp, ev, self._timeout, what, self.device_index)
            except Exception:
                self._inflight.clear()  # nothing in flight can be trusted after an error
                raise
            self._inflight.popleft()

    def _run(self, offset: int, nbytes: int, expect: Pattern | None, write: Pattern | None,
             descending: bool, limit: int, chips: int) -> Mismatches:
        check_usable(self.device_index)
        cp = self._cp
        chips = max(1, min(MAX_CHIPS, chips))
        limit = max(1, limit)
        label = self._label
        counters = self._counters
        self._card()
        with self._stream:  # current device and stream: the card under test, our stream
            with cuda_errors(f"{label}: preparing a scan pass", self.device_index):
                rec_addr, rec_exp, rec_got = self._record_buffers(limit)
                rt, ra, ri = self._tile(expect)
                wt, wa, wi = self._tile(write)
                if expect is not None:
                    cp.cuda.runtime.memsetAsync(counters.data.ptr, 0, counters.nbytes, self._stream.ptr)
            for base, lo, hi, arr in self._spans(offset, nbytes, descending):
                span = (base + lo, hi - lo)
                with cuda_errors(f"{label}: scanning {span[0]:#x}..{span[0] + span[1]:#x}", self.device_index, span):
                    vectors = (hi + 15) // 16 - lo // 16
                    blocks = int(max(1, min(-(-vectors // (THREADS * UNROLL)), self._sms * BLOCKS_PER_SM)))
                    self._kernel(
                        (blocks,), (THREADS,),
                        (arr, np.uint64(base), np.uint64(lo), np.uint64(hi),
                         rt, np.int32(ra), ri, np.int32(expect is not None),
                         wt, np.int32(wa), wi, np.int32(write is not None),
                         np.int32(descending), np.int32(chips), counters,
                         rec_addr, rec_exp, rec_got, np.uint64(limit)),
                    )
                self._queued(span[0], span[0] + span[1])
            if expect is None:
                return Mismatches.empty(chips)  # nothing to count: left in flight behind the next call
            self._drain()
            with cuda_errors(f"{label}: reading a scan pass's counts", self.device_index):
                c = counters.get(stream=self._stream)
                kept = int(min(int(c[NREC]), limit))
                m = Mismatches.empty(chips)
                m.total = int(c[0])
                m.bit_counts = c[1:9].astype(np.int64)
                m.chip_counts = c[9 : 9 + chips].astype(np.int64)
                if kept:
                    a = rec_addr[:kept].get(stream=self._stream).astype(np.int64)
                    order = np.argsort(a, kind="stable")
                    m.address = a[order]
                    m.expected = rec_exp[:kept].get(stream=self._stream)[order]
                    m.got = rec_got[:kept].get(stream=self._stream)[order]
                    m.hits = np.ones(kept, np.int64)
            return m

    # MemoryHandle ------------------------------------------------------------------------------------
    def write(self, offset: int, data: np.ndarray, descending: bool = False) -> None:
        check_usable(self.device_index)
        data = np.ascontiguousarray(data, dtype=np.uint8).ravel()
        self._card()
        with self._stream:
            self._drain()
            for base, lo, hi, arr in self._spans(offset, data.size):
                with cuda_errors(f"{self._label}: writing {base + lo:#x}..{base + hi:#x}", self.device_index,
                                 (base + lo, hi - lo)):
                    arr[lo:hi].set(data[base + lo - offset : base + hi - offset], stream=self._stream)
                self._queued(base + lo, base + hi)
            self._drain()

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        check_usable(self.device_index)
        out = np.empty(nbytes, np.uint8)
        self._card()
        with self._stream:
            self._drain()  # never block in .get() behind a kernel that may hang
            for base, lo, hi, arr in self._spans(offset, nbytes):
                with cuda_errors(f"{self._label}: reading {base + lo:#x}..{base + hi:#x}", self.device_index,
                                 (base + lo, hi - lo)):
                    out[base + lo - offset : base + hi - offset] = arr[lo:hi].get(stream=self._stream)
        return out

    def write_pattern(self, offset: int, nbytes: int, pattern: Pattern, descending: bool = False) -> None:
        self._run(offset, nbytes, None, pattern, descending, 1, 1)

    def march_element(self, offset: int, nbytes: int, expect: Pattern | None, write: Pattern | None,
                      descending: bool = False, limit: int = 4096, chips: int = 1) -> Mismatches:
        return self._run(offset, nbytes, expect, write, descending, limit, chips)

    def verify_repeat(self, offset: int, nbytes: int, expect: Pattern, repeats: int = 1,
                      limit: int = 4096, chips: int = 1) -> Mismatches:
        acc = Mismatches.empty(chips, repeats)
        for _ in range(max(1, repeats)):
            acc = acc.merge(self._run(offset, nbytes, expect, None, False, limit, chips), limit)
        acc.reads = max(1, repeats)
        return acc

    def synchronize(self) -> None:
        self._card()
        self._drain()

    def copy_rate(self, nbytes: int) -> float:
        """Bytes read + written per second by one device-to-device copy of ``nbytes`` from the first
        chunk to the second, timed as a scan pass is (wall clock, queued and waited for on the
        scan's stream): the benchmark's reference for the scan (bench/memscan.py)."""
        cp = self._cp
        if len(self._blocks) < 2 or min(self._blocks[0][1], self._blocks[1][1]) < nbytes:
            raise ValueError(f"{self._label}: a copy of {nbytes} B needs two chunks of at least that size")
        src, dst = self._blocks[0][2], self._blocks[1][2]
        self._card()
        with self._stream:
            self._drain()
            with cuda_errors(f"{self._label}: a device-to-device copy", self.device_index):
                t0 = time.perf_counter()
                cp.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, nbytes, cp.cuda.runtime.memcpyDeviceToDevice,
                                            self._stream.ptr)
                self._queued(self._blocks[1][0], self._blocks[1][0] + nbytes)
                self._drain()
                return 2 * nbytes / (time.perf_counter() - t0)


def release_pools(cp: Any, dev: Any) -> None:
    """Hand the blocks CuPy's pools keep back to the driver, so the next stage (or the next loop of
    ``overnight``) can take that memory: a pool never shrinks by itself."""
    try:
        on_card(cp, dev)
        cp.get_default_memory_pool().free_all_blocks()
        cp.get_default_pinned_memory_pool().free_all_blocks()
    except Exception:  # noqa: BLE001 - a lost card's memory is gone anyway
        pass


def _factory(where: dict[str, Any]) -> CudaMemory:
    return CudaMemory(find_device(import_cupy(), where))


register_handle("cuda", "memory", _factory)
