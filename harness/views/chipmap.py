"""The chip/stack map of a card's memory findings: which chip positions failed, how many cells each.

A GDDR card is repaired at the chip (``replace_memory`` with ``location.chip``), so the technician
needs the board position at a glance; an HBM card shows its stacks (any failure there is ``rma``).
The number of positions comes from the profile's memory layout (``[memory] chips``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drivers.profiles import Profile, ProfileError, load_profile, profile_for_model


@dataclass
class ChipMap:
    where: str  # "chip" (GDDR) or "stack" (HBM)
    count: int  # positions on the board, from the profile
    memory_type: str
    cells: dict[int, int] = field(default_factory=dict)  # position -> failing cells found there
    more: set[int] = field(default_factory=set)  # positions with more failing cells than itemised

    def label(self, pos: int) -> str:
        n = self.cells.get(pos, 0)
        return f"{n}+" if pos in self.more else str(n)


def profile_of(card: dict[str, Any]) -> Profile | None:
    """The card's profile: named in the result (``profile``), or matched from its model name."""
    for name in (card.get("profile"), card.get("model")):
        if name:
            try:
                return load_profile(str(name))
            except ProfileError:
                pass
    return profile_for_model(str(card.get("model") or "")) if card.get("model") else None


def chip_map(findings: list[dict[str, Any]], profile: Profile | None) -> ChipMap | None:
    """The map of the memory findings' positions; None when there is none to show."""
    mem = [f for f in findings if str(f.get("code", "")).startswith("memory.") and f.get("severity") == "fail"]
    if not mem or profile is None:
        return None
    spec = profile.memory
    where = "stack" if spec.kind == "hbm" else "chip"
    cm = ChipMap(where=where, count=spec.chips, memory_type=spec.type)
    seen: dict[int, set[int | None]] = {}  # a finding without an address counts as one cell
    for f in mem:
        loc = f.get("location") or {}
        pos = loc.get(where, loc.get("chip", loc.get("stack")))
        if not isinstance(pos, int):
            continue
        ev = f.get("evidence") or {}
        if "cells_itemised" in ev:  # a chip summary: its itemised cells, more past the cap
            seen.setdefault(pos, set()).update(int(a) for a in ev.get("first_addresses") or [])
            cm.cells[pos] = cm.cells.get(pos, 0) + int(ev.get("cells_itemised") or 0)
            if int(ev.get("failing_reads") or 0) > int(ev.get("cells_itemised") or 0) or ev.get("cells_past_cap"):
                cm.more.add(pos)
            continue
        addr = loc.get("address")
        cells = seen.setdefault(pos, set())
        if addr not in cells:
            cells.add(addr)
            cm.cells[pos] = cm.cells.get(pos, 0) + 1
    return cm if cm.cells else None
