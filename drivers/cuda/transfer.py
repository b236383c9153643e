"""Host<->device copies on a real NVIDIA GPU through CuPy (the optional ``[cuda]`` extra), for
the PCIe-under-load stage: pinned host buffers and device buffers, timed with CUDA events.

CuPy is imported when the handle is built, never at module import: the stage registry imports
every module under ``stress/`` on machines without a GPU.
"""

from __future__ import annotations

from typing import Any

from drivers.api import BackendUnavailable, TransferHandle
from drivers.registry import register_handle

CHUNK_BYTES = 256 << 20  # one pinned buffer, reused for larger copies


class CudaTransfer(TransferHandle):
    def __init__(self, device_index: int = 0) -> None:
        try:
            import cupy as cp
        except ImportError as e:  # pragma: no cover - depends on the host
            raise BackendUnavailable(f"cuda: CuPy is not installed ({e}); pip install '.[cuda]'") from None
        self._cp: Any = cp
        self._dev = cp.cuda.Device(device_index)
        with self._dev:
            self._host = cp.cuda.alloc_pinned_memory(CHUNK_BYTES)
            self._buf = cp.empty(CHUNK_BYTES, dtype=cp.uint8)
            self._stream = cp.cuda.Stream(non_blocking=True)

    def _copy(self, nbytes: int, to_device: bool) -> float:
        cp = self._cp
        kind = cp.cuda.runtime.memcpyHostToDevice if to_device else cp.cuda.runtime.memcpyDeviceToHost
        with self._dev:
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record(self._stream)
            left = nbytes
            while left > 0:
                n = min(left, CHUNK_BYTES)
                dst, src = (self._buf.data.ptr, self._host.ptr) if to_device else (self._host.ptr, self._buf.data.ptr)
                cp.cuda.runtime.memcpyAsync(dst, src, n, kind, self._stream.ptr)
                left -= n
            end.record(self._stream)
            end.synchronize()
            return cp.cuda.get_elapsed_time(start, end) / 1000.0

    def host_to_device(self, nbytes: int) -> float:
        return self._copy(nbytes, to_device=True)

    def device_to_host(self, nbytes: int) -> float:
        return self._copy(nbytes, to_device=False)

    def close(self) -> None:
        self._buf = None
        self._host = None


register_handle("cuda", "transfer", CudaTransfer)
