"""Kernel logs: ``dmesg`` (with or without ``-T``/``--time-format iso``/``--decode``),
``journalctl -k``, syslog, ``/dev/kmsg``. What NVIDIA's driver (NVRM) said about each GPU:

- ``NVRM: Xid (PCI:0000:09:00): 79, pid=0, GPU has fallen off the bus.`` an XID event;
- ``NVRM: GPU 0000:09:00.0: GPU has fallen off the bus.`` and the multi-line ``NVRM: The NVIDIA
  GPU 0000:b3:00.0 ... has fallen off the bus`` (newer drivers, sometimes with no XID): lost;
- ``NVRM: GPU at PCI:0000:09:00: GPU-26fb...`` and ``NVRM: GPU Board Serial Number: ...``: who
  the card at that address is.

A boot (``Linux version``, journalctl's ``-- Boot ... --``, the dmesg clock going back) or a driver
reload (``NVRM: loading NVIDIA UNIX``) starts a new episode: an XID seen in two episodes recurs
after a reset, many lines of one episode are one fault. Every other line is ignored.
"""

from __future__ import annotations

import re

from drivers.api import DeviceEvent
from drivers.evidence import CardEvidence, FieldEvent, Quote, normalize_bus_id
from harness.triage.lines import split_lines

KIND = "kernel log"

# the prefixes kernel-log tools put before the message
_PREFIX = re.compile(
    r"^(?:"
    r"\d+,\d+,\d+,[^;]*;"  # /dev/kmsg
    r"|(?:\w+\s*:\s*\w+\s*:\s*)?"  # dmesg --decode facility:level:
    r"(?:\[\s*(?P<mono>\d+\.\d+)\]\s*"  # dmesg seconds since boot
    r"|\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\]\s*"  # dmesg -T
    r"|\d{4}-\d\d-\d\dT[\d:,.]+(?:[+-]\d\d:?\d\d|Z)?\s+(?:\S+\s+kernel:\s*)?"  # iso, journalctl short-iso
    r"|[A-Z][a-z]{2}\s+\d+\s+\d\d:\d\d:\d\d\s+\S+\s+kernel:\s*(?:\[\s*[\d.]+\]\s*)?"  # syslog
    r")?)"
)
_XID = re.compile(r"NVRM: Xid \((?:PCI:)?([0-9a-fA-F:.]+)\):\s*(\d+)(?:,\s*(.*))?")
_FELL = re.compile(r"NVRM: GPU ([0-9a-fA-F:.]+): GPU has fallen off the bus", re.IGNORECASE)
_FELL_MULTI = re.compile(r"NVRM: The NVIDIA GPU ([0-9a-fA-F:.]+)")
_FELL_TAIL = re.compile(r"fallen off the bus and is not responding", re.IGNORECASE)
_GPU_AT = re.compile(r"NVRM: GPU at PCI:([0-9a-fA-F:.]+): (GPU-[0-9a-fA-F-]+)")
_SERIAL = re.compile(r"NVRM: GPU Board Serial Number:\s*(\S+)")
_BOOT = re.compile(r"Linux version \d|^-- Boot [0-9a-f]+ --|NVRM: loading NVIDIA UNIX|Command line: BOOT_IMAGE")
_KERNELISH = re.compile(r"^\s*(?:\[\s*\d+\.\d+\]|\d+,\d+,\d+,|\w+\s*:\s*\w+\s*:\s*\d{4}-|\d{4}-\d\d-\d\dT\S+ \S+ kernel:"
                        r"|[A-Z][a-z]{2}\s+\d+ \d\d:\d\d:\d\d \S+ kernel:|\[[A-Z][a-z]{2} [A-Z][a-z]{2} )")


def detect(text: str) -> bool:
    head = text[:200000]
    if "NVRM:" in head:
        return True
    lines = [ln for ln in head.splitlines()[:400] if ln.strip()]
    return len(lines) >= 3 and sum(1 for ln in lines if _KERNELISH.match(ln)) * 2 > len(lines)


def _message(line: str) -> tuple[str, float | None]:
    m = _PREFIX.match(line)
    if m is None:
        return line.strip(), None
    mono = m.group("mono")
    return line[m.end():].strip(), float(mono) if mono else None


def read(text: str, source: str) -> list[CardEvidence]:
    cards: dict[str, CardEvidence] = {}
    episode = 0
    last_mono: float | None = None
    pending_multi: tuple[str, int, str] | None = None  # bus, line no, line of "The NVIDIA GPU ..."
    last_at: str | None = None  # the bus of the last "GPU at PCI:" line (a serial line follows it)

    def card(bus: str) -> CardEvidence:
        if bus not in cards:
            cards[bus] = CardEvidence(source=source, kind=KIND, vendor="nvidia", pci_bus_id=bus)
        return cards[bus]

    for no, raw in split_lines(text):
        if not raw.strip():
            continue
        msg, mono = _message(raw)
        if mono is not None:
            if last_mono is not None and mono + 1.0 < last_mono:  # the dmesg clock restarted: a boot
                episode += 1
            last_mono = mono
        if _BOOT.search(msg):
            if any(fe.episode == episode for c in cards.values() for fe in c.events):
                episode += 1
            continue
        quote = Quote(source, no, raw)
        m = _XID.search(msg)
        if m:
            bus = normalize_bus_id(m.group(1))
            if bus is None:
                continue
            c = card(bus)
            c.events.append(FieldEvent(DeviceEvent(time_s=float(no), kind="xid", code=int(m.group(2)),
                                                   message=str(quote)), quote, episode))
            continue
        m = _FELL.search(msg)
        if m:
            bus = normalize_bus_id(m.group(1))
            if bus:
                _lost(card(bus), quote)
            continue
        m = _FELL_MULTI.search(msg)
        if m:
            bus = normalize_bus_id(m.group(1))
            pending_multi = (bus, no, raw) if bus else None
            continue
        if pending_multi is not None and _FELL_TAIL.search(msg):
            bus, first_no, first = pending_multi
            c = card(bus)
            _lost(c, Quote(source, first_no, first))
            c.quote("lost", quote)
            pending_multi = None
            continue
        m = _GPU_AT.search(msg)
        if m:
            bus = normalize_bus_id(m.group(1))
            if bus:
                card(bus).uuid = m.group(2)
                card(bus).quote("uuid", quote)
                last_at = bus
            continue
        m = _SERIAL.search(msg)
        if m and last_at is not None:
            serial = m.group(1).strip()
            if serial and not serial.startswith("NVRM"):
                card(last_at).serial = serial
                card(last_at).quote("serial", quote)
            continue
    return list(cards.values())


def _lost(c: CardEvidence, quote: Quote) -> None:
    if c.lost is None:
        c.lost = "the driver logged that it fell off the bus"
    c.quote("lost", quote)
