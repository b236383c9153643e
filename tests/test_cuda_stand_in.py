"""The CuPy stand-in behaves like CuPy where a real card would hurt, and the GPU-marked twins check
the same behaviour on the real CuPy and a real card (``pytest -m gpu``):

- the error of failed asynchronous work surfaces at synchronisation (and in ``eventQuery``), while
  ``Event.done`` only says False: code that polls ``done`` reads an ECC error as a hang;
- leaving ``with Device(n)`` puts the previous device back with ``cudaSetDevice``, which opens a
  context there (device 0 in a fresh worker): the handles make their card current instead;
- two streams touching the same memory need an event between them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from drivers.api import KernelFault, MemoryFault
from drivers.cuda import errors
from tests import fake_cupy

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> fake_cupy.FakeCuda:
    monkeypatch.setattr(errors, "_POISONED", {})
    return fake_cupy.install(monkeypatch, 2, total=64 << 20)


def test_failed_work_is_not_done_and_raises_where_it_is_waited_for(gpus: fake_cupy.FakeCuda) -> None:
    import cupy

    from drivers.cuda.memory import CudaMemory

    m = CudaMemory(1, reserve_bytes=0, chunk_bytes=8 << 20, max_bytes=16 << 20)
    gpus.inject(1, "memset", status=700)
    with m._stream:
        cupy.cuda.runtime.memsetAsync(m._blocks[0][2].data.ptr, 0, 4096, m._stream.ptr)
    ev = cupy.cuda.Event(disable_timing=True)
    ev.record(m._stream)
    assert ev.done is False and ev.done is False  # CuPy's ``done``: eventQuery(...) == 0, never raises
    assert cupy.cuda.runtime.eventQuery(ev.ptr) == 700
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="IllegalAddress"):
        m._stream.synchronize()
    with pytest.raises(KernelFault, match="cudaErrorIllegalAddress"):  # at once, not a 60 s "hang"
        with errors.cuda_errors("waiting", 1):
            errors.wait(cupy, ev, 60.0, "the memset", 1)


def test_an_error_of_later_work_is_already_there_when_earlier_work_is_asked(gpus: fake_cupy.FakeCuda) -> None:
    """The GPU ran ahead: a sticky error from work queued after an event is what its query returns."""
    import cupy

    cupy.cuda.Device(1).use()
    s = cupy.cuda.Stream(non_blocking=True)
    buf = cupy.cuda.Memory(4096)
    first = cupy.cuda.Event()
    cupy.cuda.runtime.memsetAsync(buf.ptr, 0, 4096, s.ptr)
    first.record(s)
    gpus.inject(1, "memset", status=214)
    cupy.cuda.runtime.memsetAsync(buf.ptr, 1, 4096, s.ptr)
    assert cupy.cuda.runtime.eventQuery(first.ptr) == 214


def test_an_ecc_error_in_the_burn_s_check_is_a_memory_fault_not_a_hang(gpus: fake_cupy.FakeCuda) -> None:
    from drivers.cuda.compute import CudaCompute

    eng = CudaCompute(1).verified_gemm("fp32", 64, 3, seed=1)
    gpus.inject(1, "check_f32", status=214)
    with pytest.raises(MemoryFault):  # polling Event.done would spin to the deadline: KernelTimeout
        eng.run(4, 0.05)


def test_leaving_a_device_context_opens_one_on_the_device_put_back(gpus: fake_cupy.FakeCuda) -> None:
    import cupy

    with cupy.cuda.Device(1):
        pass
    assert gpus.contexts == {0, 1}  # cudaSetDevice(0) on the way out, as CuPy does


def test_every_handle_keeps_to_its_card(gpus: fake_cupy.FakeCuda, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("drivers.cuda.transfer.CHUNK_BYTES", 4 << 20)
    from drivers.api import Pattern
    from drivers.cuda.compute import CudaCompute
    from drivers.cuda.memory import CudaMemory
    from drivers.cuda.transfer import CudaTransfer

    m = CudaMemory(1, reserve_bytes=0, chunk_bytes=8 << 20, max_bytes=16 << 20)
    assert m.march_element(0, m.size, None, Pattern(b"\x5a")).total == 0
    m.close()
    comp = CudaCompute(1)
    comp.verified_gemm("bf16", 64, 2, seed=1).run(3, 5.0)
    comp.load(0.01)
    comp.close()
    x = CudaTransfer(1)
    x.host_to_device(1 << 20)
    x.close()
    assert gpus.contexts == {1} and gpus.pending() == []


def test_a_check_not_ordered_behind_its_product_is_a_race(gpus: fake_cupy.FakeCuda,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import cupy

    from drivers.cuda.compute import CudaCompute

    eng = CudaCompute(1).verified_gemm("fp16", 64, 2, seed=1)
    monkeypatch.setattr(cupy.cuda.Stream, "wait_event", lambda self, event: None)
    with pytest.raises(fake_cupy.Race, match="check_f32 on stream .* reads memory that stream .* writes"):
        eng.run(1, 5.0)


def test_only_registry_sources_run(gpus: fake_cupy.FakeCuda) -> None:
    import cupy

    with pytest.raises(AssertionError, match="not in drivers/cuda/kernels.py"):
        cupy.RawModule(code='extern "C" __global__ void k() {}')


# --- the same on a real card ----------------------------------------------------------------------------
def _cuda_devices() -> int:
    cp = pytest.importorskip("cupy")
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception as e:  # noqa: BLE001 - no driver: skip
        pytest.skip(f"no CUDA device ({e})")


def _fresh_process(code: str) -> dict:
    """Run ``code`` in a new Python (a fault poisons its CUDA context; a context is per process)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.gpu
def test_gpu_failed_work_is_not_done_and_raises_where_it_is_waited_for() -> None:
    if _cuda_devices() < 1:
        pytest.skip("no CUDA device")
    got = _fresh_process("""
        import json, time
        import cupy as cp
        from drivers.cuda import errors
        boom = cp.RawKernel('extern "C" __global__ void boom(unsigned long long* p) { *(volatile unsigned long long*)p = 1; }', "boom")
        s = cp.cuda.Stream(non_blocking=True)
        with s:
            boom((1,), (1,), (cp.uint64(8),))  # a write to address 8: cudaErrorIllegalAddress
        ev = cp.cuda.Event(disable_timing=True)
        ev.record(s)
        time.sleep(0.5)
        out = {"done": ev.done, "query": int(cp.cuda.runtime.eventQuery(ev.ptr))}
        try:
            with errors.cuda_errors("waiting", 0):
                errors.wait(cp, ev, 30.0, "boom", 0)
        except Exception as e:
            out["wait"] = type(e).__name__
        try:
            s.synchronize()
        except Exception as e:
            out["synchronize"] = type(e).__name__
        print(json.dumps(out))
    """)
    assert got == {"done": False, "query": 700, "wait": "KernelFault", "synchronize": "CUDARuntimeError"}


@pytest.mark.gpu
def test_gpu_leaving_a_device_context_opens_one_on_the_device_put_back() -> None:
    if _cuda_devices() < 2:
        pytest.skip("needs two CUDA devices")
    probe = """
        import json, os
        import cupy as cp
        import pynvml
        {body}
        pynvml.nvmlInit()
        mine = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            if any(p.pid == os.getpid() for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)):
                mine.append(pynvml.nvmlDeviceGetPciInfo(h).busId)
        last = cp.cuda.runtime.getDeviceCount() - 1
        print(json.dumps({{"mine": sorted(mine), "zero": cp.cuda.runtime.getDeviceProperties(0)["pciBusID"],
                          "last": cp.cuda.runtime.getDeviceProperties(last)["pciBusID"]}}))
    """
    plain = _fresh_process(probe.format(body="""
        with cp.cuda.Device(cp.cuda.runtime.getDeviceCount() - 1):
            cp.zeros(1)"""))
    assert len(plain["mine"]) == 2  # CuPy itself: a context on device 0 too
    ours = _fresh_process(probe.format(body="""
        from drivers.api import Pattern
        from drivers.cuda.compute import CudaCompute
        from drivers.cuda.memory import CudaMemory
        n = cp.cuda.runtime.getDeviceCount() - 1
        m = CudaMemory(n, max_bytes=64 << 20)
        m.march_element(0, m.size, None, Pattern(b"\\x5a"))
        CudaCompute(n).verified_gemm("fp16", 256, 2, 1).run(4, 30.0)"""))
    assert len(ours["mine"]) == 1  # only the card under test
