"""Error records of a memory scan: cuda_memtest's (address, expected, read) plus the bit, a
re-read and the algorithm that saw it, capped per card.

A dead chip yields millions of failing reads: every counter (by chip, by bit, total) is exact,
but only ``max_records`` records and ``max_cells`` per-byte histories are kept, so memory and
storage stay bounded whatever the card does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from drivers.api import MemoryHandle, Mismatches, Pattern

REREAD_PER_CALL = 64  # re-reads after one primitive call (each is a tiny device read)


@dataclass
class ErrorRecord:
    address: int
    bits: list[int]  # bits that differed
    expected: int
    read: int
    reread: int | None  # the same byte read again right after the operation
    holds: int | None  # what the byte should hold when it was re-read
    hits: int  # wrong reads of this byte in this operation (of ``reads``)
    reads: int
    algorithm: str
    step: str  # the March element or pass, e.g. "up(r0,w1)"
    chip: int
    read_only: bool = False  # nothing was written between the read and the re-read

    @property
    def transient(self) -> bool:
        """The byte read differently with nothing written in between: a read error, not a bad
        stored value."""
        return (0 < self.hits < self.reads) or (
            self.read_only and self.reread is not None and self.reread == self.holds
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["transient"] = self.transient
        return d


@dataclass
class CellHistory:
    """Everything the scan saw of one failing byte."""

    address: int
    bits: int = 0  # mask of bits that ever failed
    read_one: int = 0  # bits that read 1 where 0 was expected
    read_zero: int = 0  # bits that read 0 where 1 was expected
    transient: int = 0  # bits with a transient (re-read disagreed) failure
    fade: int = 0  # bits that failed only in the bit-fade pass
    other: int = 0  # bits that failed in any other pass
    errors: int = 0
    algorithms: set[str] = field(default_factory=set)
    first: ErrorRecord | None = None


class ErrorLog:
    """Bounded log of one card's scan."""

    def __init__(self, chips: int, max_records: int = 4096, max_cells: int = 4096) -> None:
        self.chips = max(1, chips)
        self.max_records = max_records
        self.max_cells = max_cells
        self.records: list[ErrorRecord] = []
        self.cells: dict[int, CellHistory] = {}
        self.total = 0
        self.by_bit = np.zeros(8, np.int64)
        self.by_chip = np.zeros(self.chips, np.int64)
        self.cells_dropped = 0  # failing bytes seen after ``max_cells`` was reached
        self.by_algorithm: dict[str, int] = {}

    def chip_of(self, address: int) -> int:
        return (address // 256) % self.chips

    def add(self, mm: Mismatches, algorithm: str, step: str, mem: MemoryHandle | None = None,
            holds: Pattern | None = None, read_only: bool = False) -> int:
        """Record one primitive's mismatches; re-read a few of them (``holds``: what the bytes
        should contain after the operation). Returns the failing reads."""
        if not mm.total:
            return 0
        self.total += mm.total
        self.by_bit += mm.bit_counts
        self.by_chip += mm.chip_counts[: self.chips] if mm.chip_counts.size >= self.chips else np.pad(
            mm.chip_counts, (0, self.chips - mm.chip_counts.size))
        self.by_algorithm[algorithm] = self.by_algorithm.get(algorithm, 0) + mm.total
        for i in range(mm.address.size):
            a, exp, got = int(mm.address[i]), int(mm.expected[i]), int(mm.got[i])
            diff = exp ^ got
            reread = hold = None
            if mem is not None and i < REREAD_PER_CALL:
                reread = int(mem.read(a, 1)[0])
                hold = int(holds.expand(a, 1)[0]) if holds is not None else None
            rec = ErrorRecord(a, [b for b in range(8) if diff >> b & 1], exp, got, reread, hold,
                              int(mm.hits[i]), mm.reads, algorithm, step, self.chip_of(a), read_only)
            if len(self.records) < self.max_records:
                self.records.append(rec)
            cell = self.cells.get(a)
            if cell is None:
                if len(self.cells) >= self.max_cells:
                    self.cells_dropped += 1
                    continue
                cell = self.cells[a] = CellHistory(a, first=rec)
            cell.bits |= diff
            cell.read_one |= diff & got
            cell.read_zero |= diff & exp
            cell.errors += int(mm.hits[i])
            cell.algorithms.add(algorithm)
            if rec.transient:
                cell.transient |= diff
            if algorithm == "bit_fade":
                cell.fade |= diff
            else:
                cell.other |= diff
        return mm.total

    def cells_by_chip(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for a in sorted(self.cells):
            out.setdefault(self.chip_of(a), []).append(a)
        return out
