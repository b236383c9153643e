"""Parsers for ``npu-smi`` text output (910B, npu-smi 23.x-24.x).

npu-smi's layouts drift between versions (labels, widths), so key/value views are read by
label and the ``:`` separator, never by column, with the label variants of the reference
accepted; the boxed ``info`` table is split on ``|`` and ``/``. ``NA`` reads as None. Every
parser raises ParseError with one line naming the command and the offending line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from drivers.api import DeviceError


class ParseError(DeviceError, ValueError):
    """npu-smi printed something we cannot read; the message is one line."""

    def __init__(self, command: str, message: str, line_no: int | None = None, line: str | None = None):
        where = f": line {line_no}" if line_no is not None else ""
        shown = f": {line.strip()[:120]!r}" if line is not None else ""
        super().__init__(f"{command}{where}{shown}: {message}".replace("\n", " ").replace("\r", " "))
        self.command = command
        self.line_no = line_no


NA = ("NA", "N/A", "-", "", "--")


def _norm(label: str) -> str:
    """Label key: case and spaces ignored (``Temperature (C)`` == ``Temperature(C)``)."""
    return re.sub(r"\s+", "", label).lower()


def _is_noise(line: str) -> bool:
    """Log lines npu-smi or the driver interleave with the output: ``[WARNING]...``,
    ``[ERROR] DRV(...)...``, ``[INFO]``. They carry no data, wherever they appear."""
    return line.lstrip().startswith("[")


def _lines(text: str) -> list[tuple[int, str]]:
    """(1-based number, line) for each line; CRLF, lone CR and a BOM are tolerated."""
    text = text.lstrip("\ufeff")
    return list(enumerate(re.split(r"\r\n|\r|\n", text), 1))


def _empty(text: str) -> bool:
    return not text.strip()


# Label variants seen across npu-smi versions (reference: "Output conventions"), plus unit-less
# spellings: a unit-less label's value may carry the unit (``41 C``), else it is in the usual unit.
TEMPERATURE = ("Temperature(C)", "Temperature (C)", "NPU Temperature (C)", "NPU Temperature(C)",
               "Chip Temperature(C)", "Temp(C)", "NPU Temp(C)", "Temperature", "NPU Temperature")
HEALTH = ("Health Status", "Health", "NPU Health", "NPU Health Status")
POWER = ("NPU Real-time Power(W)", "Power(W)", "Power Dissipation(W)", "Real-time Power(W)",
         "NPU Power(W)", "Power", "NPU Real-time Power", "Power Dissipation")
_TEMP_UNITS = ("c", "°c", "℃", "degc")


# --------------------------------------------------------------------------- key/value views


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


# --------------------------------------------------------------------------- typed views


@dataclass(frozen=True)
class Board:
    npu_id: int | None
    product_name: str | None
    model: str | None
    manufacturer: str | None
    serial: str | None
    software_version: str | None
    firmware_version: str | None
    compatibility: str | None
    pcie_bus: str | None
    pci_vendor_id: int | None
    pci_device_id: int | None
    chip_count: int | None
    chip_type: str | None  # with -c: "Ascend"
    chip_name: str | None  # with -c: "910B3" (or "mcu" for the MCU chip)
    chip_version: str | None
    chip_firmware_version: str | None
    raw: dict[str, str]


_BOARD_LABELS = ("Serial Number", "Product Name", "Software Version", "Firmware Version", "Chip Name",
                 "Chip Type", "Board ID", "PCIe Bus Info", "PCI Device ID")


def parse_board(text: str, command: str = "npu-smi info -t board") -> Board:
    v = parse_kv(text, command)
    blocks = [v.card, *v.chips, *v.mcus]
    if not any(b.fields.get(_norm(label)) for b in blocks for label in _BOARD_LABELS):
        raise ParseError(command, "none of the board fields (Serial Number, Chip Name, Firmware Version...)")
    chip = v.chip()
    mcu = v.mcus[0] if v.mcus and chip is None else None
    src = chip or mcu
    chip_fw = src.find("Firmware Version") if src is not None else None
    card_fw = v.card.find("Firmware Version")
    bus = (src.find("PCIe Bus Info") if src is not None else None) or v.card.find("PCIe Bus Info")
    return Board(
        npu_id=v.integer("NPU ID"),
        product_name=v.text("Product Name"),
        model=v.text("Model"),
        manufacturer=v.text("Manufacturer"),
        serial=v.text("Serial Number"),
        software_version=v.text("Software Version"),
        firmware_version=None if card_fw is None or card_fw.value in NA else card_fw.value,
        compatibility=v.text("Compatibility"),
        pcie_bus=None if bus is None or bus.value in NA else bus.value,
        pci_vendor_id=v.integer("PCI Vendor ID"),
        pci_device_id=v.integer("PCI Device ID"),
        chip_count=v.integer("Chip Count"),
        chip_type=_block_text(src, "Chip Type"),
        chip_name=_block_text(src, "Chip Name"),
        chip_version=_block_text(src, "Chip Version"),
        chip_firmware_version=None if chip_fw is None or chip_fw.value in NA else chip_fw.value,
        raw={**v.card.raw(), **(src.raw() if src is not None else {})},
    )


def _block_text(block: Block | None, label: str) -> str | None:
    if block is None:
        return None
    f = block.find(label)
    return None if f is None or f.value.strip() in NA else f.value.strip()


# States npu-smi prints, plus the library's level names some versions print instead.
_HEALTH_STATES = {"ok", "warning", "alarm", "critical", "unknown", "general warning",
                  "important warning", "emergency warning", "normal", "minor", "major", "fault"}
_HEALTH_WORDS = re.compile(r"^[A-Za-z][A-Za-z _-]{0,39}$")


@dataclass(frozen=True)
class ChipHealth:
    status: str | None  # "OK", "Warning", "Alarm", "Critical", "UNKNOWN"; None for NA
    codes: tuple[str, ...]  # 8 upper-case hex digits each
    information: tuple[str, ...]  # one text per code where npu-smi could fetch it

    @property
    def known_status(self) -> bool:
        return self.status is None or self.status.lower() in _HEALTH_STATES


@dataclass(frozen=True)
class Health:
    npu_id: int | None
    chip: ChipHealth
    mcu: ChipHealth | None = None

    def info_for(self, code: str) -> str:
        """npu-smi's text for one code (texts pair with codes by position when counts match)."""
        c, info = self.chip.codes, self.chip.information
        if code in c and len(info) == len(c):
            return info[c.index(code)]
        return "; ".join(info)


# a health code: 8 hex digits, or 0x and up to 8 (never a bare shorter token: a cut-off code
# like "80E0180" must not turn into 0080E018)
_HEX_CODE = re.compile(r"^(?:0[xX][0-9A-Fa-f]{1,8}|[0-9A-Fa-f]{8})$")


def _chip_health(v: KVView, block: Block | None, command: str) -> ChipHealth:
    def get(*labels: str) -> Field | None:
        if block is not None:
            f = block.find(*labels)
            if f is not None:
                return f
        in_chip = block is None or any(b is block for b in v.chips)
        return v.card.find(*labels) if in_chip else None

    st = get(*HEALTH)
    if st is None:
        raise ParseError(command, "no 'Health Status' field")
    status = None if st.value.strip() in NA else st.value.strip()
    # an unseen state word is kept as printed (verdicts follow the codes, not the word);
    # anything that is not a word (a number, a cut-off line) is an error
    if status is not None and not _HEALTH_WORDS.match(status):
        raise ParseError(command, "unreadable health state", st.line_no, st.line)
    codes: list[str] = []
    ec = get("Error Code", "Error Codes")
    if ec is not None and ec.value.strip() not in NA:
        for tok in re.split(r"[\s,;]+", " ".join([ec.value, *ec.more]).strip()):
            if tok in NA:
                continue
            if not _HEX_CODE.match(tok):
                raise ParseError(command, f"error code {tok!r} is not 8 hex digits", ec.line_no, ec.line)
            code = f"{int(tok, 16):08X}"
            if code not in codes:
                codes.append(code)
    infos: list[str] = []
    ei = get("Error Information", "Error Info")
    if ei is not None:
        infos = [t.strip() for t in [ei.value, *ei.more] if t.strip() and t.strip() not in NA]
    return ChipHealth(status=status, codes=tuple(codes), information=tuple(infos))


def parse_health(text: str, command: str = "npu-smi info -t health") -> Health:
    v = parse_kv(text, command)
    chip = _chip_health(v, v.chip(), command)
    mcu = _chip_health(v, v.mcus[0], command) if v.mcus and v.mcus[0].find(*HEALTH) else None
    return Health(npu_id=v.integer("NPU ID"), chip=chip, mcu=mcu)


@dataclass(frozen=True)
class CommonChip:
    chip_id: int | None
    memory_usage_pct: int | None
    hbm_usage_pct: int | None
    aicore_usage_pct: int | None
    aicore_freq_mhz: int | None  # rated
    aicore_cur_freq_mhz: int | None  # below the rated one when throttled
    aicore_count: int | None
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True)
class Common:
    npu_id: int | None
    chips: tuple[CommonChip, ...]
    mcu_temperature_c: float | None

    def chip(self, chip_id: int = 0) -> CommonChip:
        for c in self.chips:
            if c.chip_id == chip_id or c.chip_id is None:
                return c
        return self.chips[0]


def parse_common(text: str, command: str = "npu-smi info -t common") -> Common:
    v = parse_kv(text, command)
    blocks: list[Block | None] = list(v.chips) or [None]
    chips = []
    for b in blocks:
        cid = None
        if b is not None and b.find("Chip ID") is not None:
            cid = _to_int(command, b.find("Chip ID"))  # type: ignore[arg-type]

        def num(*labels: str, _b: Block | None = b, unit: str | None = None) -> float | None:
            f = _b.find(*labels) if _b is not None else v.card.find(*labels)
            if f is None and _b is not None:
                f = v.card.find(*labels)
            return None if f is None else _to_float(command, f, unit)

        def integer(*labels: str, _b: Block | None = b) -> int | None:
            f = _b.find(*labels) if _b is not None else v.card.find(*labels)
            if f is None and _b is not None:
                f = v.card.find(*labels)
            return None if f is None else _to_int(command, f)

        chips.append(CommonChip(
            chip_id=cid,
            memory_usage_pct=integer("Memory Usage Rate(%)"),
            hbm_usage_pct=integer("HBM Usage Rate(%)"),
            aicore_usage_pct=integer("Aicore Usage Rate(%)", "AI Core Usage Rate(%)"),
            aicore_freq_mhz=integer("Aicore Freq(MHZ)", "AI Core Freq(MHZ)", "Aicore Rated Freq(MHZ)"),
            aicore_cur_freq_mhz=integer("Aicore curFreq(MHZ)", "AI Core curFreq(MHZ)", "Aicore Cur Freq(MHZ)",
                                        "Aicore Current Freq(MHZ)"),
            aicore_count=integer("Aicore Count", "AI Core Count"),
            temperature_c=num(*TEMPERATURE, unit="C"),
            power_w=num(*POWER, unit="W"),
        ))
    if all(c.temperature_c is None and c.aicore_freq_mhz is None and c.power_w is None for c in chips):
        raise ParseError(command, "no chip fields (Temperature, Aicore Freq, Power) found")
    mcu_t = None
    if v.mcus:
        f = v.mcus[0].find(*TEMPERATURE)
        mcu_t = None if f is None else _to_float(command, f, "C")
    return Common(npu_id=v.integer("NPU ID"), chips=tuple(chips), mcu_temperature_c=mcu_t)


@dataclass(frozen=True)
class Usages:
    hbm_capacity_mb: int | None
    hbm_usage_pct: int | None
    aicore_pct: int | None
    aivector_pct: int | None
    aicpu_pct: int | None
    ctrlcpu_pct: int | None
    hbm_bandwidth_pct: int | None
    npu_utilization_pct: int | None
    aicube_pct: int | None
    ddr_capacity_mb: int | None


def parse_usages(text: str, command: str = "npu-smi info -t usages") -> Usages:
    v = parse_kv(text, command)
    u = Usages(
        hbm_capacity_mb=v.integer("HBM Capacity(MB)"),
        hbm_usage_pct=v.integer("HBM Usage Rate(%)"),
        aicore_pct=v.integer("Aicore Usage Rate(%)"),
        aivector_pct=v.integer("Aivector Usage Rate(%)"),
        aicpu_pct=v.integer("Aicpu Usage Rate(%)"),
        ctrlcpu_pct=v.integer("Ctrlcpu Usage Rate(%)"),
        hbm_bandwidth_pct=v.integer("HBM Bandwidth Usage Rate(%)"),
        npu_utilization_pct=v.integer("NPU Utilization(%)"),
        aicube_pct=v.integer("Aicube Usage Rate(%)"),
        ddr_capacity_mb=v.integer("DDR Capacity(MB)"),
    )
    if u.hbm_capacity_mb is None and u.aicore_pct is None:
        raise ParseError(command, "no 'HBM Capacity(MB)' or 'Aicore Usage Rate(%)' field")
    return u


@dataclass(frozen=True)
class Memory:
    hbm_capacity_mb: int | None
    hbm_clock_mhz: int | None
    hbm_temperature_c: float | None
    hbm_manufacturer_id: int | None
    ddr_capacity_mb: int | None = None  # 0 on 910B; the card memory on 310P

    @property
    def capacity_mb(self) -> int | None:
        """The device memory: HBM where there is any, else DDR (310P cards have no HBM)."""
        if self.hbm_capacity_mb:
            return self.hbm_capacity_mb
        return self.ddr_capacity_mb or self.hbm_capacity_mb


def parse_memory(text: str, command: str = "npu-smi info -t memory") -> Memory:
    v = parse_kv(text, command)
    if v.find("HBM Capacity(MB)") is None and v.find("DDR Capacity(MB)") is None:
        raise ParseError(command, "no 'HBM Capacity(MB)' or 'DDR Capacity(MB)' field")
    return Memory(
        hbm_capacity_mb=v.integer("HBM Capacity(MB)"),
        hbm_clock_mhz=v.integer("HBM Clock Speed(MHz)"),
        hbm_temperature_c=v.number("HBM Temperature(C)", "HBM Temperature", unit="C"),
        hbm_manufacturer_id=v.integer("HBM Manufacturer ID"),
        ddr_capacity_mb=v.integer("DDR Capacity(MB)"),
    )


def _single(text: str, command: str, labels: tuple[str, ...], what: str, unit: str) -> float | None:
    v = parse_kv(text, command)
    f = v.find(*labels)
    if f is None:
        raise ParseError(command, f"no {what} field (tried {', '.join(labels[:4])}...)")
    return _to_float(command, f, unit)


def parse_temp(text: str, command: str = "npu-smi info -t temp") -> float | None:
    return _single(text, command, TEMPERATURE, "temperature", "C")


def parse_power(text: str, command: str = "npu-smi info -t power") -> float | None:
    return _single(text, command, POWER, "power", "W")


@dataclass(frozen=True)
class Ecc:
    sbe: int | None  # current (since boot)
    dbe: int | None
    sbe_aggregate: int | None  # lifetime
    dbe_aggregate: int | None
    sbe_isolated_pages: int | None
    dbe_isolated_pages: int | None
    sbe_next_isolated_pages: int | None  # applied at the next reset
    dbe_next_isolated_pages: int | None


def parse_ecc(text: str, command: str = "npu-smi info -t ecc") -> Ecc:
    v = parse_kv(text, command)
    e = Ecc(
        sbe=v.integer("HBM Single Bit Error Count"),
        dbe=v.integer("HBM Double Bit Error Count"),
        sbe_aggregate=v.integer("HBM Single Bit Aggregate Total Err Cnt"),
        dbe_aggregate=v.integer("HBM Double Bit Aggregate Total Err Cnt"),
        sbe_isolated_pages=v.integer("HBM Single Bit Isolated Pages Count"),
        dbe_isolated_pages=v.integer("HBM Double Bit Isolated Pages Count"),
        sbe_next_isolated_pages=v.integer("HBM Single Bit Next-Isolated Pages Count"),
        dbe_next_isolated_pages=v.integer("HBM Double Bit Next-Isolated Pages Count"),
    )
    if v.find("HBM Single Bit Error Count") is None and v.find("HBM Double Bit Error Count") is None:
        raise ParseError(command, "no 'HBM Single/Double Bit Error Count' field")
    return e


# --------------------------------------------------------------------------- info -l / -m


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


# --------------------------------------------------------------------------- npu-smi info table


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
    cols1, cols2 = list(_ROW1_DEFAULT), list(_ROW2_DEFAULT)
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
