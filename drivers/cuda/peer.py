"""Peer copies and the all-reduce between the NVIDIA cards of one host, through CuPy (the optional
``[cuda]`` extra): the data side of the interconnect stage (../shared/reference/interconnect.md
sections 2.1, 3.2 and 4).

- Access: ``deviceCanAccessPeer`` for every ordered pair, peer access enabled where it is allowed.
- Copies: for the pair (src, dst) a buffer on src holds a pattern that encodes (src, dst, offset),
  so misplaced data is recognisable, not just wrong; ``memcpyPeerAsync`` copies it on a stream of
  the destination, timed with events on that stream (a warm-up, then each repeat; the median),
  and every repeat is verified on the destination against the pattern regenerated there: the
  words that differ are counted (and the first one's offset kept). A pair without peer access is
  still copied (CUDA stages it through host memory) and says so (``path = "host"``).
- Load: each card copies to the next for the given time, every stream kept busy.
- All-reduce: ``cupy.cuda.nccl`` (``NcclCommunicator.initAll`` over the cards, a sum of float32
  in one group), checked element by element; no NCCL in this CuPy is ``Unsupported``.

Every wait has a deadline (a hung copy or collective is ``KernelTimeout``), and CUDA failures map
onto the device API through ``drivers.cuda.errors``. CuPy is imported when the group is built.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from drivers.api import Collective, DeviceError, KernelTimeout, PeerCopy, PeerGroup, Unsupported
from drivers.cuda.errors import check_usable, cuda_errors, find_device, import_cupy, mark_poisoned, status_of
from drivers.registry import register_handle

PEER_ACCESS_ALREADY_ENABLED = 704  # cudaErrorPeerAccessAlreadyEnabled
MIN_GBPS = 0.5  # a copy slower than this has hung
DEADLINE_FLOOR_S = 10.0
POLL_S = 0.0005
LOAD_CHUNK = 64 << 20


class CudaPeers(PeerGroup):
    """The CUDA devices ``ordinals`` (in the order the stage named the cards) as one peer group."""

    def __init__(self, ordinals: list[int]) -> None:
        cp = import_cupy()
        self._cp: Any = cp
        self.ords = list(ordinals)
        for d in self.ords:
            check_usable(d)
        rt = cp.cuda.runtime
        self._access: dict[tuple[int, int], bool] = {}
        self._streams: dict[int, Any] = {}
        self._bufs: dict[tuple[str, int], Any] = {}
        for i, a in enumerate(self.ords):
            with cuda_errors(f"CUDA device {a}: opening the peer group", a), cp.cuda.Device(a):
                self._streams[i] = cp.cuda.Stream(non_blocking=True)
                for j, b in enumerate(self.ords):
                    if i == j:
                        continue
                    ok = bool(rt.deviceCanAccessPeer(a, b))
                    if ok:
                        try:
                            rt.deviceEnablePeerAccess(b)
                        except Exception as e:  # noqa: BLE001 - "already enabled" is fine, the rest maps
                            if status_of(e) != PEER_ACCESS_ALREADY_ENABLED:
                                raise
                    self._access[(i, j)] = ok

    @property
    def size(self) -> int:
        return len(self.ords)

    def access(self, src: int, dst: int) -> bool | None:
        return True if src == dst else self._access.get((src, dst))

    # buffers ------------------------------------------------------------------------------------
    def _buffer(self, role: str, i: int, words: int) -> Any:
        """A uint64 buffer of ``words`` on card ``i``, reused while the size holds."""
        cp = self._cp
        buf = self._bufs.get((role, i))
        if buf is None or int(buf.size) != words:
            self._bufs.pop((role, i), None)
            with cp.cuda.Device(self.ords[i]):
                buf = cp.empty(words, dtype=cp.uint64)
            self._bufs[(role, i)] = buf
        return buf

    def _pattern(self, src: int, dst: int, words: int) -> Any:
        """The pattern of the pair on the current device: the word's offset, the pair in the top byte."""
        cp = self._cp
        tag = cp.uint64((((src & 0xF) << 4) | (dst & 0xF)) + 1) << cp.uint64(56)
        return cp.arange(words, dtype=cp.uint64) ^ tag

    def _wait(self, event: Any, what: str, device: int, nbytes: int) -> None:
        deadline = max(DEADLINE_FLOOR_S, nbytes / (MIN_GBPS * 1e9))
        limit = time.monotonic() + deadline
        while not event.done:
            if time.monotonic() > limit:
                mark_poisoned(device, f"{what} hung")
                raise KernelTimeout(f"{what} did not finish within {deadline:g} s")
            time.sleep(POLL_S)

    # the device API -------------------------------------------------------------------------------
    def copy(self, src: int, dst: int, nbytes: int, repeats: int = 3) -> PeerCopy:
        if nbytes < 8 or repeats < 1:
            raise ValueError("a peer copy needs at least 8 bytes and one repeat")
        cp = self._cp
        rt = cp.cuda.runtime
        a, b = self.ords[src], self.ords[dst]
        words = nbytes // 8
        size = words * 8
        what = f"peer copy CUDA {a} -> {b} of {size} B"
        with cuda_errors(what, b):
            source = self._buffer("src", src, words)
            with cp.cuda.Device(a):
                cp.copyto(source, self._pattern(src, dst, words))
                cp.cuda.Device(a).synchronize()
            target = self._buffer("dst", dst, words)
            stream = self._streams[dst]
            times, bad, first = [], 0, None
            with cp.cuda.Device(b):
                expected = self._pattern(src, dst, words)
                for r in range(repeats + 1):  # the first is the warm-up
                    start, end = cp.cuda.Event(), cp.cuda.Event()
                    start.record(stream)
                    rt.memcpyPeerAsync(target.data.ptr, b, source.data.ptr, a, size, stream.ptr)
                    end.record(stream)
                    self._wait(end, what, b, size)
                    if r == 0:
                        continue
                    times.append(cp.cuda.get_elapsed_time(start, end) / 1000.0)
                    wrong = cp.flatnonzero(target != expected)
                    n = int(wrong.size)
                    if n:
                        bad += n
                        at = int(wrong[0]) * 8
                        first = at if first is None else min(first, at)
        return PeerCopy(seconds=statistics.median(times), nbytes=size, bad_words=bad, first_bad=first,
                        path="p2p" if self.access(src, dst) else "host")

    def load(self, seconds: float) -> int:
        n = len(self.ords)
        if n < 2 or seconds <= 0:
            return 0
        cp = self._cp
        rt = cp.cuda.runtime
        words = LOAD_CHUNK // 8
        src = [self._buffer("src", i, words) for i in range(n)]
        dst = [self._buffer("dst", i, words) for i in range(n)]
        moved = 0
        limit = time.monotonic() + seconds
        while time.monotonic() < limit:
            ends = []
            for i in range(n):
                j = (i + 1) % n
                with cuda_errors(f"link load CUDA {self.ords[i]} -> {self.ords[j]}", self.ords[j]), \
                        cp.cuda.Device(self.ords[j]):
                    rt.memcpyPeerAsync(dst[j].data.ptr, self.ords[j], src[i].data.ptr, self.ords[i], LOAD_CHUNK,
                                       self._streams[j].ptr)
                    ends.append((j, self._streams[j].record()))
                moved += LOAD_CHUNK
            for j, ev in ends:
                with cuda_errors("link load", self.ords[j]):
                    self._wait(ev, f"link load into CUDA {self.ords[j]}", self.ords[j], LOAD_CHUNK)
        return moved

    def all_reduce(self, nbytes: int, repeats: int = 3, timeout_s: float = 120.0) -> Collective:
        cp = self._cp
        try:
            from cupy.cuda import nccl
        except ImportError as e:
            raise Unsupported(f"NCCL is not available to CuPy ({e}): pip install nvidia-nccl-cu12") from None
        if not getattr(nccl, "available", True):
            raise Unsupported("NCCL is not available to CuPy (cupy.cuda.nccl.available is False)")
        n = len(self.ords)
        count = max(1, nbytes // 4)
        with cuda_errors("all-reduce: NCCL communicators", self.ords[0]):
            comms = nccl.NcclCommunicator.initAll(self.ords)
        send, recv = [], []
        for i, d in enumerate(self.ords):
            with cuda_errors("all-reduce buffers", d), cp.cuda.Device(d):
                send.append(cp.full(count, float(i + 1), dtype=cp.float32))
                recv.append(cp.empty(count, dtype=cp.float32))
        want = float(n * (n + 1) // 2)
        times, wrong = [], 0
        for r in range(repeats + 1):
            starts, ends = [], []
            nccl.groupStart()
            for i, d in enumerate(self.ords):
                with cp.cuda.Device(d):
                    starts.append(self._streams[i].record())
                    comms[i].allReduce(send[i].data.ptr, recv[i].data.ptr, count, nccl.NCCL_FLOAT32, nccl.NCCL_SUM,
                                       self._streams[i].ptr)
            nccl.groupEnd()
            limit = time.monotonic() + timeout_s
            for i, d in enumerate(self.ords):
                with cp.cuda.Device(d):
                    ends.append(self._streams[i].record())
                    while not ends[-1].done:
                        if time.monotonic() > limit:
                            mark_poisoned(d, "an all-reduce hung")
                            raise KernelTimeout(f"the all-reduce over {n} cards did not finish within {timeout_s:g} s")
                        time.sleep(POLL_S)
            if r == 0:
                continue
            times.append(max(cp.cuda.get_elapsed_time(s, e) for s, e in zip(starts, ends, strict=True)) / 1000.0)
            for i, d in enumerate(self.ords):
                with cp.cuda.Device(d):
                    wrong += int(cp.count_nonzero(recv[i] != cp.float32(want)))
        return Collective(seconds=statistics.median(times), nbytes=count * 4, ranks=n, wrong=wrong, library="nccl")

    def close(self) -> None:
        self._bufs.clear()
        from drivers.cuda.memory import release_pools

        for d in self.ords:
            try:
                release_pools(self._cp, self._cp.cuda.Device(d))
            except Exception:  # noqa: BLE001 - a poisoned device frees nothing more
                pass


def _factory(where: dict[str, Any]) -> CudaPeers:
    cp = import_cupy()
    ords = [find_device(cp, w) for w in where.get("devices") or []]
    if len(set(ords)) != len(ords):
        raise DeviceError(f"two cards map to one CUDA device: {ords}")
    return CudaPeers(ords)


register_handle("cuda", "peer", _factory)
