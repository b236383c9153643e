"""The boxed ``npu-smi info`` table: one row pair per chip, split on ``|`` and ``/``, and the
process table below it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from drivers.ascend.parse.kv import _NUMBER
from drivers.ascend.parse.text import NA, ParseError, _empty, _is_noise, _lines


@dataclass(frozen=True)
class InfoChip:
    npu_id: int
    chip_id: int
    name: str
    health: str
    power_w: float | None
    temperature_c: float | None
    hugepages_used: int | None
    hugepages_total: int | None
    bus_id: str | None
    aicore_pct: int | None
    memory_used_mb: int | None  # DDR (0 / 0 on 910B; the card memory on 310P)
    memory_total_mb: int | None
    hbm_used_mb: int | None
    hbm_total_mb: int | None
    logic_id: int | None = None  # older layouts print the device (logic) id in row 2
    phy_id: int | None = None  # Atlas A3 layouts print the chip's physical id there instead

    @property
    def device_memory(self) -> tuple[int | None, int | None]:
        """(used, total) MB of the device memory: HBM where the chip has any, else DDR (310P)."""
        if self.hbm_total_mb:
            return self.hbm_used_mb, self.hbm_total_mb
        if self.memory_total_mb:
            return self.memory_used_mb, self.memory_total_mb
        return self.hbm_used_mb, self.hbm_total_mb


@dataclass(frozen=True)
class InfoProcess:
    npu_id: int
    chip_id: int | None
    pid: int
    name: str
    memory_mb: int | None


@dataclass(frozen=True)
class InfoTable:
    version: str | None
    chips: tuple[InfoChip, ...]
    processes: tuple[InfoProcess, ...]
    idle_npus: tuple[int, ...]  # "No running processes found in NPU n"
    warning: str | None
    notes: tuple[str, ...] = ()  # other lines outside the table (log noise), as printed

    def chip(self, npu_id: int, chip_id: int = 0) -> InfoChip | None:
        for c in self.chips:
            if c.npu_id == npu_id and c.chip_id == chip_id:
                return c
        return None


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


# Columns of the third cell, by the header word they start with, and how many values each has
_COLUMN_KINDS = (("power", 1), ("temp", 1), ("hugepage", 2), ("aicore", 1), ("memory", 2), ("hbm", 2))
_ROW1_DEFAULT = [("power", 1), ("temp", 1), ("hugepage", 2)]
_ROW2_DEFAULT = [("aicore", 1), ("memory", 2), ("hbm", 2)]
_VALUE = re.compile(r"(\S+?)\s*/\s*(\S+)|(\S+)")


def _header_columns(cell: str) -> list[tuple[str, int | None]]:
    cols: list[tuple[str, int | None]] = []
    for tok in cell.split():
        if tok.startswith("("):
            continue  # a unit split from its word: "Power (W)"
        low = tok.lower()
        kind = next(((k, n) for k, n in _COLUMN_KINDS if low.startswith(k)), None)
        cols.append(kind if kind is not None else (low, None))
    return cols


def _row_values(cell: str, cols: list[tuple[str, int | None]], command: str, no: int,
                line: str) -> dict[str, tuple[str, str | None]]:
    """Values of a row's third cell, one per header column: ``x`` or ``used / total``."""
    cell = re.sub(r"\bN/A\b", "NA", cell)
    toks = [(m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), None)
            for m in _VALUE.finditer(cell)]
    names = ", ".join(c for c, _ in cols)
    if len(toks) != len(cols):
        raise ParseError(command, f"expected {len(cols)} values ({names}), found {len(toks)}", no, line)
    out: dict[str, tuple[str, str | None]] = {}
    for (key, arity), (a, b) in zip(cols, toks, strict=True):
        if arity == 1 and b is not None:
            raise ParseError(command, f"expected one value for {key}, found {a}/{b}", no, line)
        if arity == 2 and b is None and a not in NA:
            raise ParseError(command, f"expected 'used / total' for {key}, found {a!r}", no, line)
        out[key] = (a, b)
    return out


def _num(vals: dict[str, tuple[str, str | None]], key: str, part: int, conv: type, command: str,
         no: int, line: str) -> Any:
    if key not in vals:
        return None
    tok = vals[key][part]
    if tok is None or tok in NA:
        return None
    try:
        x = float(tok)
    except ValueError:
        raise ParseError(command, f"{key}: {tok!r} is not a number", no, line) from None
    if conv is int:
        if not x.is_integer():
            raise ParseError(command, f"{key}: {tok!r} is not an integer", no, line)
        return int(x)
    return x


def _int_token(tok: str, what: str, command: str, no: int, line: str) -> int:
    try:
        return int(tok)
    except ValueError:
        raise ParseError(command, f"{what} {tok!r} is not an integer", no, line) from None


def parse_info(text: str, command: str = "npu-smi info") -> InfoTable:
    """The boxed summary: two rows per chip, then an optional process table and WARNING line.

    Rows are split on ``|``; the third cell's values are matched to the header's column words
    (``Power(W) Temp(C) Hugepages-Usage(page)`` / ``AICore(%) Memory-Usage(MB) HBM-Usage(MB)``),
    with ``used / total`` pairs read whatever the spacing around ``/``. Lines without ``|``
    (driver warnings, log noise) are kept in ``notes``; a row cut short, a chip row without its
    second row, or a table without its bottom border is an error.
    """
    if _empty(text):
        raise ParseError(command, "empty output")
    version: str | None = None
    chips: list[InfoChip] = []
    procs: list[InfoProcess] = []
    idle: list[int] = []
    warning: str | None = None
    notes: list[str] = []
    section = "top"  # top | chips | procs
    pending: tuple[int, str, str, dict[str, tuple[str, str | None]], int, str] | None = None
    saw_header = False
    closed = False  # the header row ends with "|": so must every row (else it was cut off)
    ncells = 3
    cols1: list[tuple[str, int | None]] = list(_ROW1_DEFAULT)
    cols2: list[tuple[str, int | None]] = list(_ROW2_DEFAULT)
    second_id = "logic"
    last_kind = "none"  # border | row
    first_text: str | None = None
    for no, line in _lines(text):
        s = line.strip()
        if not s:
            continue
        if not s.startswith(("|", "+")):
            if "|" in s and not _is_noise(s):
                raise ParseError(command, "line outside the table", no, line)
            if s.startswith("[WARNING]") and warning is None:
                warning = s
            else:
                notes.append(s)
            first_text = first_text or s
            continue
        if s.startswith("+"):
            if set(s) - set("+-=") or len(s) < 2:
                raise ParseError(command, "malformed table border", no, line)
            last_kind = "border"
            continue
        if closed and not s.endswith("|"):
            raise ParseError(command, "row does not end with '|' (cut-off output?)", no, line)
        last_kind = "row"
        cells = _cells(s)
        first = cells[0]
        low = [c.lower() for c in cells]
        if first.lower().startswith("npu-smi"):
            m = re.search(r"Version:\s*(\S+)", s, re.I)
            version = m.group(1) if m else first.split()[1] if len(first.split()) > 1 else None
            continue
        if low[0].startswith("npu") and any("health" in c for c in low):
            section, saw_header, closed, ncells = "chips", True, s.endswith("|"), len(cells)
            cols1 = _header_columns(cells[2]) if len(cells) > 2 else cols1
            continue
        if low[0].startswith("chip") and any("bus-id" in c or "bus id" in c for c in low):
            cols2 = _header_columns(cells[2]) if len(cells) > 2 else cols2
            words = low[0].split()
            second_id = "phy" if len(words) > 1 and "phy" in words[1] else "logic"
            continue
        if any(re.match(r"process\s*id", c) for c in low):
            if pending is not None:
                raise ParseError(command, "chip row without its second row", pending[4], pending[5])
            section = "procs"
            continue
        if section == "procs":
            m = re.match(r"No running processes? found in NPU\s+(\d+)", first, re.I)
            if m:
                idle.append(int(m.group(1)))
                continue
            if len(cells) < 3:
                raise ParseError(command, "malformed process row", no, line)
            ids = first.split()
            if not ids:
                raise ParseError(command, "process row without an NPU id", no, line)
            mem = cells[3] if len(cells) > 3 else "NA"
            mem_tok = _NUMBER.match(mem)
            procs.append(InfoProcess(
                npu_id=_int_token(ids[0], "NPU id", command, no, line),
                chip_id=_int_token(ids[1], "chip id", command, no, line) if len(ids) > 1 else None,
                pid=_int_token(cells[1], "process id", command, no, line), name=cells[2],
                memory_mb=None if mem in NA else _int_token(mem_tok.group(1) if mem_tok else mem,
                                                           "process memory", command, no, line),
            ))
            continue
        if section != "chips":
            raise ParseError(command, "data row before the table header", no, line)
        if len(cells) != ncells:
            raise ParseError(command, f"expected {ncells} cells split by '|', found {len(cells)}", no, line)
        if pending is None:
            ids = first.split()
            if len(ids) < 2:
                raise ParseError(command, "expected 'NPU-id  Name' in the first cell", no, line)
            npu = _int_token(ids[0], "NPU id", command, no, line)
            vals1 = _row_values(cells[2], cols1, command, no, line)
            pending = (npu, " ".join(ids[1:]), cells[1], vals1, no, line)
            continue
        npu, name, health, vals1, no1, line1 = pending
        pending = None
        ids2 = first.split()
        if not ids2:
            raise ParseError(command, "expected the chip id in the first cell", no, line)
        chip_idx = _int_token(ids2[0], "chip id", command, no, line)
        second = _int_token(ids2[1], "second id", command, no, line) if len(ids2) > 1 and ids2[1] not in NA else None
        vals2 = _row_values(cells[2], cols2, command, no, line)
        if not re.fullmatch(r"(?:[0-9A-Fa-f]{4,8}:)?[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]", cells[1]) \
                and cells[1] not in NA:
            raise ParseError(command, f"bus id {cells[1]!r} is not a PCI address", no, line)
        if any(c.npu_id == npu and c.chip_id == chip_idx for c in chips):
            raise ParseError(command, f"NPU {npu} chip {chip_idx} listed twice", no, line)
        chips.append(InfoChip(
            npu_id=npu, chip_id=chip_idx, name=name, health=health,
            power_w=_num(vals1, "power", 0, float, command, no1, line1),
            temperature_c=_num(vals1, "temp", 0, float, command, no1, line1),
            hugepages_used=_num(vals1, "hugepage", 0, int, command, no1, line1),
            hugepages_total=_num(vals1, "hugepage", 1, int, command, no1, line1),
            bus_id=None if cells[1] in NA else cells[1],
            aicore_pct=_num(vals2, "aicore", 0, int, command, no, line),
            memory_used_mb=_num(vals2, "memory", 0, int, command, no, line),
            memory_total_mb=_num(vals2, "memory", 1, int, command, no, line),
            hbm_used_mb=_num(vals2, "hbm", 0, int, command, no, line),
            hbm_total_mb=_num(vals2, "hbm", 1, int, command, no, line),
            logic_id=second if second_id == "logic" else None,
            phy_id=second if second_id == "phy" else None,
        ))
    if pending is not None:
        raise ParseError(command, "chip row without its second row (cut-off output?)", pending[4], pending[5])
    if not saw_header:
        said = f" (it printed {first_text[:80]!r})" if first_text else ""
        raise ParseError(command, f"no 'NPU  Name | Health | Power(W) ...' table header{said}")
    if last_kind == "row":
        raise ParseError(command, "the table ends without its bottom border (cut-off output?)")
    return InfoTable(version=version, chips=tuple(chips), processes=tuple(procs),
                     idle_npus=tuple(idle), warning=warning, notes=tuple(notes))
