"""The CuPy stand-in (tests/fake_cupy.py) and the CUDA status codes of drivers/cuda/errors.py,
checked against the installed CuPy (skipped where CuPy is not installed, as in CI)."""

from __future__ import annotations

import importlib
import inspect

import pytest

from drivers.cuda import errors
from tests import fake_cupy

# constant in drivers/cuda/errors.py -> the name CUDA gives that status
CUDA_NAMES = {
    "OUT_OF_MEMORY": "cudaErrorMemoryAllocation", "INITIALIZATION_ERROR": "cudaErrorInitializationError",
    "CUDART_UNLOADING": "cudaErrorCudartUnloading", "STUB_LIBRARY": "cudaErrorStubLibrary",
    "INSUFFICIENT_DRIVER": "cudaErrorInsufficientDriver", "DEVICES_UNAVAILABLE": "cudaErrorDevicesUnavailable",
    "NO_DEVICE": "cudaErrorNoDevice", "INVALID_DEVICE": "cudaErrorInvalidDevice",
    "NO_KERNEL_IMAGE": "cudaErrorNoKernelImageForDevice", "INVALID_PTX": "cudaErrorInvalidPtx",
    "JIT_COMPILER_NOT_FOUND": "cudaErrorJitCompilerNotFound", "UNSUPPORTED_PTX_VERSION": "cudaErrorUnsupportedPtxVersion",
    "JIT_COMPILATION_DISABLED": "cudaErrorJitCompilationDisabled", "NOT_READY": "cudaErrorNotReady",
    "ECC_UNCORRECTABLE": "cudaErrorECCUncorrectable", "NVLINK_UNCORRECTABLE": "cudaErrorNvlinkUncorrectable",
    "ILLEGAL_ADDRESS": "cudaErrorIllegalAddress", "LAUNCH_TIMEOUT": "cudaErrorLaunchTimeout",
    "ASSERT": "cudaErrorAssert", "HARDWARE_STACK_ERROR": "cudaErrorHardwareStackError",
    "ILLEGAL_INSTRUCTION": "cudaErrorIllegalInstruction", "MISALIGNED_ADDRESS": "cudaErrorMisalignedAddress",
    "INVALID_ADDRESS_SPACE": "cudaErrorInvalidAddressSpace", "INVALID_PC": "cudaErrorInvalidPc",
    "LAUNCH_FAILURE": "cudaErrorLaunchFailure", "SYSTEM_NOT_READY": "cudaErrorSystemNotReady",
    "SYSTEM_DRIVER_MISMATCH": "cudaErrorSystemDriverMismatch",
    "COMPAT_NOT_SUPPORTED": "cudaErrorCompatNotSupportedOnDevice", "UNKNOWN": "cudaErrorUnknown",
}


def _real_cupy():  # noqa: ANN202
    return pytest.importorskip("cupy", reason="CuPy is not installed")


def test_every_status_constant_is_named_for_what_cuda_calls_it() -> None:
    _real_cupy()
    from cupy_backends.cuda.api.runtime import CUDARuntimeError

    consts = {n for n, v in vars(errors).items() if n.isupper() and isinstance(v, int)}
    assert consts == set(CUDA_NAMES)
    for name, cuda in CUDA_NAMES.items():
        assert str(CUDARuntimeError(getattr(errors, name))).startswith(cuda + ":"), name
    for status, cuda in fake_cupy._NAMES.items():
        assert str(CUDARuntimeError(status)).startswith(cuda + ":"), status


def test_the_stand_in_raises_cupys_own_classes() -> None:
    cupy = _real_cupy()
    from cupy.cuda.compiler import CompileException
    from cupy_backends.cuda.api.driver import CUDADriverError
    from cupy_backends.cuda.api.runtime import CUDARuntimeError

    assert fake_cupy.REAL_CLASSES
    assert fake_cupy.CUDARuntimeError is CUDARuntimeError
    assert fake_cupy.OutOfMemoryError is cupy.cuda.memory.OutOfMemoryError
    assert fake_cupy.CompileException is CompileException and fake_cupy.CUDADriverError is CUDADriverError
    err = fake_cupy.driver_error(222)  # built without libcuda, as on a host with no driver
    assert isinstance(err, CUDADriverError) and err.status == 222 and errors.status_of(err) == 222


def test_every_name_of_the_stand_in_exists_in_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    cupy = _real_cupy()
    import cupyx

    compiler = importlib.import_module("cupy.cuda.compiler")
    nvrtc = cupy.cuda.nvrtc  # an attribute (cupy_backends.cuda.libs.nvrtc), not a module of that name
    real = {"cupy": cupy, "cupy.cuda": cupy.cuda, "cupy.cuda.runtime": cupy.cuda.runtime,
            "cupy.cuda.memory": cupy.cuda.memory, "cupy.cuda.device": cupy.cuda.device, "cupyx": cupyx,
            "cupy.cuda.compiler": compiler, "cupy.cuda.nvrtc": nvrtc}
    try:
        real["cupy_backends.cuda.libs.cublas"] = importlib.import_module("cupy_backends.cuda.libs.cublas")
    except ImportError:  # no cuBLAS wheel here: its names cannot be read
        pass
    try:
        real["cupy.cuda.nccl"] = importlib.import_module("cupy.cuda.nccl")
    except ImportError:  # a CuPy built without NCCL support: its names cannot be read
        pass
    fake_cupy.install(monkeypatch, 1)
    import sys

    checked = 0
    for modname, mod in real.items():
        fake = sys.modules[modname]
        for name, obj in vars(fake).items():
            if name.startswith("_"):
                continue
            assert hasattr(mod, name), f"{modname}.{name} does not exist in CuPy {cupy.__version__}"
            ref = getattr(mod, name)
            if isinstance(obj, int) and not isinstance(obj, bool):
                assert obj == ref, f"{modname}.{name}: stand-in {obj} != CuPy {ref}"
            if inspect.isclass(obj) and inspect.isclass(ref) and name in ("Event", "Stream"):
                want = list(inspect.signature(ref).parameters)
                assert list(inspect.signature(obj).parameters) == want, f"{modname}.{name}: parameters differ"
            checked += 1
    assert checked > 50
    # and what the handles use of CuPy is all in the stand-in (the other way round)
    import re
    from pathlib import Path

    src = "".join(p.read_text() for p in (Path(errors.__file__).parent).glob("*.py"))
    used = set(re.findall(r"\bcp\.((?:cuda\.(?:runtime\.|device\.|memory\.)?)?[A-Za-z_]\w*)", src))
    for dotted in sorted(used):
        obj = sys.modules["cupy"]
        for part in dotted.split("."):
            assert hasattr(obj, part), f"the stand-in lacks cupy.{dotted}"
            obj = getattr(obj, part)
