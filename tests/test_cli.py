"""The contract's commands and exit codes, end to end on mock racks."""

from __future__ import annotations

import json
import sqlite3

from tests.conftest import PROFILES, mock_card


def test_all_pass_exits_0_and_prints_table(write_rack, burnin):
    rack = write_rack([mock_card(f"P{i}", i, p) for i, p in enumerate(PROFILES)])
    code, out, err = burnin("run", str(rack), "--json", "r.json")
    assert code == 0, out + err
    assert "PASS" in out and "P0" in out and "3 cards: 3 pass" in out
    doc = json.loads(open("r.json").read())
    assert [c["verdict"] for c in doc["cards"]] == ["pass"] * 3


def test_a_failing_card_exits_1(write_rack, burnin):
    rack = write_rack([mock_card("G", 0), mock_card("B", 1, faults=[{"kind": "ecc.row_remap_failure"}])])
    code, out, _ = burnin("run", str(rack))
    assert code == 1 and "RMA" in out


def test_nvml_without_driver_is_exit_3(write_rack, burnin, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if nvidia-ml-py were not installed
    rack = write_rack([{"backend": "nvml"}])
    code, out, err = burnin("run", str(rack))
    assert code == 3, out + err
    assert "nvml" in err and "Traceback" not in err and err.count("\n") == 1


def test_devices_json_shape(write_rack, burnin):
    rack = write_rack([mock_card("D0", 0, "rtx4090-blower-48gb"), mock_card("D1", 1, "h100-sxm5-80gb",
                       faults=[{"kind": "bus.fall_off", "at_s": 0}]), mock_card("D2", 2, "ascend-910b")])
    code, out, err = burnin("devices", str(rack), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "burnin.devices/1"
    d0, d1, d2 = doc["devices"]
    assert d0["serial"] == "D0" and d0["backend"] == "mock" and d0["vendor"] == "nvidia"
    t = d0["telemetry"]
    for k in ("temperature_c", "power_w", "power_limit_w", "memory_total_mib", "memory_used_mib",
              "utilization_pct", "clock_mhz", "clock_max_mhz", "fans_rpm", "pcie"):
        assert k in t
    assert len(t["fans_rpm"]) == 1 and t["fans_rpm"][0] > 0
    assert t["pcie"] == {"gen": 4, "width": 16, "max_gen": 4, "max_width": 16}
    assert d2["telemetry"]["fans_rpm"] == []  # passive card: no fans, not "0 RPM"
    assert [f["code"] for f in d1["findings"]] == ["bus.lost"]  # a silent card is still listed
    assert d0["findings"] == []


def test_history_follows_the_serial_across_runs(write_rack, burnin):
    rack = write_rack([mock_card("H1", 0, faults=[{"kind": "pcie.downtrained", "gen": 5, "width": 8}])])
    assert burnin("run", str(rack), "--db", "h.db")[0] == 1
    rack = write_rack([mock_card("H1", 3)])  # repaired, in another slot
    assert burnin("run", str(rack), "--db", "h.db")[0] == 0
    code, out, _ = burnin("history", "H1", "--db", "h.db", "--json")
    assert code == 0
    runs = json.loads(out)
    assert [r["verdict"] for r in runs] == ["repair", "pass"]
    assert [r["slot"] for r in runs] == [0, 3]
    assert runs[0]["started_at"] <= runs[1]["started_at"]
    assert all({"run_id", "serial", "verdict", "actions", "findings", "tests"} <= set(r) for r in runs)
    code, out, _ = burnin("history", "H1", "--db", "h.db")
    assert code == 0 and "REPAIR" in out and "PASS" in out


def test_bus_lost_following_card_to_new_slot_escalates_to_rma(write_rack, burnin):
    fault = [{"kind": "bus.fall_off", "at_s": 0}]
    assert burnin("run", str(write_rack([mock_card("L1", 0, faults=fault)])), "--db", "e.db")[0] == 1
    code, out, _ = burnin("run", str(write_rack([mock_card("L1", 2, faults=fault)])), "--db", "e.db", "--json", "e.json")
    card = json.loads(open("e.json").read())["cards"][0]
    assert card["verdict"] == "rma" and "follows the card" in card["findings"][0]["message"]


def test_results_are_in_the_db_as_they_arrive(write_rack, burnin):
    rack = write_rack([mock_card("S1", 0, "rtx4090-blower-48gb")])
    assert burnin("run", str(rack), "--db", "s.db")[0] == 0
    db = sqlite3.connect("s.db")
    assert db.execute("SELECT COUNT(*) FROM tests").fetchone()[0] >= 2
    assert db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] >= 1
    assert db.execute("SELECT serial FROM cards").fetchall() == [("S1",)]


def test_history_unknown_db_is_exit_2(burnin):
    code, _, err = burnin("history", "X", "--db", "missing.db")
    assert code == 2 and "missing.db" in err


def test_crashing_and_hanging_workers_cost_only_their_card(write_rack, burnin, tmp_path):
    plan = tmp_path / "p.toml"
    plan.write_text(
        '[[stages]]\nstage = "health"\nobserve_s = 1\n'
        '[[stages]]\nstage = "tests.stages_for_tests:CrashStage"\nonly_serial = "CRASH"\n'
        '[[stages]]\nstage = "tests.stages_for_tests:HangStage"\nonly_serial = "HANG"\ntimeout_s = 1.5\n'
    )
    rack = write_rack([mock_card("CRASH", 0), mock_card("HANG", 1), mock_card("FINE", 2)])
    code, out, err = burnin("run", str(rack), "--plan", str(plan), "--json", "c.json")
    assert code == 1, out + err
    cards = {c["serial"]: c for c in json.loads(open("c.json").read())["cards"]}
    assert cards["FINE"]["verdict"] == "pass" and cards["FINE"]["state"] == "done"
    crash = cards["CRASH"]
    assert crash["state"] == "failed" and crash["verdict"] == "retest"
    assert [t["status"] for t in crash["tests"]][:1] == ["pass"]  # the health result measured before the crash is kept
    assert any(f["code"] == "harness.worker_crashed" for f in crash["findings"])
    hang = cards["HANG"]
    assert hang["state"] == "timed_out" and hang["verdict"] == "retest"
    assert any(f["code"] == "harness.stage_timeout" for f in hang["findings"])


def test_resume_runs_only_unfinished_cards(write_rack, burnin):
    rack = write_rack([mock_card("R1", 0), mock_card("R2", 1)])
    assert burnin("run", str(rack), "--db", "r.db")[0] == 0
    db = sqlite3.connect("r.db")
    run_id = db.execute("SELECT run_id FROM runs").fetchone()[0]
    # simulate a harness crash that left R2 unfinished
    db.execute("UPDATE run_cards SET state='running', verdict=NULL WHERE serial='R2'")
    db.execute("DELETE FROM tests WHERE key='local/1'")
    db.execute("UPDATE runs SET status='running', finished_at=NULL")
    db.commit()
    r1_tests = db.execute("SELECT id FROM tests WHERE key='local/0'").fetchall()
    code, out, err = burnin("resume", run_id, "--db", "r.db", "--json", "res.json")
    assert code == 0, out + err
    doc = json.loads(open("res.json").read())
    assert doc["run_id"] == run_id and [c["verdict"] for c in doc["cards"]] == ["pass", "pass"]
    assert db.execute("SELECT id FROM tests WHERE key='local/0'").fetchall() == r1_tests  # kept, not re-run
    assert db.execute("SELECT COUNT(*) FROM tests WHERE key='local/1'").fetchone()[0] >= 1
    code, _, err = burnin("resume", "nope", "--db", "r.db")
    assert code == 2 and "nope" in err


def test_mock_card_without_serial_or_slot_gets_stable_ones(write_rack, burnin):
    rack = write_rack([{"backend": "mock", "profile": "ascend-910b"}, {"backend": "mock", "profile": "ascend-910b"}])
    code, out, err = burnin("devices", str(rack), "--json")
    assert code == 0, err
    serials = [d["serial"] for d in json.loads(out)["devices"]]
    assert serials == ["SIM-local-00", "SIM-local-01"]


def test_junit_report(write_rack, burnin):
    import xml.etree.ElementTree as ET

    rack = write_rack([mock_card("J0", 0), mock_card("J1", 1, faults=[{"kind": "ecc.row_remap_failure"}])])
    code, _, _ = burnin("run", str(rack), "--junit", "r.xml")
    assert code == 1
    root = ET.parse("r.xml").getroot()
    suites = root.findall("testsuite")
    assert len(suites) == 2
    bad = next(s for s in suites if "J1" in s.get("name"))
    assert int(bad.get("failures")) >= 1
    assert any(f.get("message") == "ecc.row_remap_failure" for f in bad.iter("failure"))
    good = next(s for s in suites if "J0" in s.get("name"))
    assert good.get("failures") == "0" and good.get("errors") == "0"


def test_a_stage_that_cannot_complete_makes_the_card_retest(write_rack, burnin, tmp_path):
    plan = tmp_path / "p.toml"
    plan.write_text('[[stages]]\nstage = "health"\nobserve_s = 0\n[[stages]]\nstage = "tests.stages_for_tests:RaiseStage"\n')
    code, out, err = burnin("run", str(write_rack([mock_card("E1", 0)])), "--plan", str(plan), "--json", "e.json")
    assert code == 1 and "Traceback" not in out + err
    card = json.loads(open("e.json").read())["cards"][0]
    assert card["verdict"] == "retest"
    assert [t["status"] for t in card["tests"]] == ["pass", "error"]
    assert any(f["code"] == "harness.stage_error" and "ZeroDivisionError" in f["message"] for f in card["findings"])


def test_real_backend_on_a_remote_host_is_exit_3(tmp_path, burnin):
    p = tmp_path / "r.toml"
    p.write_text('[rack]\nname = "x"\n[[hosts]]\nname = "node-far-away-17"\n[[hosts.devices]]\nbackend = "nvml"\n')
    code, _, err = burnin("run", str(p))
    assert code == 3 and "node-far-away-17" in err and err.count("\n") == 1


def test_validate_checks_config_and_plan_without_running(write_rack, burnin):
    rack = write_rack([mock_card("V0", 0), {"backend": "nvml"}])  # no GPU needed: nothing is opened
    code, out, err = burnin("validate", str(rack), "--plan", "standard")
    assert code == 0, err
    assert "ok: rack 'test-rack', 1 host(s), 2 device entries (mock, nvml)" in out
    assert "plan 'standard'" in out and "memory" in out
    assert not (rack.parent / "burnin.db").exists()
    bad = write_rack([mock_card("V0", 0, faults=[{"kind": "memory.stuck_bit", "address": 1, "bit": 9, "value": 1}])])
    code, _, err = burnin("validate", str(bad))
    assert code == 2 and "faults[0]" in err and "bit" in err
