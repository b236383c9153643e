"""The quick plan on mock cards gives the verdict the rules give, for every health-level fault
kind, while healthy cards of every profile pass; a card falling off the bus costs only itself."""

from __future__ import annotations

import json

import pytest

from tests.conftest import PROFILES, mock_card

# serial -> (profile, faults, expected verdict, expected fail codes (subset), expected actions)
CASES = {
    "DOWN": ("h100-sxm5-80gb", [{"kind": "pcie.downtrained", "gen": 4, "width": 16}], "repair", {"pcie.link_degraded"}, ["reseat"]),
    "DOWNW": ("rtx4090-blower-48gb", [{"kind": "pcie.downtrained", "gen": 4, "width": 8}], "repair", {"pcie.link_degraded"}, ["reseat"]),
    "REPLAY": ("h100-sxm5-80gb", [{"kind": "pcie.replays", "per_minute": 120}], "repair", {"pcie.replays"}, ["reseat"]),
    "DBE": ("h100-sxm5-80gb", [{"kind": "ecc.dbe", "count": 2}], "retest", {"ecc.dbe"}, ["reset_and_retest"]),
    "DBE910": ("ascend-910b", [{"kind": "ecc.dbe"}], "retest", {"ecc.dbe"}, ["reset_and_retest"]),
    "PEND": ("h100-sxm5-80gb", [{"kind": "ecc.row_remap_pending"}], "retest", {"ecc.row_remap_pending"}, ["reset_and_retest"]),
    "RFAIL": ("h100-sxm5-80gb", [{"kind": "ecc.row_remap_failure"}], "rma", {"ecc.row_remap_failure"}, ["rma"]),
    "RETIRE": ("h100-sxm5-80gb", [{"kind": "ecc.retired_pages", "count": 70}], "rma", {"ecc.retired_pages"}, ["rma"]),
    "OFFBUS": ("h100-sxm5-80gb", [{"kind": "bus.fall_off", "at_s": 0}], "repair", {"bus.lost"}, ["reseat"]),
    "OFFLATE": ("rtx4090-blower-48gb", [{"kind": "bus.fall_off", "at_s": 20}], "repair", {"bus.lost"}, ["reseat"]),
    "XID119": ("h100-sxm5-80gb", [{"kind": "xid", "code": 119}], "retest", {"xid.119"}, ["reset_and_retest"]),
    "XID79": ("h100-sxm5-80gb", [{"kind": "xid", "code": 79}], "repair", {"bus.lost"}, ["reseat"]),
    "CAP": ("h100-sxm5-80gb", [{"kind": "power.capped", "watts": 350}], "retest", {"power.capped"}, ["fix_host"]),
    "AUX": ("rtx4090-blower-48gb", [{"kind": "power.aux_unplugged"}], "repair", {"power.aux_unplugged"}, ["check_power"]),
    "INFOROM": ("ascend-910b", [{"kind": "firmware.inforom_corrupt"}], "repair", {"firmware.inforom_corrupt"}, ["reflash_firmware"]),
    # thermal, fans and power (issue 5): fan-cooled card, and passive cards through the bench controller
    "PASTE-H": ("h100-sxm5-80gb", [{"kind": "thermal.resistance", "factor": 1.5}], "repair", {"thermal.high_resistance"}, ["repaste"]),
    "PASTE-G": ("rtx4090-blower-48gb", [{"kind": "thermal.resistance", "factor": 1.5}], "repair", {"thermal.high_resistance"}, ["repaste"]),
    "PASTE-A": ("ascend-910b", [{"kind": "thermal.resistance", "factor": 2.0}], "repair", {"thermal.high_resistance"}, ["repaste"]),
    "STALL-G": ("rtx4090-blower-48gb", [{"kind": "fan.stalled", "fan": 0}], "repair", {"fan.stalled"}, ["replace_fan"]),
    "STALL-H": ("h100-sxm5-80gb", [{"kind": "fan.stalled", "fan": 1}], "repair", {"fan.stalled"}, ["replace_fan"]),
    "WEAK-G": ("rtx4090-blower-48gb", [{"kind": "fan.weak", "fan": 0, "max_fraction": 0.5}], "repair", {"fan.weak"}, ["replace_fan"]),
    "WEAK-A": ("ascend-910b", [{"kind": "fan.weak", "fan": 2, "max_fraction": 0.6}], "repair", {"fan.weak"}, ["replace_fan"]),
    "TACH-G": ("rtx4090-blower-48gb", [{"kind": "fan.tach_fault", "fan": 0}], "repair", {"fan.tach_mismatch"}, ["replace_fan"]),
    "TACH-H": ("h100-sxm5-80gb", [{"kind": "fan.tach_fault", "fan": 3}], "repair", {"fan.tach_mismatch"}, ["replace_fan"]),
    "CAP-A": ("ascend-910b", [{"kind": "power.capped", "watts": 200}], "retest", {"power.capped"}, ["fix_host"]),
    "AUX-H": ("h100-sxm5-80gb", [{"kind": "power.aux_unplugged"}], "repair", {"power.aux_unplugged"}, ["check_power"]),
    # compute burn-in (issue 4)
    "SDC-N": ("h100-sxm5-80gb", [{"kind": "compute.sdc", "every": 50}], "rma", {"compute.miscompare"}, ["rma"]),
    "SDC-P": ("rtx4090-blower-48gb", [{"kind": "compute.sdc", "probability": 0.05}], "rma", {"compute.miscompare"}, ["rma"]),
    "SDC-A": ("ascend-910b", [{"kind": "compute.sdc", "every": 7}], "rma", {"compute.miscompare"}, ["rma"]),
    "SLOW": ("h100-sxm5-80gb", [{"kind": "compute.slow", "factor": 0.8}], "rma", {"compute.slow"}, ["rma"]),
    "SLOW-G": ("rtx4090-blower-48gb", [{"kind": "compute.slow", "factor": 0.6}], "rma", {"compute.slow"}, ["rma"]),
    "HANG": ("h100-sxm5-80gb", [{"kind": "compute.hang"}], "retest", {"compute.hang"}, ["reset_and_retest"]),
    "HANG-LATE": ("ascend-910b", [{"kind": "compute.hang", "at_s": 230}], "retest", {"compute.hang"}, ["reset_and_retest"]),
    "HOTSDC": ("h100-sxm5-80gb", [{"kind": "thermal.resistance", "factor": 1.6},
                                  {"kind": "compute.sdc", "every": 5, "above_temp_c": 82}], "repair",
               {"compute.miscompare", "thermal.high_resistance"}, ["repaste"]),
    "HOTSDC-G": ("rtx4090-blower-48gb", [{"kind": "thermal.resistance", "factor": 1.6},
                                         {"kind": "compute.sdc", "probability": 0.2, "above_temp_c": 86}], "repair",
                 {"compute.miscompare"}, ["repaste"]),
}
WARN_ONLY = {
    "SBE": ("h100-sxm5-80gb", [{"kind": "ecc.sbe_storm", "per_minute": 500}], "ecc.sbe_rate"),
    "FEWPAGES": ("h100-sxm5-80gb", [{"kind": "ecc.retired_pages", "count": 5}], "ecc.retired_pages"),
}


@pytest.fixture(scope="module")
def quick_doc(tmp_path_factory):
    from click.testing import CliRunner

    from harness.cli import main
    from tests.conftest import rack_toml

    tmp = tmp_path_factory.mktemp("quick")
    cards = []
    slot = 0
    for serial, (profile, faults, *_rest) in {**CASES, **WARN_ONLY}.items():
        cards.append(mock_card(serial, slot, profile, faults))
        slot += 1
    for profile in PROFILES:
        for seed in (1, 2, 3):
            cards.append(mock_card(f"OK-{profile}-{seed}", slot, profile, seed=seed * 7919))
            slot += 1
    rack = tmp / "rack.toml"
    bench = '\n[[hosts.instruments]]\nkind = "bench"\nport = "sim"\n'
    rack.write_text(rack_toml(cards, name="verdicts", host_extra=bench))
    out = tmp / "r.json"
    res = CliRunner().invoke(main, ["run", str(rack), "--plan", "quick", "--json", str(out), "--db", str(tmp / "b.db"), "-q"])
    assert res.exit_code == 1, res.output
    return json.loads(out.read_text())


def _card(doc, serial):
    return next(c for c in doc["cards"] if c["serial"] == serial)


@pytest.mark.parametrize("serial", sorted(CASES))
def test_fault_gets_rule_verdict(quick_doc, serial):
    _profile, _faults, verdict, codes, actions = CASES[serial]
    card = _card(quick_doc, serial)
    fails = {f["code"] for f in card["findings"] if f["severity"] == "fail"}
    assert codes <= fails, card["findings"]
    assert card["verdict"] == verdict, card["findings"]
    for a in actions:
        assert a in card["actions"]
    if verdict != "rma":
        assert "rma" not in card["actions"], card["findings"]


@pytest.mark.parametrize("serial", sorted(WARN_ONLY))
def test_warn_only_faults_pass_with_a_warning(quick_doc, serial):
    card = _card(quick_doc, serial)
    assert card["verdict"] == "pass", card["findings"]
    assert any(f["code"] == WARN_ONLY[serial][2] and f["severity"] == "warn" for f in card["findings"])


def test_healthy_cards_of_every_profile_pass(quick_doc):
    healthy = [c for c in quick_doc["cards"] if c["serial"].startswith("OK-")]
    assert {c["model"] for c in healthy} == set(PROFILES)
    for c in healthy:
        assert c["verdict"] == "pass", (c["serial"], c["findings"])
        assert not [f for f in c["findings"] if f["severity"] == "fail"]
        assert all(t["status"] in ("pass", "skipped") for t in c["tests"]), c["tests"]


def test_fallen_card_costs_only_itself(quick_doc):
    lost = _card(quick_doc, "OFFLATE")
    assert lost["state"] == "lost"
    # the run went on: every other card finished all its tests
    others = [c for c in quick_doc["cards"] if c["serial"] not in ("OFFBUS", "OFFLATE", "XID79", "HANG", "HANG-LATE")]
    assert all(c["state"] == "done" for c in others)


def test_hung_card_is_abandoned_and_the_rest_finish(quick_doc):
    hung = _card(quick_doc, "HANG")
    assert hung["state"] == "hung"
    assert any(t["status"] == "skipped" for t in hung["tests"])  # later stages did not run on it
    assert _card(quick_doc, "OK-h100-sxm5-80gb-1")["state"] == "done"


def test_document_shape(quick_doc):
    doc = quick_doc
    assert doc["schema"] == "burnin.result/1"
    assert {"run_id", "rack", "plan", "started_at", "finished_at", "cards"} <= set(doc)
    assert doc["started_at"].endswith("Z") and doc["finished_at"] >= doc["started_at"]
    for c in doc["cards"]:
        assert {"host", "slot", "backend", "model", "serial", "verdict", "actions", "findings", "tests"} <= set(c)
        assert c["verdict"] in ("pass", "repair", "rma", "retest")
        assert c["actions"] == sorted(set(c["actions"])) and "none" not in c["actions"]
        for f in c["findings"]:
            assert {"code", "severity", "action", "test", "message", "location", "evidence"} <= set(f)
            assert f["severity"] in ("info", "warn", "fail")
        for t in c["tests"]:
            assert {"name", "status", "duration_s", "metrics"} <= set(t)
            assert t["status"] in ("pass", "fail", "error", "skipped")


def test_healthy_cards_stop_each_wait_once_settled(quick_doc):
    """Issue 19 item 6: the watch, the soak and the burn stop on their physics, well inside the
    plan's fixed times (30 s, 30 + 150 s, 60 + 120 s), and say why."""
    plan = {"health": 30.0, "thermal": 150.0, "burn": 120.0}
    for c in (c for c in quick_doc["cards"] if c["serial"].startswith("OK-")):
        tests = {t["name"]: t for t in c["tests"] if not t["metrics"].get("final")}
        why = {n: (tests[n]["metrics"]["stop_reason"], tests[n]["duration_s"]) for n in plan}
        assert why["health"][0] == "decided" and why["thermal"][0] == "settled", (c["serial"], why)
        assert why["burn"][0] in ("settled", "limit"), (c["serial"], why)
        assert all(d <= plan[n] + 1e-6 for n, (_, d) in why.items()), (c["serial"], why)
        assert tests["thermal"]["metrics"]["cooldown_s"] <= 30 and tests["burn"]["metrics"]["idle_settle_s"] == 0
        saved = (30 - why["health"][1]) + (30 - tests["thermal"]["metrics"]["cooldown_s"]) + \
            (150 - why["thermal"][1]) + (60 + 120 - why["burn"][1])
        assert saved >= 60, (c["serial"], why)  # simulated seconds less than the fixed plan
