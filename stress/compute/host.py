"""The host CPU as a ComputeHandle (numpy/BLAS): a reference point for bench/burn.py.

Not a device under test: it gives the benchmark a real, wall-clock matrix engine on a machine
without a GPU, so the verification overhead of the host-checked engine can be measured.
"""

from __future__ import annotations

import time

import numpy as np

from drivers.api import ComputeHandle, KernelTimeout, LoadReport

_OUT = {"fp16": np.float32, "bf16": np.float32, "fp32": np.float32, "fp64": np.float64}


class HostCompute(ComputeHandle):
    """numpy products in float32/float64 (fp16/bf16 computed in float32, as the API says)."""

    @property
    def dtypes(self) -> tuple[str, ...]:
        return ("fp32", "fp64")

    def matmul(self, a: np.ndarray, b: np.ndarray, timeout_s: float = 60.0, dtype: str | None = None) -> np.ndarray:
        name = dtype or ("fp64" if np.asarray(a).dtype == np.float64 else "fp32")
        out = _OUT[name]
        t0 = time.perf_counter()
        c = np.asarray(a, dtype=out) @ np.asarray(b, dtype=out)
        if time.perf_counter() - t0 > timeout_s:
            raise KernelTimeout(f"host {name} product took over {timeout_s:g} s")
        return c

    def load(self, seconds: float, intensity: float = 1.0) -> LoadReport:
        a = np.ones((256, 256), dtype=np.float32)
        t0 = time.perf_counter()
        flops = 0.0
        while time.perf_counter() - t0 < seconds:
            _ = a @ a
            flops += 2.0 * 256**3
        return LoadReport(seconds=time.perf_counter() - t0, flops=flops)
