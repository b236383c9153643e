"""Simulated matrix engine of a mock card: exact numpy products on simulated time.

Each product advances the card's physics by what it would take on the real card at the current
clock (``2mnk / (target x clock_ratio x slow_factor)``), so throughput follows throttling the way
it does on hardware. Faults act here, where the burn-in meets them through the same calls it
makes on a real card: ``compute.sdc`` flips one bit of one element of the result,
``compute.hang`` turns every launch into a watchdog timeout (in simulated time: nothing blocks),
``compute.slow`` scales throughput without any throttle reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from drivers.api import ComputeHandle, KernelTimeout, LoadReport, Unsupported
from drivers.mock import faults as F
from drivers.mock.physics import MAX_STEP_FRACTION_OF_TAU, CardPhysics

_NUMPY_DTYPES = {np.dtype(np.float16): "fp16", np.dtype(np.float32): "fp32", np.dtype(np.float64): "fp64"}
# what a product of each datatype returns (tensor cores accumulate fp16/bf16 into fp32)
RESULT_DTYPES = {"fp16": np.float32, "bf16": np.float32, "fp32": np.float32, "fp64": np.float64}
_UINT = {4: np.uint32, 8: np.uint64}


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (round to nearest even), kept as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


class MockCompute(ComputeHandle):
    """ComputeHandle of a mock card (built lazily by MockDevice.compute)."""

    def __init__(
        self,
        physics: CardPhysics,
        faults: Sequence[F.Fault],
        rng: np.random.Generator,
        guard: Callable[[], None] = lambda: None,
    ) -> None:
        self._ph = physics
        self._rng = rng
        self._guard = guard
        self._sdc = [f for f in faults if isinstance(f, F.ComputeSdc)]
        self._hang_at = min((f.at_s for f in faults if isinstance(f, F.ComputeHang)), default=None)
        self._slow = 1.0
        for f in faults:
            if isinstance(f, F.ComputeSlow):
                self._slow *= f.factor
        self.products = 0  # every product asked for counts once (compute.sdc every N)

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(self._ph.profile.compute.dtypes)

    # helpers ------------------------------------------------------------------------------------
    def _rate(self, dtype: str) -> float:
        """FLOP/s a product of ``dtype`` runs at right now."""
        target = self._ph.profile.compute.target[dtype]
        return target * 1e12 * max(self._ph.clock_ratio, 1e-6) * self._slow

    def _hung(self) -> bool:
        return self._hang_at is not None and self._ph.t >= self._hang_at

    def _dtype_of(self, a: np.ndarray, dtype: str | None) -> str:
        name = dtype if dtype is not None else _NUMPY_DTYPES.get(a.dtype)
        if name is None:
            raise ValueError(f"matmul: unsupported array dtype {a.dtype} (pass dtype=...)")
        if name not in self._ph.profile.compute.target:
            raise Unsupported(
                f"{self._ph.profile.name}: no {name} matrix products (have: {', '.join(self.dtypes)})"
            )
        return name

    def _corrupt(self, c: np.ndarray) -> None:
        """compute.sdc: one bit of one element flips (in the result's own encoding)."""
        for f in self._sdc:
            if f.above_temp_c is not None and self._ph.temperature <= f.above_temp_c:
                continue
            if f.every is not None:
                hit = self.products % f.every == 0
            else:
                hit = bool(self._rng.random() < (f.probability or 0.0))
            if not hit:
                continue
            flat = c.reshape(-1).view(_UINT[c.itemsize])
            idx = int(self._rng.integers(flat.size))
            bit = int(self._rng.integers(c.itemsize * 8))
            flat[idx] ^= flat.dtype.type(1 << bit)
            return  # one element of a product

    # API ----------------------------------------------------------------------------------------
    def matmul(
        self, a: np.ndarray, b: np.ndarray, timeout_s: float = 60.0, dtype: str | None = None
    ) -> np.ndarray:
        self._guard()
        a = np.asarray(a)
        b = np.asarray(b)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not make a matrix product")
        if timeout_s <= 0:
            raise ValueError(f"matmul: timeout_s must be > 0, got {timeout_s}")
        name = self._dtype_of(a, dtype)
        if self._hung():
            self._ph.advance(timeout_s, 1.0)  # the watchdog waits out its deadline, in sim time
            raise KernelTimeout(f"{name} product did not finish within {timeout_s:g} s")
        m, k = a.shape
        n = b.shape[1]
        seconds = 2.0 * m * n * k / self._rate(name)
        if seconds > timeout_s:
            self._ph.advance(timeout_s, 1.0)
            raise KernelTimeout(f"{name} product needs {seconds:.3g} s, over its {timeout_s:g} s deadline")
        self.products += 1
        self._ph.advance(seconds, 1.0)
        a64 = a.astype(np.float64)
        b64 = b.astype(np.float64)
        if name == "bf16":
            a64 = round_to_bf16(a64.astype(np.float32)).astype(np.float64)
            b64 = round_to_bf16(b64.astype(np.float32)).astype(np.float64)
        c = np.ascontiguousarray((a64 @ b64).astype(RESULT_DTYPES[name]))
        self._corrupt(c)
        return c

    def load(self, seconds: float, intensity: float = 1.0) -> LoadReport:
        self._guard()
        if seconds < 0 or not 0.0 <= intensity <= 1.0:
            raise ValueError(f"load: need seconds >= 0 and 0 <= intensity <= 1, got {seconds}, {intensity}")
        ph = self._ph
        dtype = self.dtypes[0]
        step_max = ph.profile.thermal.tau * MAX_STEP_FRACTION_OF_TAU
        flops = energy = done = 0.0
        throttle: set[str] = set()
        while done < seconds - 1e-12:
            if self._hung():
                ph.advance(seconds - done, intensity)
                raise KernelTimeout(f"load kernels stopped completing at {self._hang_at:g} s")
            step = min(step_max, seconds - done)
            if self._hang_at is not None and ph.t < self._hang_at < ph.t + step:
                step = self._hang_at - ph.t
            ph.advance(step, intensity)
            self._guard()
            flops += self._rate(dtype) * intensity * step
            energy += ph.power_w * step
            throttle |= ph.throttle
            done += step
        mean = energy / seconds if seconds > 0 else ph.power_w
        return LoadReport(seconds=seconds, flops=flops, mean_power_w=mean, throttle=frozenset(throttle))
