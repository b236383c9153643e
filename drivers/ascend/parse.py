"""Parsers for ``npu-smi`` text output (910B, npu-smi 23.x-24.x).

npu-smi's layouts drift between versions (labels, widths), so key/value views are read by
label and the ``:`` separator, never by column, with the label variants of the reference
accepted; the boxed ``info`` table is split on ``|`` and ``/``. ``NA`` reads as None. Every
parser raises ParseError with one line naming the command and the offending line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from drivers.api import DeviceError


class ParseError(DeviceError, ValueError):
    """npu-smi printed something we cannot read; the message is one line."""

    def __init__(self, command: str, message: str, line_no: int | None = None, line: str | None = None):
        where = f": line {line_no}" if line_no is not None else ""
        shown = f": {line.strip()[:120]!r}" if line is not None else ""
        super().__init__(f"{command}{where}{shown}: {message}".replace("\n", " "))
        self.command = command
        self.line_no = line_no


NA = ("NA", "N/A", "-", "")


def _norm(label: str) -> str:
    """Label key: case and spaces ignored (``Temperature (C)`` == ``Temperature(C)``)."""
    return re.sub(r"\s+", "", label).lower()


# Label variants seen across npu-smi versions (reference: "Output conventions").
TEMPERATURE = ("Temperature(C)", "Temperature (C)", "NPU Temperature (C)", "NPU Temperature(C)")
HEALTH = ("Health Status", "Health")
POWER = ("NPU Real-time Power(W)", "Power(W)", "Power Dissipation(W)", "Real-time Power(W)")


# --------------------------------------------------------------------------- key/value views


@dataclass
class Field:
    value: str
    line_no: int
    line: str
    more: list[str] = field(default_factory=list)  # continuation lines (empty label)


@dataclass
class Block:
    """One block of a key/value view: the card part, one chip, or the MCU."""

    fields: dict[str, Field] = field(default_factory=dict)  # normalised label -> field
    labels: dict[str, str] = field(default_factory=dict)  # normalised -> label as printed

    def find(self, *labels: str) -> Field | None:
        for label in labels:
            f = self.fields.get(_norm(label))
            if f is not None:
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
            f = b.find("Chip ID")
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

    def integer(self, *labels: str, chip: int | None = None) -> int | None:
        f = self.find(*labels, chip=chip)
        return None if f is None else _to_int(self.command, f)

    def number(self, *labels: str, chip: int | None = None) -> float | None:
        f = self.find(*labels, chip=chip)
        return None if f is None else _to_float(self.command, f)


def _to_int(command: str, f: Field) -> int | None:
    v = f.value.strip()
    if v in NA:
        return None
    try:
        return int(v, 16) if v.lower().startswith("0x") else int(v)
    except ValueError:
        raise ParseError(command, "expected an integer", f.line_no, f.line) from None


def _to_float(command: str, f: Field) -> float | None:
    v = f.value.strip()
    if v in NA:
        return None
    try:
        return float(v)
    except ValueError:
        raise ParseError(command, "expected a number", f.line_no, f.line) from None


def _is_mcu(block: Block) -> bool:
    f = block.find("Chip Name")
    return f is not None and f.value.strip().lower() == "mcu"


def parse_kv(text: str, command: str) -> KVView:
    """Split a key/value view into card, chip and MCU blocks.

    A block starts at ``Chip ID``, or at ``Chip Name`` after a blank line or when the current
    block already has one (the MCU block of ``-t common`` has no Chip ID). Lines with an empty
    label continue the previous field (multi-line ``Error Information``).
    """
    card = Block()
    blocks: list[Block] = []
    current = card
    last: Field | None = None
    blank_before = False
    seen_any = False
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            blank_before = True
            continue
        if line.lstrip().startswith("[WARNING]") or line.lstrip().startswith("[ERROR]"):
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
        starts = key == "chipid" or (
            key == "chipname" and (blank_before or current is card or key in current.fields)
        )
        if starts:
            current = Block()
            blocks.append(current)
        if key in current.fields:
            raise ParseError(command, f"label {label!r} repeated in one block", no, line)
        last = Field(value=value, line_no=no, line=line)
        current.fields[key] = last
        current.labels[key] = label
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


def parse_board(text: str, command: str = "npu-smi info -t board") -> Board:
    v = parse_kv(text, command)
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


_HEALTH_STATES = {"ok", "warning", "alarm", "critical", "unknown", "general warning",
                  "important warning", "emergency warning", "na"}


@dataclass(frozen=True)
class ChipHealth:
    status: str | None  # "OK", "Warning", "Alarm", "Critical", "UNKNOWN"; None for NA
    codes: tuple[str, ...]  # 8 upper-case hex digits each
    information: tuple[str, ...]  # one text per code where npu-smi could fetch it


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


_HEX_CODE = re.compile(r"^(?:0x)?[0-9A-Fa-f]{1,8}$")


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
    if status is not None and status.lower() not in _HEALTH_STATES:
        raise ParseError(command, "unknown health state", st.line_no, st.line)
    codes: list[str] = []
    ec = get("Error Code")
    if ec is not None and ec.value.strip() not in NA:
        for tok in " ".join([ec.value, *ec.more]).split():
            if not _HEX_CODE.match(tok):
                raise ParseError(command, f"error code {tok!r} is not hex", ec.line_no, ec.line)
            codes.append(f"{int(tok, 16):08X}")
    infos: list[str] = []
    ei = get("Error Information")
    if ei is not None:
        infos = [t for t in [ei.value, *ei.more] if t.strip() and t.strip() not in NA]
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

        def num(*labels: str, _b: Block | None = b) -> float | None:
            f = _b.find(*labels) if _b is not None else v.card.find(*labels)
            return None if f is None else _to_float(command, f)

        def integer(*labels: str, _b: Block | None = b) -> int | None:
            f = _b.find(*labels) if _b is not None else v.card.find(*labels)
            return None if f is None else _to_int(command, f)

        chips.append(CommonChip(
            chip_id=cid,
            memory_usage_pct=integer("Memory Usage Rate(%)"),
            hbm_usage_pct=integer("HBM Usage Rate(%)"),
            aicore_usage_pct=integer("Aicore Usage Rate(%)", "AI Core Usage Rate(%)"),
            aicore_freq_mhz=integer("Aicore Freq(MHZ)", "Aicore Freq(MHz)"),
            aicore_cur_freq_mhz=integer("Aicore curFreq(MHZ)", "Aicore curFreq(MHz)"),
            aicore_count=integer("Aicore Count"),
            temperature_c=num(*TEMPERATURE),
            power_w=num(*POWER),
        ))
    if all(c.temperature_c is None and c.aicore_freq_mhz is None and c.power_w is None for c in chips):
        raise ParseError(command, "no chip fields (Temperature, Aicore Freq, Power) found")
    mcu_t = None
    if v.mcus:
        f = v.mcus[0].find(*TEMPERATURE)
        mcu_t = None if f is None else _to_float(command, f)
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


def parse_memory(text: str, command: str = "npu-smi info -t memory") -> Memory:
    v = parse_kv(text, command)
    if v.find("HBM Capacity(MB)") is None:
        raise ParseError(command, "no 'HBM Capacity(MB)' field")
    return Memory(
        hbm_capacity_mb=v.integer("HBM Capacity(MB)"),
        hbm_clock_mhz=v.integer("HBM Clock Speed(MHz)"),
        hbm_temperature_c=v.number("HBM Temperature(C)"),
        hbm_manufacturer_id=v.integer("HBM Manufacturer ID"),
    )


def _single(text: str, command: str, labels: tuple[str, ...], what: str) -> float | None:
    v = parse_kv(text, command)
    f = v.find(*labels)
    if f is None:
        raise ParseError(command, f"no {what} field (tried {', '.join(labels)})")
    return _to_float(command, f)


def parse_temp(text: str, command: str = "npu-smi info -t temp") -> float | None:
    return _single(text, command, TEMPERATURE, "temperature")


def parse_power(text: str, command: str = "npu-smi info -t power") -> float | None:
    return _single(text, command, POWER, "power")


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
    """``Total Count`` then per card ``NPU ID`` (+ ``Product Name``, ``Serial Number``), ``Chip Count``."""
    total: int | None = None
    cards: list[dict[str, object]] = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("["):
            continue
        if line.strip() == "There is no NPU card on this server.":
            return CardList(total_count=0, cards=())
        if ":" not in line:
            raise ParseError(command, "expected 'label : value'", no, line)
        label, _, value = line.partition(":")
        key, value = _norm(label), value.strip()
        f = Field(value=value, line_no=no, line=line)
        if key in ("totalcount", "cardcount"):
            total = _to_int(command, f)
        elif key == "npuid":
            npu = _to_int(command, f)
            if npu is None:
                raise ParseError(command, "NPU ID is NA", no, line)
            cards.append({"npu_id": npu})
        elif not cards:
            raise ParseError(command, "field before the first NPU ID", no, line)
        elif key == "chipcount":
            cards[-1]["chip_count"] = _to_int(command, f)
        elif key == "productname":
            cards[-1]["product_name"] = None if value in NA else value
        elif key == "serialnumber":
            cards[-1]["serial"] = None if value in NA else value
    if total is None and not cards:
        raise ParseError(command, "no 'Total Count' or 'NPU ID' in the output")
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


def parse_mapping(text: str, command: str = "npu-smi info -m") -> list[ChipMapping]:
    """Rows of NPU ID, Chip ID, Chip Logic ID[, Chip Phy-ID], Chip Name (the rest of the line)."""
    rows: list[ChipMapping] = []
    header = False
    phy = False
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("["):
            continue
        if s == "There is no NPU card on this server.":
            return []
        if s.startswith("NPU ID"):
            header = True
            phy = "Phy-ID" in s
            continue
        if not header:
            raise ParseError(command, "data before the 'NPU ID  Chip ID ...' header", no, line)
        parts = s.split(None, 4 if phy else 3)
        if len(parts) < (5 if phy else 4):
            raise ParseError(command, "expected NPU ID, Chip ID, Chip Logic ID and Chip Name", no, line)
        try:
            npu, chip = int(parts[0]), int(parts[1])
            logic = None if parts[2] in NA else int(parts[2])
        except ValueError:
            raise ParseError(command, "NPU ID, Chip ID and Chip Logic ID must be integers", no, line) from None
        rows.append(ChipMapping(npu_id=npu, chip_id=chip, logic_id=logic, name=parts[-1].strip()))
    if not header:
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
    memory_used_mb: int | None  # DDR (0 / 0 on 910B)
    memory_total_mb: int | None
    hbm_used_mb: int | None
    hbm_total_mb: int | None
    logic_id: int | None = None  # older layouts print the device (logic) id in row 2


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

    def chip(self, npu_id: int, chip_id: int = 0) -> InfoChip | None:
        for c in self.chips:
            if c.npu_id == npu_id and c.chip_id == chip_id:
                return c
        return None


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _nums(cell: str) -> list[str]:
    return cell.replace("/", " ").split()


def _opt_float(tok: str) -> float | None:
    return None if tok in NA else float(tok)


def _opt_int(tok: str) -> int | None:
    return None if tok in NA else int(tok)


def parse_info(text: str, command: str = "npu-smi info") -> InfoTable:
    """The boxed summary: two rows per chip, then an optional process table and WARNING line."""
    version: str | None = None
    chips: list[InfoChip] = []
    procs: list[InfoProcess] = []
    idle: list[int] = []
    warning: str | None = None
    section = "top"  # top | chips | procs
    pending: tuple[int, list[str], int, str] | None = None  # row 1 of a chip awaiting row 2
    saw_header = False
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("[WARNING]") or s.startswith("[ERROR]"):
            warning = s
            continue
        if s.startswith("+"):
            if set(s) - set("+-="):
                raise ParseError(command, "malformed table border", no, line)
            continue
        if not s.startswith("|"):
            raise ParseError(command, "line outside the table", no, line)
        cells = _cells(s)
        first = cells[0]
        if first.startswith("npu-smi"):
            m = re.search(r"Version:\s*(\S+)", s)
            version = m.group(1) if m else first.split()[1] if len(first.split()) > 1 else None
            continue
        if first.startswith("NPU") and any("Health" in c for c in cells):
            section, saw_header = "chips", True
            continue
        if first.startswith("Chip") and any("Bus-Id" in c for c in cells):
            continue  # second header row
        if any(c.startswith("Process id") for c in cells):
            if pending is not None:
                raise ParseError(command, "chip row without its second row", pending[2], pending[3])
            section = "procs"
            continue
        if section == "procs":
            m = re.match(r"No running processes found in NPU\s+(\d+)", first)
            if m:
                idle.append(int(m.group(1)))
                continue
            try:
                ids = first.split()
                npu = int(ids[0])
                chip = int(ids[1]) if len(ids) > 1 else None
                procs.append(InfoProcess(npu_id=npu, chip_id=chip, pid=int(cells[1]), name=cells[2],
                                         memory_mb=_opt_int(cells[3]) if len(cells) > 3 else None))
            except (ValueError, IndexError):
                raise ParseError(command, "malformed process row", no, line) from None
            continue
        if section != "chips":
            raise ParseError(command, "data row before the table header", no, line)
        if len(cells) < 3:
            raise ParseError(command, "expected 3 cells split by '|'", no, line)
        if pending is None:
            ids = first.split()
            if len(ids) < 2:
                raise ParseError(command, "expected 'NPU-id  Name' in the first cell", no, line)
            try:
                npu = int(ids[0])
            except ValueError:
                raise ParseError(command, "NPU id is not an integer", no, line) from None
            pending = (npu, [" ".join(ids[1:]), *cells[1:]], no, line)
            continue
        npu, row1, no1, line1 = pending
        pending = None
        try:
            name, health, vals1 = row1[0], row1[1], _nums(row1[2])
            if len(vals1) != 4:
                raise ValueError
            ids2 = first.split()
            chip_idx = int(ids2[0])
            logic = int(ids2[1]) if len(ids2) > 1 and ids2[1].isdigit() else None
            bus = None if cells[1] in NA else cells[1]
            vals2 = _nums(cells[2])
            if len(vals2) not in (3, 5):
                raise ValueError
            chips.append(InfoChip(
                npu_id=npu, chip_id=chip_idx, name=name, health=health,
                power_w=_opt_float(vals1[0]), temperature_c=_opt_float(vals1[1]),
                hugepages_used=_opt_int(vals1[2]), hugepages_total=_opt_int(vals1[3]),
                bus_id=bus, aicore_pct=_opt_int(vals2[0]),
                memory_used_mb=_opt_int(vals2[1]), memory_total_mb=_opt_int(vals2[2]),
                hbm_used_mb=_opt_int(vals2[3]) if len(vals2) == 5 else None,
                hbm_total_mb=_opt_int(vals2[4]) if len(vals2) == 5 else None,
                logic_id=logic,
            ))
        except (ValueError, IndexError):
            raise ParseError(command, f"malformed chip rows (first at line {no1})", no, line) from None
    if pending is not None:
        raise ParseError(command, "chip row without its second row", pending[2], pending[3])
    if not saw_header:
        raise ParseError(command, "no 'NPU  Name | Health | Power(W) ...' table header")
    return InfoTable(version=version, chips=tuple(chips), processes=tuple(procs),
                     idle_npus=tuple(idle), warning=warning)
