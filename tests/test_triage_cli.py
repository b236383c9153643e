"""``burnin triage``: exit codes, the JSON document, and the field report in the card's history."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.judging import judge_with_history
from harness.store import Store

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "triage"
HEALTHY = str(FIX / "nvidia-smi/h200-healthy-580.txt")
LOST = [str(FIX / "kernel-log/dmesg-xid79-nvidia-docker-1553.log"), str(FIX / "nvidia-smi/unknown-error-nvidia-docker-1553.txt")]


def test_a_healthy_report_exits_0_and_a_broken_card_exits_1(burnin) -> None:
    code, out, err = burnin("triage", HEALTHY)
    assert code == 0, out + err
    assert "0000:00:06.0" in out and "PASS" in out and "1 card(s): 1 pass" in out
    code, out, _ = burnin("triage", *LOST)
    assert code == 1 and "REPAIR" in out and "reseat" in out
    assert "GPU has fallen off the bus" in out  # the evidence line, quoted


def test_an_unreadable_file_is_one_line_and_the_others_are_still_triaged(burnin, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("the customer says it got hot\n")
    code, out, err = burnin("triage", "notes.txt", "missing.log", *LOST, "--json", "t.json")
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert lines == [
        "burnin: notes.txt: cannot read: not a kind of file burnin triage reads (nvidia-smi -q (text or -x XML), "
        "kernel logs (dmesg, journalctl -k, syslog), dcgmi diag (text or -j), dcgmi health, dcgmi dmon, npu-smi "
        "info (and -t views), NVML recordings)",
        "burnin: missing.log: cannot read: No such file or directory",
    ]
    assert "Traceback" not in out + err and "REPAIR" in out
    doc = json.loads((tmp_path / "t.json").read_text())
    assert [f["error"] is not None for f in doc["files"]] == [True, True, False, False]


def test_the_json_document(burnin, tmp_path: Path) -> None:
    code, _, _ = burnin("triage", *LOST, HEALTHY, "--json", "t.json")
    assert code == 1
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["schema"] == "burnin.triage/1" and len(doc["files"]) == 3
    by_id = {c["id"]: c for c in doc["cards"]}
    lost, ok = by_id["0000:09:00.0"], by_id["0000:00:06.0"]
    for card in (lost, ok):
        assert {"id", "serial", "model", "source", "verdict", "actions", "findings"} <= set(card)
    assert (lost["verdict"], lost["actions"], lost["first_stage"], len(lost["source"])) == ("repair", ["reseat"],
                                                                                         "health", 2)
    (f,) = lost["findings"]
    assert {"code", "severity", "message", "evidence"} <= set(f) and f["code"] == "bus.lost"
    assert any(line.endswith("Unable to determine the device handle for GPU 0000:09:00.0: Unknown Error")
               for line in f["evidence"])
    assert (ok["serial"], ok["verdict"], ok["findings"]) == ("1654724127926", "pass", [])


def test_a_folder_stands_for_the_files_in_it(burnin, tmp_path: Path) -> None:
    (tmp_path / "customer").mkdir()
    for src in LOST:
        shutil.copy(src, tmp_path / "customer" / Path(src).name)
    (tmp_path / "customer" / ".DS_Store").write_bytes(b"\x00\x01")
    code, out, err = burnin("triage", "customer")
    assert code == 1 and err == "" and "REPAIR" in out and "1 card(s): 1 repair" in out


def test_bad_json_path_is_exit_2_before_reading(burnin) -> None:
    code, _, err = burnin("triage", HEALTHY, "--json", "no/such/folder/t.json")
    assert code == 2 and err.startswith("burnin: no/such/folder/t.json: the folder") and err.count("\n") == 1


def test_db_keeps_the_field_report_in_the_cards_history(burnin, tmp_path: Path) -> None:
    src = (FIX / "kernel-log/dmesg-iso-xid48-63-94.log").read_text()
    smi = (FIX / "nvidia-smi/h200-healthy-580.txt").read_text().replace("00000000:00:06.0", "00000000:19:00.0")
    (tmp_path / "dmesg.log").write_text(src)
    (tmp_path / "smi.txt").write_text(smi)
    code, _, err = burnin("triage", "dmesg.log", "smi.txt", "--db", "bench.db")
    assert code == 1, err
    assert "stored 1 field report(s) in bench.db" in err
    code, out, err = burnin("history", "1654724127926", "--db", "bench.db")
    assert code == 0, err
    assert "field report" in out and "RETEST" in out and "ecc.dbe" in out and "dmesg.log" in out
    code, out, _ = burnin("history", "1654724127926", "--db", "bench.db", "--json")
    (entry,) = json.loads(out)
    assert entry["kind"] == "field" and entry["verdict"] == "retest" and entry["first_stage"] == "memory"
    # a card without a serial in the files has no history to go to: said, not stored
    shutil.copy(LOST[1], tmp_path / "lost.txt")
    code, _, err = burnin("triage", "lost.txt", "--db", "bench.db")
    assert "stored 0 field report(s)" in err and "without a serial" in err and "0000:09:00.0" in err


def test_the_next_bench_run_of_the_card_says_what_the_field_reported(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    report = {"id": "0000:19:00.0", "first_stage": "memory",
              "findings": [{"code": "ecc.dbe", "severity": "fail"}, {"code": "xid.94", "severity": "warn"}]}
    store.add_field_report("S-1", "0000:19:00.0", "2026-01-02T10:00:00Z", ["/x/dmesg.log"], "retest",
                           ["reset_and_retest"], report)
    store.create_run("r1", "rack", "quick", "c.toml", "p.toml", "2026-01-03T09:00:00Z")
    v = judge_with_history(store, "r1", "S-1", "local", 0, [])
    (f,) = v.findings
    assert (f.code, f.severity, f.action, v.verdict) == ("field.report", "info", "none", "pass")
    assert f.message == "field report 2026-01-02T10:00:00Z: retest (reset_and_retest): ecc.dbe; from dmesg.log"
    # once the card has had a bench run since, that run said it: the next one does not repeat it
    store.add_card("r1", "k", "local", 0, "mock", {"serial": "S-1"})
    store.create_run("r2", "rack", "quick", "c.toml", "p.toml", "2026-01-04T09:00:00Z")
    assert judge_with_history(store, "r2", "S-1", "local", 0, []).findings == []
    store.close()


def test_history_reads_a_database_made_before_field_reports(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute("DROP TABLE field_reports")
    con.commit()
    con.close()
    store = Store(db, readonly=True)
    assert store.field_reports("X") == []
    store.close()


def test_the_tui_history_shows_a_field_report() -> None:
    from rich.console import Console

    from harness.tui.story import history_view

    entry = {"kind": "field", "at": "2026-01-02T10:00:00Z", "started_at": "2026-01-02T10:00:00Z",
             "verdict": "retest", "summary": "retest (reset_and_retest): ecc.dbe; from dmesg.log"}
    console = Console(width=80, record=True)
    console.print(history_view("S-1", [entry]))
    shown = " ".join(console.export_text().split())
    assert "2026-01-02 10:00 field report retest (reset_and_retest): ecc.dbe; from dmesg.log" in shown
