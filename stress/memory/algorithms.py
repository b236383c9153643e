"""Memory test algorithms, each a function of the device memory API (drivers.api.MemoryHandle).

Literature followed:
- A. J. van de Goor, *Testing Semiconductor Memories: Theory and Practice* (Wiley, 1991) and
  van de Goor & Tlili, "March tests for word-oriented memories" (DATE 1998): March C- in its
  notation, run over the log2(w)+1 data backgrounds 00, 55, 33, 0F so that faults between the
  bits of one word (intra-word coupling) are sensitised too.
- memtest86 / memtest86+ (Brady): walking ones/zeros, "own address" (address-in-address, both
  polarities), moving inversions with seeded random patterns, bit fade with a long wait.
- cuda_memtest (Shi, Enos, Showerman, Kindratenko, NCSA 2009): the same tests on a GPU, error
  records of address/expected/read, repeated reads of one pattern, and a max-bandwidth loop.

Every element runs as one primitive over the whole tested region (``march_element``: per
address in order, read-verify then write), so the address order a March test relies on is the
device's, exactly on the mock and as a kernel on a GPU.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from drivers.api import Clock, MemoryHandle, Pattern
from stress.memory.records import ErrorLog

MARCH_C_MINUS = "any(w0); up(r0,w1); up(r1,w0); down(r0,w1); down(r1,w0); any(r0)"
BACKGROUNDS = ("00", "55", "33", "0f")  # van de Goor & Tlili: log2(8)+1 backgrounds for a byte
_ORDER = {"up": False, "⇑": False, "any": False, "⇕": False, "down": True, "⇓": True}
_ELEMENT = re.compile(r"^\s*(up|down|any|⇑|⇓|⇕)\s*\(\s*(r[01])?\s*,?\s*(w[01])?\s*\)\s*$")


@dataclass(frozen=True)
class Element:
    descending: bool
    read: int | None  # 0 = background, 1 = its complement
    write: int | None

    @property
    def label(self) -> str:
        ops = ",".join(x for x in (f"r{self.read}" if self.read is not None else "",
                                   f"w{self.write}" if self.write is not None else "") if x)
        return f"{'down' if self.descending else 'up'}({ops})"


def parse_march(notation: str) -> list[Element]:
    """Parse van de Goor notation, e.g. ``up(r0,w1); down(r1,w0)``; one read then one write at
    most per element (what the ``march_element`` primitive runs)."""
    out = []
    for part in notation.split(";"):
        if not part.strip():
            continue
        m = _ELEMENT.match(part)
        if not m or not (m.group(2) or m.group(3)):
            raise ValueError(f"march element {part.strip()!r}: expected like 'up(r0,w1)'")
        out.append(Element(_ORDER[m.group(1)], int(m.group(2)[1]) if m.group(2) else None,
                           int(m.group(3)[1]) if m.group(3) else None))
    if not out:
        raise ValueError(f"march test {notation!r} has no elements")
    return out


def background(hex_byte: str) -> bytes:
    try:
        b = bytes.fromhex(hex_byte)
    except ValueError:
        b = b""
    if not b or 4096 % len(b):
        raise ValueError(f"data background {hex_byte!r}: expected hex bytes like '55' or '0f0f'")
    return b


@dataclass
class Scan:
    """One card's scan: the memory, where errors go, and what was done."""

    mem: MemoryHandle
    log: ErrorLog
    clock: Clock
    offset: int = 0
    nbytes: int = 0  # 0 = the whole memory from ``offset``
    limit: int = 4096  # mismatch records per primitive call
    on_step: Callable[[str], None] = lambda msg: None
    bytes_verified: int = 0
    bytes_moved: int = 0
    passes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.nbytes:
            self.nbytes = self.mem.size - self.offset

    @property
    def chips(self) -> int:
        return self.log.chips

    def element(self, algorithm: str, step: str, expect: Pattern | None, write: Pattern | None,
                descending: bool = False) -> int:
        """Run one March element over the region and log what it found."""
        mm = self.mem.march_element(self.offset, self.nbytes, expect, write, descending, self.limit, self.chips)
        n = self.nbytes
        self.bytes_verified += n if expect is not None else 0
        self.bytes_moved += n * ((expect is not None) + (write is not None))
        ro = write is None
        return self.log.add(mm, algorithm, step, self.mem, expect if ro else write, read_only=ro)

    def verify_repeat(self, algorithm: str, expect: Pattern, repeats: int) -> int:
        mm = self.mem.verify_repeat(self.offset, self.nbytes, expect, repeats, self.limit, self.chips)
        self.bytes_verified += self.nbytes * repeats
        self.bytes_moved += self.nbytes * repeats
        return self.log.add(mm, algorithm, f"any(r x{repeats})", self.mem, expect, read_only=True)

    def done(self, algorithm: str) -> None:
        self.passes[algorithm] = self.passes.get(algorithm, 0) + 1
        self.on_step(algorithm)


def march(scan: Scan, notation: str, bg: bytes, name: str) -> int:
    """One March test over one data background (0 = ``bg``, 1 = its complement)."""
    pats = (Pattern(bg), Pattern(bg, invert=True))
    errors = 0
    for el in parse_march(notation):
        errors += scan.element(
            name, f"{el.label}/{bg.hex()}",
            pats[el.read] if el.read is not None else None,
            pats[el.write] if el.write is not None else None,
            el.descending,
        )
    return errors


def march_c_minus(scan: Scan, backgrounds: list[bytes]) -> int:
    """March C- (van de Goor): detects stuck-at, transition, address-decoder and unlinked
    idempotent/inversion coupling faults; over several backgrounds also intra-word ones."""
    errors = sum(march(scan, MARCH_C_MINUS, bg, "march_c-") for bg in backgrounds)
    scan.done("march_c-")
    return errors


def walking(scan: Scan, ones: bool, width: int = 32) -> int:
    """Walking ones (or zeros) across a ``width``-bit word (memtest86): each step verifies the
    previous position and writes the next, so every bit is seen alone at 1 (or 0)."""
    name = "walking_ones" if ones else "walking_zeros"
    nb = width // 8

    def pat(k: int) -> Pattern:
        word = (1 << k).to_bytes(nb, "little")
        return Pattern(word, invert=not ones)

    errors = scan.element(name, "any(w bit0)", None, pat(0))
    for k in range(1, width):
        errors += scan.element(name, f"up(r bit{k - 1},w bit{k})", pat(k - 1), pat(k))
    errors += scan.element(name, f"any(r bit{width - 1})", pat(width - 1), None)
    scan.done(name)
    return errors


def address_in_address(scan: Scan) -> int:
    """Own address in every 64-bit word, then its complement (memtest86 test 2, cuda_memtest's
    "own address"): a decoder fault that lands one word's write on another shows up here."""
    a, na = Pattern(address=True), Pattern(address=True, invert=True)
    errors = scan.element("address", "any(w addr)", None, a)
    errors += scan.element("address", "up(r addr,w ~addr)", a, na)
    errors += scan.element("address", "down(r ~addr)", na, None, descending=True)
    scan.done("address")
    return errors


def moving_inversions(scan: Scan, seed: int, passes: int = 2) -> int:
    """Moving inversions with seeded random 32-bit patterns (memtest86 tests 3-7): fill,
    ascending read-and-complement, descending read-and-restore, verify."""
    rng = np.random.default_rng(seed)
    errors = 0
    for _ in range(passes):
        word = int(rng.integers(0, 2**32)).to_bytes(4, "little")
        p, np_ = Pattern(word), Pattern(word, invert=True)
        tag = word.hex()
        errors += scan.element("moving_inversions", f"any(w {tag})", None, p)
        errors += scan.element("moving_inversions", f"up(r {tag},w ~)", p, np_)
        errors += scan.element("moving_inversions", f"down(r ~,w {tag})", np_, p, descending=True)
        errors += scan.element("moving_inversions", f"any(r {tag})", p, None)
    scan.done("moving_inversions")
    return errors


def bit_fade(scan: Scan, wait_s: float) -> int:
    """Bit fade (memtest86 test 11): write all ones, wait ``wait_s`` on the device clock (a cell
    that leaks its charge loses its 1), verify; then the same with zeros."""
    errors = 0
    for bg in (b"\xff", b"\x00"):
        p = Pattern(bg)
        scan.element("bit_fade", f"any(w {bg.hex()})", None, p)
        scan.clock.sleep(wait_s)
        errors += scan.element("bit_fade", f"any(r {bg.hex()} after {wait_s:g} s)", p, None)
    scan.done("bit_fade")
    return errors


def repeated_reads(scan: Scan, repeats: int, patterns: tuple[bytes, ...] = (b"\x00", b"\xff")) -> int:
    """Write a pattern once and read it ``repeats`` times (cuda_memtest's repeated reads): a
    cell whose reads disagree with nothing written between them is intermittent."""
    errors = 0
    for bg in patterns:
        p = Pattern(bg)
        scan.element("repeated_reads", f"any(w {bg.hex()})", None, p)
        errors += scan.verify_repeat("repeated_reads", p, repeats)
    scan.done("repeated_reads")
    return errors


@dataclass
class BandwidthReport:
    passes: int
    bytes_moved: int
    device_s: float
    wall_s: float

    @property
    def gbps(self) -> float | None:
        return self.bytes_moved / self.device_s / 1e9 if self.device_s > 0 else None

    @property
    def wall_gbps(self) -> float | None:
        return self.bytes_moved / self.wall_s / 1e9 if self.wall_s > 0 else None


def bandwidth_loop(scan: Scan, seconds: float, max_passes: int, pattern: bytes = b"\x5a") -> BandwidthReport:
    """Maximum-bandwidth stress (cuda_memtest's heavy loop): alternate read-verify-and-complement
    passes over the whole region until ``seconds`` of device time or ``max_passes`` passes."""
    p, np_ = Pattern(pattern), Pattern(pattern, invert=True)
    scan.element("bandwidth", f"any(w {pattern.hex()})", None, p)
    t0, w0, moved0 = scan.clock.now(), time.perf_counter(), scan.bytes_moved
    n = 0
    while n < max(1, max_passes) and (n == 0 or scan.clock.now() - t0 < seconds):
        src, dst = (p, np_) if n % 2 == 0 else (np_, p)
        scan.element("bandwidth", f"up(r,w) pass {n}", src, dst)
        n += 1
    scan.element("bandwidth", "any(r)", np_ if n % 2 else p, None)
    scan.done("bandwidth")
    return BandwidthReport(n, scan.bytes_moved - moved0, scan.clock.now() - t0, time.perf_counter() - w0)


def power_up_snapshot(mem: MemoryHandle, cap: int) -> dict[int, int] | None:
    """The bytes that are not zero before anything was written, or None when more than ``cap``
    are (memory not in a known state, e.g. a real card's previous contents). The mock contract
    powers memory up at zero; a cell seen at a value it can never reach again after the scan's
    writes has a transition fault rather than a stuck one."""
    mm = mem.verify_repeat(0, mem.size, Pattern(b"\x00"), 1, cap + 1, 1)
    if mm.total > cap:
        return None
    return {int(a): int(g) for a, g in zip(mm.address, mm.got, strict=True)}
