"""npu-smi captures of many versions and machines: each parses to the right values, under every
transformation real output goes through (CRLF, trailing spaces, tabs, log noise, a BOM), and
every malformed one gives a one-line ParseError naming the command and, where there is one,
the line: never a traceback, never a silently wrong number."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.ascend import parse
from drivers.ascend.parse import ParseError

CAPTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ascend" / "captures"
GOOD = sorted(CAPTURES.glob("*.txt"))
BAD = sorted((CAPTURES / "bad").glob("*.txt"))

PARSERS: tuple[tuple[str, Callable[..., Any], str], ...] = (
    ("info_l", parse.parse_list, "npu-smi info -l"),
    ("info_m", parse.parse_mapping, "npu-smi info -m"),
    ("info", parse.parse_info, "npu-smi info"),
    ("board", parse.parse_board, "npu-smi info -t board"),
    ("health", parse.parse_health, "npu-smi info -t health"),
    ("common", parse.parse_common, "npu-smi info -t common"),
    ("usages", parse.parse_usages, "npu-smi info -t usages"),
    ("memory", parse.parse_memory, "npu-smi info -t memory"),
    ("temp", parse.parse_temp, "npu-smi info -t temp"),
    ("power", parse.parse_power, "npu-smi info -t power"),
    ("ecc", parse.parse_ecc, "npu-smi info -t ecc"),
)


def parser_for(view: str) -> tuple[Callable[..., Any], str]:
    for prefix, fn, cmd in PARSERS:
        if view == prefix or view.startswith(prefix + "_"):
            return fn, cmd
    raise AssertionError(f"no parser for {view}")


def parse_file(path: Path, text: str | None = None) -> Any:
    """``vXX_<view>_<what>.txt`` (good) or ``bad/<view>_<what>.txt``."""
    view = path.stem.split("_", 1)[1] if path.parent == CAPTURES else path.stem
    fn, cmd = parser_for(view)
    return fn(path.read_text(encoding="utf-8") if text is None else text, cmd)


def cap(name: str) -> Any:
    return parse_file(CAPTURES / name)


# --------------------------------------------------------------------------- npu-smi info


def rows(t: parse.InfoTable) -> list[tuple[Any, ...]]:
    return [(c.npu_id, c.chip_id, c.name, c.health, c.power_w, c.temperature_c, c.bus_id, c.aicore_pct,
             c.device_memory) for c in t.chips]


def test_info_910a_narrow_v22() -> None:
    t = cap("v22_info_910a_narrow.txt")
    assert t.version == "22.0.2"
    assert rows(t) == [(0, 0, "910A", "OK", 68.9, 36, "0000:C1:00.0", 0, (0, 32768)),
                       (1, 0, "910A", "OK", 71.2, 37, "0000:81:00.0", 3, (1023, 32768))]
    c = t.chip(0)
    assert c is not None and (c.hugepages_used, c.hugepages_total, c.memory_used_mb, c.memory_total_mb) == (
        0, 970, 2221, 15039)
    assert t.processes == () and t.idle_npus == ()


def test_info_910b4_narrow_na_glued_slashes() -> None:
    t = cap("v23rc2_info_910b4_na_glued.txt")
    assert t.version == "23.0.rc2"
    assert [c.npu_id for c in t.chips] == [0, 2, 5]  # not contiguous
    a, b, c = t.chips
    assert (a.power_w, a.temperature_c, a.hbm_used_mb, a.hbm_total_mb, a.hugepages_total) == (85.2, 44, 29610, 32768, 0)
    assert (b.health, b.power_w, b.temperature_c, b.hugepages_used, b.aicore_pct, b.hbm_total_mb) == (
        "Warning", None, None, None, None, None)
    assert b.bus_id == "0000:01:00.0"  # glued to the next '|'
    assert (c.health, c.bus_id, c.temperature_c, c.hbm_used_mb, c.memory_used_mb) == ("UNKNOWN", None, 55, 2843, 0)


def test_info_910b2_several_processes_per_npu() -> None:
    t = cap("v24rc2_info_910b2_processes.txt")
    assert [(p.npu_id, p.chip_id, p.pid, p.name, p.memory_mb) for p in t.processes] == [
        (6, 0, 3051188, "python3.9", 57791), (6, 0, 3051190, "ray::Worker", 89), (6, 0, 3051275, "python3.9", None)]
    assert t.idle_npus == (7,) and t.warning is not None and "driver package" in t.warning
    assert rows(t)[0] == (6, 0, "910B2", "OK", 368.4, 66, "0000:41:00.0", 100, (61250, 65536))


def test_info_without_process_table() -> None:
    t = cap("v23_info_no_process_table.txt")
    assert rows(t) == [(4, 0, "910B3", "Alarm", 92.5, 40, "0000:82:00.0", 0, (3165, 65536))]
    assert t.processes == () and t.idle_npus == () and t.warning is None


def test_info_310p_mixed_in_reads_its_ddr() -> None:
    t = cap("v24_info_mixed_310p.txt")
    assert rows(t) == [(0, 0, "910B1", "OK", 271.1, 41, "0000:C1:00.0", 55, (65099, 65536)),
                       (3, 0, "310P3", "OK", None, 50, "0000:84:00.0", 0, (1839, 21525))]
    old = cap("v23_info_wide_layout_310p.txt")  # "Chip Device" header, no HBM column
    assert rows(old) == [(6, 0, "310P3", "OK", None, 50, "0000:84:00.0", 0, (1839, 21525))]
    assert old.chips[0].logic_id == 0


def test_info_a3_phy_id_and_two_chips_per_card() -> None:
    t = cap("v24_info_a3_phy_id.txt")
    assert [(c.npu_id, c.chip_id, c.phy_id, c.logic_id, c.power_w) for c in t.chips] == [
        (0, 0, 0, None, 163.5), (0, 1, 1, None, None)]


def test_info_log_noise_is_kept_apart() -> None:
    t = cap("v24_info_log_noise.txt")
    assert rows(t) == [(1, 0, "910B3", "Critical", 96.0, 47, "0000:C1:00.0", 0, (3161, 65536))]
    assert len(t.notes) == 3 and t.notes[0].startswith("[INFO] DRV") and t.warning is not None


def test_info_columns_follow_the_header_not_the_position() -> None:
    """Synthetic: a layout that swaps Temp/Power and Memory/HBM must not swap the values."""
    t = cap("v25_info_synthetic_temp_first.txt")
    c = t.chips[0]
    assert (c.temperature_c, c.power_w, c.hbm_used_mb, c.hbm_total_mb, c.memory_total_mb) == (39, 88.7, 3161, 65536, 0)


def test_info_container_processes_without_names_and_a_fifth_column() -> None:
    t = cap("v26rc2_info_container_unnamed_processes.txt")
    assert [(p.npu_id, p.pid, p.name, p.memory_mb) for p in t.processes] == [
        (0, 2211840, "", 48800), (0, 2211901, "python3.11", 120)]
    assert t.idle_npus == (1,) and rows(t)[0][-1] == (52210, 65536)


# --------------------------------------------------------------------------- key/value views


def test_flat_and_differently_padded_views() -> None:
    flat = cap("v21_common_flat_no_indent.txt").chip(0)  # no Chip ID block, no indent
    assert (flat.aicore_freq_mhz, flat.aicore_cur_freq_mhz, flat.temperature_c, flat.power_w) == (1650, 100, 65, 298.6)
    u = cap("v23_usages_910a_chip_id_last.txt")
    assert (u.hbm_capacity_mb, u.ddr_capacity_mb, u.aicore_pct) == (32768, 13553, 0)
    b = cap("v23_board_910a_no_product.txt")
    assert (b.pci_vendor_id, b.pci_device_id, b.serial, b.product_name) == (0x19E5, 0xD801, None, None)
    oem = cap("v25_board_pad20_oem_product.txt")
    assert (oem.product_name, oem.serial, oem.pcie_bus, oem.firmware_version) == (
        "IT21HMDC_Bin6", "1025A6780042", "0000:82:00.0", "7.5.0.5.220")


def test_health_label_variants_and_many_codes() -> None:
    h = cap("v23rc2_health_warning_no_code.txt")
    assert (h.chip.status, h.chip.codes) == ("Warning", ())
    five = cap("v24_health_five_codes_with_mcu.txt")
    assert five.npu_id == 6 and five.chip.status == "Critical"
    assert five.chip.codes == ("80E18402", "80E01801", "8C03A000", "80E0020B", "4C5D6E7F")
    assert five.info_for("8C03A000") == "process manager heartbeat lost"
    assert five.info_for("4C5D6E7F") == "1281191551"
    assert five.mcu is not None and (five.mcu.status, five.mcu.codes) == ("OK", ())
    hex_commas = cap("v22_health_0x_comma_codes.txt")
    assert hex_commas.chip.codes == ("80E21008", "8C084E00") and hex_commas.chip.status == "OK"  # npu-smi's quirk
    quirk = cap("v24_health_critical_without_code.txt")
    assert (quirk.chip.status, quirk.chip.codes) == ("Critical", ())
    extra = cap("v25_health_extra_labels.txt")
    assert extra.chip.codes == ("8C204E00",) and extra.info_for("8C204E00") == "tsdaemon heartbeat lost"


def test_common_mcu_anywhere_and_throttle() -> None:
    c = cap("v23_common_mcu_first_throttled.txt")
    chip = c.chip(0)
    assert (chip.temperature_c, chip.power_w, chip.aicore_freq_mhz, chip.aicore_cur_freq_mhz) == (92, 371.6, 1000, 800)
    assert c.mcu_temperature_c == 34
    glued = cap("v24_common_extra_labels_mcu_glued.txt")  # MCU block with no blank line before it
    g = glued.chip(0)
    assert (g.temperature_c, g.power_w, g.aicore_count) == (40, 90.2, 20)
    assert glued.mcu_temperature_c == 35


def test_common_two_chips() -> None:
    c = cap("v23_common_310p_duo_two_chips.txt")
    assert [(x.chip_id, x.temperature_c, x.power_w, x.aicore_freq_mhz) for x in c.chips] == [
        (0, 46, None, 1080), (1, 48, None, 1080)]
    assert c.chip(1).temperature_c == 48


def test_units_printed_in_values_are_checked() -> None:
    c = cap("v25_common_synthetic_units_in_values.txt").chip(0)
    assert (c.aicore_usage_pct, c.aicore_freq_mhz, c.aicore_cur_freq_mhz, c.temperature_c, c.power_w) == (
        97, 1000, 1000, 61, 301.2)


@pytest.mark.parametrize(("name", "value"), [
    ("v24rc1_temp_npu_compact.txt", 57), ("v23_temp_na_pad40.txt", None),
    ("v23rc3_power_short_label.txt", 271.1), ("v24_power_na.txt", None),
])
def test_single_value_views(name: str, value: float | None) -> None:
    assert cap(name) == value


def test_boards() -> None:
    b = cap("v23rc3_board_910b1.txt")
    assert (b.npu_id, b.serial, b.software_version, b.firmware_version, b.pci_device_id) == (
        0, "102310QKD10N4C000042", "23.0.rc3", "7.1.0.3.220", 0xD802)
    c0 = cap("v23rc3_board_c0_910b1.txt")
    assert (c0.chip_name, c0.chip_type, c0.pcie_bus) == ("910B1", "Ascend", "0000:C1:00.0")
    b4 = cap("v25_board_c0_910b4_extra_labels.txt")
    assert (b4.chip_name, b4.chip_firmware_version, b4.pcie_bus) == ("910B4", "7.5.0.1.129", "0000:81:00.0")
    p = cap("v23_board_310p.txt")
    assert (p.product_name, p.pci_device_id, p.serial) == ("Atlas 300I Pro", 0xD500, "033VNY10M8000331")
    na = cap("v24_board_all_na.txt")
    assert (na.serial, na.firmware_version, na.pcie_bus, na.product_name) == (None, None, None, None)


def test_ecc_variants() -> None:
    e = cap("v24_ecc_isolated_over_limit.txt")
    assert (e.dbe, e.dbe_aggregate, e.dbe_isolated_pages, e.dbe_next_isolated_pages) == (4, 71, 64, 2)
    na = cap("v24_ecc_all_na.txt")
    assert (na.sbe, na.dbe, na.dbe_isolated_pages, na.dbe_next_isolated_pages) == (None, None, None, None)
    old = cap("v22_ecc_pad30.txt")
    assert (old.sbe, old.sbe_aggregate, old.dbe) == (3, 9, 0)


def test_memory_and_usages() -> None:
    m = cap("v23_memory_310p_ddr_only.txt")
    assert (m.hbm_capacity_mb, m.ddr_capacity_mb, m.capacity_mb) == (None, 21527, 21527)
    b4 = cap("v24_memory_910b4.txt")
    assert (b4.capacity_mb, b4.hbm_temperature_c, b4.hbm_manufacturer_id) == (32768, None, 2)
    u = cap("v25_usages_extra_labels.txt")
    assert (u.hbm_capacity_mb, u.hbm_usage_pct, u.aicube_pct, u.hbm_bandwidth_pct) == (65536, 94, 99, 61)


def test_list_variants() -> None:
    card_mode = cap("v22_info_l_card_mode.txt")
    assert [(c.npu_id, c.product_name, c.serial) for c in card_mode.cards] == [
        (0, "Atlas 800T A2", "102310QKD10N4C000042"), (4, "Atlas 800T A2", "102310QKD10N4C000046"), (6, None, None)]
    extra = cap("v24_info_l_extra_labels_310p_duo.txt")
    assert [(c.npu_id, c.chip_count) for c in extra.cards] == [(0, 1), (3, 2)]


def test_mapping_variants() -> None:
    m = cap("v24_info_m_phy_id.txt")
    assert [(r.npu_id, r.chip_id, r.logic_id, r.name, r.is_mcu) for r in m] == [
        (0, 0, 0, "Ascend 910B1", False), (0, 1, None, "Mcu", True), (3, 0, 1, "Ascend 310P3", False),
        (3, 1, 2, "Ascend 310P3", False), (3, 2, None, "Mcu", True)]
    t = cap("v24rc2_info_m_tabs_crlf.txt")
    assert [(r.npu_id, r.logic_id, r.name) for r in t if not r.is_mcu] == [(2, 0, "Ascend 910B2"), (7, 1, "Ascend 910B2")]


# --------------------------------------------------------------------------- every capture, transformed


WARNING = "[WARNING]The driver package may not be completely installed, which may cause function abnormal."
TRANSFORMS: dict[str, Callable[[str], str]] = {
    "crlf": lambda t: t.replace("\r\n", "\n").replace("\n", "\r\n"),
    "trailing_spaces": lambda t: "\n".join(ln + "   " for ln in t.split("\n")),
    "tabs_to_spaces": lambda t: t.replace("\t", "    "),
    "bom": lambda t: "\ufeff" + t,
    "no_final_newline": lambda t: t.rstrip("\r\n"),
    "log_noise": lambda t: "[INFO] DRV(1,npu-smi):2024-01-01 dcmi init\n" + t.rstrip("\n") + "\n" + WARNING + "\n",
}


def comparable(result: Any) -> Any:
    if isinstance(result, parse.InfoTable):  # notes/warning are where the noise goes
        return (result.version, result.chips, result.processes, result.idle_npus)
    return result


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_every_capture_survives_transformations(path: Path, transform: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert comparable(parse_file(path, TRANSFORMS[transform](text))) == comparable(parse_file(path, text))


# --------------------------------------------------------------------------- malformed captures


BAD_EXPECT = {
    "board_no_board_fields": (None, "none of the board fields"),
    "common_temperature_twice": (7, "printed twice"),
    "ecc_garbled_count": (1, "found trailing 'abc'"),
    "health_chinese_locale": (1, "expected 'label : value'"),
    "health_code_cut_short": (2, "not 8 hex digits"),
    "health_empty": (None, "empty output"),
    "info_empty": (None, "empty output"),
    "info_error_text_only": (None, "no 'NPU  Name | Health"),
    "info_garbled_temperature": (7, "not a number"),
    "info_hbm_pair_without_slash": (8, "expected 3 values"),
    "info_l_total_disagrees": (1, "Total Count is 8 but 2"),
    "info_m_row_cut": (3, "expected 4 columns"),
    "info_row_cut_mid_line": (8, "does not end with '|'"),
    "info_row_pair_cut": (None, "without its bottom border"),
    "info_second_row_missing": (7, "without its second row"),
    "memory_fractional_capacity": (1, "expected an integer"),
    "temp_unexpected_unit": (1, "unexpected unit 'F'"),
}


def test_every_bad_capture_has_an_expectation() -> None:
    assert sorted(p.stem for p in BAD) == sorted(BAD_EXPECT)


@pytest.mark.parametrize("transform", ["none", "crlf"])
@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_capture_gives_a_one_line_parse_error(path: Path, transform: str) -> None:
    line_no, what = BAD_EXPECT[path.stem]
    text = path.read_text(encoding="utf-8")
    if transform == "crlf":
        text = TRANSFORMS["crlf"](text)
    _, cmd = parser_for(path.stem)
    with pytest.raises(ParseError) as ei:
        parse_file(path, text)
    msg = str(ei.value)
    assert "\n" not in msg and "\r" not in msg
    assert msg.startswith(cmd + ":"), msg
    assert what in msg, msg
    if line_no is not None:
        assert f": line {line_no}: " in msg, msg
    assert ei.value.line_no == line_no
