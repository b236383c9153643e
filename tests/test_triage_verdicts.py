"""What a senior technician would say about each real dump (issue 22's "done when"): the verdict,
the action, the stage to run first, and the evidence line quoted. Fixtures: fixtures/triage/."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.triage.rules import TriagedCard
from harness.triage.triage import Triage, triage

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "triage"


def run(*rels: str, texts: dict[str, str] | None = None) -> Triage:
    return triage([str(FIX / r) if texts is None or r not in texts else r for r in rels], texts=texts)


def only(t: Triage) -> TriagedCard:
    assert len(t.cards) == 1, [c.id for c in t.cards]
    return t.cards[0]


def codes(c: TriagedCard, severity: str = "fail") -> list[str]:
    return [f.code for f in c.findings if f.severity == severity]


def quoted(c: TriagedCard, code: str) -> str:
    return "\n".join(next(f for f in c.findings if f.code == code).evidence["lines"])


def test_the_h200s_own_report_passes() -> None:
    for rel in ("nvidia-smi/h200-healthy-580.txt", "nvml/h200-healthy-record.json"):
        c = only(run(rel))
        assert (c.id, c.verdict, c.actions, c.first_stage) == ("0000:00:06.0", "pass", [], None), rel
        assert c.profile == "h200-sxm5-141gb" and c.profile_source == "matched"
        assert codes(c, "warn") == [] and codes(c) == []


def test_healthy_field_dumps_do_not_raise_false_alarms() -> None:
    """Eight H100s braked by their host's power supply, eight GeForce cards with fans stopped at
    idle and links at gen 1 while idle, an old P100 with three corrected errors: all pass."""
    for rel, n in (("nvidia-smi/h100x8-power-brake-535.161.08.txt", 8), ("nvidia-smi/rtx4090x8-535.154.05.txt", 8),
                   ("nvidia-smi/p100-healthy.xml", 1), ("nvidia-smi/a100-mig-510.xml", 1),
                   ("npu-smi/910b2c-healthy-vllm-ascend-676.txt", 2)):
        t = run(rel)
        assert [c.verdict for c in t.cards] == ["pass"] * n, (rel, [(c.id, codes(c)) for c in t.cards])
    idle = run("nvidia-smi/rtx4090x8-535.154.05.txt").cards[0]
    assert codes(idle, "warn") == ["pcie.link_degraded"] and "while idle" in idle.findings[0].message


def test_uncorrectable_ecc_in_the_kernel_log_is_a_reset_and_a_memory_scan() -> None:
    c = only(run("kernel-log/dmesg-iso-xid48-63-94.log"))
    assert (c.id, c.verdict, c.actions, c.first_stage) == ("0000:19:00.0", "retest", ["reset_and_retest"], "memory")
    assert codes(c) == ["ecc.dbe", "ecc.row_remap_pending"]
    assert "NVRM: Xid (PCI:0000:19:00): 48" in quoted(c, "ecc.dbe")
    assert "dmesg-iso-xid48-63-94.log:11:" in quoted(c, "ecc.dbe")


def test_the_same_dbe_after_a_reboot_recurs_and_goes_to_rma() -> None:
    log = ("[  811.1] NVRM: Xid (PCI:0000:19:00): 48, pid=7, An uncorrectable double bit error (DBE) has been detected\n"
           "[    0.0] Linux version 6.8.0-45-generic (buildd@lcy02-amd64-075)\n"
           "[  912.4] NVRM: Xid (PCI:0000:19:00): 48, pid=9, An uncorrectable double bit error (DBE) has been detected\n")
    c = only(run("two-boots.log", texts={"two-boots.log": log}))
    assert c.verdict == "rma" and c.actions == ["rma"]
    (dbe,) = [f for f in c.findings if f.code == "ecc.dbe"]
    assert "recurs (2 boots in the logs)" in dbe.message and len(dbe.evidence["lines"]) == 2
    one_boot = log.replace("[    0.0] Linux version", "[  850.0] usb 1-1: new device")
    assert only(run("one-boot.log", texts={"one-boot.log": one_boot})).verdict == "retest"


def test_a_pending_row_remap_is_a_reset() -> None:
    c = only(run("nvidia-smi/remapped-rows-pending-gpud-pr80.txt"))
    assert (c.verdict, c.actions, c.first_stage) == ("retest", ["reset_and_retest"], "memory")
    assert codes(c) == ["ecc.row_remap_pending"]
    assert "remapped-rows-pending-gpud-pr80.txt:4: Pending                           : Yes" in quoted(
        c, "ecc.row_remap_pending")


def test_a_degraded_pcie_link_is_reseated() -> None:
    c = only(run("nvidia-smi/rtx2080-link-x8.xml"))
    assert (c.verdict, c.actions, c.first_stage) == ("repair", ["reseat"], "pcie")
    (f,) = [f for f in c.findings if f.code == "pcie.link_degraded"]
    assert f.severity == "fail" and "gen3 x8, card max gen3 x16" in f.message
    assert "rtx2080-link-x8.xml:68: <current_link_width>8x</current_link_width>" in quoted(c, "pcie.link_degraded")


def test_thermal_slowdown_with_a_stopped_fan_is_a_fan_replacement() -> None:
    c = only(run("nvidia-smi/rtx4090-thermal-fan-err-EDITED.txt"))
    assert (c.verdict, c.actions, c.first_stage) == ("repair", ["replace_fan"], "thermal")
    assert codes(c) == ["fan.stalled"] and codes(c, "warn") == ["thermal.slowdown"]
    lines = quoted(c, "fan.stalled")
    assert "Fan Speed                             : ERR!" in lines and "HW Thermal Slowdown           : Active" in lines
    assert "GPU Current Temp                  : 89 C" in lines


def test_thermal_slowdown_alone_is_a_retest_starting_with_the_thermal_stage() -> None:
    src = (FIX / "nvidia-smi/rtx4090-thermal-fan-err-EDITED.txt").read_text()
    fan_ok = src.replace("Fan Speed                             : ERR!", "Fan Speed                             : 100 %")
    c = only(run("hot.txt", texts={"hot.txt": fan_ok}))
    assert (c.verdict, c.actions, c.first_stage) == ("retest", ["reset_and_retest"], "thermal")
    assert codes(c) == ["thermal.slowdown"] and "run the thermal stage first" in c.findings[0].message
    fan_err_cool = src.replace("89 C", "45 C").replace(": Active", ": Not Active")
    c = only(run("cool.txt", texts={"cool.txt": fan_err_cool}))
    assert (c.verdict, codes(c), c.first_stage) == ("retest", ["fan.unreadable"], "fans")


def test_a_card_that_fell_off_the_bus_is_one_card_across_two_files() -> None:
    t = run("kernel-log/dmesg-xid79-nvidia-docker-1553.log", "nvidia-smi/unknown-error-nvidia-docker-1553.txt")
    c = only(t)
    assert (c.id, c.verdict, c.actions, c.first_stage) == ("0000:09:00.0", "repair", ["reseat"], "health")
    assert len(c.sources) == 2 and codes(c) == ["bus.lost"]
    lines = quoted(c, "bus.lost")
    assert "GPU 0000:09:00.0: GPU has fallen off the bus." in lines
    assert "Unable to determine the device handle for GPU 0000:09:00.0: Unknown Error" in lines
    assert "Xid (PCI:0000:09:00): 79" in lines
    c = only(run("kernel-log/dmesg-fallen-off-no-xid-nvsentinel-155.log"))
    assert (c.id, c.verdict, codes(c)) == ("0000:b3:00.0", "repair", ["bus.lost"])


def test_an_ascend_health_alarm_goes_back_to_the_factory() -> None:
    t = run("npu-smi/910b2c-alarm-EDITED.txt")
    by_id = {c.id: c for c in t.cards}
    c = by_id["0000:19:00.0"]
    assert (c.verdict, c.actions, c.profile) == ("rma", ["rma"], "ascend-910b2")
    assert "80E18402" in c.findings[0].message and "return to factory" in c.findings[0].message
    lines = "\n".join(c.findings[0].evidence["lines"])
    assert "Error Code                     : 80E18402" in lines and "| Alarm " in lines
    assert by_id["0000:5a:00.0"].verdict == "pass"


def test_an_ascend_state_without_its_code_is_a_retest() -> None:
    src = (FIX / "npu-smi/910b2c-healthy-vllm-ascend-676.txt").read_text().replace(
        "| 1     910B2C              | OK     ", "| 1     910B2C              | Critical")
    (c,) = [c for c in run("n.txt", texts={"n.txt": src}).cards if c.id == "0000:19:00.0"]
    assert (c.verdict, codes(c), c.first_stage) == ("retest", ["npu.health_critical"], "health")


def test_application_xids_are_not_card_faults_and_gsp_timeouts_are_retested() -> None:
    c = only(run("kernel-log/dmesg-decode-xid13-43.log"))
    assert c.verdict == "pass" and codes(c, "warn") == ["xid.13"] and codes(c) == []
    (x13,) = [f for f in c.findings if f.code == "xid.13"]
    assert x13.evidence["lines"][-1].startswith("... and ") and "more lines" in x13.evidence["lines"][-1]
    c = only(run("kernel-log/dmesg-T-xid119.log"))
    assert (c.verdict, codes(c), c.first_stage) == ("retest", ["xid.119"], "burn")


def test_dcgm_findings_are_symptoms_and_its_host_checks_are_not_the_cards() -> None:
    t = run("dcgm/diag-r2-fail-go-dcgm-52.txt")
    gpu0 = next(c for c in t.cards if c.id == "index 0")
    assert gpu0.verdict == "retest" and gpu0.first_stage in ("burn", "memory")
    assert {"field.dcgm_gpu_memory", "field.dcgm_diagnostic", "field.dcgm_targeted_stress"} == set(codes(gpu0))
    host = ('{"DCGM GPU Diagnostic": {"test_categories": [{"category": "Deployment", "tests": [{"name": '
            '"Persistence Mode", "results": [{"gpu_ids": "0", "status": "Fail"}]}]}]}}')
    c = only(run("p.json", texts={"p.json": host}))
    assert c.verdict == "pass" and codes(c, "info") == ["field.dcgm_persistence_mode"]


def test_dmon_joins_the_card_a_smi_report_names_by_the_same_index() -> None:
    smi = (FIX / "nvidia-smi/h100x8-power-brake-535.161.08.txt").read_text()
    dmon = (FIX / "dcgm/dmon-xider-120-dcgm-263.txt").read_text()
    t = run("smi.txt", "dmon.txt", texts={"smi.txt": smi, "dmon.txt": dmon})
    assert len(t.cards) == 8  # the dmon GPUs 0-7 are the report's cards 0-7
    bad = [c for c in t.cards if c.verdict != "pass"]
    assert [(c.id, c.verdict, codes(c)) for c in bad] == [("0000:3b:00.0", "retest", ["xid.120"])]
    assert bad[0].sources == ["smi.txt", "dmon.txt"]


def test_a_host_power_cap_is_information_not_a_fault() -> None:
    src = (FIX / "nvidia-smi/h200-healthy-580.txt").read_text().replace(
        "Current Power Limit                            : 700.00 W", "Current Power Limit                            : 400.00 W")
    c = only(run("cap.txt", texts={"cap.txt": src}))
    assert c.verdict == "pass" and codes(c, "info") == ["power.capped"]
    assert "not the card" in c.findings[0].message


@pytest.mark.parametrize("value", ["N/A", "[Not Supported]", "Unknown Error", "ERR!", "[GPU requires reset]"])
def test_any_value_may_be_unknown(value: str) -> None:
    lines = (FIX / "nvidia-smi/h200-healthy-580.txt").read_text().splitlines()
    out = [ln.split(":")[0] + ": " + value if i % 3 == 0 and ln.startswith("        ") and ":" in ln else ln
           for i, ln in enumerate(lines)]
    c = only(run("v.txt", texts={"v.txt": "\n".join(out)}))
    assert c.id == "0000:00:06.0" and c.verdict in ("pass", "retest", "repair")
