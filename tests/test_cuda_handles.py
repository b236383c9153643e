"""The CUDA handles (drivers/cuda/) against the strict CuPy stand-in (tests/fake_cupy.py): the card
under test is CUDA device 1, memory nearly full, pools, error mapping, transfers, and the stream
the GEMM products run and are timed on. No GPU, no CuPy needed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from drivers.api import DeviceError, DeviceLost, HostUnfit, KernelFault, KernelTimeout, MemoryFault, Pattern
from drivers.cuda import errors
from tests import fake_cupy

MIB = 1 << 20


@pytest.fixture(autouse=True)
def _fresh_contexts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "_POISONED", {})  # one worker process per test


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> fake_cupy.FakeCuda:
    return fake_cupy.install(monkeypatch, 2, total=32 * MIB)


def _memory(chunk: int = 8 * MIB, **kw: Any) -> Any:
    from drivers.cuda.memory import CudaMemory

    return CudaMemory(1, reserve_bytes=2 * MIB, chunk_bytes=chunk, **kw)


# --- placement: everything on the card under test -----------------------------------------------
def test_a_scan_of_device_1_runs_and_allocates_only_on_device_1(gpus: fake_cupy.FakeCuda) -> None:
    m = _memory()
    assert 30 * MIB - 8192 <= m.size <= 30 * MIB and len(m._mems) > 1  # all but the reserve, several chunks
    p, q = Pattern(b"\x55"), Pattern(address=True)
    m.write_pattern(0, m.size, p)
    assert m.march_element(0, m.size, p, q, descending=True).total == 0
    assert m.verify_repeat(0, m.size, q, 2).total == 0
    assert gpus.launches and all(dev == 1 and args == (1,) for _, dev, args in gpus.launches)
    assert gpus.contexts == {1}  # no context (and its ~0.5 GiB) on GPU 0
    assert gpus.pending() == []
    assert gpus.gpus[0].used == 0


def test_scan_finds_a_stuck_bit_with_its_counts(gpus: fake_cupy.FakeCuda) -> None:
    m = _memory()
    p = Pattern(b"\x55")
    m.write_pattern(0, m.size, p)
    base = next(off for off, n, _ in m._blocks if n and off > 0)
    gpus.stick(m._mems[1], 300, 1, 1)  # 0x55 has bit 1 clear: reads 0x57 there
    mm = m.march_element(0, m.size, p, None, chips=4)
    assert mm.address.tolist() == [base + 300] and mm.total == 1
    assert mm.got.tolist() == [0x57] and mm.expected.tolist() == [0x55]
    assert mm.bit_counts.tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    assert mm.chip_counts.tolist()[((base + 300) >> 8) % 4] == 1


def test_the_stage_runs_on_device_1(gpus: fake_cupy.FakeCuda) -> None:
    m = _memory(chunk=4 * MIB, max_bytes=12 * MIB)
    res = _run_memory_stage(m, ["march_c-", "address"])
    assert res.status == "pass" and res.findings == []
    assert res.metrics["bytes_tested"] == 12 * MIB
    assert gpus.contexts == {1} and gpus.pending() == []


# --- allocation near full, out of memory, pools ------------------------------------------------------
def test_near_full_memory_falls_back_to_smaller_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # memGetInfo says 1 GiB free, cudaMalloc gives 700 MiB: Memory() raises CUDARuntimeError 2
    gpus = fake_cupy.install(monkeypatch, 2, total=1 << 30)
    gpus.gpus[1].allocatable = 700 * MIB
    from drivers.cuda.memory import CudaMemory

    m = CudaMemory(1, reserve_bytes=0, chunk_bytes=256 * MIB)
    assert m.size == 640 * MIB  # 256 + 256 + 128: each chunk that did not fit was halved
    m.close()


def test_no_memory_at_all_is_no_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = fake_cupy.install(monkeypatch, 2, total=1 << 30)
    gpus.gpus[1].allocatable = 1 * MIB
    from drivers.api import BackendUnavailable
    from drivers.cuda.memory import CudaMemory

    with pytest.raises(BackendUnavailable, match="no free memory"):
        CudaMemory(1, reserve_bytes=0, chunk_bytes=256 * MIB)


def test_pools_are_emptied_when_handles_close(gpus: fake_cupy.FakeCuda) -> None:
    from drivers.cuda.compute import CudaCompute

    free0 = gpus.free(1)
    comp = CudaCompute(1)
    eng = comp.verified_gemm("fp32", 256, 2, seed=1)
    eng.run(3, 5.0)
    comp.load(0.01)
    eng.close()
    comp.close()
    assert gpus.gpus[1].pool_cached == 0 and gpus.free(1) == free0  # the next stage gets it all back
    m = _memory()
    m.march_element(0, m.size, None, Pattern(b"\x00"))
    m.close()
    assert gpus.gpus[1].pool_cached == 0 and gpus.free(1) == free0


# --- error mapping --------------------------------------------------------------------------------
def test_uncorrectable_ecc_during_a_scan_is_a_memory_fault_with_the_range(gpus: fake_cupy.FakeCuda) -> None:
    m = _memory(window_bytes=8 * MIB)  # one chunk may be in flight while the next is queued
    chunks = [(off, n) for off, n, _ in m._blocks]
    gpus.inject(1, "march", status=214, nth=2)  # the second chunk's pass
    with pytest.raises(MemoryFault) as ei:
        m.write_pattern(0, m.size, Pattern(b"\x00"))
    lo, n = ei.value.offset, ei.value.nbytes
    assert lo is not None and n is not None
    assert lo <= chunks[1][0] and lo + n >= sum(chunks[1]) and n <= 2 * 8 * MIB  # the range in flight
    with pytest.raises(DeviceError, match="unusable") as later:  # sticky: nothing more runs in this worker,
        m.march_element(0, m.size, Pattern(b"\x00"), None)
    assert not isinstance(later.value, DeviceLost)  # but the card did not leave the bus: no reseat


def test_the_memory_stage_turns_ecc_into_a_memory_finding(gpus: fake_cupy.FakeCuda) -> None:
    m = _memory(window_bytes=8 * MIB)
    chunks = [(off, n) for off, n, _ in m._blocks]
    gpus.inject(1, "march", status=214, nth=3)
    res = _run_memory_stage(m, ["march_c-"])
    (f,) = res.findings
    assert f.code == "memory.ecc_uncorrectable" and f.severity == "fail" and f.action == "reset_and_retest"
    start, n = f.evidence["range_start"], f.evidence["range_bytes"]
    assert start <= chunks[2][0] and start + n >= sum(chunks[2]) and f.location["address"] == start
    assert "bit" in f.location and "stack" in f.location
    assert res.status == "fail"


@pytest.mark.parametrize("status, exc, later", [(702, KernelTimeout, DeviceError), (700, KernelFault, DeviceError),
                                                (719, KernelFault, DeviceError), (999, DeviceLost, DeviceLost)])
def test_sticky_and_timeout_errors_in_a_scan(gpus: fake_cupy.FakeCuda, status: int, exc: type, later: type) -> None:
    m = _memory()
    gpus.inject(1, "march", status=status)
    m.write_pattern(0, m.size, Pattern(b"\x00"))  # queued: the error surfaces where the scan waits
    with pytest.raises(exc):
        m.march_element(0, m.size, Pattern(b"\x00"), None)
    with pytest.raises(later, match="unusable since") as ei:  # the context is gone for the rest of the worker
        _memory()
    assert isinstance(ei.value, DeviceLost) == (later is DeviceLost)  # only a card that left the bus is reseated


def test_a_hung_scan_kernel_is_a_kernel_timeout_not_a_blocked_worker(gpus: fake_cupy.FakeCuda) -> None:
    m = _memory(kernel_timeout_s=0.05)
    gpus.inject(1, "march", hang=True)
    m.write_pattern(0, m.size, Pattern(b"\x00"))
    with pytest.raises(KernelTimeout, match="did not finish"):  # fake_cupy.Hang if it had blocked
        m.synchronize()


def test_a_scan_launch_with_an_array_of_another_device_faults(gpus: fake_cupy.FakeCuda) -> None:
    # what the code did before: buffers made on the current device (0), the launch on device 1
    import cupy

    m = _memory()
    with cupy.cuda.Device(0):
        m._records[4096] = (cupy.zeros(4096, cupy.uint64), cupy.zeros(4096, cupy.uint8), cupy.zeros(4096, cupy.uint8))
    with pytest.raises(KernelFault, match="cudaErrorIllegalAddress"):
        m.march_element(0, m.size, Pattern(b"\x00"), None)


def test_without_a_driver_for_cuda_the_handle_says_fix_the_host(gpus: fake_cupy.FakeCuda) -> None:
    gpus.no_driver = True
    from drivers.cuda.memory import CudaMemory

    with pytest.raises(HostUnfit, match="cudaErrorInsufficientDriver"):
        CudaMemory(1)


# --- the GEMM engine: products run and are timed on the stream they wait on -------------------------
def test_bare_and_load_run_on_the_engine_stream_and_leave_nothing_queued(gpus: fake_cupy.FakeCuda) -> None:
    from drivers.cuda.compute import CudaCompute

    comp = CudaCompute(1)
    eng = comp.verified_gemm("fp16", 256, 2, seed=3)
    gpus.gemms.clear()
    flops, secs = eng.bare(4, 5.0)
    assert flops == 4 * 2 * 256**3 and secs > 0
    assert gpus.gemms == [(1, eng._gemm_stream.ptr)] * 4  # CuPy's gemmEx takes the current stream
    assert gpus.pending() == []  # waited for what it queued
    rep = comp.load(0.02)
    assert rep.flops > 0 and gpus.pending() == []
    assert all(stream == comp._load._gemm_stream.ptr for _, stream in gpus.gemms[4:])
    assert gpus.contexts == {1}
    comp.close()


def test_verified_products_are_timed_on_their_own_stream(gpus: fake_cupy.FakeCuda) -> None:
    from drivers.cuda.compute import CudaCompute

    eng = CudaCompute(1).verified_gemm("bf16", 256, 3, seed=1)
    rep = eng.run(6, 5.0)
    assert rep.products == 6 and rep.full_checks == 2 and rep.wrong_elements == 0
    assert rep.seconds == pytest.approx(6 * 2 * 256**3 / 1e14)  # the fake's device clock, not 0
    assert gpus.pending() == []
    eng.close()


def test_a_hung_product_is_a_kernel_timeout(gpus: fake_cupy.FakeCuda) -> None:
    from drivers.cuda.compute import CudaCompute

    eng = CudaCompute(1).verified_gemm("fp32", 256, 3, seed=1)
    gpus.inject(1, "gemm", hang=True)
    with pytest.raises(KernelTimeout):
        eng.bare(1, 0.05)


def test_ecc_during_the_burn_is_a_memory_fault(gpus: fake_cupy.FakeCuda) -> None:
    from drivers.cuda.compute import CudaCompute

    eng = CudaCompute(1).verified_gemm("fp32", 256, 3, seed=1)
    gpus.inject(1, "gemm", status=214)
    with pytest.raises(MemoryFault):
        eng.run(2, 5.0)


# --- transfers -----------------------------------------------------------------------------------
def test_transfer_handle_copies_on_its_device_and_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = fake_cupy.install(monkeypatch, 2, total=64 * MIB)
    monkeypatch.setattr("drivers.cuda.transfer.CHUNK_BYTES", 4 * MIB)
    from drivers.cuda.transfer import CudaTransfer

    x = CudaTransfer(1)
    up = x.host_to_device(10 * MIB)  # three copies through the 4 MiB staging buffer
    down = x.device_to_host(3 * MIB)
    assert up == pytest.approx(10 * MIB / 25e9) and down == pytest.approx(3 * MIB / 25e9)
    assert gpus.contexts == {1} and gpus.pending() == []
    with pytest.raises(ValueError, match="positive byte count"):
        x.host_to_device(0)
    gpus.inject(1, "memcpy", hang=True)
    monkeypatch.setattr("drivers.cuda.transfer.DEADLINE_FLOOR_S", 0.05)
    with pytest.raises(KernelTimeout):
        x.device_to_host(MIB)
    x.close()


def test_transfer_errors_map(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = fake_cupy.install(monkeypatch, 2, total=64 * MIB)
    monkeypatch.setattr("drivers.cuda.transfer.CHUNK_BYTES", 4 * MIB)
    from drivers.cuda.transfer import CudaTransfer

    x = CudaTransfer(1)
    gpus.inject(1, "memcpy", status=999)
    with pytest.raises(DeviceLost):
        x.host_to_device(MIB)


# --- which CUDA device a card is --------------------------------------------------------------------
def test_the_cuda_device_is_found_by_bus_id_or_uuid(gpus: fake_cupy.FakeCuda) -> None:
    import cupy

    assert errors.find_device(cupy, {"index": 0, "pci_bus_id": "00000000:19:00.0"}) == 1
    uuid = errors.uuid_text(gpus.gpus[1].uuid).upper().replace("GPU-", "GPU-")
    assert errors.find_device(cupy, {"index": 0, "uuid": uuid}) == 1
    with pytest.raises(HostUnfit, match="CUDA cannot see"):
        errors.find_device(cupy, {"index": 0, "pci_bus_id": "00000000:c1:00.0"})


def test_an_nvml_card_gets_the_cuda_device_with_its_bus_id(monkeypatch: pytest.MonkeyPatch) -> None:
    # CUDA_VISIBLE_DEVICES or another order: the H100's bus (18) is CUDA device 1 here
    gpus = fake_cupy.install(monkeypatch, [
        fake_cupy.Gpu(1 << 30, "0000:3b:00.0", bytes(16)),
        fake_cupy.Gpu(1 << 30, "0000:18:00.0", bytes(range(16))),
    ])
    from tests.test_nvml_backend import H100, open_first

    _fake, dev = open_first(monkeypatch, H100)
    mem = dev.memory
    assert mem is not None and mem.device_index == 1
    assert dev.compute is not None and dev.transfer is not None
    assert gpus.contexts == {1}
    dev.close()


def _run_memory_stage(mem: Any, algorithms: list[str], **params: Any) -> Any:
    from drivers.api import Device, WallClock
    from drivers.profiles import load_profile
    from stress.base import StageContext, get_stage

    class Gpu(Device):
        backend = "test"
        clock = WallClock()
        memory = mem  # type: ignore[assignment]

        def identity(self):  # noqa: ANN202
            from drivers.api import Identity

            return Identity("nvidia", "fake", "gpu", memory_total_mib=mem.size >> 20)

        def telemetry(self):  # noqa: ANN202
            raise NotImplementedError

        def counters(self):  # noqa: ANN202
            raise NotImplementedError

        def events(self):  # noqa: ANN202
            return []

    stage = get_stage("memory")
    p = stage.Params(**{"algorithms": algorithms, "powerup_check": False, "backgrounds": ["55"], **params})
    return stage().run(StageContext(device=Gpu(), profile=load_profile("h100-sxm5-80gb"), params=p, serial="gpu"))


def test_fake_arrays_refuse_implicit_numpy_conversion(gpus: fake_cupy.FakeCuda) -> None:
    import cupy

    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(cupy.zeros(4))
