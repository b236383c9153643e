"""The bench repair loop from the command line (issue 13): retest one card, record the repair,
read the history with the repair's outcome, escalate a fault back after its repair, hand over
the evidence pack; and the listings (plans, stages, devices --toml)."""

from __future__ import annotations

import json
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.config import load_rack
from harness.repairs import FIXED, NOT_FIXED, NOT_RETESTED, annotate
from harness.verdict import fault_key, judge_card
from stress.model import Finding
from tests.conftest import mock_card

PLAN = """
[[stages]]
stage = "health"
observe_s = 5
[[stages]]
stage = "memory"
algorithms = ["march_c-"]
backgrounds = ["00"]
[[stages]]
stage = "fans"
[[stages]]
stage = "health"
final = true
observe_s = 0
"""
FAN = {"kind": "fan.stalled", "fan": 0}
STUCK = {"kind": "memory.stuck_bit", "address": 0x1234, "bit": 3, "value": 1}  # chip (0x1234 // 256) % 24 = 18
GDDR = "rtx4090-blower-48gb"


def _plan(tmp_path: Path) -> str:
    p = tmp_path / "loop.toml"
    p.write_text(PLAN, encoding="utf-8")
    return str(p)


def _rack(write_rack, bad_faults: list[dict]) -> str:
    return str(write_rack([mock_card("BAD-1", 0, GDDR, faults=bad_faults), mock_card("OK-2", 1, GDDR)]))


def _runs(db: str) -> list[tuple[str, str]]:
    con = sqlite3.connect(db)
    return con.execute("SELECT serial, verdict FROM run_cards ORDER BY rowid").fetchall()


def test_retest_one_card_record_repairs_and_read_their_outcome(write_rack, burnin, tmp_path):
    plan = _plan(tmp_path)
    rack = _rack(write_rack, [FAN, STUCK])
    assert burnin("run", rack, "--plan", plan, "--db", "l.db", "-q", "--junit", "j.xml")[0] == 1
    cases = [c.get("name") for c in ET.parse("j.xml").getroot().iter("testcase") if "BAD-1" in c.get("classname")]
    assert cases == ["health", "memory", "fans", "health (final)"]  # unique names per card

    code, out, _ = burnin("repair", "BAD-1", "--action", "replace_memory", "--part", "GDDR chip 18",
                          "--note", "reballed", "--db", "l.db")
    assert code == 0 and "memory@chip=18" in out
    assert burnin("repair", "BAD-1", "--action", "replace_fan", "--part", "fan 0", "--db", "l.db")[0] == 0

    # the memory rework worked, the fan did not: retest only that card
    rack = _rack(write_rack, [FAN])
    code, out, _ = burnin("run", rack, "--plan", plan, "--db", "l.db", "-q", "--only", "BAD-1", "--json", "r.json")
    assert code == 1
    doc = json.loads(Path("r.json").read_text())
    assert [c["serial"] for c in doc["cards"]] == ["BAD-1"]
    card = doc["cards"][0]
    fan = next(f for f in card["findings"] if f["code"] == "fan.stalled")
    assert card["verdict"] == "rma" and fan["action"] == "rma"
    assert fan["evidence"]["escalated_from"] == "replace_fan" and "back after replace_fan" in fan["message"]
    assert _runs("l.db") == [("BAD-1", "repair"), ("OK-2", "pass"), ("BAD-1", "rma")]

    code, out, _ = burnin("history", "BAD-1", "--db", "l.db", "--json")
    assert code == 0
    story = json.loads(out)
    assert [e["kind"] for e in story] == ["run", "repair", "repair", "run"]
    mem, fanrep = story[1], story[2]
    assert (mem["action"], mem["part"], mem["note"]) == ("replace_memory", "GDDR chip 18", "reballed")
    assert mem["targets"] == ["memory@chip=18"] and mem["outcome"] == FIXED
    assert "fan.stalled@fan=0" in fanrep["targets"] and fanrep["outcome"] == NOT_FIXED
    assert mem["who"] and mem["at"] <= story[3]["started_at"]
    code, out, _ = burnin("history", "BAD-1", "--db", "l.db")
    assert code == 0 and "replace_memory" in out and "fixed" in out and "not fixed" in out


def test_fault_back_after_repair_is_stronger_than_seen_twice():
    """Without a repair a bench fault seen twice stays a bench repair; after its repair it is rma."""
    fan = Finding("fan.stalled", "fail", "replace_fan", "fans", "fan 0 reads 0 RPM", location={"fan": 0})
    earlier = [{"slot": 0, "findings": [fan.to_dict()]}]
    assert judge_card([Finding.from_dict(fan.to_dict())], earlier, 0).verdict == "repair"
    repaired = [{"action": "replace_fan", "at": "2026-11-30T10:00:00Z", "targets": [fault_key(fan)]}]
    v = judge_card([Finding.from_dict(fan.to_dict())], earlier, 0, repairs=repaired)
    assert v.verdict == "rma" and "back after replace_fan" in v.notes[0]
    # another fan, or a host fix, is not the same fault back
    other = Finding("fan.stalled", "fail", "replace_fan", "fans", "fan 1", location={"fan": 1})
    assert judge_card([other], earlier, 0, repairs=repaired).verdict == "repair"
    host = [{**repaired[0], "action": "fix_host"}]
    assert judge_card([Finding.from_dict(fan.to_dict())], earlier, 0, repairs=host).verdict == "repair"


def test_repair_outcome_waits_for_the_next_run():
    run = {"run_id": "r1", "started_at": "2026-11-30T10:00:00Z",
           "findings": [{"code": "pcie.link_degraded", "severity": "fail", "action": "reseat", "location": {}}]}
    rep = {"id": 1, "action": "reseat", "at": "2026-11-30T10:05:00Z", "after_run": "r1"}
    assert annotate([rep], [run])[0]["outcome"] == NOT_RETESTED
    later = {"run_id": "r2", "started_at": "2026-11-30T10:06:00Z", "findings": []}
    assert annotate([rep], [run, later])[0]["outcome"] == FIXED


def test_loop_verbs_reject_bad_input(write_rack, burnin, tmp_path):
    rack = str(write_rack([mock_card("ONE", 0)]))
    assert burnin("run", rack, "--plan", _plan(tmp_path), "--db", "b.db", "-q")[0] == 0
    code, _, err = burnin("run", rack, "--only", "NOPE", "--db", "b.db")
    assert code == 2 and "--only NOPE" in err and "ONE" in err
    code, _, err = burnin("history", "NOPE", "--db", "b.db")
    assert code == 2 and "NOPE" in err
    code, _, err = burnin("repair", "ONE", "--action", "pray", "--db", "b.db")
    assert code == 2 and "pray" in err and "replace_fan" in err
    code, _, err = burnin("repair", "NOPE", "--action", "reseat", "--db", "b.db")
    assert code == 2 and "NOPE" in err
    code, _, err = burnin("evidence", "ONE", "--run", "r0", "--out", "ev", "--db", "b.db")
    assert code == 2 and "r0" in err
    # a card picked by host/slot
    assert burnin("run", rack, "--plan", _plan(tmp_path), "--db", "b.db", "-q", "--only", "local/0")[0] == 0


def test_evidence_pack_and_chip_map_in_the_report(write_rack, burnin, tmp_path):
    rack = _rack(write_rack, [STUCK])
    assert burnin("run", rack, "--plan", _plan(tmp_path), "--db", "e.db", "-q", "--html", "r.html")[0] == 1
    html = Path("r.html").read_text()
    assert "GDDR6X chip map" in html and "chip 18 (1 cells)" in html
    assert html.count('class="bad"') == 1  # one failed position among the 24
    code, out, _ = burnin("evidence", "BAD-1", "--out", "pack", "--db", "e.db")
    assert code == 0
    pack = Path("pack")
    names = {p.name for p in pack.iterdir()}
    assert {"README.md", "identity.json", "findings.json", "tests.json", "telemetry.csv", "report.html",
            "history.json", "profile.toml"} <= names
    readme = (pack / "README.md").read_text()
    assert all(f"`{n}`" in readme for n in names - {"README.md"})
    ident = json.loads((pack / "identity.json").read_text())
    assert ident["serial"] == "BAD-1" and ident["firmware"] and ident["verdict"] == "repair"
    assert json.loads((pack / "findings.json").read_text())[0]["location"]["chip"] == 18
    assert json.loads((pack / "tests.json").read_text())["limits"]["memory"]["chips"] == 24
    rows = (pack / "telemetry.csv").read_text().splitlines()
    assert rows[0].startswith("time_s,tag") and len(rows) > 2
    assert "BAD-1" in (pack / "report.html").read_text() and "OK-2" not in (pack / "report.html").read_text()


def test_listings_and_devices_toml_round_trip(write_rack, burnin, tmp_path):
    code, out, _ = burnin("plans")
    assert code == 0 and all(p in out for p in ("quick", "standard", "overnight")) and "(×24)" in out
    code, out, _ = burnin("stages", "--json")
    stages = {s["stage"]: s for s in json.loads(out)}
    assert {"health", "memory", "fans", "thermal", "burn", "pcie", "power"} <= set(stages)
    obs = next(p for p in stages["health"]["params"] if p["name"] == "observe_s")
    assert obs["required"] is False and isinstance(obs["default"], float)
    code, out, _ = burnin("stages")
    assert code == 0 and "observe_s" in out

    rack = write_rack([mock_card("T-1", 4, GDDR, faults=[FAN]), mock_card("T-2", 5)])
    code, out, _ = burnin("devices", str(rack), "--toml")
    assert code == 0
    written = tmp_path / "written.toml"
    written.write_text(out, encoding="utf-8")
    cfg = load_rack(written)  # valid as it is
    got = [(d.config.serial, d.config.slot, d.config.profile, d.config.faults) for d in cfg.devices]  # type: ignore[attr-defined]
    assert got == [("T-1", 4, GDDR, [FAN]), ("T-2", 5, "h100-sxm5-80gb", [])]


def test_a_repair_naming_its_part_targets_that_part_only():
    from harness.repairs import targets

    fails = [{"code": "memory.stuck_bit", "severity": "fail", "action": "replace_memory", "location": {"chip": c}}
             for c in (14, 18)]
    run = {"run_id": "r1", "findings": fails}
    assert targets({"action": "replace_memory", "part": "GDDR chip 18"}, run) == ["memory@chip=18"]
    assert targets({"action": "replace_memory", "part": None}, run) == ["memory@chip=14", "memory@chip=18"]
    assert targets({"action": "replace_memory", "part": "chip 3"}, run) == ["memory@chip=14", "memory@chip=18"]


def test_evidence_keeps_the_vendor_record(burnin, tmp_path):
    """Ascend: the npu-smi views of the card; NVML: the snapshot the run was replayed from."""
    root = Path(__file__).resolve().parent.parent / "rack_configs"
    plan = tmp_path / "health.toml"
    plan.write_text('[[stages]]\nstage = "health"\nobserve_s = 0\n', encoding="utf-8")
    for cfg, db, expect in (("ascend-sim.toml", "a.db", "npu-smi_info_t_health_i_"),
                            ("nvml-replay.toml", "n.db", "nvml-snapshot.json")):
        burnin("run", str(root / cfg), "--db", db, "-q", "--plan", str(plan), "--only", "local/1")
        serial = sqlite3.connect(db).execute("SELECT serial FROM run_cards LIMIT 1").fetchone()[0]
        code, out, err = burnin("evidence", serial, "--out", f"pack-{db}", "--db", db)
        assert code == 0, err
        vendor = [p.name for p in (Path(f"pack-{db}") / "vendor").iterdir()]
        assert any(n.startswith(expect) for n in vendor), vendor
        assert all(p.stat().st_size > 0 for p in (Path(f"pack-{db}") / "vendor").iterdir())
        assert "vendor/" in (Path(f"pack-{db}") / "README.md").read_text()
