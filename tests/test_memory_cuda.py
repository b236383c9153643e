"""The CUDA path of the memory scan (skipped cleanly without CuPy or a GPU)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from drivers.api import Pattern


def test_module_imports_without_cupy() -> None:
    mod = importlib.import_module("drivers.cuda.memory")
    assert "cupy" not in mod.__dict__ and hasattr(mod, "CudaMemory")


def _gpu_memory(mib: int = 64):  # noqa: ANN202 - CudaMemory only exists with cupy
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except cp.cuda.runtime.CUDARuntimeError:
        pytest.skip("no CUDA driver")
    from drivers.cuda.memory import CudaMemory

    last = cp.cuda.runtime.getDeviceCount() - 1  # the last card: device index != 0 where there are two
    return CudaMemory(last, max_bytes=mib << 20, chunk_bytes=16 << 20, window_bytes=32 << 20)  # several chunks


def test_kernels_match_the_model_on_the_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    from drivers.cuda import errors
    from drivers.cuda.memory import CudaMemory
    from tests import fake_cupy

    monkeypatch.setattr(errors, "_POISONED", {})
    fake_cupy.install(monkeypatch, 2, total=128 << 20)
    _kernels_match_the_model(CudaMemory(1, max_bytes=4 << 20, chunk_bytes=1 << 20, reserve_bytes=0,
                                        window_bytes=2 << 20))


@pytest.mark.gpu
def test_kernels_match_the_model() -> None:
    _kernels_match_the_model(_gpu_memory())


def _kernels_match_the_model(m) -> None:  # noqa: ANN001 - a CudaMemory (only exists with cupy)
    n = m.size
    chunk = m._blocks[0][1]
    assert n == 4 * chunk and len(m._blocks) == 4
    for p in (Pattern(b"\x55"), Pattern(address=True), Pattern(b"\x01\x02\x03\x04", invert=True)):
        m.write_pattern(0, n, p)
        assert np.array_equal(m.read(n - 4096, 4096), p.expand(n - 4096, 4096))
        assert m.march_element(0, n, p, None).total == 0
    p, q = Pattern(b"\x0f"), Pattern(b"\x0f", invert=True)
    m.write_pattern(0, n, p)
    bad = [0, 5, chunk - 1, chunk, n - 1]  # chunk edges, first and last byte
    for a in bad:
        m.write(a, np.array([0x0f ^ 0x21], np.uint8))
    mm = m.march_element(0, n, p, q, descending=True, chips=5)
    assert mm.address.tolist() == bad and mm.total == len(bad)
    assert mm.bit_counts.tolist() == [len(bad), 0, 0, 0, 0, len(bad), 0, 0]
    assert mm.chip_counts.sum() == len(bad) and mm.chip_counts[0] == 3
    assert m.march_element(3, n - 9, q, p).total == 0  # an unaligned range: edges masked
    assert m.march_element(0, n, p, None).address.tolist() == [0, 1, 2] + list(range(n - 6, n))
    m.write_pattern(0, n, p)
    for a in bad:
        m.write(a, np.array([0x0f ^ 0x80], np.uint8))
    rep = m.verify_repeat(0, n, p, 4)
    assert rep.address.tolist() == bad and rep.hits.tolist() == [4] * len(bad) and rep.total == 4 * len(bad)
    m.close()


@pytest.mark.gpu
def test_memory_stage_runs_on_the_gpu() -> None:
    """The stage over the real kernels, through the same stand-in device as the stand-in's test
    (an identity, no telemetry): every algorithm of quick, plus the bandwidth loop."""
    from tests.test_cuda_handles import _run_memory_stage

    mem = _gpu_memory(256)
    res = _run_memory_stage(mem, ["march_c-", "address", "repeated_reads", "bandwidth"],
                            repeat_reads=8, bandwidth_s=1.0, backgrounds=["00", "55", "33", "0f"])
    assert res.status == "pass" and res.findings == []
    assert res.metrics["bytes_tested"] == 256 << 20 and res.metrics["gbps"] > 50
    mem.close()
