"""Every CUDA source burnin runs on a GPU, in one registry: name -> source file, options, entry points.

The handles load their kernels only through ``load`` (a CuPy ``RawModule`` of the registered
source and options, nothing generated around it), so what runs on a card is exactly what
``tests/test_cuda_kernels.py`` compiles with NVRTC for every architecture a bench sees, with no
GPU. (CuPy's Elementwise/ReductionKernel wrap hand-written C in code of their own and rename its
identifiers: the ABFT row sum once compiled in no test and failed on the first real card.)

Failures to build or load a kernel are the harness's or the host's, never the card's: a source
that does not compile is ``harness.kernel_unavailable``, a driver that cannot load what NVRTC
made is ``host.driver_old`` (both ``HostUnfit``, ``fix_host``), see ``drivers.cuda.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from drivers.cuda.errors import cuda_errors

# what every kernel is built with: C++17, and no fast-math (the checks compare exact values)
OPTIONS = ("--std=c++17",)
# what the compile test builds for: A100 (sm_80), L40S/RTX 4090 (sm_89), H100/H200 (sm_90),
# B200 (sm_100), and PTX for anything newer (the driver compiles it)
ARCHS = ("sm_80", "sm_89", "sm_90", "sm_100", "compute_80")


@dataclass(frozen=True)
class KernelSource:
    """One CUDA module: its source file under ``drivers/cuda/cu/``, options and entry points."""

    name: str
    file: str
    entries: tuple[str, ...]
    options: tuple[str, ...] = OPTIONS

    @property
    def source(self) -> str:
        return resources.files("drivers.cuda").joinpath("cu", self.file).read_text(encoding="utf-8")


KERNELS: dict[str, KernelSource] = {
    k.name: k
    for k in (
        KernelSource("memscan", "memscan.cu", ("march",)),
        KernelSource("abft", "abft.cu", ("operands_f16", "operands_bf16", "operands_f32", "operands_f64",
                                         "check_f32", "check_f64")),
    )
}


def load(cp: Any, name: str, device: int) -> dict[str, Any]:
    """The entry points of registered module ``name`` on the current device (which must be the
    card under test), compiled (CuPy caches the binary) and loaded now, so that a kernel that does
    not compile or load fails here, as a HostUnfit naming the module, and not mid-stage."""
    k = KERNELS[name]
    with cuda_errors(f"CUDA device {device}: loading burnin's {name} kernels ({k.file})", device, kernel=name):
        module = cp.RawModule(code=k.source, options=k.options)
        return {e: module.get_function(e) for e in k.entries}
