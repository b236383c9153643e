"""Verified-product engines: run N matrix products of one datatype and check every one.

An engine owns a small pool of operand pairs (with their exact products and checksums), runs
products round-robin over the pool, checks each one's row checksums (ABFT) and, every
``full_check_every`` products, compares the whole result with the reference. A device that can
do this on its own side (``drivers.cuda.compute``: checksums computed on the GPU, no copy of the
result) offers ``verified_gemm``; any other ComputeHandle gets ``HostGemmEngine``, which checks
on the host what ``matmul`` returns (the mock cards, whose products are small).
"""

from __future__ import annotations

import numpy as np

from drivers.abft import Comparison, Operands, bad_rows, compare_rows, make_operands
from drivers.api import Clock, ComputeHandle, Device
from drivers.verified_gemm import MAX_EXAMPLES, BatchReport, VerifiedGemm, VerifiedGemmProvider


class HostGemmEngine:
    """Products through ``ComputeHandle.matmul``, checked on the host."""

    DEFAULT_SIZE = 64  # mock cards: small products keep hundreds of them cheap
    POOL = 4

    def __init__(self, handle: ComputeHandle, clock: Clock, dtype: str, size: int | None,
                 full_check_every: int, rng: np.random.Generator) -> None:
        if full_check_every < 1:
            raise ValueError(f"full_check_every must be >= 1, got {full_check_every}")
        self.dtype = dtype
        self.size = size or self.DEFAULT_SIZE
        self._handle = handle
        self._clock = clock
        self._every = full_check_every
        self._pool: list[Operands] = [
            make_operands(dtype, self.size, self.size, self.size, rng) for _ in range(self.POOL)
        ]
        self._n = 0

    def run(self, products: int, timeout_s: float) -> BatchReport:
        rep = BatchReport(self.dtype)
        cmp = Comparison()
        for _ in range(products):
            ops = self._pool[self._n % len(self._pool)]
            t0 = self._clock.now()
            c = self._handle.matmul(ops.a, ops.b, timeout_s=timeout_s, dtype=self.dtype)
            rep.seconds += self._clock.now() - t0
            index = self._n
            self._n += 1
            rep.products += 1
            rep.flops += ops.flops
            c = np.asarray(c)
            if c.shape != ops.reference.shape:
                raise ValueError(f"{self.dtype} product came back {c.shape}, expected {ops.reference.shape}")
            rows = bad_rows(c, ops)
            full = self._n % self._every == 0
            rep.full_checks += full
            if rows.size or full:
                found = compare_rows(c, ops, None if full else rows, index, MAX_EXAMPLES, cmp)
                rep.bad_products += found > 0
        rep.wrong_elements = cmp.wrong
        rep.nonfinite = cmp.nonfinite
        rep.errors = cmp.examples
        return rep

    def close(self) -> None:
        self._pool.clear()


def open_engine(device: Device, dtype: str, size: int | None, full_check_every: int,
                seed: int) -> VerifiedGemm:
    """The device's own verified engine where it has one, else the host-checked one."""
    handle = device.compute
    if handle is None:
        raise ValueError("the device offers no compute handle")
    if isinstance(handle, VerifiedGemmProvider):
        return handle.verified_gemm(dtype, size, full_check_every, seed)
    return HostGemmEngine(handle, device.clock, dtype, size, full_check_every, np.random.default_rng(seed))
