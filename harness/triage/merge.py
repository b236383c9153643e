"""Which evidence is about the same card: several files from one host are read together.

Two pieces of evidence are one card when they share a PCI bus id (of the same vendor), a serial
or a UUID. Evidence that names a card only by index (DCGM's GPU ids, an ``npu-smi`` view without
its table) joins the card another file names by that same index together with its bus id, when
exactly one does; else it stays a card of its own. A card is called by its bus id, else its
serial, else its index.

Facts combine conservatively: the first file that knows an identity fact or a reading gives it;
error counters take the highest count and any flag raised; events, symptoms and quotes add up.
Events keep the file they came from (``episode`` high bits), so the same boot logged by two files
(dmesg and syslog) is not counted as a recurrence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drivers.evidence import CardEvidence, FieldEvent

FILE_SHIFT = 16  # FieldEvent.episode of a merged card: file number << FILE_SHIFT | episode in the file


@dataclass
class FieldCard:
    id: str
    evidence: CardEvidence  # the facts of every file, combined
    parts: list[CardEvidence] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(p.source for p in self.parts))

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(p.kind for p in self.parts))


def _keys(c: CardEvidence) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    if c.pci_bus_id:
        out.append(("bus", c.vendor or "", c.pci_bus_id))
    if c.serial:
        out.append(("serial", c.serial))
    if c.uuid:
        out.append(("uuid", c.uuid))
    return out


def group(parts: list[tuple[int, CardEvidence]]) -> list[FieldCard]:
    """``parts`` are (file number, evidence) in the order the files were given."""
    parent = list(range(len(parts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[str, ...], int] = {}
    for i, (_, c) in enumerate(parts):
        for k in _keys(c):
            if k in owner:
                parent[find(i)] = find(owner[k])
            else:
                owner[k] = i
    # index-only evidence joins the one keyed group that has a card of that vendor at that index
    keyed_at: dict[tuple[str, int], set[int]] = {}
    for i, (_, c) in enumerate(parts):
        if _keys(c) and c.index is not None:
            keyed_at.setdefault((c.vendor or "", c.index), set()).add(find(i))
    loose: dict[tuple[str, int], int] = {}
    for i, (_, c) in enumerate(parts):
        if _keys(c) or c.index is None:
            continue
        roots = keyed_at.get((c.vendor or "", c.index), set())
        if len(roots) == 1:
            parent[find(i)] = next(iter(roots))
        else:
            at = (c.vendor or "", c.index)
            if at in loose:
                parent[find(i)] = find(loose[at])
            else:
                loose[at] = i
    groups: dict[int, list[tuple[int, CardEvidence]]] = {}
    for i, p in enumerate(parts):
        groups.setdefault(find(i), []).append(p)
    cards = [_combine(members) for _, members in sorted(groups.items())]
    seen: dict[str, int] = {}
    for fc in cards:
        seen[fc.id] = seen.get(fc.id, 0) + 1
    for fc in cards:  # two cards called alike (an Ascend and an NVIDIA card at one bus id): add the vendor
        if seen[fc.id] > 1:
            fc.id = f"{fc.id} {fc.evidence.vendor or 'unknown'}"
    return sorted(cards, key=lambda fc: (fc.evidence.vendor or "", fc.id))


def _combine(members: list[tuple[int, CardEvidence]]) -> FieldCard:
    first = members[0][1]
    out = CardEvidence(source=first.source, kind=first.kind)
    for file_no, c in members:
        for attr in ("vendor", "index", "pci_bus_id", "serial", "uuid", "model", "memory_total_mib", "fans", "lost"):
            if getattr(out, attr) is None and getattr(c, attr) is not None:
                setattr(out, attr, getattr(c, attr))
        for k, v in c.firmware.items():
            out.firmware.setdefault(k, v)
        for k, v in c.facts.items():
            out.facts.setdefault(k, v)
        for k, v in c.telemetry.items():
            if k == "throttle":
                out.telemetry["throttle"] = frozenset(out.telemetry.get("throttle") or ()) | frozenset(v or ())
            elif out.telemetry.get(k) in (None, []) and v not in (None, []):
                out.telemetry[k] = v
            elif k not in out.telemetry:
                out.telemetry[k] = v
        for k, v in c.counters.items():
            out.counters[k] = _worse(out.counters.get(k), v)
        out.events += [FieldEvent(fe.event, fe.quote, (file_no << FILE_SHIFT) | fe.episode) for fe in c.events]
        out.symptoms += c.symptoms
        for k, qs in c.quotes.items():
            out.quotes.setdefault(k, []).extend(qs)
        out.unreadable += c.unreadable
    card_id = out.pci_bus_id or out.serial or (f"index {out.index}" if out.index is not None else "unnamed card")
    return FieldCard(id=card_id, evidence=out, parts=[c for _, c in members])


def _worse(a: Any, b: Any) -> Any:
    """The count or flag that says more is wrong (None: not known)."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) or bool(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return max(a, b)
    return a
