"""NVRTC for the compile test, without a GPU: CuPy's binding where CuPy is installed, else the
library of the ``nvidia-cuda-nvrtc-cu12`` wheel (what ``.ci/run`` installs: CuPy itself is not
needed to compile) through ctypes. ``load()`` is None where neither is there."""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Compiled:
    ok: bool
    log: str
    binary: bytes  # CUBIN for sm_*, PTX for compute_*


class Nvrtc:
    """The few NVRTC calls the test needs, over libnvrtc."""

    def __init__(self, lib: ctypes.CDLL, where: str) -> None:
        self._lib = lib
        self.where = where
        major, minor = ctypes.c_int(), ctypes.c_int()
        if lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) != 0:
            raise OSError(f"{where}: nvrtcVersion failed")
        self.version = (major.value, minor.value)

    def compile(self, source: str, name: str, options: list[str]) -> Compiled:
        lib = self._lib
        prog = ctypes.c_void_p()
        if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None) != 0:
            raise OSError("nvrtcCreateProgram failed")
        try:
            opts = [o.encode() for o in options]
            status = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
            log = self._read(prog, "nvrtcGetProgramLogSize", "nvrtcGetProgramLog").decode(errors="replace")
            if status != 0:
                return Compiled(False, log, b"")
            ptx = any(o.startswith("-arch=compute_") for o in options)
            binary = self._read(prog, *(("nvrtcGetPTXSize", "nvrtcGetPTX") if ptx else
                                        ("nvrtcGetCUBINSize", "nvrtcGetCUBIN")))
            return Compiled(True, log.strip("\x00\n "), binary)
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))

    def _read(self, prog: ctypes.c_void_p, size_fn: str, get_fn: str) -> bytes:
        n = ctypes.c_size_t()
        getattr(self._lib, size_fn)(prog, ctypes.byref(n))
        buf = ctypes.create_string_buffer(n.value)
        getattr(self._lib, get_fn)(prog, buf)
        return buf.raw[: n.value].rstrip(b"\x00")


def _candidates() -> list[str]:
    out = [os.environ.get("BURNIN_NVRTC", "")]
    try:  # the nvidia-cuda-nvrtc-cu12 wheel (a namespace package: no __file__)
        import nvidia.cuda_nvrtc as wheel

        for d in wheel.__path__:
            out += sorted(glob.glob(str(Path(d) / "lib" / "libnvrtc.so*")))
    except ImportError:
        pass
    found = ctypes.util.find_library("nvrtc")
    return [p for p in out + ([found] if found else []) if p]


def load() -> Nvrtc | None:
    for path in _candidates():
        try:
            return Nvrtc(ctypes.CDLL(path), path)
        except OSError:
            continue
    return None
