"""The memory scan primitives as CUDA kernels, through CuPy (optional extra: ``pip install .[cuda]``).

``CudaMemory(device_index)`` is a drivers.api.MemoryHandle over (nearly) all free memory of one
NVIDIA GPU (a CUDA ordinal; the nvml backend finds it by PCI bus id): plain ``cudaMalloc`` chunks
(``cupy.cuda.Memory``, never managed memory, never the pool), leaving ``reserve_bytes`` free for
the driver and other contexts. Offsets are byte offsets into that region, chunks laid end to
end. The stage and algorithms of stress/memory run on it unchanged.

Kernels follow cuda_memtest (NCSA): one thread per 64-bit word in a grid-stride loop,
patterns generated on the device from a 4 KiB tile or the word's own offset, and the first
``limit`` mismatches recorded. Mismatch counts (total, per bit, per chip) are summed per thread
and per block before one global atomic per counter and block, so a dead chip costs no more than
a healthy one. A March element visits words ascending or descending by thread index; a GPU runs
many at once, so the strict per-address order of the model holds per thread, not across the
grid (as in cuda_memtest). Repeated reads are whole passes, so each re-read comes from DRAM.

Every buffer (chunks, pattern tiles, counters, records) and every launch is on the card under
test, on one stream of its own; each chunk's pass is waited for against a deadline, so a hung
kernel is ``KernelTimeout`` and an uncorrectable ECC error is a ``MemoryFault`` naming the
chunk range being scanned. cupy is imported only when a handle is built.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from drivers.api import BackendUnavailable, KernelTimeout, MemoryHandle, Mismatches, Pattern
from drivers.cuda.errors import (
    OUT_OF_MEMORY,
    check_usable,
    cuda_errors,
    find_device,
    import_cupy,
    mark_poisoned,
    status_of,
)
from drivers.registry import register_handle
from drivers.units import MIB

TILE = 4096  # repeating patterns are tiled to this many bytes on the device
THREADS = 256
MAX_CHIPS = 256
KERNEL_TIMEOUT_S = 60.0  # one chunk's pass (<= 1 GiB); a healthy card takes milliseconds
POLL_S = 0.0005
MIN_CHUNK = 64 * MIB

_SOURCE = r"""
typedef unsigned long long u64;
#define MAX_CHIPS 256
#define LOW_BITS 0x0101010101010101ull

__device__ __forceinline__ u64 pat(u64 g, const u64* tile, int is_addr, u64 inv) {
    return (is_addr ? g : tile[(g >> 3) & 511]) ^ inv;
}

extern "C" __global__ void march(
    unsigned char* buf, u64 base, u64 lo, u64 hi,
    const u64* rtile, int r_addr, u64 r_inv, int do_read,
    const u64* wtile, int w_addr, u64 w_inv, int do_write,
    int descending, int chips, u64* counters, u64* nrec,
    u64* rec_addr, unsigned char* rec_exp, unsigned char* rec_got, u64 limit)
{
    __shared__ u64 block_counts[9 + MAX_CHIPS];  // total, 8 bits, chips
    for (int t = threadIdx.x; t < 9 + chips; t += blockDim.x) block_counts[t] = 0;
    __syncthreads();
    u64 total = 0, bits[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const u64 w0 = lo >> 3, w1 = (hi + 7) >> 3, nw = w1 - w0;
    for (u64 k = (u64)blockIdx.x * blockDim.x + threadIdx.x; k < nw; k += (u64)gridDim.x * blockDim.x) {
        const u64 wi = descending ? (w1 - 1 - k) : (w0 + k);
        const u64 b0 = wi << 3;
        u64 mask = ~0ull;
        if (b0 < lo) mask &= ~0ull << ((lo - b0) * 8);
        if (b0 + 8 > hi) mask &= ~0ull >> ((b0 + 8 - hi) * 8);
        u64* p = (u64*)buf + wi;
        const u64 g = base + b0;  // 8-aligned: all 8 bytes of the word are on one chip
        if (do_read) {
            const u64 v = *(volatile u64*)p;
            const u64 e = pat(g, rtile, r_addr, r_inv);
            const u64 d = (v ^ e) & mask;
            if (d) {
                u64 nz = d | (d >> 4);
                nz |= nz >> 2;
                nz |= nz >> 1;
                const u64 failing = (u64)__popcll(nz & LOW_BITS);  // failing bytes in the word
                total += failing;
#pragma unroll
                for (int b = 0; b < 8; ++b) bits[b] += (u64)__popcll((d >> b) & LOW_BITS);
                atomicAdd(&block_counts[9 + (g >> 8) % (u64)chips], failing);
                if (*(volatile u64*)nrec < limit) {  // records: global atomics only until full
                    for (int j = 0; j < 8; ++j) {
                        if (!((d >> (8 * j)) & 0xff)) continue;
                        const u64 i = atomicAdd(nrec, 1ull);
                        if (i < limit) {
                            rec_addr[i] = g + j;
                            rec_exp[i] = (unsigned char)(e >> (8 * j));
                            rec_got[i] = (unsigned char)(v >> (8 * j));
                        }
                    }
                }
            }
        }
        if (do_write) {
            const u64 nv = pat(g, wtile, w_addr, w_inv);
            *p = (mask == ~0ull) ? nv : ((*p & ~mask) | (nv & mask));
        }
    }
    if (total) {
        atomicAdd(&block_counts[0], total);
#pragma unroll
        for (int b = 0; b < 8; ++b)
            if (bits[b]) atomicAdd(&block_counts[1 + b], bits[b]);
    }
    __syncthreads();
    for (int t = threadIdx.x; t < 9 + chips; t += blockDim.x)
        if (block_counts[t]) atomicAdd(&counters[t], block_counts[t]);
}
"""


def _is_oom(err: BaseException) -> bool:
    """``cupy.cuda.Memory`` raises CUDARuntimeError(cudaErrorMemoryAllocation), pools OutOfMemoryError."""
    return isinstance(err, MemoryError) or status_of(err) == OUT_OF_MEMORY


class CudaMemory(MemoryHandle):
    """Nearly all free memory of CUDA device ``device_index`` as one tested region (module doc)."""

    def __init__(self, device_index: int = 0, reserve_bytes: int | None = None, max_bytes: int | None = None,
                 chunk_bytes: int = 1 << 30, kernel_timeout_s: float = KERNEL_TIMEOUT_S) -> None:
        cp = import_cupy()
        check_usable(device_index)
        self._cp = cp
        self.device_index = device_index
        self._timeout = kernel_timeout_s
        self._label = f"CUDA device {device_index}"
        chunk_bytes = max(TILE, chunk_bytes // TILE * TILE)
        self._blocks: list[tuple[int, int, Any]] = []  # the chunks: (global offset, bytes, uint8 ndarray)
        self._mems: list[Any] = []
        self._tiles: dict[Pattern, Any] = {}
        self._records: dict[int, tuple[Any, Any, Any]] = {}
        with cuda_errors(f"{self._label}: preparing the memory scan", device_index):
            self._dev = cp.cuda.Device(device_index)
            with self._dev:  # everything below lives on the card under test
                self._stream = cp.cuda.Stream(non_blocking=True)
                self._kernel = cp.RawModule(code=_SOURCE).get_function("march")
                self._sms = int(self._dev.attributes["MultiProcessorCount"])
                self._counters = cp.zeros(9 + MAX_CHIPS, cp.uint64)
                self._nrec = cp.zeros(1, cp.uint64)
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
        self._blocks.clear()
        self._mems.clear()
        self._tiles.clear()
        self._records.clear()
        self._counters = self._nrec = None
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

    def _wait(self, what: str) -> None:
        """Wait for everything queued on the scan's stream, KernelTimeout past the deadline."""
        done = self._cp.cuda.Event(block=False, disable_timing=True)
        done.record(self._stream)
        end = time.monotonic() + self._timeout
        while not done.done:
            if time.monotonic() > end:
                mark_poisoned(self.device_index, f"{what} hung")
                raise KernelTimeout(f"{self._label}: {what} did not finish within {self._timeout:g} s")
            time.sleep(POLL_S)

    def _run(self, offset: int, nbytes: int, expect: Pattern | None, write: Pattern | None,
             descending: bool, limit: int, chips: int) -> Mismatches:
        check_usable(self.device_index)
        chips = max(1, min(MAX_CHIPS, chips))
        limit = max(1, limit)
        label = self._label
        with self._dev, self._stream:  # current device and stream: the card under test, our stream
            with cuda_errors(f"{label}: preparing a scan pass", self.device_index):
                rec_addr, rec_exp, rec_got = self._record_buffers(limit)
                rt, ra, ri = self._tile(expect)
                wt, wa, wi = self._tile(write)
                self._counters.fill(0)
                self._nrec.fill(0)
            for base, lo, hi, arr in self._spans(offset, nbytes, descending):
                span = (base + lo, hi - lo)
                with cuda_errors(f"{label}: scanning {span[0]:#x}..{span[0] + span[1]:#x}", self.device_index, span):
                    words = (hi + 7) // 8 - lo // 8
                    blocks = int(max(1, min(-(-words // THREADS), self._sms * 32)))
                    self._kernel(
                        (blocks,), (THREADS,),
                        (arr, np.uint64(base), np.uint64(lo), np.uint64(hi),
                         rt, np.int32(ra), ri, np.int32(expect is not None),
                         wt, np.int32(wa), wi, np.int32(write is not None),
                         np.int32(descending), np.int32(chips), self._counters, self._nrec,
                         rec_addr, rec_exp, rec_got, np.uint64(limit)),
                    )
                    self._wait(f"the scan of {span[0]:#x}..{span[0] + span[1]:#x}")
            with cuda_errors(f"{label}: reading a scan pass's counts", self.device_index):
                counters = self._counters.get(stream=self._stream)
                kept = int(min(int(self._nrec.get(stream=self._stream)[0]), limit))
                m = Mismatches.empty(chips)
                m.total = int(counters[0])
                m.bit_counts = counters[1:9].astype(np.int64)
                m.chip_counts = counters[9 : 9 + chips].astype(np.int64)
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
        with self._dev, self._stream:
            for base, lo, hi, arr in self._spans(offset, data.size):
                with cuda_errors(f"{self._label}: writing {base + lo:#x}..{base + hi:#x}", self.device_index,
                                 (base + lo, hi - lo)):
                    arr[lo:hi].set(data[base + lo - offset : base + hi - offset], stream=self._stream)
                    self._wait("a write")

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        check_usable(self.device_index)
        out = np.empty(nbytes, np.uint8)
        with self._dev, self._stream:
            for base, lo, hi, arr in self._spans(offset, nbytes):
                with cuda_errors(f"{self._label}: reading {base + lo:#x}..{base + hi:#x}", self.device_index,
                                 (base + lo, hi - lo)):
                    self._wait("the work before a read")
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
        with self._dev, cuda_errors(f"{self._label}: synchronising", self.device_index):
            self._wait("the queued scan work")

    def copy_bandwidth(self, nbytes: int, repeats: int = 5) -> float:
        """Device-to-device copy bandwidth (bytes copied per second) over ``nbytes``, for the
        benchmark's reference figure: on the scan's stream, timed by events on that stream."""
        cp = self._cp
        half = min(nbytes, self._blocks[0][1] // 2) // TILE * TILE
        src, dst = self._blocks[0][2][:half], self._blocks[0][2][half : 2 * half]
        with self._dev, self._stream, cuda_errors(f"{self._label}: copy bandwidth", self.device_index):
            cp.copyto(dst, src)
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record(self._stream)
            for _ in range(repeats):
                cp.copyto(dst, src)
            end.record(self._stream)
            self._wait("the copies")
            ms = cp.cuda.get_elapsed_time(start, end)
        return half * repeats / (ms / 1e3)


def release_pools(cp: Any, dev: Any) -> None:
    """Hand the blocks CuPy's pools keep back to the driver, so the next stage (or the next loop of
    ``overnight``) can take that memory: a pool never shrinks by itself."""
    try:
        with dev:
            cp.get_default_memory_pool().free_all_blocks()
            cp.get_default_pinned_memory_pool().free_all_blocks()
    except Exception:  # noqa: BLE001 - a lost card's memory is gone anyway
        pass


def _factory(where: dict[str, Any]) -> CudaMemory:
    return CudaMemory(find_device(import_cupy(), where))


register_handle("cuda", "memory", _factory)
