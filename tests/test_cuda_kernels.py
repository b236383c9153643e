"""Every CUDA source burnin runs is a registry entry (drivers/cuda/kernels.py), and every entry
compiles with NVRTC, without warnings, for the cards a bench sees (A100 sm_80, L40S/RTX 4090 sm_89,
H100/H200 sm_90, B200 sm_100) and as PTX, with no GPU: NVRTC from CuPy or from the
``nvidia-cuda-nvrtc-cu12`` wheel (``.ci/run`` installs the wheel, so CI compiles them); the
compile tests are skipped where neither is installed (the README's test command)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from drivers.cuda.kernels import ARCHS, KERNELS
from tests import fake_cupy, nvrtc

ROOT = Path(__file__).resolve().parent.parent


@cache
def _nvrtc() -> nvrtc.Nvrtc | None:
    return nvrtc.load()


@cache
def _compiled(name: str, arch: str) -> nvrtc.Compiled:
    lib = _nvrtc()
    assert lib is not None
    k = KERNELS[name]
    return lib.compile(k.source, k.file, [f"-arch={arch}", *k.options])


def _need_nvrtc() -> nvrtc.Nvrtc:
    lib = _nvrtc()
    if lib is None:
        pytest.skip("NVRTC is not installed (pip install nvidia-cuda-nvrtc-cu12)")
    if lib.version < (12, 8):  # sm_100 needs NVRTC 12.8
        pytest.skip(f"NVRTC {lib.version} predates sm_100")
    return lib


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_registry_entry_compiles_for_every_architecture(name: str) -> None:
    _need_nvrtc()
    for arch in ARCHS:
        out = _compiled(name, arch)
        assert out.ok, f"{name} for {arch}:\n{out.log}"
        assert "warning" not in out.log.lower(), f"{name} for {arch}: {out.log}"
        assert len(out.binary) > 1000, f"{name} for {arch}: no code"
    ptx = _compiled(name, "compute_80").binary.decode()
    for entry in KERNELS[name].entries:
        assert re.search(rf"\.entry\s+{entry}\s*\(", ptx), f"{name}: no entry point {entry} in the PTX"


def test_the_scan_counts_per_block_before_global_atomics() -> None:
    """A dead chip makes every byte fail: with per-byte global atomics on ~10 shared counters the
    pass crawls past its deadline. The kernel counts in shared memory per block and touches
    global memory atomically only for the record slot and one flush per counter and block."""
    _need_nvrtc()
    ptx = _compiled("memscan", "compute_80").binary.decode()
    glob = [ln.strip() for ln in ptx.splitlines() if re.match(r"\s*(atom|red)\.global", ln)]
    flushes = [ln for ln in glob if not ln.endswith(", 1;")]  # the rest take a record slot (+1 each)
    assert "atom.shared" in ptx or "red.shared" in ptx
    assert len(flushes) == 1, flushes  # one flush per counter and block, in one loop
    assert "ld.global.cg.v2.u64" in ptx and "st.global.cg.v2.u64" in ptx  # 16-byte loads and stores


def test_every_entry_point_is_in_its_source_and_modelled_by_the_stand_in() -> None:
    entries = set()
    for k in KERNELS.values():
        for e in k.entries:
            assert re.search(rf'extern "C" __global__ void (__launch_bounds__\(\d+\) )?{e}\(', k.source), (k.name, e)
            entries.add(e)
    assert entries == set(fake_cupy._MODELS)


def test_no_cuda_source_outside_the_registry() -> None:
    """Kernels come from the registry only: no CuPy kernel class that wraps hand-written C, no
    RawModule/RawKernel of a source of its own anywhere else in the project."""
    allowed = {ROOT / "drivers" / "cuda" / "kernels.py"}
    for pkg in ("drivers", "stress", "harness", "bench"):
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"\b(ElementwiseKernel|ReductionKernel|RawKernel|RawModule)\b", text) or path in allowed, (
                f"{path.relative_to(ROOT)} defines CUDA code outside drivers/cuda/kernels.py")
