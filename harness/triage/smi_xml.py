"""``nvidia-smi -q -x``: the same report as XML, one ``<gpu>`` per card.

Read with expat (no DTD is fetched, entity expansion is bounded by expat itself) into a small
tree that keeps each element's line, so a finding quotes the line it rests on. Tag names moved
between drivers too (``clocks_throttle_reasons`` -> ``clocks_event_reasons``, ``power_readings``
-> ``gpu_power_readings``); each fact lists every spelling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.parsers import expat

from drivers.evidence import CardEvidence, Quote, normalize_bus_id
from harness.triage import smi_fields
from harness.triage.lines import split_lines

KIND = "nvidia-smi -q -x"

PATHS: dict[str, list[tuple[str, ...]]] = {
    "model": [("product_name",)],
    "serial": [("serial",)],
    "uuid": [("uuid",)],
    "vbios": [("vbios_version",)],
    "inforom_image": [("inforom_version", "img_version")],
    "bus_id": [("pci", "pci_bus_id")],
    "memory_total": [("fb_memory_usage", "total")],
    "memory_used": [("fb_memory_usage", "used")],
    "fan": [("fan_speed",)],
    "temp": [("temperature", "gpu_temp")],
    "memory_temp": [("temperature", "memory_temp")],
    "temp_shutdown": [("temperature", "gpu_temp_max_threshold")],
    "temp_slowdown": [("temperature", "gpu_temp_slow_threshold")],
    "temp_max_op": [("temperature", "gpu_temp_max_gpu_threshold")],
    "power_draw": [("gpu_power_readings", "power_draw"), ("gpu_power_readings", "average_power_draw"),
                   ("gpu_power_readings", "instant_power_draw"), ("power_readings", "power_draw")],
    "power_limit": [("gpu_power_readings", "current_power_limit"), ("gpu_power_readings", "power_limit"),
                    ("power_readings", "enforced_power_limit"), ("power_readings", "power_limit")],
    "power_default": [("gpu_power_readings", "default_power_limit"), ("power_readings", "default_power_limit")],
    "power_min": [("gpu_power_readings", "min_power_limit"), ("power_readings", "min_power_limit")],
    "clock_sm": [("clocks", "sm_clock")],
    "clock_sm_max": [("max_clocks", "sm_clock")],
    "util": [("utilization", "gpu_util")],
    "pcie_gen_max": [("pci", "pcie_gen", "max_link_gen")],
    "pcie_gen_cur": [("pci", "pcie_gen", "current_link_gen")],
    "pcie_width_max": [("pci", "link_widths", "max_link_width")],
    "pcie_width_cur": [("pci", "link_widths", "current_link_width")],
    "replays": [("pci", "replay_counter")],
    "ecc_mode": [("ecc_mode", "current_ecc")],
    "ecc_vol_sbe_total": [("ecc_errors", "volatile", "single_bit", "total")],
    "ecc_vol_dbe_total": [("ecc_errors", "volatile", "double_bit", "total")],
    "ecc_agg_sbe_total": [("ecc_errors", "aggregate", "single_bit", "total")],
    "ecc_agg_dbe_total": [("ecc_errors", "aggregate", "double_bit", "total")],
    "ecc_vol_dram_cor": [("ecc_errors", "volatile", "dram_correctable")],
    "ecc_vol_dram_unc": [("ecc_errors", "volatile", "dram_uncorrectable")],
    "ecc_agg_dram_cor": [("ecc_errors", "aggregate", "dram_correctable")],
    "ecc_agg_dram_unc": [("ecc_errors", "aggregate", "dram_uncorrectable")],
    "ecc_vol_sram_unc": [("ecc_errors", "volatile", "sram_uncorrectable")],
    "ecc_vol_sram_unc_parity": [("ecc_errors", "volatile", "sram_uncorrectable_parity")],
    "ecc_vol_sram_unc_secded": [("ecc_errors", "volatile", "sram_uncorrectable_secded")],
    "ecc_agg_sram_unc": [("ecc_errors", "aggregate", "sram_uncorrectable")],
    "ecc_agg_sram_unc_parity": [("ecc_errors", "aggregate", "sram_uncorrectable_parity")],
    "ecc_agg_sram_unc_secded": [("ecc_errors", "aggregate", "sram_uncorrectable_secded")],
    "retired_sbe": [("retired_pages", "multiple_single_bit_retirement", "retired_count")],
    "retired_dbe": [("retired_pages", "double_bit_retirement", "retired_count")],
    "retired_pending": [("retired_pages", "pending_blacklist"), ("retired_pages", "pending_retirement")],
    "rows_cor": [("remapped_rows", "remapped_row_corr")],
    "rows_unc": [("remapped_rows", "remapped_row_unc")],
    "rows_pending": [("remapped_rows", "remapped_row_pending")],
    "rows_failure": [("remapped_rows", "remapped_row_failure")],
    "recovery_action": [("gpu_recovery_action",)],
    "unrepairable_memory": [("ecc_errors", "unrepairable_memory")],
}
for _fact, _suffix in (("throttle.idle", "gpu_idle"), ("throttle.app_clocks", "applications_clocks_setting"),
                       ("throttle.sw_power_cap", "sw_power_cap"), ("throttle.hw_slowdown", "hw_slowdown"),
                       ("throttle.hw_thermal", "hw_thermal_slowdown"),
                       ("throttle.hw_power_brake", "hw_power_brake_slowdown"),
                       ("throttle.sync_boost", "sync_boost"), ("throttle.sw_thermal", "sw_thermal_slowdown")):
    PATHS[_fact] = [("clocks_event_reasons", f"clocks_event_reason_{_suffix}"),
                    ("clocks_throttle_reasons", f"clocks_throttle_reason_{_suffix}")]


@dataclass
class El:
    tag: str
    attrs: dict[str, str]
    line: int
    text: str = ""
    children: list[El] = field(default_factory=list)

    def find(self, path: tuple[str, ...]) -> El | None:
        if not path:
            return self
        queue = list(self.children)
        while queue:
            e = queue.pop(0)
            if e.tag == path[0]:
                hit = e.find(path[1:])
                if hit is not None:
                    return hit
            queue.extend(e.children)
        return None


def detect(text: str) -> bool:
    return "<nvidia_smi_log" in text[:4000]


def parse(text: str) -> El:
    """The document as a tree of elements with their lines; ValueError when it is not XML."""
    root = El("", {}, 0)
    stack = [root]
    p = expat.ParserCreate()

    def start(tag: str, attrs: dict[str, str]) -> None:
        el = El(tag, attrs, p.CurrentLineNumber)
        stack[-1].children.append(el)
        stack.append(el)

    def end(tag: str) -> None:
        el = stack.pop()
        el.text = " ".join(el.text.split())

    def chars(data: str) -> None:
        stack[-1].text += data

    p.StartElementHandler, p.EndElementHandler, p.CharacterDataHandler = start, end, chars
    try:
        p.Parse(text.lstrip("\ufeff"), True)
    except expat.ExpatError as e:
        raise ValueError(f"not well-formed XML (line {e.lineno}: {expat.ErrorString(e.code)})") from None
    return root


def read(text: str, source: str) -> list[CardEvidence]:
    root = parse(text)
    lines = dict(split_lines(text))
    log = root.find(("nvidia_smi_log",))
    if log is None:
        raise ValueError("no <nvidia_smi_log> element")
    driver = log.find(("driver_version",))
    cards = []
    gpus = [c for c in log.children if c.tag == "gpu"]
    for index, gpu in enumerate(gpus):
        card = CardEvidence(source=source, kind=KIND, vendor="nvidia", index=index,
                            pci_bus_id=normalize_bus_id(gpu.attrs.get("id")))

        def lookup(fact: str, gpu: El = gpu) -> tuple[str, Quote] | None:
            for path in PATHS.get(fact, []):
                el = gpu.find(path)
                if el is not None and not el.children:
                    return el.text, Quote(source, el.line, lines.get(el.line, f"<{el.tag}>{el.text}</{el.tag}>"))
            return None

        smi_fields.apply(card, lookup)
        if card.pci_bus_id is None:
            hit = lookup("bus_id")
            card.pci_bus_id = normalize_bus_id(hit[0]) if hit else None
        smi_fields.extra_states(card, lookup)
        if driver is not None and driver.text:
            card.firmware["driver"] = driver.text
        leaves = [e for e in _walk(gpu) if not e.children and e.text]
        errors = [e for e in leaves if smi_fields.is_error(e.text)]
        if any("gpu is lost" in e.text.lower() for e in errors) or (len(leaves) >= 8 and len(errors) * 2 > len(leaves)):
            first = errors[0]
            card.lost = f"nvidia-smi printed {first.text!r} for {len(errors)} of the card's {len(leaves)} fields"
            card.quote("lost", Quote(source, first.line, lines.get(first.line, first.text)))
        cards.append(card)
    return cards


def _walk(el: El) -> list[El]:
    out = []
    for c in el.children:
        out.append(c)
        out.extend(_walk(c))
    return out


__all__ = ["KIND", "detect", "read"]
