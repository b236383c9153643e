"""Parsers for ``ascend-dmi`` output: diagnosis (``--dg``), bandwidth (``--bw``), FLOPS (``-f``)
and power stress (``-p``), as text tables or as JSON.

The reference (shared/reference/ascend.md) names the commands and the four result words, not the
exact layouts, so these parsers read by label and tolerate drift: a table is found by its header
line (the labels, not their columns), cells are split on ``|`` or runs of two or more spaces,
JSON is any list of objects (top level, or the first list inside an object) with keys compared
case- and space-blind. Log noise (``[INFO] ...``) is skipped wherever it appears. Anything else
is a one-line ParseError naming the command and the line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from drivers.api import DIAG_WORDS
from drivers.ascend.parse.text import NA, ParseError, _is_noise, _lines, _norm

_CODE = re.compile(r"\b[0-9A-Fa-f]{8}\b")
_SPLIT = re.compile(r"\s*\|\s*|\s{2,}|\t+")
_RULE = re.compile(r"^[\s+\-=|.*_]*$")  # box rules and separator lines

# canonical item kinds for the names ascend-dmi prints (its Chinese docs: 片上内存 = on-chip memory)
ITEM_KINDS = {"hbm": "hbm", "onchipmemory": "hbm", "memory": "hbm", "aicore": "aicore", "aic": "aicore",
              "aicoreerror": "aicore", "aivector": "aivector", "aicpu": "aicpu", "bandwidth": "bandwidth",
              "aiflops": "flops", "flops": "flops", "power": "power", "p2p": "p2p", "hccs": "p2p",
              "network": "network", "signalquality": "signal_quality"}


def item_kind(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return ITEM_KINDS.get(key, key or "unknown")


@dataclass(frozen=True)
class DiagRow:
    name: str
    result: str  # upper-case word as printed (one of DIAG_WORDS, or an unknown word kept as is)
    details: str
    codes: tuple[str, ...]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in _SPLIT.split(line.strip().strip("|")) if c.strip()]


def _json_rows(text: str, command: str) -> list[dict[str, Any]] | None:
    """Rows of a JSON answer (keys normalised), None when the text is not JSON."""
    body = "\n".join(ln for _, ln in _lines(text) if not _is_noise(ln)).strip()
    if not body.startswith(("{", "[")):
        return None
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise ParseError(command, f"unreadable JSON ({e.msg} at line {e.lineno})") from None
    rows: Any = data
    if isinstance(data, dict):
        rows = next((v for v in data.values() if isinstance(v, list)), [data])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ParseError(command, "JSON answer is not a list of objects")
    return [{_norm(str(k)): v for k, v in r.items()} for r in rows]


def table(text: str, command: str, header_has: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of the first table whose header line holds every label in ``header_has``
    (normalised substrings), each as {normalised label: cell}. JSON answers come back the same way."""
    rows = _json_rows(text, command)
    if rows is not None:
        return [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]
    header: list[str] | None = None
    out: list[dict[str, str]] = []
    for no, line in _lines(text):
        if _is_noise(line) or _RULE.match(line):
            continue
        cells = _cells(line)
        if header is None:
            keys = [_norm(c) for c in cells]
            if all(any(h in k for k in keys) for h in header_has):
                header = keys
            continue
        if len(cells) != len(header):
            if out:  # the table ended (a summary line follows)
                break
            raise ParseError(command, f"{len(cells)} cells under a header of {len(header)}", no, line)
        out.append(dict(zip(header, cells, strict=True)))
    if header is None:
        want = ", ".join(header_has)
        raise ParseError(command, f"no table with the labels {want} (is this ascend-dmi's output?)")
    return out


def column(row: dict[str, str], *candidates: str) -> str | None:
    """The first cell whose normalised label contains one of ``candidates`` (in order)."""
    for cand in candidates:
        for k, v in row.items():
            if cand in k:
                return v
    return None


def number(row: dict[str, str], command: str, what: str, *candidates: str, required: bool = True) -> float | None:
    raw = column(row, *candidates)
    if raw is None or raw.strip() in NA:
        if required:
            raise ParseError(command, f"no {what} value in {row}")
        return None
    m = re.match(r"^\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)", raw)
    if m is None:
        raise ParseError(command, f"{what} is not a number: {raw!r}")
    return float(m.group(1))


def parse_diagnosis(text: str, command: str = "ascend-dmi --dg") -> list[DiagRow]:
    """One row per item: a table with Item/Result columns, JSON objects with item and result keys,
    or (older layouts) a line per item ending in its word (``HBM ........ PASS``)."""
    rows = _json_rows(text, command)
    if rows is not None:
        out = []
        for r in rows:
            name = r.get("item") or r.get("name") or r.get("diagnosisitem")
            word = r.get("result") or r.get("status")
            if not isinstance(name, str) or not isinstance(word, str):
                raise ParseError(command, f"JSON item without item/result: {r}")
            details = str(r.get("details") or r.get("detail") or r.get("message") or "")
            out.append(DiagRow(name.strip(), word.strip().upper(), details, _codes(details)))
        if not out:
            raise ParseError(command, "no diagnosis items in the JSON answer")
        return out
    out = []
    header: list[str] | None = None
    for no, line in _lines(text):
        if _is_noise(line) or _RULE.match(line):
            continue
        cells = _cells(line)
        keys = [_norm(c) for c in cells]
        if header is None and any("item" in k for k in keys) and any("result" in k for k in keys):
            header = keys
            continue
        if header is not None and len(cells) >= 2:
            i_item = next(i for i, k in enumerate(header) if "item" in k)
            i_res = next(i for i, k in enumerate(header) if "result" in k)
            if max(i_item, i_res) >= len(cells):
                raise ParseError(command, "row shorter than its header", no, line)
            details = " ".join(c for i, c in enumerate(cells) if i not in (i_item, i_res) and c not in NA)
            out.append(DiagRow(cells[i_item], cells[i_res].upper(), details, _codes(details)))
            continue
        word = next((w for w in DIAG_WORDS if re.search(rf"\b{w}\b", line)), None)
        if word is not None:  # "HBM ........ PASS" / "AI Core: EMERGENCY_WARN (details)"
            name, _, rest = line.partition(word)
            name = name.strip(" .:\t|")
            if name:
                details = rest.strip(" :()\t|")
                out.append(DiagRow(name, word, details, _codes(details)))
    if not out:
        raise ParseError(command, "no diagnosis result (no item with PASS/GENERAL_WARN/IMPORTANT_WARN/EMERGENCY_WARN)")
    return out


def _codes(details: str) -> tuple[str, ...]:
    return tuple(c.upper() for c in _CODE.findall(details))


def parse_bandwidth(text: str, command: str = "ascend-dmi --bw") -> list[tuple[dict[str, str], float]]:
    """(row, GB/s) per row of a bandwidth table (one row for h2d/d2h/d2d, one per peer for p2p)."""
    rows = table(text, command, ("bandwidth",))
    if not rows:
        raise ParseError(command, "bandwidth table has no rows")
    out = []
    for r in rows:
        v = number(r, command, "bandwidth", "bandwidth(gb/s)", "bandwidth", "bw")
        assert v is not None
        out.append((r, v))
    return out


def parse_flops(text: str, command: str = "ascend-dmi -f") -> tuple[float, float | None]:
    """(TFLOPS, power in W or None) of a FLOPS test."""
    rows = table(text, command, ("flops",))
    if not rows:
        raise ParseError(command, "FLOPS table has no rows")
    r = rows[-1]
    tflops = number(r, command, "TFLOPS", "tflops", "flops")
    assert tflops is not None
    return tflops, number(r, command, "power", "power(w)", "power", required=False)


@dataclass(frozen=True)
class PowerRows:
    powers: list[float]
    temperatures: list[float]
    clocks: list[float]
    seconds: float | None


def parse_power_stress(text: str, command: str = "ascend-dmi -p") -> PowerRows:
    """The samples of a power stress: power, temperature and AI core clock per row."""
    rows = table(text, command, ("power",))
    if not rows:
        raise ParseError(command, "power stress table has no rows")
    powers, temps, clocks, times = [], [], [], []
    for r in rows:
        p = number(r, command, "power", "power(w)", "power")
        assert p is not None
        powers.append(p)
        t = number(r, command, "temperature", "temperature", "temp", required=False)
        if t is not None:
            temps.append(t)
        c = number(r, command, "AI core clock", "freq", required=False)
        if c is not None:
            clocks.append(c)
        s = number(r, command, "time", "time(s)", "time", required=False)
        if s is not None:
            times.append(s)
    return PowerRows(powers, temps, clocks, max(times) if times else None)
