"""npu-smi parsers against every capture, label variants, NA, MCU blocks and malformed input."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.ascend import parse
from drivers.ascend.parse import ParseError

CAPTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ascend" / "captures"
ALL = sorted(CAPTURES.glob("*.txt"))


def read(name: str) -> str:
    return (CAPTURES / name).read_text(encoding="utf-8")


def parser_for(name: str):  # type: ignore[no-untyped-def]
    view = name.split("_", 1)[1].removesuffix(".txt")
    for prefix, fn in (
        ("info_l", parse.parse_list), ("info_m", parse.parse_mapping), ("info", parse.parse_info),
        ("board", parse.parse_board), ("health", parse.parse_health), ("common", parse.parse_common),
        ("usages", parse.parse_usages), ("memory", parse.parse_memory), ("temp", parse.parse_temp),
        ("power", parse.parse_power), ("ecc", parse.parse_ecc),
    ):
        if view == prefix or view.startswith(prefix + "_"):
            return fn
    raise AssertionError(f"no parser for capture {name}")


def test_there_are_captures_of_two_versions_for_every_view() -> None:
    names = {p.name for p in ALL}
    for view in ("info", "info_l", "info_m", "board", "board_c0", "board_c1", "health", "common",
                 "usages", "memory", "temp", "power", "ecc"):
        assert f"v24_{view}.txt" in names and f"v23_{view}.txt" in names, view


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_capture_parses(path: Path) -> None:
    result = parser_for(path.name)(path.read_text(encoding="utf-8"))
    assert result is not None or "_na" in path.name


# --------------------------------------------------------------------------- npu-smi info


def test_info_table_rows_processes_and_warning() -> None:
    t = parse.parse_info(read("v24_info.txt"))
    assert t.version == "24.1.0"
    assert [c.npu_id for c in t.chips] == [1, 2, 3, 4, 5, 6, 8, 9]  # not from 0, not contiguous
    c = t.chip(1)
    assert c is not None
    assert (c.name, c.health, c.power_w, c.temperature_c) == ("910B3", "OK", 93.4, 41)
    assert (c.bus_id, c.aicore_pct, c.hbm_used_mb, c.hbm_total_mb) == ("0000:C1:00.0", 12, 6317, 65536)
    assert (c.memory_used_mb, c.memory_total_mb) == (0, 0)
    assert [(p.npu_id, p.pid, p.name, p.memory_mb) for p in t.processes] == [(1, 214733, "python3", 3156)]
    assert t.idle_npus == (2, 3, 4, 5, 6, 8, 9)
    assert t.warning is not None and t.warning.startswith("[WARNING]")
    assert t.chip(7) is None


def test_info_table_hand_capture_na_and_glued_slash() -> None:
    t = parse.parse_info(read("v23rc3_info_910b1_loaded.txt"))
    a, b = t.chip(3), t.chip(4)
    assert a is not None and b is not None
    assert (a.power_w, a.temperature_c, a.hbm_used_mb, a.aicore_pct) == (271.1, 41, 65099, 55)
    assert (b.health, b.power_w, b.temperature_c) == ("Warning", None, None)
    assert len(t.processes) == 2 and t.idle_npus == (4,)


def test_info_table_older_wide_layout() -> None:
    t = parse.parse_info(read("v23_info_wide_layout_310p.txt"))
    (c,) = t.chips
    assert (c.npu_id, c.name, c.power_w, c.temperature_c, c.logic_id) == (6, "310P3", None, 50, 0)
    assert (c.memory_used_mb, c.memory_total_mb, c.hbm_total_mb) == (1839, 21525, None)
    assert t.warning is None


def test_info_without_the_dropped_card() -> None:
    t = parse.parse_info(read("v23_info.txt"))
    assert 6 not in {c.npu_id for c in t.chips}
    assert t.chip(4) is not None and t.chip(2) is not None


# --------------------------------------------------------------------------- -l / -m


def test_list_and_mapping() -> None:
    lst = parse.parse_list(read("v24_info_l.txt"))
    assert lst.total_count == 8 and [c.npu_id for c in lst.cards] == [1, 2, 3, 4, 5, 6, 8, 9]
    assert all(c.chip_count == 1 for c in lst.cards)
    m = parse.parse_mapping(read("v24_info_m.txt"))
    npus = [r for r in m if not r.is_mcu]
    mcus = [r for r in m if r.is_mcu]
    assert len(npus) == 8 and len(mcus) == 8
    assert (npus[0].npu_id, npus[0].chip_id, npus[0].logic_id, npus[0].name) == (1, 0, 0, "Ascend 910B3")
    assert (mcus[0].chip_id, mcus[0].logic_id, mcus[0].name) == (1, None, "Mcu")
    assert npus[-1].npu_id == 9 and npus[-1].logic_id == 7


def test_empty_server() -> None:
    assert parse.parse_list("There is no NPU card on this server.\n").cards == ()
    assert parse.parse_mapping("There is no NPU card on this server.\n") == []


# --------------------------------------------------------------------------- key/value views


def test_board_card_chip_and_mcu() -> None:
    b = parse.parse_board(read("v24_board.txt"))
    assert (b.npu_id, b.serial, b.software_version, b.firmware_version) == (2, "1024A31B0002X", "24.1.rc2", "7.3.0.1.231")
    assert (b.pci_vendor_id, b.pci_device_id, b.pcie_bus, b.chip_count) == (0x19E5, 0xD802, "0000:01:00.0", 1)
    assert b.model is None  # "NA"
    c0 = parse.parse_board(read("v24_board_c0.txt"))
    assert (c0.chip_type, c0.chip_name, c0.pcie_bus, c0.chip_firmware_version) == (
        "Ascend", "910B3", "0000:01:00.0", "7.3.0.1.231")
    c1 = parse.parse_board(read("v24_board_c1_mcu_alt.txt"))
    assert c1.chip_name == "mcu" and c1.chip_firmware_version == "23.2.3"


def test_common_keeps_the_mcu_apart_and_reads_label_variants() -> None:
    new = parse.parse_common(read("v24_common.txt")).chip(0)
    old = parse.parse_common(read("v23_common.txt"))
    assert new.power_w == 90.2 and new.temperature_c == 40  # "NPU Real-time Power(W)"
    o = old.chip(0)
    assert (o.power_w, o.temperature_c) == (312.6, 89)  # "Power(W)"; 89 is the NPU, not the MCU's 35
    assert (o.aicore_freq_mhz, o.aicore_cur_freq_mhz, o.aicore_count, o.aicore_usage_pct) == (1000, 800, 20, 97)
    assert old.mcu_temperature_c == 35


def test_common_na() -> None:
    c = parse.parse_common(read("v24_common_na_vnpu.txt"))
    assert c.chip(0).temperature_c is None and c.chip(0).power_w is None
    assert c.mcu_temperature_c is None and c.chip(0).aicore_count == 24


@pytest.mark.parametrize(
    ("name", "temp"),
    [("v24_temp.txt", 39), ("v23_temp.txt", 39), ("v22_temp_compact_label.txt", 44)],
)
def test_temperature_label_variants(name: str, temp: int) -> None:
    assert parse.parse_temp(read(name)) == temp


def test_power_label_variants() -> None:
    assert "NPU Real-time Power(W)" in read("v24_power.txt")
    assert "Power Dissipation(W)" in read("v23_power.txt")
    assert parse.parse_power(read("v24_power.txt")) == 88.7
    assert parse.parse_power(read("v23_power.txt")) == 88.7


def test_usages_and_memory() -> None:
    u = parse.parse_usages(read("v24_usages.txt"))
    assert (u.hbm_capacity_mb, u.hbm_usage_pct, u.ddr_capacity_mb) == (65536, 5, 0)
    m = parse.parse_memory(read("v24_memory.txt"))
    assert (m.hbm_capacity_mb, m.hbm_clock_mhz, m.hbm_temperature_c, m.hbm_manufacturer_id) == (65536, 1600, 36, 1)


def test_ecc_both_layouts() -> None:
    new = parse.parse_ecc(read("v24_ecc.txt"))
    assert new.sbe == 0 and new.dbe_next_isolated_pages == 0
    old = parse.parse_ecc(read("v23_ecc.txt"))  # Chip ID printed last, no next-isolated lines
    assert (old.sbe, old.dbe, old.sbe_aggregate, old.dbe_aggregate) == (12, 2, 40, 3)
    assert (old.sbe_isolated_pages, old.dbe_isolated_pages) == (1, 2)
    assert old.sbe_next_isolated_pages is None and old.dbe_next_isolated_pages is None


def test_health_ok_and_variants() -> None:
    h = parse.parse_health(read("v24_health.txt"))
    assert (h.chip.status, h.chip.codes, h.chip.information) == ("OK", (), ())
    old = parse.parse_health(read("v23_health.txt"))  # label "Health"
    assert old.chip.status == "Alarm"  # a RestartBusiness-level code
    assert old.chip.codes == ("80E01801",)
    assert old.info_for("80E01801") == "HBM multi-bit ECC error"


def test_health_multiline_information_pairs_with_codes() -> None:
    h = parse.parse_health(read("v24_health_three_codes.txt"))
    assert h.chip.codes == ("80E18402", "80E01801", "A0B1C2D3")
    assert h.info_for("80E01801") == "HBM multi-bit ECC error"
    assert h.info_for("A0B1C2D3") == "2695021267"  # npu-smi prints the decimal code when it has no text
    two = parse.parse_health(read("v23_health_multi.txt"))
    assert two.chip.codes == ("80E9F001", "80E20207") and two.info_for("80E20207") == "SoC high temperature"


def test_kv_mcu_block_starts_after_blank_line() -> None:
    v = parse.parse_kv(read("v24_common.txt"), "cmd")
    assert len(v.chips) == 1 and len(v.mcus) == 1
    assert v.find("Temperature(C)").value == "40"  # type: ignore[union-attr]
    assert v.mcus[0].find("Temperature (C)").value == "35"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- malformed input


MALFORMED = [
    (parse.parse_info, ""),
    (parse.parse_info, "garbage\n"),
    (parse.parse_info, read("v24_info.txt").replace("| 93.4        41", "| hot         41")),
    (parse.parse_info, read("v24_info.txt").replace("| 0                         | 0000:C1:00.0", "+---", 1)),
    (parse.parse_list, "Total Count : eight\n"),
    (parse.parse_list, "\tChip Count : 1\n"),
    (parse.parse_mapping, "1 0 0 Ascend 910B3\n"),
    (parse.parse_mapping, "\tNPU ID  Chip ID  Chip Logic ID  Chip Name\n\tone 0 0 Ascend 910B3\n"),
    (parse.parse_common, read("v24_common.txt").replace(": 1000", ": fast", 1)),
    (parse.parse_common, "\tNPU ID : 1\n"),
    (parse.parse_health, "\tHealth Status : OK\n\tError Code : 80E0180G\n"),
    (parse.parse_health, "\tHealth Status : 42\n"),
    (parse.parse_health, "\tError Code : NA\n"),
    (parse.parse_ecc, "\tNPU ID : 1\n"),
    (parse.parse_ecc, "\tHBM Single Bit Error Count : many\n"),
    (parse.parse_temp, "\tPower(W) : 9.0\n"),
    (parse.parse_board, "no separator here\n"),
    (parse.parse_memory, "\t : orphan continuation\n"),
    (parse.parse_usages, "\tHBM Capacity(MB) : 1\n\tHBM Capacity(MB) : 2\n"),
]


@pytest.mark.parametrize(("fn", "text"), MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_input_raises_one_line_parse_error(fn, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParseError) as ei:
        fn(text)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith("npu-smi info")  # names the command


def test_parse_error_names_the_line() -> None:
    text = read("v24_common.txt").replace(": 1000", ": fast", 1)
    with pytest.raises(ParseError, match=r"npu-smi info -t common -i 4: line 8: .*Aicore Freq\(MHZ\).*integer"):
        parse.parse_common(text, "npu-smi info -t common -i 4")
