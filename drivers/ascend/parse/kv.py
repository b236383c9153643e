"""Key/value views (``npu-smi info -t ...``): card, chip and MCU blocks read by label and the
``:`` separator, never by column, with units split off and checked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from drivers.ascend.parse.text import _TEMP_UNITS, NA, ParseError, _empty, _is_noise, _lines, _norm


@dataclass
class Field:
    value: str
    line_no: int
    line: str
    more: list[str] = field(default_factory=list)  # continuation lines (empty label)
    repeated: tuple[int, str] | None = None  # (line no, line) of a second occurrence in the block


@dataclass
class Block:
    """One block of a key/value view: the card part, one chip, or the MCU."""

    fields: dict[str, Field] = field(default_factory=dict)  # normalised label -> field
    labels: dict[str, str] = field(default_factory=dict)  # normalised -> label as printed
    command: str = "npu-smi"

    def find(self, *labels: str) -> Field | None:
        for label in labels:
            f = self.fields.get(_norm(label))
            if f is not None:
                if f.repeated:
                    raise ParseError(self.command, f"label {label!r} printed twice in one block (first at "
                                     f"line {f.line_no})", *f.repeated)
                return f
        return None

    def raw(self) -> dict[str, str]:
        return {self.labels[k]: f.value for k, f in self.fields.items()}


@dataclass
class KVView:
    command: str
    card: Block
    chips: list[Block]
    mcus: list[Block]

    def chip(self, chip_id: int | None = None) -> Block | None:
        """The NPU chip block with this Chip ID (None: the first); None if the view has none."""
        for b in self.chips:
            f = b.fields.get("chipid")
            if chip_id is None or (f is not None and f.value.strip() == str(chip_id)):
                return b
        return None

    def find(self, *labels: str, chip: int | None = None) -> Field | None:
        """A field of the NPU chip block, else of the card part; never from an MCU block."""
        block = self.chip(chip)
        if block is not None:
            f = block.find(*labels)
            if f is not None:
                return f
        return self.card.find(*labels)

    # typed access -------------------------------------------------------------------------
    def text(self, *labels: str, chip: int | None = None) -> str | None:
        f = self.find(*labels, chip=chip)
        if f is None or f.value.strip() in NA:
            return None
        return f.value.strip()

    def integer(self, *labels: str, chip: int | None = None, unit: str | None = None) -> int | None:
        f = self.find(*labels, chip=chip)
        return None if f is None else _to_int(self.command, f, unit)

    def number(self, *labels: str, chip: int | None = None, unit: str | None = None) -> float | None:
        f = self.find(*labels, chip=chip)
        return None if f is None else _to_float(self.command, f, unit)


_NUMBER = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*)$")


def _split_unit(command: str, f: Field, unit: str | None) -> str:
    """The number part of ``f``; a trailing unit must be the expected one (``93.4 W``, ``41 C``)."""
    v = f.value.strip()
    m = _NUMBER.match(v)
    if m is None or not m.group(2):
        return v
    suffix = m.group(2).strip().lower()
    expected = {unit.lower()} if unit else set()
    if unit and unit.lower() == "c":
        expected = set(_TEMP_UNITS)
    if unit and unit.lower() == "%":
        expected = {"%"}
    if suffix in expected:
        return m.group(1)
    if not unit:
        raise ParseError(command, f"expected a number, found trailing {m.group(2).strip()!r}", f.line_no, f.line)
    raise ParseError(command, f"unexpected unit {m.group(2).strip()!r} (expected {unit})", f.line_no, f.line)


def _label_unit(f: Field) -> str | None:
    m = re.search(r"\(([^()]*)\)\s*$", f.line.partition(":")[0])
    return m.group(1) if m else None


def _to_int(command: str, f: Field, unit: str | None = None) -> int | None:
    v = f.value.strip()
    if v in NA:
        return None
    if v.lower().startswith("0x"):
        try:
            return int(v, 16)
        except ValueError:
            raise ParseError(command, "expected a hex integer", f.line_no, f.line) from None
    num = _split_unit(command, f, unit or _label_unit(f))  # a ParseError of its own on a bad unit
    if re.fullmatch(r"[-+]?\d+", num):
        return int(num)
    try:
        x = float(num)  # "5.0" for an integer field is fine; "5.3" is not an integer
    except ValueError:
        x = float("nan")
    if x.is_integer():
        return int(x)
    raise ParseError(command, "expected an integer", f.line_no, f.line)


def _to_float(command: str, f: Field, unit: str | None = None) -> float | None:
    v = f.value.strip()
    if v in NA:
        return None
    num = _split_unit(command, f, unit or _label_unit(f))
    try:
        x = float(num)
    except ValueError:
        raise ParseError(command, "expected a number", f.line_no, f.line) from None
    if x != x or x in (float("inf"), float("-inf")):
        raise ParseError(command, "expected a finite number", f.line_no, f.line)
    return x


def _is_mcu(block: Block) -> bool:
    f = block.fields.get("chipname")
    return f is not None and f.value.strip().lower() == "mcu"


def parse_kv(text: str, command: str) -> KVView:
    """Split a key/value view into card, chip and MCU blocks.

    A block starts at ``Chip ID``; at ``Chip Name`` after a blank line, after the card part,
    or when the current block already has one; and at ``Chip Name : mcu`` unless the current
    block holds nothing but its ``Chip ID`` (so an MCU block is found wherever it is printed).
    Lines with an empty label continue the previous field (multi-line ``Error Information``).
    Unknown labels are kept but never required; a label printed twice in a block is an error
    only when something reads it.
    """
    if _empty(text):
        raise ParseError(command, "empty output")
    card = Block(command=command)
    blocks: list[Block] = []
    current = card
    last: Field | None = None
    blank_before = False
    seen_any = False
    for no, line in _lines(text):
        if not line.strip():
            blank_before = True
            continue
        if _is_noise(line):
            continue
        if ":" not in line:
            raise ParseError(command, "expected 'label : value'", no, line)
        label, _, value = line.partition(":")
        label, value = label.strip(), value.strip()
        if not label:
            if last is None:
                raise ParseError(command, "continuation line before any field", no, line)
            last.more.append(value)
            blank_before = False
            continue
        key = _norm(label)
        starts = key == "chipid" or (key == "chipname" and (
            blank_before or current is card or key in current.fields
            or (value.lower() == "mcu" and bool(set(current.fields) - {"chipid", "npuid"}))
        ))
        if starts:
            current = Block(command=command)
            blocks.append(current)
        if key in current.fields:
            current.fields[key].repeated = current.fields[key].repeated or (no, line)
        else:
            current.fields[key] = Field(value=value, line_no=no, line=line)
            current.labels[key] = label
        last = current.fields[key]
        blank_before = False
        seen_any = True
    if not seen_any:
        raise ParseError(command, "no 'label : value' lines in the output")
    chips = [b for b in blocks if not _is_mcu(b)]
    mcus = [b for b in blocks if _is_mcu(b)]
    return KVView(command=command, card=card, chips=chips, mcus=mcus)
