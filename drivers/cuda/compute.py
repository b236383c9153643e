"""Compute on real NVIDIA cards through CuPy and cuBLAS (the optional ``[cuda]`` extra).

``CudaCompute`` is a ComputeHandle (``matmul`` from host arrays, ``load``) that also offers
``verified_gemm``: an engine that keeps its operands, their exact product and its checksums on
the GPU, runs ``cublasGemmEx`` products (fp16/bf16 inputs accumulate and store in fp32, fp32 and
fp64 as they are) and checks every one with the ``abft`` kernels of the registry
(``drivers/cuda/cu/abft.cu``): each product's row sums against its ABFT checksums, every
``full_check_every``-th product bit for bit against the reference, and only where something
is wrong are the wrong elements counted and the first few recorded, on the device.

Built for throughput (bench/burn.py: verified >= 0.95 of the bare product): products queue on
one stream and checks on another of lower priority, so a check (one read of the result,
memory-bound) runs beside the next product (compute-bound) in the SMs it leaves idle; a ring of
``RING`` result buffers, ordered by events, keeps a result until its check has read it. The host never looks at a single product: each batch of
``BATCH`` products ends in one small report copied to pinned memory, and the host waits for a
batch only when ``AHEAD`` batches are queued, so the GPU never waits for Python. A wait is a
deadline (``drivers.cuda.errors.wait``): a product that never completes is KernelTimeout, a
CUDA error of the queued work surfaces at once.

CuPy is imported lazily: the stage registry imports this module on hosts without a GPU.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.abft import ElementError, entry_max
from drivers.api import ComputeHandle, DeviceError, LoadReport
from drivers.cuda import kernels
from drivers.cuda.errors import check_usable, cuda_errors, find_device, import_cupy, on_card, use_card, wait
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
RING = 3  # result buffers: a product's result stays until its check has read it
BATCH = 4  # products per report (one copy to the host)
AHEAD = 3  # batches queued before the host waits for the oldest
FLAGS = 3  # abft.cu: per product: bad rows, wrong elements, wrong NaN/Inf elements
REC = 5  # abft.cu: per record: product in batch, row, column, bits got, bits wanted
CHECK_THREADS = 256
CHECK_BLOCKS_PER_SM = 8
SETUP_TIMEOUT_S = 120.0
HIGH_PRIORITY = -5  # the products' stream (CUDA clamps it to the device's greatest priority)
REPORT_WORDS = BATCH * FLAGS + 1 + MAX_EXAMPLES * REC
_SUFFIX = {"fp16": "f16", "bf16": "bf16", "fp32": "f32", "fp64": "f64"}


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


class _Batch:
    """One batch's report (device words and their pinned host copy) and its events."""

    def __init__(self, cp: Any) -> None:
        import cupyx

        self.dev = cp.zeros(REPORT_WORDS, dtype=cp.uint64)
        self.host: np.ndarray = cupyx.empty_pinned((REPORT_WORDS,), dtype=np.uint64)
        self.timing = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(BATCH)]
        self.done = cp.cuda.Event(block=False, disable_timing=True)


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
        self._every = full_check_every
        self._n = 0
        self._pool: list[tuple[Any, Any, Any, Any]] = []
        self._c: list[Any] = []
        self._batches: list[_Batch] = []
        with cuda_errors(f"CUDA device {device_id}: preparing {dtype} products", device_id):
            self._dev = use_card(cp, device_id)
            self.size = size or self._fit_size(dtype)
            self._kernels = kernels.load(cp, "abft", device_id)
            self._sms = int(self._dev.attributes["MultiProcessorCount"])
            # products first: a check's blocks fill the SMs a product leaves idle (its waves' tails)
            # and never delay it; the ring makes the products wait only if checks fall RING behind
            self._gemm_stream = cp.cuda.Stream(non_blocking=True, priority=HIGH_PRIORITY)
            self._check_stream = cp.cuda.Stream(non_blocking=True, priority=0)
            self._gemm = _Gemm(cp, self._gemm_stream, dtype)
            agree: list[Any] = []
            n = self.size
            with self._gemm_stream:  # everything set up on one stream, waited for below
                self._pool = [self._operands(seed * POOL + i, agree) for i in range(POOL)]
                self._c = [cp.empty((n, n), dtype=self._gemm.kind.out) for _ in range(RING)]
                self._batches = [_Batch(cp) for _ in range(AHEAD + 1)]
            self._made = [cp.cuda.Event(block=False, disable_timing=True) for _ in range(RING)]
            self._checked = [cp.cuda.Event(block=False, disable_timing=True) for _ in range(RING)]
            self._used = [False] * RING
            self._next_batch = 0
            ready = cp.cuda.Event(block=False, disable_timing=True)
            ready.record(self._gemm_stream)
            wait(cp, ready, SETUP_TIMEOUT_S, f"CUDA device {device_id}: preparing the {dtype} operands", device_id)
            for i, ok in enumerate(agree):
                if not bool(ok.get(stream=self._gemm_stream)):
                    raise DeviceError(f"CUDA device {device_id}: the fp64 reference product {i} for {dtype} "
                                      "disagrees with its checksums")

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
        """Bytes per n^2 the engine holds: operands, reference, result ring, setup temporaries."""
        kind = _kind(dtype)
        ins = np.dtype(kind.storage).itemsize
        outs = np.dtype(kind.out).itemsize
        return POOL * (2 * ins + outs) + RING * outs + 3 * 8

    def _operands(self, seed: int, agree: list[Any]) -> tuple[Any, Any, Any, Any]:
        """(A, B, reference C in the result dtype, expected row sums), all on the device, queued on
        the current stream; ``agree`` gets a device flag: the reference's row sums match the
        checksums computed by another path (checked once the setup is done)."""
        cp = self._cp
        n = self.size
        kind = self._gemm.kind
        s = np.uint32(entry_max(self.dtype, n))
        fill = self._kernels[f"operands_{_SUFFIX[self.dtype]}"]
        blocks = (max(1, min(-(-n * n // CHECK_THREADS), self._sms * CHECK_BLOCKS_PER_SM)),)
        made = []
        for half in range(2):
            x64 = cp.empty((n, n), dtype=cp.float64)
            tag = np.uint64((2 * seed + half) & 0xFFFFFFFFFFFFFFFF)
            if self.dtype == "fp64":
                fill(blocks, (CHECK_THREADS,), (x64, np.uint64(n * n), tag, s))
                made.append((x64, x64))
            else:
                x = cp.empty((n, n), dtype=kind.storage)
                fill(blocks, (CHECK_THREADS,), (x, x64, np.uint64(n * n), tag, s))
                made.append((x, x64))
        (a, a64), (b, b64) = made
        ref64 = a64 @ b64  # DGEMM of small integers: exact, and a different kernel from the one tested
        rows = a64 @ b64.sum(axis=1)  # A (B 1): the checksum, by a third path
        agree.append(cp.all(ref64.sum(axis=1) == rows))
        ref = ref64 if self.dtype == "fp64" else ref64.astype(kind.out)
        return a, b, ref, rows

    # running ------------------------------------------------------------------------------------
    def _check(self, c: Any, ref: Any, rows: Any, full: bool, batch: _Batch, q: int) -> None:
        """Queue the check of one product (on the current stream: the check stream)."""
        n = self.size
        fn = self._kernels["check_f64" if c.dtype.itemsize == 8 else "check_f32"]
        blocks = (max(1, min(n, self._sms * CHECK_BLOCKS_PER_SM)),)
        fn(blocks, (CHECK_THREADS,), (c, ref, rows, np.uint64(n), np.int32(full), batch.dev, np.uint64(q),
                                     batch.dev[BATCH * FLAGS :], np.uint64(MAX_EXAMPLES)))

    def _enqueue(self, batch: _Batch, count: int) -> list[tuple[int, bool]]:
        """Queue ``count`` products, their checks and the batch's report; (index, full check) of each."""
        cp = self._cp
        gs, cs = self._gemm_stream, self._check_stream
        items: list[tuple[int, bool]] = []
        cp.cuda.runtime.memsetAsync(batch.dev.data.ptr, 0, batch.dev.nbytes, cs.ptr)
        for q in range(count):
            i, r = self._n, self._n % RING
            a, b, ref, rows = self._pool[i % POOL]
            full = (i + 1) % self._every == 0
            c = self._c[r]
            with gs:  # the product: not before the check of the last product in this buffer has read it
                if self._used[r]:
                    gs.wait_event(self._checked[r])
                start, end = batch.timing[q]
                start.record(gs)
                self._gemm(a, b, c)
                end.record(gs)
                self._made[r].record(gs)
            with cs:  # its check: after the product, overlapping the next one
                cs.wait_event(self._made[r])
                self._check(c, ref, rows, full, batch, q)
                self._checked[r].record(cs)
            self._used[r] = True
            self._n += 1
            items.append((i, full))
        batch.dev.get(stream=cs, out=batch.host, blocking=False)  # async: pinned memory
        batch.done.record(cs)
        return items

    def _collect(self, batch: _Batch, items: list[tuple[int, bool]], deadline_s: float, rep: BatchReport) -> None:
        what = f"CUDA device {self._id}: {self.dtype} {self.size}x{self.size} products"
        wait(self._cp, batch.done, deadline_s, what, self._id)
        host = batch.host.copy()
        n = self.size
        for q, (_, full) in enumerate(items):
            start, end = batch.timing[q]
            rep.seconds += self._cp.cuda.get_elapsed_time(start, end) / 1e3
            rep.products += 1
            rep.flops += 2.0 * n * n * n
            rep.full_checks += full
            wrong, nonfinite = int(host[FLAGS * q + 1]), int(host[FLAGS * q + 2])
            rep.wrong_elements += wrong
            rep.nonfinite += nonfinite
            rep.bad_products += wrong > 0
        out = np.dtype(self._gemm.kind.out)
        uint = np.uint64 if out.itemsize == 8 else np.uint32
        recorded = int(host[BATCH * FLAGS])
        for k in range(min(recorded, MAX_EXAMPLES)):
            if len(rep.errors) >= MAX_EXAMPLES:
                break
            q, row, col, got, want = (int(x) for x in host[BATCH * FLAGS + 1 + REC * k : BATCH * FLAGS + 1 + REC * (k + 1)])
            if q >= len(items):
                continue
            actual = float(np.array([got], dtype=np.uint64).astype(uint).view(out)[0])
            expected = float(np.array([want], dtype=np.uint64).astype(uint).view(out)[0])
            bits = tuple(i for i in range(out.itemsize * 8) if (got ^ want) >> i & 1)
            rep.errors.append(ElementError(self.dtype, items[q][0], row, col, expected, actual, bits,
                                           not np.isfinite(actual)))

    def run(self, products: int, timeout_s: float) -> BatchReport:
        rep = BatchReport(self.dtype)
        pending: deque[tuple[_Batch, list[tuple[int, bool]]]] = deque()
        left = products
        check_usable(self._id)
        with cuda_errors(f"CUDA device {self._id}: {self.dtype} burn-in", self._id):
            on_card(self._cp, self._dev)
            while left > 0 or pending:
                if left > 0 and len(pending) <= AHEAD:
                    batch = self._batches[self._next_batch]
                    self._next_batch = (self._next_batch + 1) % len(self._batches)
                    count = min(BATCH, left)
                    pending.append((batch, self._enqueue(batch, count)))
                    left -= count
                    if len(pending) <= AHEAD and left > 0:
                        continue  # keep queuing: the GPU must never wait for the host
                batch, items = pending.popleft()  # the oldest: its products are the next in line
                self._collect(batch, items, timeout_s * len(items), rep)
        return rep

    def bare(self, products: int, timeout_s: float) -> tuple[float, float]:
        """Unchecked products on the same operands and buffers: (flops, wall seconds). For bench/
        and ``load``. Queued on the engine's product stream and waited for there, so nothing is
        left queued behind the call and a hung product is KernelTimeout."""
        cp = self._cp
        check_usable(self._id)
        gs = self._gemm_stream
        with cuda_errors(f"CUDA device {self._id}: {self.dtype} bare products", self._id):
            on_card(cp, self._dev)
            t0 = time.perf_counter()
            with gs:
                for i in range(products):
                    r = i % RING
                    if self._used[r]:  # a check may still be reading it (ordered, never raced)
                        gs.wait_event(self._checked[r])
                    a, b, _, _ = self._pool[i % POOL]
                    self._gemm(a, b, self._c[r])
                done = cp.cuda.Event(block=False, disable_timing=True)
                done.record(gs)
            wait(cp, done, timeout_s * max(1, products), f"{products} bare {self.dtype} products", self._id)
            return 2.0 * self.size**3 * products, time.perf_counter() - t0

    def close(self) -> None:
        self._pool = []
        self._c = []
        self._batches = []
        from drivers.cuda.memory import release_pools

        release_pools(self._cp, self._dev)


class CudaCompute(ComputeHandle):
    """One NVIDIA GPU's matrix engine for the burn-in (the nvml backend's ``compute`` handle)."""

    def __init__(self, index: int = 0, dtypes: tuple[str, ...] = DTYPES) -> None:
        self._cp = import_cupy()
        self._index = index
        check_usable(index)
        with cuda_errors(f"CUDA device {index}: opening it", index):
            self._dev = use_card(self._cp, index)  # the card under test is this worker's current device
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
        with cuda_errors(f"CUDA device {self._index}: {name} matmul", self._index):
            on_card(cp, self._dev)
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
            wait(cp, done, timeout_s, f"CUDA device {self._index}: a {name} product", self._index)
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
