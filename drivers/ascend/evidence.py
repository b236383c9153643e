"""An ``npu-smi`` dump as evidence for ``burnin triage``: the boxed ``npu-smi info`` table and the
``-t`` views (health, ecc, board, common, temp, power), alone or concatenated the way collection
scripts save them (each output after its command line, ``npu-smi info -t health -i 1 -c 0``).

Read with the backend's own parsers (``drivers.ascend.parse``); a view a parser rejects is left
out (the rest of the file still counts), and a file none of whose parts can be read is an error.
Health codes become health events, classified by the health stage from the code catalogue; a
health state other than OK with no code is a symptom the bench confirms.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from drivers.api import DeviceEvent
from drivers.ascend import parse
from drivers.ascend.parse.text import _lines
from drivers.evidence import (
    CardEvidence,
    FieldEvent,
    Quote,
    Reader,
    Symptom,
    normalize_bus_id,
    register_reader,
)

KIND = "npu-smi"

_ECHO = re.compile(r"^\s*(?:\S*[$#]\s*)?(?:/usr/local/bin/|/usr/local/sbin/)?npu-smi\s+(info\b.*)$")
_KV_LABELS = ("NPU ID", "Chip Count", "Health Status", "HBM Single Bit Error Count", "Aicore Usage Rate",
              "Chip Name", "Error Code", "Software Version")
_BAD_STATES = {"warning": False, "alarm": True, "critical": True, "unknown": True}


def detect(text: str) -> bool:
    head = text[:50000]
    if re.search(r"^\|\s*npu-smi\s+\S+\s+Version:", head, re.MULTILINE) or _ECHO.search(head):
        return True
    hits = sum(1 for lb in _KV_LABELS if re.search(rf"^\s*{re.escape(lb)}\s*:", head, re.MULTILINE))
    return hits >= 2


def _segments(text: str) -> list[tuple[dict[str, int], str, int]]:
    """(arguments given with -i/-c, the output text, its first line number) per command echoed
    in the file; a file without command lines is one segment."""
    lines = _lines(text)  # the parsers' own line splitting (CRLF, BOM)
    out: list[tuple[dict[str, int], str, int]] = []
    args: dict[str, int] = {}
    body: list[str] = []
    first = 1
    for no, line in lines:
        m = _ECHO.match(line)
        if m:
            if any(b.strip() for b in body):
                out.append((args, "\n".join(body), first))
            args = {k: int(v) for k, v in re.findall(r"-([ic])\s+(\d+)", m.group(1))}
            body, first = [], no + 1
            continue
        body.append(line)
    if any(b.strip() for b in body):
        out.append((args, "\n".join(body), first))
    return out


def _kind_of(body: str) -> str | None:
    if re.search(r"^\s*\|.*\bNPU\b.*\|.*Health", body, re.MULTILINE):
        return "info"
    if re.search(r"^\s*(Health Status|Health|NPU Health)\s*:", body, re.MULTILINE):
        return "health"
    if "HBM Single Bit Error Count" in body or "HBM Double Bit Error Count" in body:
        return "ecc"
    if re.search(r"^\s*(Serial Number|Chip Name|Software Version)\s*:", body, re.MULTILINE):
        return "board"
    return None


class _Cards:
    def __init__(self, source: str) -> None:
        self.source = source
        self.by_id: dict[tuple[int, int], CardEvidence] = {}

    def get(self, npu: int | None, chip: int | None) -> CardEvidence:
        if npu is None and len(self.by_id) == 1:
            return next(iter(self.by_id.values()))
        key = (npu or 0, chip or 0)
        if key not in self.by_id:
            self.by_id[key] = CardEvidence(source=self.source, kind=KIND, vendor="huawei", index=key[0], fans=0)
        return self.by_id[key]


def _quote_of(source: str, body: str, first: int, pattern: str) -> Quote | None:
    for i, line in enumerate(body.splitlines()):
        if re.search(pattern, line):
            return Quote(source, first + i, line)
    return None


def read(text: str, source: str) -> list[CardEvidence]:
    cards = _Cards(source)
    errors: list[str] = []
    readers: dict[str, Callable[[dict[str, int], str, int], None]] = {
        "info": lambda a, b, f: _info(cards, b, f),
        "health": lambda a, b, f: _health(cards, a, b, f),
        "ecc": lambda a, b, f: _ecc(cards, a, b, f),
        "board": lambda a, b, f: _board(cards, a, b, f),
    }
    for args, body, first in _segments(text):
        kind = _kind_of(body)
        if kind is None:
            continue
        try:
            readers[kind](args, body, first)
        except parse.ParseError as e:
            errors.append(str(e))
    if not cards.by_id and errors:
        raise ValueError(f"npu-smi output it cannot read: {errors[0]}")
    for c in cards.by_id.values():
        mem = c.memory_total_mib
        c.facts = {k: v for k, v in {"vendor": "huawei", "model": c.model, "memory_total_mib": mem,
                                     "fans": 0}.items() if v is not None}
    return list(cards.by_id.values())


def _info(cards: _Cards, body: str, first: int) -> None:
    table = parse.parse_info(body, "npu-smi info")
    source = cards.source
    for chip in table.chips:
        c = cards.get(chip.npu_id, chip.chip_id)
        c.model = c.model or chip.name
        c.pci_bus_id = c.pci_bus_id or normalize_bus_id(chip.bus_id)
        used, total = chip.device_memory
        c.memory_total_mib = c.memory_total_mib or total
        t = c.telemetry
        t.update({k: v for k, v in (("temperature_c", chip.temperature_c), ("power_w", chip.power_w),
                                    ("utilization_pct", chip.aicore_pct), ("memory_total_mib", total),
                                    ("memory_used_mib", used)) if v is not None})
        t.setdefault("fans_rpm", [])
        row = _quote_of(source, body, first, rf"^\|\s*{chip.npu_id}\s+{re.escape(chip.name)}\s*\|")
        c.quote("health", row)
        c.quote("temperature_c", row)
        state = (chip.health or "").lower()
        if state in _BAD_STATES:
            c.symptoms.append(Symptom(
                code=f"npu.health_{state}", stage="health", failed=_BAD_STATES[state],
                message=f"npu-smi shows the chip's health as {chip.health} (no error code in this file: "
                        "read npu-smi info -t health for the code)", quotes=[q for q in [row] if q]))


def _health(cards: _Cards, args: dict[str, int], body: str, first: int) -> None:
    h = parse.parse_health(body, "npu-smi info -t health")
    npu = args.get("i", h.npu_id)
    c = cards.get(npu, args.get("c", 0))
    source = cards.source
    status_q = _quote_of(source, body, first, r"^\s*(Health Status|Health)\s*:")
    code_q = _quote_of(source, body, first, r"^\s*Error Code\s*:")
    c.quote("health", status_q)
    for code in h.chip.codes:
        q = code_q or status_q or Quote(source, first, code)
        info = h.info_for(code)
        c.events.append(FieldEvent(DeviceEvent(time_s=float(q.line or 0), kind="health", code=code,
                                               message=str(q) + (f" ({info})" if info else "")), q))
    if h.chip.codes:  # the codes say what is wrong: the table's state word adds nothing
        c.symptoms = [s for s in c.symptoms if not s.code.startswith("npu.health_")]
    elif (h.chip.status or "").lower() in _BAD_STATES:
        state = (h.chip.status or "").lower()
        c.symptoms.append(Symptom(code=f"npu.health_{state}", stage="health", failed=_BAD_STATES[state],
                                  message=f"npu-smi reports the chip's health as {h.chip.status} with no error code",
                                  quotes=[q for q in [status_q] if q]))


def _ecc(cards: _Cards, args: dict[str, int], body: str, first: int) -> None:
    e = parse.parse_ecc(body, "npu-smi info -t ecc")
    c = cards.get(args.get("i"), args.get("c", 0))
    counters: dict[str, Any] = {
        "sbe_volatile": e.sbe, "dbe_volatile": e.dbe, "sbe_aggregate": e.sbe_aggregate,
        "dbe_aggregate": e.dbe_aggregate, "retired_pages_sbe": e.sbe_isolated_pages,
        "retired_pages_dbe": e.dbe_isolated_pages,
        "retired_pages_pending": (bool((e.sbe_next_isolated_pages or 0) + (e.dbe_next_isolated_pages or 0))
                                  if e.sbe_next_isolated_pages is not None or e.dbe_next_isolated_pages is not None
                                  else None),
    }
    c.counters.update({k: v for k, v in counters.items() if v is not None})
    for key, label in (("dbe_volatile", "HBM Double Bit Error Count"), ("sbe_aggregate", "HBM Single Bit Aggregate"),
                       ("retired_pages_dbe", "HBM Double Bit Isolated Pages"),
                       ("retired_pages_sbe", "HBM Single Bit Isolated Pages"),
                       ("retired_pages_pending", "Next-Isolated Pages")):
        c.quote(key, _quote_of(cards.source, body, first, re.escape(label)))


def _board(cards: _Cards, args: dict[str, int], body: str, first: int) -> None:
    b = parse.parse_board(body, "npu-smi info -t board")
    c = cards.get(args.get("i", b.npu_id), args.get("c", 0))
    c.serial = c.serial or b.serial
    c.model = b.chip_name or c.model or b.model
    c.pci_bus_id = c.pci_bus_id or normalize_bus_id(b.pcie_bus)
    for k, v in (("software_version", b.software_version), ("firmware_version", b.firmware_version)):
        if v:
            c.firmware[k] = v
    c.quote("serial", _quote_of(cards.source, body, first, r"^\s*Serial Number\s*:"))


register_reader(Reader(kind=KIND, detect=detect, read=read, priority=20))
