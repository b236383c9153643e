"""Every CUDA source of the project compiles with NVRTC for the cards a bench sees (A100 sm_80,
L40S/RTX 4090 sm_89, H100 sm_90), without warnings: no GPU needed, only CuPy and the NVRTC wheel
(``pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12``); skipped where they are not installed."""

from __future__ import annotations

import pytest

ARCHS = ("sm_80", "sm_89", "sm_90")


def _nvrtc():  # noqa: ANN202
    pytest.importorskip("cupy", reason="CuPy is not installed")
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as e:  # noqa: BLE001 - no NVRTC library: skip
        pytest.skip(f"NVRTC is not loadable ({type(e).__name__}: {e})")
    return nvrtc


def _sources() -> dict[str, str]:
    from drivers.cuda import compute, memory

    out = {"memory.march": memory._SOURCE}
    for t in ("float", "double"):  # the row-sum map over a product (fp32 or fp64), as CuPy instantiates it
        out[f"compute.rowsum<{t}>"] = (
            f'extern "C" __global__ void k(const {t}* xs, double* ys, unsigned long long n) {{\n'
            "  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;"
            " i += (unsigned long long)gridDim.x * blockDim.x) {\n"
            f"    {t} x = xs[i]; ys[i] = {compute.ROWSUM_MAP}; }} }}\n"
        )
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_every_cuda_source(arch: str) -> None:
    nvrtc = _nvrtc()
    for name, src in _sources().items():
        prog = nvrtc.createProgram(src, f"{name}.cu", [], [])
        try:
            try:
                nvrtc.compileProgram(prog, [f"-arch={arch}", "--std=c++17"])
            except nvrtc.NVRTCError as e:
                pytest.fail(f"{name} for {arch}: {e}\n{nvrtc.getProgramLog(prog)}")
            log = nvrtc.getProgramLog(prog).strip()
            assert "warning" not in log.lower(), f"{name} for {arch}: {log}"
            assert len(nvrtc.getCUBIN(prog)) > 1000
        finally:
            nvrtc.destroyProgram(prog)


def test_nvrtc_scan_kernel_counts_per_block_before_global_atomics() -> None:
    """A dead chip makes every byte fail: with per-byte global atomics on ~10 shared counters the
    pass crawls past its deadline. The kernel must sum per thread and per block (shared memory)
    and touch global memory atomically only for the record slot and one flush per counter."""
    nvrtc = _nvrtc()
    from drivers.cuda import memory

    prog = nvrtc.createProgram(memory._SOURCE, "march.cu", [], [])
    try:
        nvrtc.compileProgram(prog, ["-arch=compute_90", "--std=c++17"])
        ptx = nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    import re

    targets = {m.group(1) for ln in ptx.splitlines() if "atom.global" in ln or "red.global" in ln
               for m in [re.search(r"\[([^\]]+)\]", ln)] if m}
    assert "atom.shared" in ptx or "red.shared" in ptx
    assert len(targets) <= 2, targets  # global atomics on two addresses: the record slot, the per-block flush
