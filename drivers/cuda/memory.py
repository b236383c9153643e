"""The memory scan primitives as CUDA kernels, through CuPy (optional extra: ``pip install .[cuda]``).

``CudaMemory(device_index)`` is a drivers.api.MemoryHandle over (nearly) all free memory of one
NVIDIA GPU: plain ``cudaMalloc`` chunks (``cupy.cuda.Memory``, never managed memory, never the
pool), leaving ``reserve_bytes`` free for the driver and other contexts. Offsets are byte
offsets into that region, chunks laid end to end. The stage and algorithms of stress/memory
run on it unchanged; the nvml backend hands it out as ``Device.memory``.

Kernels follow cuda_memtest (NCSA): one thread per 64-bit word in a grid-stride loop,
patterns generated on the device from a 4 KiB tile or the word's own offset, mismatches counted
with atomics (total, per bit, per chip) and the first ``limit`` recorded. A March element
visits words ascending or descending by thread index; a GPU runs many at once, so the strict
per-address order of the model holds per thread, not across the grid (as in cuda_memtest).
Repeated reads are whole passes, so each re-read comes from DRAM, not from a cache.
cupy is imported only inside functions: this module is imported on hosts without a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drivers.api import BackendUnavailable, MemoryHandle, Mismatches, Pattern
from drivers.registry import register_handle
from drivers.units import MIB

TILE = 4096  # repeating patterns are tiled to this many bytes on the device
THREADS = 256

_SOURCE = r"""
typedef unsigned long long u64;

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
    const u64 w0 = lo >> 3, w1 = (hi + 7) >> 3, nw = w1 - w0;
    for (u64 k = (u64)blockIdx.x * blockDim.x + threadIdx.x; k < nw; k += (u64)gridDim.x * blockDim.x) {
        const u64 wi = descending ? (w1 - 1 - k) : (w0 + k);
        const u64 b0 = wi << 3;
        u64 mask = ~0ull;
        if (b0 < lo) mask &= ~0ull << ((lo - b0) * 8);
        if (b0 + 8 > hi) mask &= ~0ull >> ((b0 + 8 - hi) * 8);
        u64* p = (u64*)buf + wi;
        const u64 g = base + b0;
        if (do_read) {
            const u64 v = *(volatile u64*)p;
            const u64 e = pat(g, rtile, r_addr, r_inv);
            const u64 d = (v ^ e) & mask;
            if (d) {
                for (int j = 0; j < 8; ++j) {
                    const unsigned int db = (unsigned int)((d >> (8 * j)) & 0xff);
                    if (!db) continue;
                    atomicAdd(&counters[0], 1ull);
                    for (int b = 0; b < 8; ++b)
                        if (db >> b & 1) atomicAdd(&counters[1 + b], 1ull);
                    atomicAdd(&counters[9 + ((g + j) >> 8) % (u64)chips], 1ull);
                    const u64 i = atomicAdd(nrec, 1ull);
                    if (i < limit) {
                        rec_addr[i] = g + j;
                        rec_exp[i] = (unsigned char)(e >> (8 * j));
                        rec_got[i] = (unsigned char)(v >> (8 * j));
                    }
                }
            }
        }
        if (do_write) {
            const u64 nv = pat(g, wtile, w_addr, w_inv);
            *p = (mask == ~0ull) ? nv : ((*p & ~mask) | (nv & mask));
        }
    }
}
"""


def _cupy() -> Any:
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the host
        raise BackendUnavailable("CuPy is not installed: pip install 'burnin[cuda]' (cupy-cuda12x)") from e
    return cupy


class CudaMemory(MemoryHandle):
    """Nearly all free memory of GPU ``device_index`` as one tested region (see module doc)."""

    def __init__(self, device_index: int = 0, reserve_bytes: int | None = None, max_bytes: int | None = None,
                 chunk_bytes: int = 1 << 30) -> None:
        cp = _cupy()
        self._cp = cp
        self.device_index = device_index
        self._dev = cp.cuda.Device(device_index)
        chunk_bytes = max(TILE, chunk_bytes // TILE * TILE)
        self._chunks: list[tuple[int, int, Any]] = []  # (global offset, bytes, uint8 ndarray)
        self._mems: list[Any] = []
        with self._dev:
            free, total = cp.cuda.runtime.memGetInfo()
            reserve = reserve_bytes if reserve_bytes is not None else max(256 * MIB, total // 100)
            want = max(0, free - reserve)
            if max_bytes is not None:
                want = min(want, max_bytes)
            want = want // TILE * TILE
            off = 0
            while off < want:
                n = min(chunk_bytes, want - off)
                try:
                    m = cp.cuda.Memory(n)  # cudaMalloc: plain device memory, not managed, not pooled
                except cp.cuda.memory.OutOfMemoryError:
                    if n <= 64 * MIB:
                        break
                    chunk_bytes = n // 2 // TILE * TILE
                    continue
                self._mems.append(m)
                self._chunks.append((off, n, cp.ndarray((n,), cp.uint8, cp.cuda.MemoryPointer(m, 0))))
                off += n
            self._size = off
            if not self._size:
                raise BackendUnavailable(f"GPU {device_index}: no free memory to test ({free} B free)")
            self._kernel = cp.RawModule(code=_SOURCE).get_function("march")
            self._sms = self._dev.attributes["MultiProcessorCount"]
            self._tiles: dict[Pattern, Any] = {}
            self._counters = cp.zeros(9 + 256, cp.uint64)
            self._nrec = cp.zeros(1, cp.uint64)

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        """Give the memory back to the driver."""
        self._chunks.clear()
        self._mems.clear()
        self._tiles.clear()

    # plumbing ----------------------------------------------------------------------------------------
    def _spans(self, offset: int, nbytes: int, descending: bool = False) -> list[tuple[int, int, int, Any]]:
        """(chunk base, local lo, local hi, array) for each chunk the range overlaps, in order."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self._size:
            raise ValueError(f"GPU {self.device_index}: range {offset:#x}+{nbytes:#x} is outside 0..{self._size:#x}")
        out = []
        for base, n, arr in self._chunks:
            lo, hi = max(offset, base), min(offset + nbytes, base + n)
            if lo < hi:
                out.append((base, lo - base, hi - base, arr))
        return out[::-1] if descending else out

    def _tile(self, p: Pattern | None) -> tuple[Any, int, int]:
        cp = self._cp
        if p is None or p.address:
            key = Pattern(b"\x00")
        else:
            key = Pattern(p.repeat)
        t = self._tiles.get(key)
        if t is None:
            t = self._tiles[key] = cp.asarray(key.expand(0, TILE).view(np.uint64))
        inv = np.uint64(0xFFFFFFFFFFFFFFFF) if (p is not None and p.invert) else np.uint64(0)
        return t, int(bool(p is not None and p.address)), inv

    def _run(self, offset: int, nbytes: int, expect: Pattern | None, write: Pattern | None,
             descending: bool, limit: int, chips: int) -> Mismatches:
        cp = self._cp
        chips = max(1, min(256, chips))
        limit = max(1, limit)
        rec_addr = cp.zeros(limit, cp.uint64)
        rec_exp = cp.zeros(limit, cp.uint8)
        rec_got = cp.zeros(limit, cp.uint8)
        rt, ra, ri = self._tile(expect)
        wt, wa, wi = self._tile(write)
        with self._dev:
            self._counters.fill(0)
            self._nrec.fill(0)
            for base, lo, hi, arr in self._spans(offset, nbytes, descending):
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
            counters = self._counters.get()
            kept = int(min(int(self._nrec.get()[0]), limit))
            m = Mismatches.empty(chips)
            m.total = int(counters[0])
            m.bit_counts = counters[1:9].astype(np.int64)
            m.chip_counts = counters[9 : 9 + chips].astype(np.int64)
            if kept:
                a = rec_addr[:kept].get().astype(np.int64)
                order = np.argsort(a, kind="stable")
                m.address = a[order]
                m.expected = rec_exp[:kept].get()[order]
                m.got = rec_got[:kept].get()[order]
                m.hits = np.ones(kept, np.int64)
            return m

    # MemoryHandle ------------------------------------------------------------------------------------
    def write(self, offset: int, data: np.ndarray, descending: bool = False) -> None:
        data = np.ascontiguousarray(data, dtype=np.uint8).ravel()
        with self._dev:
            for base, lo, hi, arr in self._spans(offset, data.size):
                arr[lo:hi].set(data[base + lo - offset : base + hi - offset])

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        out = np.empty(nbytes, np.uint8)
        with self._dev:
            for base, lo, hi, arr in self._spans(offset, nbytes):
                out[base + lo - offset : base + hi - offset] = arr[lo:hi].get()
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
        with self._dev:
            self._cp.cuda.runtime.deviceSynchronize()

    def copy_bandwidth(self, nbytes: int, repeats: int = 5) -> float:
        """Device-to-device copy bandwidth (bytes copied per second) over ``nbytes``, for the
        benchmark's reference figure."""
        cp = self._cp
        half = min(nbytes, self._chunks[0][1] // 2) // TILE * TILE
        src, dst = self._chunks[0][2][:half], self._chunks[0][2][half : 2 * half]
        with self._dev:
            cp.copyto(dst, src)
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            for _ in range(repeats):
                cp.copyto(dst, src)
            end.record()
            end.synchronize()
            ms = cp.cuda.get_elapsed_time(start, end)
        return half * repeats / (ms / 1e3)


register_handle("cuda", "memory", CudaMemory)
