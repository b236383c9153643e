"""Typed views of the ``npu-smi info -t`` commands: board, health, common, usages, memory,
temperature, power, ECC."""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.ascend.parse.kv import Block, Field, KVView, _to_float, _to_int, parse_kv
from drivers.ascend.parse.text import HEALTH, NA, POWER, TEMPERATURE, ParseError, _norm


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
