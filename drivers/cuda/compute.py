"""Compute on real NVIDIA cards through CuPy and cuBLAS (the optional ``[cuda]`` extra).

``CudaCompute`` is a ComputeHandle (``matmul`` from host arrays, ``load``) that also offers
``verified_gemm``: an engine that keeps its operands, their exact product and its checksums on
the GPU, runs ``cublasGemmEx`` products (fp16/bf16 inputs accumulate and store in fp32, fp32 and
fp64 as they are), checks every product's row checksums with one fused reduction over the result
(no copy to the host), and every ``full_check_every`` products compares the whole result with
the reference bit for bit. Only on a mismatch are the wrong elements located and copied back.

Results are checked one chunk behind the GPU: chunk ``j`` is queued before the host looks at
chunk ``j-1``, so the GPU never waits for Python; the two chunks use separate result buffers,
so a bad product is still there to be located. The watchdog is an event polled against a
deadline: a kernel that never completes raises KernelTimeout instead of blocking the worker.

CuPy is imported lazily: the stage registry imports this module on hosts without a GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.abft import ElementError, entry_max, flipped_bits
from drivers.api import ComputeHandle, DeviceError, KernelTimeout, LoadReport
from drivers.cuda.errors import check_usable, cuda_errors, find_device, import_cupy, mark_poisoned
from drivers.registry import register_handle
from drivers.verified_gemm import MAX_EXAMPLES, BatchReport

# cudaDataType_t / cublasComputeType_t / cublasOperation_t values (cuBLAS headers, CUDA >= 11)
CUDA_R_16F, CUDA_R_32F, CUDA_R_64F, CUDA_R_16BF = 2, 0, 1, 14
CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_64F = 68, 70
CUBLAS_OP_N, CUBLAS_GEMM_DEFAULT, CUBLAS_POINTER_MODE_HOST = 0, -1, 0
DTYPES = ("fp16", "bf16", "fp32", "fp64")
DEFAULT_SIZE = 8192
MIN_SIZE = 256
POOL = 2  # operand pairs per engine
CHUNK = 2  # products per chunk (result buffers: 2 x CHUNK)
POLL_S = 0.0002
NAN_BITS = "0x7ff8000000000000LL"
# the ABFT row sum's map: an exact small integer stays, anything else (wrong, NaN, Inf) is NaN
ROWSUM_MAP = f"(isfinite((double)x) && (double)x == rint((double)x)) ? (double)x : __longlong_as_double({NAN_BITS})"


@dataclass(frozen=True)
class _Kind:
    """How one datatype travels through cublasGemmEx."""

    in_type: int
    out_type: int
    compute: int
    storage: str  # cupy dtype of the operands on the device (bf16 as its raw bits)
    out: str  # cupy dtype of the result
    scale: type  # numpy type of alpha/beta


_KINDS = {
    "fp16": _Kind(CUDA_R_16F, CUDA_R_32F, CUBLAS_COMPUTE_32F, "float16", "float32", np.float32),
    "bf16": _Kind(CUDA_R_16BF, CUDA_R_32F, CUBLAS_COMPUTE_32F, "uint16", "float32", np.float32),
    "fp32": _Kind(CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, "float32", "float32", np.float32),
    "fp64": _Kind(CUDA_R_64F, CUDA_R_64F, CUBLAS_COMPUTE_64F, "float64", "float64", np.float64),
}


def _kind(dtype: str) -> _Kind:
    if dtype not in _KINDS:
        raise ValueError(f"unknown datatype {dtype!r} (have: {', '.join(DTYPES)})")
    return _KINDS[dtype]


def bf16_bits_host(x: np.ndarray) -> np.ndarray:
    """float values -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


class _Gemm:
    """Row-major ``C = A @ B`` through cublasGemmEx on one stream (column-major ``C^T = B^T A^T``)."""

    def __init__(self, cp: Any, stream: Any, dtype: str) -> None:
        from cupy_backends.cuda.libs import cublas

        self._cp = cp
        self._cublas = cublas
        self._stream = stream
        self.kind = _kind(dtype)
        self._one: np.ndarray = np.ones(1, dtype=self.kind.scale)
        self._zero: np.ndarray = np.zeros(1, dtype=self.kind.scale)

    def __call__(self, a: Any, b: Any, c: Any) -> None:
        m, k = a.shape
        n = b.shape[1]
        k_ = self.kind
        # CuPy's gemmEx points the cuBLAS handle at the *current* stream on every call (whatever
        # setStream said), so the product is queued on our stream only while it is current
        with self._stream:
            handle = self._cp.cuda.device.get_cublas_handle()
            self._cublas.setStream(handle, self._stream.ptr)
            self._cublas.setPointerMode(handle, CUBLAS_POINTER_MODE_HOST)
            self._cublas.gemmEx(
                handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k,
                self._one.ctypes.data, b.data.ptr, k_.in_type, n,
                a.data.ptr, k_.in_type, k,
                self._zero.ctypes.data, c.data.ptr, k_.out_type, n,
                k_.compute, CUBLAS_GEMM_DEFAULT,
            )


def _wait(event: Any, deadline_s: float, what: str, device: int = -1) -> None:
    """Poll ``event`` until done; KernelTimeout past the deadline (never blocks on a hung kernel)."""
    end = time.monotonic() + deadline_s
    while not event.done:
        if time.monotonic() > end:
            mark_poisoned(device, f"{what} hung")
            raise KernelTimeout(f"{what} did not finish within {deadline_s:g} s")
        time.sleep(POLL_S)


class CudaGemmEngine:
    """Verified products of one datatype on the GPU (see the module docstring)."""

    def __init__(self, cp: Any, device_id: int, dtype: str, size: int | None, full_check_every: int,
                 seed: int) -> None:
        if full_check_every < 1:
            raise ValueError(f"full_check_every must be >= 1, got {full_check_every}")
        self.dtype = dtype
        self._cp = cp
        self._id = device_id
        check_usable(device_id)
        self._dev = cp.cuda.Device(device_id)
        self._every = full_check_every
        self._n = 0
        with self._dev, cuda_errors(f"CUDA device {device_id}: preparing {dtype} products", device_id):
            self.size = size or self._fit_size(dtype)
            self._stream = cp.cuda.Stream(non_blocking=True)
            self._gemm = _Gemm(cp, self._stream, dtype)
            self._rowsum = cp.ReductionKernel("T x", "float64 y", ROWSUM_MAP, "a + b", "y = a", "0",
                                              "burnin_abft_rowsum")
            rs = cp.random.RandomState(seed)
            with self._stream:
                self._pool = [self._operands(rs) for _ in range(POOL)]
            n = self.size
            out = self._gemm.kind.out
            self._c = [[cp.empty((n, n), dtype=out) for _ in range(CHUNK)] for _ in range(2)]
            self._rows = [[cp.empty(n, dtype=cp.float64) for _ in range(CHUNK)] for _ in range(2)]
            self._flags = [cp.zeros(2 * CHUNK, dtype=cp.int64) for _ in range(2)]  # row fails, full fails
            import cupyx

            self._host = [cupyx.empty_pinned((2 * CHUNK,), dtype=np.int64) for _ in range(2)]
            self._done = [cp.cuda.Event(block=False, disable_timing=True) for _ in range(2)]
            self._ev = [[(cp.cuda.Event(), cp.cuda.Event()) for _ in range(CHUNK)] for _ in range(2)]
            self._dev.synchronize()

    def _fit_size(self, dtype: str) -> int:
        """Largest power-of-two size up to DEFAULT_SIZE whose buffers fit in half the free memory."""
        free, _ = self._cp.cuda.runtime.memGetInfo()
        k = self._gemm_kind_bytes(dtype)
        n = DEFAULT_SIZE
        while n > MIN_SIZE and n * n * k > free / 2:
            n //= 2
        return n

    @staticmethod
    def _gemm_kind_bytes(dtype: str) -> int:
        """Bytes per n^2 the engine holds: operands, reference, result buffers, setup temporaries."""
        kind = _kind(dtype)
        ins = np.dtype(kind.storage).itemsize
        outs = np.dtype(kind.out).itemsize
        return POOL * (2 * ins + outs) + 2 * CHUNK * outs + 3 * 8

    def _operands(self, rs: Any) -> tuple[Any, Any, Any, Any]:
        """(A, B, reference C in the result dtype, expected row sums), all on the device."""
        cp = self._cp
        n = self.size
        s = entry_max(self.dtype, n)
        a64 = rs.randint(1, s + 1, size=(n, n)).astype(cp.float64)
        b64 = rs.randint(1, s + 1, size=(n, n)).astype(cp.float64)
        ref64 = a64 @ b64  # DGEMM of small integers: exact, and a different kernel from the one tested
        rows = a64 @ b64.sum(axis=1)  # A (B 1): the checksum, by a third path
        if not bool(cp.all(ref64.sum(axis=1) == rows)):
            raise DeviceError(f"the fp64 reference product for {self.dtype} disagrees with its checksums")
        kind = self._gemm.kind

        def conv(x: Any) -> Any:
            if self.dtype == "bf16":  # small integers: the top 16 bits of float32 are exact bf16
                return (x.astype(cp.float32).view(cp.uint32) >> 16).astype(cp.uint16)
            return x.astype(kind.storage)

        a, b, ref = conv(a64), conv(b64), ref64.astype(kind.out)
        del a64, b64, ref64
        return a, b, ref, rows

    # running ------------------------------------------------------------------------------------
    def _enqueue(self, half: int, count: int) -> list[int]:
        """Queue ``count`` products (and their checks) into result half ``half``."""
        flags = self._flags[half]
        indices: list[int] = []
        with self._stream:  # every kernel and copy below is ordered on this one stream
            flags.fill(0)
            self._enqueue_products(half, count, flags, indices)
            flags.get(stream=self._stream, out=self._host[half], blocking=False)  # async: pinned memory
            self._done[half].record(self._stream)
        return indices

    def _enqueue_products(self, half: int, count: int, flags: Any, indices: list[int]) -> None:
        cp = self._cp
        for q in range(count):
            a, b, ref, rows = self._pool[self._n % POOL]
            c = self._c[half][q]
            start, end = self._ev[half][q]
            start.record(self._stream)
            self._gemm(a, b, c)
            end.record(self._stream)
            self._rowsum(c, axis=1, out=self._rows[half][q])
            flags[q] = cp.count_nonzero(self._rows[half][q] != rows)
            self._n += 1
            if self._n % self._every == 0:
                u = cp.uint64 if c.dtype.itemsize == 8 else cp.uint32
                flags[CHUNK + q] = cp.count_nonzero(c.view(u) != ref.view(u)) + 1  # +1: "was checked"
            indices.append(self._n - 1)

    def _collect(self, half: int, indices: list[int], deadline_s: float, rep: BatchReport) -> None:
        _wait(self._done[half], deadline_s, f"a {self.dtype} {self.size}x{self.size} product", self._id)
        host = self._host[half].copy()
        n = self.size
        for q, index in enumerate(indices):
            start, end = self._ev[half][q]
            rep.seconds += self._cp.cuda.get_elapsed_time(start, end) / 1e3
            rep.products += 1
            rep.flops += 2.0 * n * n * n
            row_fails, full = int(host[q]), int(host[CHUNK + q])
            rep.full_checks += full > 0
            if row_fails or full > 1:
                found = self._locate(half, q, index, rep, deadline_s)
                rep.bad_products += found > 0

    def _locate(self, half: int, q: int, index: int, rep: BatchReport, deadline_s: float) -> int:
        """Wrong elements of one product: bad rows compared bit for bit with the reference."""
        cp = self._cp
        a, b, ref, rows = self._pool[index % POOL]
        c = self._c[half][q]
        u = cp.uint64 if c.dtype.itemsize == 8 else cp.uint32
        idle = cp.cuda.Event(block=False, disable_timing=True)
        idle.record(self._stream)  # the chunk queued behind this one must finish first
        _wait(idle, deadline_s, f"a {self.dtype} {self.size}x{self.size} product", self._id)
        with self._stream:
            bad = cp.flatnonzero(self._rows[half][q] != rows)
            if int(bad.size) == 0:  # a full-check failure the row sums missed: compare everything
                bad = cp.arange(self.size)
            diff = c[bad].view(u) != ref[bad].view(u)
            rr, cc = cp.nonzero(diff)
            count = int(rr.size)
            take = min(count, max(0, MAX_EXAMPLES - len(rep.errors)))
            rr, cc = rr[:take], cc[:take]
            r_idx = bad[rr]
            got = c[r_idx, cc].get()
            want = ref[r_idx, cc].get()
            r_host, c_host = r_idx.get(), cc.get()
            nonfinite = int(cp.count_nonzero(~cp.isfinite(c[bad]))) if count else 0
        for r, col, g, w in zip(r_host.tolist(), c_host.tolist(), got.tolist(), want.tolist(), strict=True):
            rep.errors.append(ElementError(self.dtype, index, r, col, float(w), float(g),
                                           flipped_bits(w, g, c.dtype), not np.isfinite(g)))
        rep.wrong_elements += count
        rep.nonfinite += nonfinite
        return count

    def run(self, products: int, timeout_s: float) -> BatchReport:
        rep = BatchReport(self.dtype)
        pending: tuple[int, list[int]] | None = None
        half = 0
        left = products
        check_usable(self._id)
        with self._dev, cuda_errors(f"CUDA device {self._id}: {self.dtype} burn-in", self._id):
            while left > 0 or pending is not None:
                queued = None
                if left > 0:
                    count = min(CHUNK, left)
                    queued = (half, self._enqueue(half, count))
                    left -= count
                    half ^= 1
                if pending is not None:
                    # everything queued so far must finish: the older chunk and the one just queued
                    in_flight = len(pending[1]) + (len(queued[1]) if queued else 0)
                    self._collect(pending[0], pending[1], timeout_s * in_flight, rep)
                pending = queued
        return rep

    def bare(self, products: int, timeout_s: float) -> tuple[float, float]:
        """Unchecked products on the same operands and buffers: (flops, wall seconds). For bench/
        and ``load``. Queued, timed and waited for on the engine's one stream, so nothing is
        left queued behind the call and a hung product is KernelTimeout."""
        check_usable(self._id)
        with self._dev, cuda_errors(f"CUDA device {self._id}: {self.dtype} bare products", self._id):
            t0 = time.perf_counter()
            with self._stream:
                for i in range(products):
                    a, b, _, _ = self._pool[i % POOL]
                    self._gemm(a, b, self._c[0][i % CHUNK])
                done = self._cp.cuda.Event(block=False, disable_timing=True)
                done.record(self._stream)
            _wait(done, timeout_s * max(1, products), f"{products} bare {self.dtype} products", self._id)
            return 2.0 * self.size**3 * products, time.perf_counter() - t0

    def close(self) -> None:
        self._pool = []
        self._c = []
        self._rows = []
        self._flags = []
        self._host = []
        from drivers.cuda.memory import release_pools

        release_pools(self._cp, self._dev)


class CudaCompute(ComputeHandle):
    """One NVIDIA GPU's matrix engine for the burn-in (the nvml backend's ``compute`` handle)."""

    def __init__(self, index: int = 0, dtypes: tuple[str, ...] = DTYPES) -> None:
        self._cp = import_cupy()
        self._index = index
        check_usable(index)
        with cuda_errors(f"CUDA device {index}: opening it", index):
            self._dev = self._cp.cuda.Device(index)
            self._dev.use()  # the card under test is this worker's current device, never device 0
            from cupy_backends.cuda.libs import cublas  # noqa: F401 - missing cuBLAS: say so now
        self._dtypes = tuple(d for d in dtypes if d in _KINDS)
        self._load: CudaGemmEngine | None = None

    @property
    def dtypes(self) -> tuple[str, ...]:
        return self._dtypes

    def verified_gemm(self, dtype: str, size: int | None, full_check_every: int, seed: int) -> CudaGemmEngine:
        return CudaGemmEngine(self._cp, self._index, dtype, size, full_check_every, seed)

    def matmul(self, a: np.ndarray, b: np.ndarray, timeout_s: float = 60.0, dtype: str | None = None) -> np.ndarray:
        a = np.asarray(a)
        b = np.asarray(b)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not make a matrix product")
        name = dtype or {np.dtype(np.float16): "fp16", np.dtype(np.float32): "fp32",
                         np.dtype(np.float64): "fp64"}.get(a.dtype)
        if name is None:
            raise ValueError(f"matmul: unsupported array dtype {a.dtype} (pass dtype=...)")
        cp = self._cp
        kind = _kind(name)
        check_usable(self._index)
        with self._dev, cuda_errors(f"CUDA device {self._index}: {name} matmul", self._index):
            stream = cp.cuda.Stream(non_blocking=True)
            with stream:
                if name == "bf16":
                    da, db = cp.asarray(bf16_bits_host(a)), cp.asarray(bf16_bits_host(b))
                else:
                    da, db = cp.asarray(a, dtype=kind.storage), cp.asarray(b, dtype=kind.storage)
                c = cp.empty((a.shape[0], b.shape[1]), dtype=kind.out)
                _Gemm(cp, stream, name)(da, db, c)
                done = cp.cuda.Event(block=False, disable_timing=True)
                done.record(stream)
            _wait(done, timeout_s, f"a {name} product", self._index)
            return c.get(stream=stream)

    def load(self, seconds: float, intensity: float = 1.0) -> LoadReport:
        """Back-to-back unchecked products for ``seconds`` (duty-cycled below full intensity)."""
        if seconds < 0 or not 0.0 < intensity <= 1.0:
            raise ValueError(f"load: need seconds >= 0 and 0 < intensity <= 1, got {seconds}, {intensity}")
        if self._load is None:
            self._load = self.verified_gemm(self._dtypes[0], None, 1 << 30, 0)
        t0 = time.perf_counter()
        flops = 0.0
        per = None
        while time.perf_counter() - t0 < seconds:
            n = 1 if per is None else max(1, int(0.05 / max(per, 1e-6)))
            f, busy = self._load.bare(n, 60.0)
            per = busy / n
            flops += f
            if intensity < 1.0:
                time.sleep(busy * (1.0 - intensity) / intensity)
        return LoadReport(seconds=time.perf_counter() - t0, flops=flops)

    def close(self) -> None:
        if self._load is not None:
            self._load.close()
            self._load = None


def _factory(where: dict[str, Any]) -> CudaCompute:
    return CudaCompute(find_device(import_cupy(), where))


register_handle("cuda", "compute", _factory)
