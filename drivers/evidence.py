"""What a file left behind says about one card, and a read-only device built from it.

``burnin triage`` reads the evidence a card arrives with (an ``nvidia-smi -q`` paste, a kernel
log, an npu-smi dump, an NVML recording) without the card. Each reader turns a file into
``CardEvidence``: the same facts a live backend reports (identity, telemetry, counters, events),
each with the line(s) it was read from. ``EvidenceDevice`` serves those facts through the device
API, so the stages' own rules judge a dump exactly as they judge a live card.

Readers for a vendor tool whose parser lives in a backend (npu-smi, NVML recordings) register
here (``register_reader``; the built-in ones are imported by name, as backends are), so the
harness reaches them without naming a backend.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from drivers.api import (
    Device,
    DeviceEvent,
    ErrorCounters,
    Identity,
    ManualClock,
    PcieLink,
    Telemetry,
)

# modules that define readers living beside their backend's parsers (imported when first asked)
_BUILTIN_READER_MODULES = ("drivers.ascend.evidence", "drivers.nvml.evidence")


@dataclass(frozen=True)
class Quote:
    """One line of a file, as printed: what a finding rests on."""

    source: str
    line: int | None
    text: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.text.strip()}"


@dataclass
class FieldEvent:
    """An event a file recorded (an XID, an Ascend health code), the line it came from, and the
    episode (boot) it belongs to: the same fault in two boots recurs, ten lines of one boot do not."""

    event: DeviceEvent
    quote: Quote
    episode: int = 0


@dataclass
class Symptom:
    """Something a tool concluded that the bench must confirm (a failed DCGM test, a health
    watch): a finding code, what it says, the stage to run first, and whether the tool failed it."""

    code: str
    message: str
    stage: str | None
    failed: bool
    quotes: list[Quote] = field(default_factory=list)
    host_only: bool = False  # about the host it ran on (persistence mode, a driver), not the card


@dataclass
class CardEvidence:
    """Everything one file says about one card. Any field may be unknown (None/empty)."""

    source: str
    kind: str  # the reader's kind ("nvidia-smi -q", "kernel log", ...)
    vendor: str | None = None  # "nvidia" | "huawei"
    index: int | None = None
    pci_bus_id: str | None = None  # normalised: 0000:3b:00.0
    serial: str | None = None
    uuid: str | None = None
    model: str | None = None
    memory_total_mib: int | None = None
    fans: int | None = None  # how many fans the card reports (None: unknown)
    firmware: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)  # for a derived profile (drivers.derived)
    telemetry: dict[str, Any] = field(default_factory=dict)  # Telemetry fields (pcie: a PcieLink)
    counters: dict[str, Any] = field(default_factory=dict)  # ErrorCounters fields
    events: list[FieldEvent] = field(default_factory=list)
    symptoms: list[Symptom] = field(default_factory=list)
    lost: str | None = None  # why the card could not be reached, in the tool's words
    quotes: dict[str, list[Quote]] = field(default_factory=dict)  # fact key -> lines it was read from
    unreadable: list[Quote] = field(default_factory=list)  # values the tool printed as an error (ERR!)

    def quote(self, key: str, q: Quote | None) -> None:
        if q is not None:
            self.quotes.setdefault(key, []).append(q)


def normalize_bus_id(text: str | None) -> str | None:
    """``00000000:3B:00.0``, ``0000:3b:00``, ``PCI:0000:3b:00`` -> ``0000:3b:00.0`` (None if not one)."""
    if not text:
        return None
    m = re.search(r"(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})(?:\.([0-7]))?", text)
    if m is None:
        return None
    domain = (m.group(1) or "0000")[-4:]
    return f"{domain}:{m.group(2)}:{m.group(3)}.{m.group(4) or '0'}".lower()


_TELEMETRY_FIELDS = {f.name for f in fields(Telemetry)}
_COUNTER_FIELDS = {f.name for f in fields(ErrorCounters)}


class EvidenceDevice(Device):
    """A card as its evidence describes it: answers what the files said, nothing more (a fact no
    file gave is None). A card the files say was unreachable still answers what they did record
    (its events): the caller judges the loss itself. Events are served once (``events`` drains),
    like a live backend's."""

    backend = "evidence"

    def __init__(self, ev: CardEvidence, profile_name: str | None, profile_source: str) -> None:
        self.ev = ev
        self.clock = ManualClock()
        self._profile_name = profile_name
        self._profile_source = profile_source
        self._events = [fe.event for fe in ev.events]

    def identity(self) -> Identity:
        ev = self.ev
        return Identity(vendor=ev.vendor or "unknown", model=ev.model or "unknown device", serial=ev.serial,
                        uuid=ev.uuid, pci_bus_id=ev.pci_bus_id, firmware=dict(ev.firmware),
                        profile=self._profile_name, memory_total_mib=ev.memory_total_mib,
                        profile_source=self._profile_source, facts=dict(ev.facts))

    def telemetry(self) -> Telemetry:
        t = {k: v for k, v in self.ev.telemetry.items() if k in _TELEMETRY_FIELDS}
        base: dict[str, Any] = {name: None for name in ("temperature_c", "power_w", "power_limit_w", "clock_mhz",
                                                        "clock_max_mhz", "utilization_pct", "memory_total_mib",
                                                        "memory_used_mib")}
        base.update(t)
        base["time_s"] = self.clock.now()
        base["throttle"] = frozenset(t.get("throttle") or ())
        pcie = t.get("pcie")
        base["pcie"] = pcie if isinstance(pcie, PcieLink) or pcie is None else PcieLink(**pcie)
        return Telemetry(**base)

    def counters(self) -> ErrorCounters:
        return ErrorCounters(**{k: v for k, v in self.ev.counters.items() if k in _COUNTER_FIELDS})

    def events(self) -> list[DeviceEvent]:
        out, self._events = self._events, []
        return out


@dataclass(frozen=True)
class Reader:
    """One kind of file: ``detect`` says (from the content alone) whether a text is this kind;
    ``read`` returns what it says about each card it names. ``read`` raises ValueError with a
    one-line reason for a file of this kind it cannot read at all; anything it does not know it
    ignores. ``path`` is what the file is called in quotes (and where a reader that needs the
    file itself finds it)."""

    kind: str
    detect: Callable[[str], bool]
    read: Callable[[str, str], list[CardEvidence]]
    priority: int = 50  # lower is tried first (the more specific kinds)


_READERS: dict[str, Reader] = {}
_LOADED = False


def register_reader(reader: Reader) -> Reader:
    _READERS[reader.kind] = reader
    return reader


def readers() -> list[Reader]:
    """The readers registered here (the backends' own), most specific first."""
    global _LOADED
    if not _LOADED:
        for mod in _BUILTIN_READER_MODULES:
            try:
                importlib.import_module(mod)
            except ImportError:  # a backend whose library is missing keeps its reader out
                continue
        _LOADED = True
    return sorted(_READERS.values(), key=lambda r: (r.priority, r.kind))


__all__ = ["CardEvidence", "EvidenceDevice", "FieldEvent", "Quote", "Reader", "Symptom", "normalize_bus_id",
           "readers", "register_reader"]
