"""Simulated device memory with the cell faults of docs/mock-faults.md, exact and fast.

Every operation is done in bulk with numpy over cache-sized chunks; then only the faults whose
addresses fall in the range are applied. Faults that depend on the order in which an operation
visits addresses (transition, coupling, address decoder, and the victims and aliases they touch)
are replayed per address in the operation's order, so a March element behaves exactly as "for
each address in order: read-verify, then write" would on a real part (van de Goor's model):

- coupling: when a write makes the aggressor bit transition as ``trigger`` says, the victim bit
  changes at once (not a write). A victim visited later in the same operation is read with the
  change and then overwritten by its own new value; one visited earlier keeps the change. An
  aggressor and victim in the same byte: the change lands on top of that byte's new value.
- address decoder: a write to ``address`` also writes the same byte into the cell ``alias``
  (a cell write: the alias's transition faults and couplings apply; decoding does not chain).
- transition: a write that needs the forbidden transition leaves the bit unchanged. A cell with
  a transition fault powers up in the state its broken transition would reach (``up``: 1,
  ``down``: 0), as a real cell's random power-up state may; every other bit starts at 0.
- stuck bits and intermittent cells act on reads only; retention clears a 1 once ``seconds`` of
  simulated time passed since the byte's last write (checked when an operation touches it).

Simulated time advances by the bytes moved at the card's bandwidth.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any

import numpy as np

from drivers.api import Clock, MemoryHandle, Mismatches, Pattern
from drivers.mock import faults as F

CHUNK = 1 << 20  # 1 MiB: pattern and compare buffers stay in cache
PATTERN_CACHE = 16  # chunk-sized pattern buffers kept
DEFAULT_BANDWIDTH_GBPS = 1000.0


def _libc_memcmp() -> Callable[[int, int, int], int] | None:
    """libc's memcmp: an equal chunk (the common case) is confirmed at memory speed."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or None).memcmp
    except (OSError, AttributeError, TypeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return fn


_MEMCMP = _libc_memcmp()


class _Acc:
    """Bounded mismatch accumulator for one operation (counts everything, keeps ``limit``)."""

    def __init__(self, limit: int, chips: int, reads: int = 1) -> None:
        self.limit, self.chips, self.reads = max(0, limit), max(1, chips), reads
        self.addr: list[np.ndarray] = []
        self.want: list[np.ndarray] = []
        self.got: list[np.ndarray] = []
        self.hits: list[np.ndarray] = []
        self.kept = 0
        self.total = 0
        self.bits = np.zeros(8, np.int64)
        self.chip = np.zeros(self.chips, np.int64)

    def add(self, addr: np.ndarray, want: np.ndarray, got: np.ndarray, hits: np.ndarray | None = None,
            count: bool = True) -> None:
        if not addr.size:
            return
        h = np.ones(addr.size, np.int64) if hits is None else hits.astype(np.int64)
        if count:
            self.count(addr, np.bitwise_xor(want, got), h)
        if self.kept < self.limit:
            k = self.limit - self.kept
            self.addr.append(addr[:k].astype(np.int64))
            self.want.append(want[:k].copy())
            self.got.append(got[:k].copy())
            self.hits.append(h[:k])
            self.kept += min(k, addr.size)

    def count(self, addr: np.ndarray, diff: np.ndarray, times: np.ndarray | None = None) -> None:
        """Count failing byte-reads (``times`` reads each) by bit and by chip."""
        h = np.ones(addr.size, np.int64) if times is None else times
        self.total += int(h.sum())
        self.bits += (np.unpackbits(diff[:, None], axis=1, bitorder="little") * h[:, None]).sum(0)
        self.chip += np.bincount((addr // 256) % self.chips, weights=h, minlength=self.chips).astype(np.int64)

    def result(self) -> Mismatches:
        m = Mismatches.empty(self.chips, self.reads)
        m.total, m.bit_counts, m.chip_counts = self.total, self.bits, self.chip
        if self.addr:
            a = np.concatenate(self.addr)
            order = np.argsort(a, kind="stable")
            a = a[order]
            first = np.concatenate([[True], a[1:] != a[:-1]])
            m.address = a[first][: self.limit]
            m.expected = np.concatenate(self.want)[order][first][: self.limit]
            m.got = np.concatenate(self.got)[order][first][: self.limit]
            hits = np.concatenate(self.hits)[order]
            m.hits = np.add.reduceat(hits, np.flatnonzero(first))[: self.limit]
        return m


class MockMemory(MemoryHandle):
    """``size_bytes`` of simulated memory with the card's memory faults (see module doc)."""

    def __init__(
        self,
        size_bytes: int,
        faults: list[Any],
        clock: Clock,
        rng: np.random.Generator,
        guard: Callable[[], None] | None = None,
        bandwidth_gbps: float | None = None,
    ) -> None:
        self._size = int(size_bytes)
        self._mem = np.zeros(self._size, np.uint8)
        self._clock = clock
        self._rng = rng
        self._guard = guard or (lambda: None)
        self._bps = (bandwidth_gbps or DEFAULT_BANDWIDTH_GBPS) * 1e9
        self._pat_cache: dict[tuple[Pattern, int], np.ndarray] = {}
        inter: list[tuple[int, int, float]] = []
        ret: list[tuple[int, int, float]] = []
        self._tf: dict[int, list[int]] = {}  # addr -> [up_mask, down_mask]
        self._cpl: dict[int, list[F.Coupling]] = {}
        self._dec: dict[int, list[int]] = {}
        stuck = [(f.address, f.bit, f.value) for f in faults if type(f) is F.StuckBit]  # may be millions
        for f in faults:
            if isinstance(f, F.Transition):
                t = self._tf.setdefault(f.address, [0, 0])
                t[0 if f.direction == "up" else 1] |= 1 << f.bit
            elif isinstance(f, F.Coupling):
                self._cpl.setdefault(f.aggressor, []).append(f)
            elif isinstance(f, F.AddressDecoder):
                self._dec.setdefault(f.address, []).append(f.alias)
            elif isinstance(f, F.Retention):
                ret.append((f.address, f.bit, f.seconds))
            elif isinstance(f, F.Intermittent):
                inter.append((f.address, f.bit, f.probability))
        for a, (up, _down) in self._tf.items():
            self._mem[a] |= up  # powers up in the state its broken transition would reach
        st = np.array(stuck, np.int64).reshape(-1, 3)
        st = st[np.argsort(st[:, 0], kind="stable")]
        sa, first = np.unique(st[:, 0], return_index=True)
        bitmask = (1 << st[:, 1]).astype(np.uint8)
        self._st_addr = sa
        self._st_and = np.invert(np.bitwise_or.reduceat(bitmask, first)) if sa.size else np.zeros(0, np.uint8)
        self._st_or = (np.bitwise_or.reduceat(bitmask * st[:, 2].astype(np.uint8), first).astype(np.uint8)
                       if sa.size else np.zeros(0, np.uint8))
        inter.sort()
        self._in_addr = np.array([x[0] for x in inter], np.int64)
        self._in_mask = np.array([1 << x[1] for x in inter], np.uint8)
        self._in_p = np.array([x[2] for x in inter], float)
        ret.sort()
        self._rt_addr = np.array([x[0] for x in ret], np.int64)
        self._rt_mask = np.array([1 << x[1] for x in ret], np.uint8)
        self._rt_sec = np.array([x[2] for x in ret], float)
        self._rt_last = np.zeros(len(ret), float)
        ordered = set(self._tf) | set(self._cpl) | set(self._dec)
        ordered |= {c.victim for cs in self._cpl.values() for c in cs}
        ordered |= {a for al in self._dec.values() for a in al}
        self._ord = np.array(sorted(ordered), np.int64)
        self._special = np.union1d(np.union1d(self._ord, sa), self._in_addr).astype(np.int64)

    # MemoryHandle ---------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        self._begin(offset, nbytes, "read")
        got = self._mem[offset : offset + nbytes].copy()
        sp = self._in(self._special, offset, offset + nbytes)
        if sp.size:
            got[sp - offset] = self._read_faults(sp, got[sp - offset])
        self._advance(nbytes)
        return got

    def write(self, offset: int, data: np.ndarray, descending: bool = False) -> None:
        data = np.asarray(data, dtype=np.uint8).ravel()
        self._op(offset, data.size, None, data, descending, 0, 1, "write")

    def write_pattern(self, offset: int, nbytes: int, pattern: Pattern, descending: bool = False) -> None:
        self._op(offset, nbytes, None, pattern, descending, 0, 1, "write_pattern")

    def march_element(self, offset: int, nbytes: int, expect: Pattern | None, write: Pattern | None,
                      descending: bool = False, limit: int = 4096, chips: int = 1) -> Mismatches:
        return self._op(offset, nbytes, expect, write, descending, limit, chips, "march_element")

    def verify_repeat(self, offset: int, nbytes: int, expect: Pattern, repeats: int = 1,
                      limit: int = 4096, chips: int = 1) -> Mismatches:
        """Stable cells are compared once and counted ``repeats`` times; intermittent cells get
        one seeded draw per read (the stored contents cannot change between reads)."""
        self._begin(offset, nbytes, "verify_repeat")
        repeats = max(1, int(repeats))
        acc = _Acc(limit, chips, repeats)
        hi = offset + nbytes
        sp = self._in(self._special, offset, hi)
        for lo, n in self._spans(offset, nbytes, False):
            want = self._expand(expect, lo, n, offset)
            idx = self._diff(self._mem[lo : lo + n], want)
            if idx.size:
                a = idx + lo
                if sp.size:
                    keep = ~np.isin(a, sp)
                    a, idx = a[keep], idx[keep]
                acc.add(a, want[idx], self._mem[a], np.full(a.size, repeats))
        if sp.size:
            i0, i1 = np.searchsorted(self._in_addr, [offset, hi])
            flaky = np.unique(self._in_addr[i0:i1])
            stable = sp[~np.isin(sp, flaky)] if flaky.size else sp
            if stable.size:  # stuck bits and order-dependent cells: every read is the same
                want = self._expand_at(expect, stable)
                got = self._stuck(stable, self._mem[stable])
                bad = np.flatnonzero(got != want)
                acc.add(stable[bad], want[bad], got[bad], np.full(bad.size, repeats))
            if flaky.size:  # one seeded draw per intermittent bit per read
                want = self._expand_at(expect, flaky)
                base = self._stuck(flaky, self._mem[flaky])
                flips = self._rng.random((repeats, i1 - i0)) < self._in_p[i0:i1]
                cols = np.searchsorted(flaky, self._in_addr[i0:i1])
                xor = np.zeros((repeats, flaky.size), np.uint8)
                for j in range(i1 - i0):
                    xor[:, cols[j]] ^= flips[:, j].astype(np.uint8) * self._in_mask[i0 + j]
                reads = base[None, :] ^ xor
                bad = reads != want[None, :]
                hits = bad.sum(0)
                hit = np.flatnonzero(hits)
                if hit.size:
                    first = bad[:, hit].argmax(0)
                    acc.add(flaky[hit], want[hit], reads[first, hit], hits[hit], count=False)
                    rr, cc = np.nonzero(bad)
                    acc.count(flaky[cc], reads[rr, cc] ^ want[cc])
        self._advance(nbytes * repeats)
        return acc.result()

    # engine -----------------------------------------------------------------------------------------
    def _begin(self, offset: int, nbytes: int, what: str) -> None:
        self._guard()
        if offset < 0 or nbytes < 0 or offset + nbytes > self._size:
            raise ValueError(f"mock memory {what}: range {offset:#x}+{nbytes:#x} is outside 0..{self._size:#x}")
        self._decay(offset, offset + nbytes)

    def _advance(self, nbytes: int) -> None:
        if nbytes > 0:
            self._clock.sleep(nbytes / self._bps)

    @staticmethod
    def _in(arr: np.ndarray, lo: int, hi: int) -> np.ndarray:
        i0, i1 = np.searchsorted(arr, [lo, hi])
        return arr[i0:i1]

    def _spans(self, offset: int, nbytes: int, descending: bool) -> list[tuple[int, int]]:
        out = [(o, min(CHUNK, offset + nbytes - o)) for o in range(offset, offset + nbytes, CHUNK)]
        return out[::-1] if descending else out

    def _expand(self, src: Pattern | np.ndarray, lo: int, n: int, offset: int) -> np.ndarray:
        """Bytes to write/expect for chunk ``[lo, lo + n)`` of an operation starting at ``offset``."""
        if isinstance(src, np.ndarray):
            return src[lo - offset : lo - offset + n]
        if src.address:
            return src.expand(lo, n)
        key = (src, lo % len(src.repeat))
        buf = self._pat_cache.get(key)
        if buf is None:
            if len(self._pat_cache) >= PATTERN_CACHE:
                self._pat_cache.clear()
            buf = self._pat_cache[key] = src.expand(lo, CHUNK)
        return buf[:n]

    def _expand_at(self, src: Pattern | np.ndarray, addrs: np.ndarray, offset: int = 0) -> np.ndarray:
        """Pattern bytes at scattered addresses."""
        if isinstance(src, np.ndarray):
            return src[addrs - offset]
        if src.address:
            words = (addrs // 8 * 8).astype("<u8")
            b = ((words >> ((addrs % 8) * 8).astype(np.uint64)) & np.uint64(0xFF)).astype(np.uint8)
        else:
            rep = np.frombuffer(src.repeat, np.uint8)
            b = rep[addrs % len(rep)]
        return np.invert(b) if src.invert else b

    @staticmethod
    def _diff(got: np.ndarray, want: np.ndarray) -> np.ndarray:
        """Indices of differing bytes; memcmp first, then 8 bytes at a time."""
        n = got.size
        if _MEMCMP is not None and n and not _MEMCMP(got.ctypes.data, want.ctypes.data, n):
            return np.zeros(0, np.intp)
        n8 = n - n % 8
        if n8 and got.ctypes.data % 8 == 0 and want.ctypes.data % 8 == 0:
            w = np.flatnonzero(got[:n8].view(np.uint64) != want[:n8].view(np.uint64))
            if w.size:
                cand = (w[:, None] * 8 + np.arange(8)).ravel()
                idx = cand[got[cand] != want[cand]]
            else:
                idx = w
            if n8 != n:
                tail = np.flatnonzero(got[n8:] != want[n8:]) + n8
                idx = np.concatenate([idx, tail])
            return idx
        return np.flatnonzero(got != want)

    def _stuck(self, addrs: np.ndarray, vals: np.ndarray) -> np.ndarray:
        if not self._st_addr.size:
            return vals.copy()
        pos = np.searchsorted(self._st_addr, addrs)
        pos_c = np.minimum(pos, self._st_addr.size - 1)
        hit = self._st_addr[pos_c] == addrs
        out = vals.copy()
        out[hit] = (out[hit] & self._st_and[pos_c[hit]]) | self._st_or[pos_c[hit]]
        return out

    def _read_faults(self, addrs: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """What one read of the stored ``vals`` at sorted ``addrs`` returns."""
        out = self._stuck(addrs, vals)
        if self._in_addr.size:
            i0, i1 = np.searchsorted(self._in_addr, [addrs[0], addrs[-1] + 1])
            if i1 > i0:
                ia = self._in_addr[i0:i1]
                inside = np.isin(ia, addrs)
                flips = (self._rng.random(i1 - i0) < self._in_p[i0:i1]) & inside
                cols = np.searchsorted(addrs, ia[flips])
                np.bitwise_xor.at(out, cols, self._in_mask[i0:i1][flips])
        return out

    def _decay(self, lo: int, hi: int) -> None:
        if not self._rt_addr.size:
            return
        i0, i1 = np.searchsorted(self._rt_addr, [lo, hi])
        if i1 <= i0:
            return
        now = self._clock.now()
        for i in range(i0, i1):
            if now - self._rt_last[i] >= self._rt_sec[i]:
                self._mem[self._rt_addr[i]] &= ~self._rt_mask[i] & 0xFF

    def _touch(self, lo: int, hi: int) -> None:
        """A write to ``[lo, hi)`` restarts the retention clocks there."""
        if self._rt_addr.size:
            i0, i1 = np.searchsorted(self._rt_addr, [lo, hi])
            self._rt_last[i0:i1] = self._clock.now()

    def _op(self, offset: int, nbytes: int, expect: Pattern | None, write: Pattern | np.ndarray | None,
            descending: bool, limit: int, chips: int, what: str) -> Mismatches:
        """For each address in order: read-verify against ``expect``, then write ``write``."""
        self._begin(offset, nbytes, what)
        hi = offset + nbytes
        acc = _Acc(limit, chips)
        sp = self._in(self._special, offset, hi)
        pre = self._mem[sp].copy()
        word = None  # a pattern that repeats every 8 bytes is stored as one 64-bit word fill
        if isinstance(write, Pattern) and not write.address and 8 % len(write.repeat) == 0:
            word = write.expand(offset - offset % 8, 8).view(np.uint64)[0]
        for lo, n in self._spans(offset, nbytes, descending):
            chunk = self._mem[lo : lo + n]
            if expect is not None:
                want = self._expand(expect, lo, n, offset)
                idx = self._diff(chunk, want)
                if idx.size:
                    a = idx + lo
                    if sp.size:
                        keep = ~np.isin(a, sp)
                        a, idx = a[keep], idx[keep]
                    acc.add(a, want[idx], chunk[idx])
            if word is not None and lo % 8 == 0 and n % 8 == 0:
                chunk.view(np.uint64).fill(word)
            elif write is not None:
                chunk[:] = self._expand(write, lo, n, offset)
        if write is not None:
            self._touch(offset, hi)
        got_sp = pre
        if sp.size:
            ordr = self._in(self._ord, offset, hi)
            if ordr.size:
                got_sp = pre.copy()
                self._replay(ordr, sp, pre, got_sp, offset, write, descending)
            if expect is not None:
                got = self._read_faults(sp, got_sp)
                want = self._expand_at(expect, sp)
                bad = np.flatnonzero(got != want)
                if bad.size:
                    acc.add(sp[bad], want[bad], got[bad])
        self._advance(nbytes * ((expect is not None) + (write is not None)))
        return acc.result()

    def _replay(self, ordr: np.ndarray, sp: np.ndarray, pre: np.ndarray, got_sp: np.ndarray,
                offset: int, write: Pattern | np.ndarray | None, descending: bool) -> None:
        """Replay the order-dependent cells of one operation address by address."""
        # every special address of the range is in ``cur``, including all victims and aliases there
        cur: dict[int, int] = {int(a): int(v) for a, v in zip(sp, pre, strict=True)}
        pos = {int(a): i for i, a in enumerate(sp)}
        writes = self._expand_at(write, ordr, offset) if write is not None else None
        seq = range(ordr.size - 1, -1, -1) if descending else range(ordr.size)

        def in_op(y: int) -> bool:
            return y in cur

        def value(y: int) -> int:
            return cur[y] if in_op(y) else int(self._mem[y])

        def store(y: int, v: int) -> None:
            if in_op(y):
                cur[y] = v
            else:
                self._mem[y] = v

        def cell_write(x: int, w: int) -> None:
            old = value(x)
            up, down = self._tf.get(x, (0, 0))
            new = (w & ~(up & ~old & w) & 0xFF) | (down & old & ~w & 0xFF)
            store(x, new)
            for c in self._cpl.get(x, ()):
                ob, nb = (old >> c.aggressor_bit) & 1, (new >> c.aggressor_bit) & 1
                if ob == nb or (c.trigger == "up" and nb == 0) or (c.trigger == "down" and nb == 1):
                    continue
                v, m = value(c.victim), 1 << c.victim_bit
                v = v ^ m if c.effect == "invert" else (v | m if c.effect == "set" else v & ~m & 0xFF)
                store(c.victim, v)

        for k in seq:
            x = int(ordr[k])
            got_sp[pos[x]] = cur[x]
            if writes is None:
                continue
            w = int(writes[k])
            cell_write(x, w)
            for alias in self._dec.get(x, ()):
                cell_write(alias, w)  # a cell write: no further decoding
                if not in_op(alias):
                    self._touch(alias, alias + 1)
        if writes is not None:
            for x in ordr:
                self._mem[int(x)] = cur[int(x)]
