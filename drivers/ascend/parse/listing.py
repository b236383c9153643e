"""``npu-smi info -l`` (the cards) and ``npu-smi info -m`` (card/chip mapping)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.ascend.parse.kv import Field, _to_int
from drivers.ascend.parse.text import NA, ParseError, _empty, _is_noise, _lines, _norm


@dataclass(frozen=True)
class ListedCard:
    npu_id: int
    chip_count: int | None
    product_name: str | None = None
    serial: str | None = None


@dataclass(frozen=True)
class CardList:
    total_count: int | None
    cards: tuple[ListedCard, ...]


def parse_list(text: str, command: str = "npu-smi info -l") -> CardList:
    """``Total Count`` then per card ``NPU ID`` (+ ``Product Name``, ``Serial Number``), ``Chip Count``.

    Unknown labels are ignored. A ``Total Count`` that disagrees with the NPU IDs listed is an
    error (cut-off output would otherwise hide cards).
    """
    if _empty(text):
        raise ParseError(command, "empty output")
    total: int | None = None
    total_at: tuple[int, str] | None = None
    cards: list[dict[str, object]] = []
    for no, line in _lines(text):
        if not line.strip() or _is_noise(line):
            continue
        if re.match(r"there is no (npu )?(card|device)", line.strip(), re.I):
            return CardList(total_count=0, cards=())
        if ":" not in line:
            raise ParseError(command, "expected 'label : value'", no, line)
        label, _, value = line.partition(":")
        key, value = _norm(label), value.strip()
        f = Field(value=value, line_no=no, line=line)
        if key in ("totalcount", "cardcount", "npucount"):
            total, total_at = _to_int(command, f), (no, line)
        elif key == "npuid":
            npu = _to_int(command, f)
            if npu is None:
                raise ParseError(command, "NPU ID is NA", no, line)
            if any(c["npu_id"] == npu for c in cards):
                raise ParseError(command, f"NPU ID {npu} listed twice", no, line)
            cards.append({"npu_id": npu})
        elif not cards:
            if key in ("chipcount", "productname", "serialnumber"):
                raise ParseError(command, "card field before the first NPU ID", no, line)
        elif key == "chipcount":
            cards[-1]["chip_count"] = _to_int(command, f)
        elif key == "productname":
            cards[-1]["product_name"] = None if value in NA else value
        elif key == "serialnumber":
            cards[-1]["serial"] = None if value in NA else value
    if total is None and not cards:
        raise ParseError(command, "no 'Total Count' or 'NPU ID' in the output")
    if total is not None and cards and total != len(cards) and total_at is not None:
        raise ParseError(command, f"Total Count is {total} but {len(cards)} NPU IDs are listed (cut-off output?)",
                         *total_at)
    listed = tuple(
        ListedCard(
            npu_id=int(c["npu_id"]),  # type: ignore[call-overload]
            chip_count=c.get("chip_count"),  # type: ignore[arg-type]
            product_name=c.get("product_name"),  # type: ignore[arg-type]
            serial=c.get("serial"),  # type: ignore[arg-type]
        )
        for c in cards
    )
    return CardList(total_count=total, cards=listed)


@dataclass(frozen=True)
class ChipMapping:
    npu_id: int
    chip_id: int
    logic_id: int | None  # None for the MCU ("-")
    name: str  # "Ascend 910B3", "Mcu"

    @property
    def is_mcu(self) -> bool:
        return self.logic_id is None or self.name.strip().lower() == "mcu"


_MAP_COLUMNS = re.compile(r"NPU\s*ID|Chip\s*Logic\s*ID|Chip\s*Phy[-\s]?ID|Chip\s*ID|Chip\s*Name|Chip\s*Type", re.I)


def parse_mapping(text: str, command: str = "npu-smi info -m") -> list[ChipMapping]:
    """Rows under a ``NPU ID  Chip ID  Chip Logic ID  [Chip Phy-ID]  Chip Name`` header.

    Columns are taken from the header, in whatever order it names them; the name column takes
    the rest of its line (``Ascend 910B3``). A boxed variant (``|`` separators) reads the same.
    """
    if _empty(text):
        raise ParseError(command, "empty output")
    rows: list[ChipMapping] = []
    columns: list[str] = []
    seen: set[tuple[int, int]] = set()
    for no, line in _lines(text):
        s = line.replace("|", " ").strip()
        if not s or _is_noise(line) or set(s) <= set("+-= "):
            continue
        if re.match(r"there is no (npu )?(card|device)", s, re.I):
            return []
        if re.match(r"NPU\s*ID\b", s, re.I):
            columns = [re.sub(r"[\s-]+", "", m.group(0)).lower() for m in _MAP_COLUMNS.finditer(s)]
            if not {"npuid", "chipid", "chipname"} <= set(columns):
                raise ParseError(command, "header lacks NPU ID, Chip ID or Chip Name", no, line)
            continue
        if not columns:
            raise ParseError(command, "data before the 'NPU ID  Chip ID ...' header", no, line)
        toks = s.split()
        name_at = columns.index("chipname")
        after = len(columns) - name_at - 1
        if len(toks) < len(columns):
            raise ParseError(command, f"expected {len(columns)} columns ({', '.join(columns)})", no, line)
        cells = dict(zip(columns[:name_at], toks[:name_at], strict=True))
        name = " ".join(toks[name_at:len(toks) - after])
        cells.update(zip(columns[name_at + 1:], toks[len(toks) - after:], strict=True))
        try:
            npu, chip = int(cells["npuid"]), int(cells["chipid"])
            lg = cells.get("chiplogicid", "-")
            logic = None if lg in NA else int(lg)
        except ValueError:
            raise ParseError(command, "NPU ID, Chip ID and Chip Logic ID must be integers", no, line) from None
        if (npu, chip) in seen:
            raise ParseError(command, f"NPU {npu} chip {chip} listed twice", no, line)
        seen.add((npu, chip))
        rows.append(ChipMapping(npu_id=npu, chip_id=chip, logic_id=logic, name=name))
    if not columns:
        raise ParseError(command, "no 'NPU ID  Chip ID  Chip Logic ID  Chip Name' header")
    return rows
