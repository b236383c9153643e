"""Host<->device copies on a real NVIDIA GPU through CuPy (the optional ``[cuda]`` extra), for
the PCIe-under-load stage: a pinned host buffer and a device buffer on the card under test,
copies queued on one stream of its own and timed with CUDA events on that stream.

Each copy is waited for against a deadline (a hung copy is ``KernelTimeout``, never a worker
blocked in ``synchronize``; a failed one raises its CUDA error at once), and CUDA failures map
onto the device API (``drivers.cuda.errors``).
CuPy is imported when the handle is built, never at module import.
"""

from __future__ import annotations

from typing import Any

from drivers.api import TransferHandle
from drivers.cuda.errors import check_usable, cuda_errors, find_device, import_cupy, on_card, use_card, wait
from drivers.registry import register_handle

CHUNK_BYTES = 256 << 20  # one pinned buffer, reused for larger copies
MIN_GBPS = 0.5  # deadline: a copy slower than this (a Gen1 x1 link carries more) has hung
DEADLINE_FLOOR_S = 10.0


class CudaTransfer(TransferHandle):
    def __init__(self, device_index: int = 0) -> None:
        cp = import_cupy()
        check_usable(device_index)
        self._cp: Any = cp
        self.device_index = device_index
        self._label = f"CUDA device {device_index}"
        with cuda_errors(f"{self._label}: preparing host<->device copies", device_index):
            self._dev = use_card(cp, device_index)  # the buffers and the stream belong to the card under test
            self._stream = cp.cuda.Stream(non_blocking=True)
            self._host = cp.cuda.alloc_pinned_memory(CHUNK_BYTES)
            self._buf = cp.empty(CHUNK_BYTES, dtype=cp.uint8)

    def _copy(self, nbytes: int, to_device: bool) -> float:
        if nbytes <= 0:
            raise ValueError(f"{self._label}: a copy needs a positive byte count, got {nbytes}")
        check_usable(self.device_index)
        cp = self._cp
        rt = cp.cuda.runtime
        kind = rt.memcpyHostToDevice if to_device else rt.memcpyDeviceToHost
        what = f"{self._label}: {'host->device' if to_device else 'device->host'} copy of {nbytes} B"
        with cuda_errors(what, self.device_index):
            on_card(cp, self._dev)
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record(self._stream)
            left = nbytes
            while left > 0:
                n = min(left, CHUNK_BYTES)
                dst, src = (self._buf.data.ptr, self._host.ptr) if to_device else (self._host.ptr, self._buf.data.ptr)
                rt.memcpyAsync(dst, src, n, kind, self._stream.ptr)
                left -= n
            end.record(self._stream)
            wait(cp, end, max(DEADLINE_FLOOR_S, nbytes / (MIN_GBPS * 1e9)), what, self.device_index)
            return cp.cuda.get_elapsed_time(start, end) / 1000.0

    def host_to_device(self, nbytes: int) -> float:
        return self._copy(nbytes, to_device=True)

    def device_to_host(self, nbytes: int) -> float:
        return self._copy(nbytes, to_device=False)

    def close(self) -> None:
        self._buf = None
        self._host = None
        from drivers.cuda.memory import release_pools

        release_pools(self._cp, self._dev)


def _factory(where: dict[str, Any]) -> CudaTransfer:
    return CudaTransfer(find_device(import_cupy(), where))


register_handle("cuda", "transfer", _factory)
