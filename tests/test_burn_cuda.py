"""The CuPy/cuBLAS path: imports cleanly without CuPy; on a real GPU, verified products work."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from drivers.api import BackendUnavailable
from drivers.cuda import compute as cuda_compute
from drivers.verified_gemm import VerifiedGemmProvider

HAVE_CUPY = importlib.util.find_spec("cupy") is not None


@pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed here")
def test_without_cupy_the_handle_says_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="CuPy"):
        cuda_compute.CudaCompute(0)


def test_bf16_host_conversion_rounds_to_nearest_even() -> None:
    x = np.array([1.0, 3.0, 256.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8], dtype=np.float32)
    bits = cuda_compute.bf16_bits_host(x)
    back = (bits.astype(np.uint32) << 16).view(np.float32)
    assert back.tolist() == [1.0, 3.0, 256.0, 1.0, 1.0 + 2**-6]


def _gpu() -> cuda_compute.CudaCompute:
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as e:  # noqa: BLE001 - no driver: skip
        pytest.skip(f"no CUDA device ({e})")
    return cuda_compute.CudaCompute(0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32", "fp64"])
def test_gpu_verified_products_are_clean_and_corruption_is_located(dtype: str) -> None:
    comp = _gpu()
    assert isinstance(comp, VerifiedGemmProvider)
    eng = comp.verified_gemm(dtype, 512, 3, seed=1)
    rep = eng.run(7, 30.0)
    assert rep.products == 7 and rep.full_checks == 2 and rep.wrong_elements == 0 and rep.seconds > 0
    # shift the expected answer of pair 0 at (11, 5): the GPU's (right) result now "differs" there
    a, b, ref, rows = eng._pool[0]
    ref[11, 5] += 1.0
    rows[11] += 1.0
    eng._n = 0
    rep = eng.run(1, 30.0)
    assert rep.bad_products == 1 and rep.wrong_elements == 1
    e = rep.errors[0]
    assert (e.row, e.col, e.product) == (11, 5, 0) and e.actual == e.expected - 1.0 and e.bits
    ref[11, 5] -= 1.0
    rows[11] -= 1.0
    import cupy as cp

    flops, seconds = eng.bare(4, 30.0)
    assert flops == 4 * 2 * 512**3 and seconds > 0
    assert eng._stream.done and cp.cuda.Stream.null.done  # nothing left queued, on any stream
    eng.close()


@pytest.mark.gpu
def test_gpu_matmul_and_load() -> None:
    comp = _gpu()
    a = np.arange(64 * 32, dtype=np.float32).reshape(64, 32) % 7
    b = np.arange(32 * 16, dtype=np.float32).reshape(32, 16) % 5
    for d in ("fp16", "bf16", "fp32", "fp64"):
        c = comp.matmul(a, b, dtype=d)
        assert np.array_equal(c, a.astype(np.float64) @ b.astype(np.float64))
    rep = comp.load(0.5, 1.0)
    assert rep.flops > 0 and rep.seconds >= 0.5
    import cupy as cp

    assert comp._load is not None and comp._load._stream.done and cp.cuda.Stream.null.done
    comp.close()
