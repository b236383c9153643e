"""From the scan's errors to fault models: which cell, which bit, which kind of fault.

The scan says where reads went wrong; diagnosis then probes each failing byte through the same
memory API, in the order that separates the fault models (van de Goor's functional fault
classes):

1. isolation: write each of 8 values twice (no transition left pending) and read it many
   times. Reads that disagree, or that return the complement of every value: ``intermittent``.
   A bit that always reads one value: ``stuck_bit``, or ``transition`` when the cell was seen at
   the other value at power-up (it got there once and can no longer go back).
2. a byte that is right in isolation was disturbed from elsewhere: a transient error in the
   scan (re-read disagreed) is ``intermittent``; toggling one other bit of the same byte flips
   it: intra-word ``coupling``; a 1 lost only after the bit-fade wait: ``retention``.
3. else bisect the address space for the aggressor: ranges are written 0->1 and 1->0 around the
   victim until one byte is left. If writing that byte's own value again (no transition)
   still overwrites the victim, the write lands on both: ``address_decoder``; else ``coupling``,
   with aggressor bit, trigger and effect measured one bit at a time.
Anything not reproduced stays ``memory.cell``. A chip with more failing cells than a plan allows
is reported once, as a failing chip, not cell by cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivers.api import Clock, MemoryHandle, Pattern
from stress.memory.records import CellHistory, ErrorLog

ISOLATION_VALUES = (0x00, 0xFF, 0x55, 0xAA, 0x33, 0xCC, 0x0F, 0xF0)
_Z, _O = Pattern(b"\x00"), Pattern(b"\xff")


@dataclass
class Diagnosis:
    code: str  # memory.stuck_bit ... memory.cell, memory.chip
    address: int
    bit: int
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    chip: int | None = None  # overrides the address map (chip summaries)


def _bits(mask: int) -> list[int]:
    return [b for b in range(8) if mask >> b & 1]


def _trigger_effect(trig: dict[tuple[str, int], bool]) -> tuple[str, str]:
    dirs = {d for (d, _s), t in trig.items() if t}
    states = {s for (_d, s), t in trig.items() if t}
    trigger = "any" if dirs == {"up", "down"} else dirs.pop()
    effect = "invert" if states == {0, 1} else ("set" if states == {0} else "reset")
    return trigger, effect


class Diagnoser:
    def __init__(self, mem: MemoryHandle, clock: Clock, log: ErrorLog, powerup: dict[int, int] | None,
                 reads: int = 64, fade_wait_s: float = 0.0) -> None:
        self.mem, self.clock, self.log = mem, clock, log
        self.powerup = powerup
        self.reads = max(2, reads)
        self.fade_wait_s = fade_wait_s
        self.probes = 0  # bisection steps, for the evidence

    # primitives on one byte ------------------------------------------------------------------------
    def _w(self, a: int, v: int) -> None:
        self.mem.write(a, np.array([v], np.uint8))

    def _set(self, a: int, v: int) -> None:
        self._w(a, v)
        self._w(a, v)  # the second write finds nothing to change: any transition effect is undone

    def _r(self, a: int) -> int:
        return int(self.mem.read(a, 1)[0])

    # 1. isolation ------------------------------------------------------------------------------------
    def isolate(self, a: int) -> dict[int, tuple[str, Any]]:
        """Per bit: ("intermittent", rate) | ("constant", value) | ("cell", None) | ("clean", None)."""
        wrong = np.zeros((8, 2), np.int64)
        seen = np.zeros((8, 2), np.int64)
        partial = np.zeros(8, bool)
        for v in ISOLATION_VALUES:
            self._set(a, v)
            mm = self.mem.verify_repeat(a, 1, Pattern(bytes([v])), self.reads, 1, 1)
            for b in range(8):
                c, e = int(mm.bit_counts[b]), v >> b & 1
                partial[b] |= 0 < c < self.reads
                wrong[b, e] += c
                seen[b, e] += self.reads
        out: dict[int, tuple[str, Any]] = {}
        for b in range(8):
            w0, w1 = wrong[b]
            if partial[b] or (w0 == seen[b, 0] and w1 == seen[b, 1]):
                out[b] = ("intermittent", float((w0 + w1) / seen[b].sum()))
            elif w0 == seen[b, 0] and w1 == 0:
                out[b] = ("constant", 1)
            elif w1 == seen[b, 1] and w0 == 0:
                out[b] = ("constant", 0)
            elif w0 or w1:
                out[b] = ("cell", None)
            else:
                out[b] = ("clean", None)
        return out

    # 2. same byte -------------------------------------------------------------------------------------
    def _coupling_table(self, agg: int, ab: int, vic: int, vb: int) -> dict[tuple[str, int], bool]:
        """Does toggling bit ``ab`` of ``agg`` (up or down) change bit ``vb`` of ``vic`` (held at s)?"""
        trig: dict[tuple[str, int], bool] = {}
        for d in ("up", "down"):
            start = (1 if d == "down" else 0) << ab
            for s in (0, 1):
                if agg == vic:
                    base = start | (s << vb)
                    self._set(agg, base)
                    self._w(agg, base ^ (1 << ab))
                else:
                    self._set(agg, start)
                    self._set(vic, 0xFF if s else 0x00)
                    self._w(agg, start ^ (1 << ab))
                trig[(d, s)] = (self._r(vic) >> vb & 1) != s
        return trig

    def intra_coupling(self, a: int, b: int) -> dict[str, Any] | None:
        for ab in range(8):
            if ab == b:
                continue
            trig = self._coupling_table(a, ab, a, b)
            if any(trig.values()):
                t, e = _trigger_effect(trig)
                return {"aggressor": a, "aggressor_bit": ab, "trigger": t, "effect": e, "same_byte": True}
        return None

    def retention(self, a: int, mask: int) -> int:
        """Bits of ``mask`` that hold a 1 when just written but lose it over the fade wait."""
        if self.fade_wait_s <= 0:
            return 0
        self._set(a, 0xFF)
        if self._r(a) & mask != mask:
            return 0
        self.clock.sleep(self.fade_wait_s)
        return mask & ~self._r(a)

    # 3. elsewhere -------------------------------------------------------------------------------------
    def _fill_except(self, lo: int, hi: int, v: int, p: Pattern) -> None:
        if lo < min(v, hi):
            self.mem.write_pattern(lo, min(v, hi) - lo, p)
        if max(v + 1, lo) < hi:
            self.mem.write_pattern(max(v + 1, lo), hi - max(v + 1, lo), p)

    def disturbs(self, v: int, lo: int, hi: int) -> bool:
        """Do writes (up and down transitions) to ``[lo, hi)`` minus ``v`` change byte ``v``?"""
        if hi - lo == 1 and lo == v:
            return False
        self.probes += 1
        # (range pre-state, victim value, range write): up and down transitions, victim 0 and 1
        for before, held, after in ((_Z, 0x00, _O), (_O, 0xFF, _Z), (_O, 0x00, _Z), (_Z, 0xFF, _O)):
            self._fill_except(lo, hi, v, before)
            self._set(v, held)
            self._fill_except(lo, hi, v, after)
            if self._r(v) != held:
                return True
        return False

    def find_aggressor(self, v: int) -> int | None:
        lo, hi = 0, self.mem.size
        if not self.disturbs(v, lo, hi):
            return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.disturbs(v, lo, mid):
                hi = mid
            else:
                lo = mid
        return lo if lo != v and self.disturbs(v, lo, lo + 1) else None

    def is_decoder(self, v: int, agg: int) -> bool:
        for x, y in ((0x3C, 0xC3), (0x5A, 0xA5)):
            self._set(agg, x)
            self._set(v, y)
            self._w(agg, x)  # no bit of the aggressor moves: only a misdecoded write reaches v
            if self._r(v) != x:
                return False
        return True

    def inter_coupling(self, v: int, b: int, agg: int) -> dict[str, Any] | None:
        for ab in range(8):
            trig = self._coupling_table(agg, ab, v, b)
            if any(trig.values()):
                t, e = _trigger_effect(trig)
                return {"aggressor": agg, "aggressor_bit": ab, "trigger": t, "effect": e, "same_byte": False}
        return None

    # one byte -----------------------------------------------------------------------------------------
    def diagnose_cell(self, cell: CellHistory) -> list[Diagnosis]:
        a = cell.address
        out: list[Diagnosis] = []
        iso = self.isolate(a)
        scan_ev = {"errors": cell.errors, "algorithms": sorted(cell.algorithms),
                   "first": cell.first.to_dict() if cell.first else None}
        pending = 0
        for b in _bits(cell.bits):
            kind, info = iso[b]
            if kind == "intermittent":
                out.append(Diagnosis("memory.intermittent", a, b,
                                     f"bit {b} at {a:#x} reads wrong at random (flip rate {info:.2f} in isolation)",
                                     {"flip_rate": round(info, 4), "reads": self.reads * len(ISOLATION_VALUES), **scan_ev}))
            elif kind == "constant":
                out.append(self._stuck_or_transition(a, b, info, scan_ev))
            elif kind == "cell":
                out.append(Diagnosis("memory.cell", a, b, f"bit {b} at {a:#x} fails in isolation, no single model fits",
                                     scan_ev))
            else:
                pending |= 1 << b
        if not pending:
            return out
        for b in _bits(pending & cell.transient):
            out.append(Diagnosis("memory.intermittent", a, b,
                                 f"bit {b} at {a:#x} read wrong, then right with nothing written in between",
                                 {"transient": True, **scan_ev}))
        pending &= ~cell.transient
        for b in _bits(pending):
            c = self.intra_coupling(a, b)
            if c:
                out.append(self._coupling(a, b, c, scan_ev))
                pending &= ~(1 << b)
        fade = self.retention(a, pending & cell.fade & ~cell.other) if pending & cell.fade else 0
        for b in _bits(fade):
            out.append(Diagnosis("memory.retention", a, b,
                                 f"bit {b} at {a:#x} loses a stored 1 within {self.fade_wait_s:g} s",
                                 {"wait_s": self.fade_wait_s, **scan_ev}))
        pending &= ~fade
        if pending:
            agg = self.find_aggressor(a)
            if agg is not None and self.is_decoder(a, agg):
                b = _bits(pending)[0]
                out.append(Diagnosis(
                    "memory.address_decoder", agg, b,
                    f"a write to {agg:#x} also lands on {a:#x} (address-decoder fault)",
                    {"alias": a, "alias_chip": self.log.chip_of(a), "alias_bits": _bits(cell.bits),
                     "probes": self.probes, **scan_ev}))
                pending = 0
            elif agg is not None:
                for b in _bits(pending):
                    c = self.inter_coupling(a, b, agg)
                    if c:
                        out.append(self._coupling(a, b, c, scan_ev))
                        pending &= ~(1 << b)
        for b in _bits(pending):
            out.append(Diagnosis("memory.cell", a, b,
                                 f"bit {b} at {a:#x} failed in the scan but no follow-up reproduced it",
                                 {"reproduced": False, **scan_ev}))
        return out

    def _stuck_or_transition(self, a: int, b: int, value: int, ev: dict[str, Any]) -> Diagnosis:
        p0 = None if self.powerup is None else self.powerup.get(a, 0) >> b & 1
        if p0 is not None and p0 != value:
            direction = "up" if value == 0 else "down"
            return Diagnosis("memory.transition", a, b,
                             f"bit {b} at {a:#x} cannot go {'0->1' if value == 0 else '1->0'} "
                             f"(held {p0} at power-up, stuck at {value} since)",
                             {"direction": direction, "stuck_at": value, "power_up": p0, **ev})
        return Diagnosis("memory.stuck_bit", a, b, f"bit {b} at {a:#x} always reads {value}",
                         {"value": value, "power_up": p0, "transition_excluded": p0 is not None, **ev})

    def _coupling(self, v: int, b: int, c: dict[str, Any], ev: dict[str, Any]) -> Diagnosis:
        msg = (f"bit {b} at {v:#x} is disturbed when bit {c['aggressor_bit']} at {c['aggressor']:#x} "
               f"goes {c['trigger']} ({c['effect']})")
        return Diagnosis("memory.coupling", v, b, msg,
                         {**c, "aggressor_chip": self.log.chip_of(c["aggressor"]), "probes": self.probes, **ev})

    # the card -----------------------------------------------------------------------------------------
    def run(self, max_diagnosed: int, chip_fail_cells: int) -> list[Diagnosis]:
        log = self.log
        out: list[Diagnosis] = []
        todo: list[int] = []
        for chip, addrs in sorted(log.cells_by_chip().items()):
            if len(addrs) > chip_fail_cells:
                out.append(self._chip_summary(chip, addrs, "failing chip"))
            else:
                todo.extend(addrs)
        seen_chips = set(log.cells_by_chip())
        for past in np.flatnonzero(log.by_chip):  # errors past the cell cap, never itemised
            if int(past) not in seen_chips:
                out.append(self._chip_summary(int(past), [], "errors past the record cap"))
        todo.sort()
        done: set[tuple[str, int, int]] = set()
        for a in todo[:max_diagnosed]:
            for d in self.diagnose_cell(log.cells[a]):
                key = (d.code, d.address, d.bit if d.code != "memory.address_decoder" else d.evidence["alias"])
                if key not in done:
                    done.add(key)
                    out.append(d)
        rest: dict[int, list[int]] = {}
        for a in todo[max_diagnosed:]:
            rest.setdefault(log.chip_of(a), []).append(a)
        for chip, addrs in sorted(rest.items()):
            out.append(self._chip_summary(chip, addrs, "more failing cells than diagnosed", code="memory.cell"))
        return out

    def _chip_summary(self, chip: int, addrs: list[int], why: str, code: str = "memory.chip") -> Diagnosis:
        mask = 0
        for a in addrs:
            mask |= self.log.cells[a].bits
        bits = _bits(mask) or [int(np.argmax(self.log.by_bit))]
        first = addrs[0] if addrs else next((r.address for r in self.log.records if r.chip == chip), chip * 256)
        errors = int(self.log.by_chip[chip])
        return Diagnosis(
            code, first, bits[0],
            f"{why}: {len(addrs)} failing bytes itemised, {errors} failing reads on this chip",
            {"failing_reads": errors, "cells_itemised": len(addrs), "bits": bits,
             "first_addresses": addrs[:16], "cells_past_cap": self.log.cells_dropped},
            chip=chip,
        )
