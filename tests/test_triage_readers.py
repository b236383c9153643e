"""The triage readers over real tool outputs (fixtures/triage/SOURCES.md): each kind recognised by
its content, and the facts each file holds read with the line they came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.api import PcieLink
from harness.triage import dcgm_diag, dcgm_watch, kernel_log, smi_text, smi_xml
from harness.triage.detect import kinds_of
from harness.triage.files import FileProblem, read_evidence
from harness.triage.merge import FILE_SHIFT
from harness.triage.triage import read_file

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "triage"


def text(rel: str) -> str:
    return (FIX / rel).read_text(encoding="utf-8")


@pytest.mark.parametrize("rel, kind", [
    ("nvidia-smi/h200-healthy-580.txt", "nvidia-smi -q"),
    ("nvidia-smi/remapped-rows-pending-gpud-pr80.txt", "nvidia-smi -q"),
    ("nvidia-smi/unknown-error-nvidia-docker-1553.txt", "nvidia-smi -q"),
    ("nvidia-smi/a100-mig-510.xml", "nvidia-smi -q -x"),
    ("kernel-log/dmesg-T-xid119.log", "kernel log"),
    ("kernel-log/dmesg-decode-xid13-43.log", "kernel log"),
    ("kernel-log/journalctl-short-iso-no-gpu.log", "kernel log"),
    ("dcgm/diag-r2-fail-go-dcgm-52.txt", "dcgmi diag"),
    ("dcgm/diag-json-host-fail-gcm-tests.json", "dcgmi diag -j"),
    ("dcgm/dmon-xider-120-dcgm-263.txt", "dcgmi dmon"),
    ("dcgm/health-json-healthy-dcgm-263.json", "dcgmi health"),
    ("npu-smi/910b2c-alarm-EDITED.txt", "npu-smi"),
    ("nvml/h200-healthy-record.json", "NVML recording"),
])
def test_each_kind_is_recognised_by_its_content_alone(rel: str, kind: str) -> None:
    assert [r.kind for r in kinds_of(text(rel))] == [kind]


def test_a_bug_report_holding_a_smi_report_and_a_kernel_log_is_read_as_both() -> None:
    both = text("nvidia-smi/h200-healthy-580.txt") + "\n" + text("kernel-log/dmesg-T-xid119.log")
    rep, cards = read_file("nvidia-bug-report.log", both)
    assert rep.kinds == ["nvidia-smi -q", "kernel log"] and rep.error is None
    assert {c.pci_bus_id for c in cards} == {"0000:00:06.0", "0000:9b:00.0"}


def test_h200_text_report() -> None:
    (c,) = smi_text.read(text("nvidia-smi/h200-healthy-580.txt"), "h200.txt")
    assert (c.pci_bus_id, c.serial, c.model, c.memory_total_mib) == ("0000:00:06.0", "1654724127926", "NVIDIA H200",
                                                                     143771)
    assert c.telemetry["pcie"] == PcieLink(gen=5, width=16, max_gen=5, max_width=16)
    assert c.counters["dbe_volatile"] == 0 and c.counters["row_remap_pending"] is False
    assert c.counters["retired_pages_sbe"] is None  # N/A on Hopper: unknown, not zero
    assert c.fans == 0 and c.telemetry["fans_rpm"] == []  # "Fan Speed : N/A": a passive card
    # driver 580 prints T.Limit temperatures (relative to the limit): never read as thresholds
    assert not {"temp_slowdown_c", "temp_shutdown_c"} & set(c.facts)
    assert str(c.quotes["pcie"][1]) == "h200.txt:82: Current                                : 16x"


def test_eight_card_report_keeps_each_cards_own_facts() -> None:
    cards = smi_text.read(text("nvidia-smi/h100x8-power-brake-535.161.08.txt"), "h100.txt")
    assert [c.index for c in cards] == list(range(8))
    assert len({c.pci_bus_id for c in cards}) == 8 and all(c.serial for c in cards)
    assert [c.counters["pcie_replays"] for c in cards] == [67, 63, 52, 43, 49, 53, 82, 67]
    assert all(c.telemetry["throttle"] == {"hw_slowdown", "hw_power_brake"} for c in cards)
    geforce = smi_text.read(text("nvidia-smi/rtx4090x8-535.154.05.txt"), "4090.txt")
    assert [c.serial for c in geforce] == [None] * 8  # GeForce: "Serial Number : N/A"
    assert [c.telemetry["fans_duty_pct"] for c in geforce[:2]] == [[0.0], [86.0]]


def test_a_paste_without_a_gpu_header_is_one_card() -> None:
    (c,) = smi_text.read(text("nvidia-smi/remapped-rows-pending-gpud-pr80.txt"), "p.txt")
    assert c.counters["row_remap_pending"] is True and c.counters["remapped_rows_uncorrectable"] == 4
    assert c.pci_bus_id is None and c.index is None


def test_a_card_that_does_not_answer_is_named_and_lost() -> None:
    (c,) = smi_text.read(text("nvidia-smi/unknown-error-nvidia-docker-1553.txt"), "a.txt")
    assert c.pci_bus_id == "0000:09:00.0" and c.lost and "Unknown Error" in c.lost


def test_a_gpu_section_full_of_unknown_error_is_lost() -> None:
    lines = text("nvidia-smi/h200-healthy-580.txt").splitlines()
    broken = "\n".join(ln.split(":")[0] + ": Unknown Error" if ln.startswith("        ") and ":" in ln else ln
                       for ln in lines)
    (c,) = smi_text.read(broken, "b.txt")
    assert c.lost and "Unknown Error" in c.lost


def test_xml_reports_across_driver_versions() -> None:
    (a100,) = smi_xml.read(text("nvidia-smi/a100-mig-510.xml"), "a.xml")
    assert a100.serial == "1324321002473" and a100.counters["dbe_volatile"] is None  # N/A with MIG on
    assert a100.counters["dbe_aggregate"] == 0 and a100.facts["temp_slowdown_c"] == 89.0
    (p100,) = smi_xml.read(text("nvidia-smi/p100-healthy.xml"), "p.xml")
    assert p100.counters["sbe_aggregate"] == 3 and p100.counters["retired_pages_pending"] is False
    (r2080,) = smi_xml.read(text("nvidia-smi/rtx2080-link-x8.xml"), "r.xml")
    assert r2080.telemetry["pcie"] == PcieLink(gen=3, width=8, max_gen=3, max_width=16)
    assert any(q.line == 68 and "8x" in q.text for q in r2080.quotes["pcie"])


def test_xml_that_is_not_well_formed_is_one_line_why() -> None:
    with pytest.raises(ValueError, match="not well-formed XML"):
        smi_xml.read("<nvidia_smi_log><gpu id='x'>", "x.xml")


def test_kernel_log_formats_and_episodes() -> None:
    (c,) = kernel_log.read(text("kernel-log/dmesg-T-xid119.log"), "k.log")
    assert c.pci_bus_id == "0000:9b:00.0" and [e.event.code for e in c.events] == [119] * 5
    assert {e.episode for e in c.events} == {0}  # one boot: one episode
    (c,) = kernel_log.read(text("kernel-log/dmesg-xid79-nvidia-docker-1553.log"), "k.log")
    assert c.uuid == "GPU-26fba6b2-9e52-006e-68db-4ce18382a5ea" and c.serial is None  # the serial line is empty
    assert c.lost and [e.event.code for e in c.events] == [79]
    (c,) = kernel_log.read(text("kernel-log/dmesg-fallen-off-no-xid-nvsentinel-155.log"), "k.log")
    assert c.pci_bus_id == "0000:b3:00.0" and c.lost and not c.events
    assert kernel_log.read(text("kernel-log/journalctl-short-iso-no-gpu.log"), "k.log") == []
    reboot = ("[  10.1] NVRM: Xid (PCI:0000:19:00): 48, pid=1, DBE\n"
              "[   0.0] Linux version 6.8.0\n"
              "[  20.2] NVRM: Xid (PCI:0000:19:00): 48, pid=2, DBE\n")
    (c,) = kernel_log.read(reboot, "r.log")
    assert [e.episode for e in c.events] == [0, 1]
    assert FILE_SHIFT > 8  # room for many boots per file


def test_dcgm_outputs() -> None:
    cards = {c.index: c for c in dcgm_diag.read_text(text("dcgm/diag-r2-fail-go-dcgm-52.txt"), "d.txt")}
    gpu0 = {s.code: s for s in cards[0].symptoms}
    assert gpu0["field.dcgm_gpu_memory"].failed and gpu0["field.dcgm_gpu_memory"].stage == "memory"
    assert "cuCtxCreate" in gpu0["field.dcgm_gpu_memory"].message
    assert "field.dcgm_gpu_memory" not in {s.code for s in cards[1].symptoms}  # "Pass - GPU: 1"
    assert all("GPU 0" not in s.message and "destroyed" not in s.message for s in cards[1].symptoms)  # GPU 0's words
    assert "context is destroyed" in gpu0["field.dcgm_diagnostic"].message
    assert dcgm_diag.read_json(text("dcgm/diag-json-host-fail-gcm-tests.json"), "j.json") == []  # no GPU named
    with pytest.raises(ValueError, match="does not parse"):
        dcgm_diag.read_json(text("dcgm/diag-json-pasted-dcgm-139.json"), "j.json")
    v4 = '{"DCGM Diagnostic": {"tests": [{"name": "memory", "results": [{"entity_group": "GPU", "entity_id": 3, ' \
         '"status": "fail", "warnings": [{"warning": "DBE on GPU 3"}]}]}]}}'
    (c,) = dcgm_diag.read_json(v4, "v4.json")
    assert c.index == 3 and c.symptoms[0].code == "field.dcgm_memory" and c.symptoms[0].failed
    dmon = {c.index: c for c in dcgm_watch.read_dmon(text("dcgm/dmon-xider-120-dcgm-263.txt"), "m.txt")}
    assert [e.event.code for e in dmon[1].events] == [120] and not dmon[0].events
    assert dcgm_watch.read_health(text("dcgm/health-json-healthy-dcgm-263.json"), "h.json") == []
    table = ("| Health Monitor Report                                                    |\n"
             "| Overall Health            | Warning                                      |\n"
             "| GPU ID: 0                 | Warning                                      |\n"
             "|                           | PCIe system: Warning - Detected more than 8  |\n"
             "|                           | PCIe replays per minute for GPU 0 : 13       |\n")
    (c,) = dcgm_watch.read_health(table, "h.txt")
    (s,) = c.symptoms
    assert s.code == "field.dcgm_health_pcie" and s.stage == "pcie" and not s.failed and ": 13" in s.message


def test_npu_smi_dump_with_its_health_view() -> None:
    rep, cards = read_file("n.txt", text("npu-smi/910b2c-alarm-EDITED.txt"))
    by_bus = {c.pci_bus_id: c for c in cards}
    alarm = by_bus["0000:19:00.0"]
    assert [(e.event.kind, e.event.code) for e in alarm.events] == [("health", "80E18402")]
    assert alarm.model == "910B2C" and alarm.memory_total_mib == 65536
    assert not by_bus["0000:5a:00.0"].events and not by_bus["0000:5a:00.0"].symptoms


def test_nvml_recording_is_read_through_the_backend() -> None:
    rep, (c,) = read_file("r.json", text("nvml/h200-healthy-record.json"))
    assert rep.kinds == ["NVML recording"]
    assert (c.pci_bus_id, c.serial, c.model) == ("0000:00:06.0", "1654724127926", "NVIDIA H200")
    assert c.counters["inforom_valid"] is True
    assert str(c.quotes["pcie"][0]).startswith("r.json:") and "nvmlDeviceGetCurrPcieLinkGeneration = 5" in str(
        c.quotes["pcie"][0])


def test_files_of_any_encoding_or_compression(tmp_path: Path) -> None:
    import gzip

    src = text("nvidia-smi/h200-healthy-580.txt")
    (tmp_path / "a.gz").write_bytes(gzip.compress(src.encode()))
    (tmp_path / "b.txt").write_bytes(src.encode("utf-16"))  # PowerShell's ">"
    (tmp_path / "c.bin").write_bytes(b"\x00\x01\x02" * 10)
    assert read_evidence(tmp_path / "a.gz") == src and read_evidence(tmp_path / "b.txt") == src
    for name, why in (("c.bin", "binary"), ("missing", "No such file"), ("", "folder")):
        with pytest.raises(FileProblem, match=why):
            read_evidence(tmp_path / name)
