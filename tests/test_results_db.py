"""The results database: checked before any card starts, one default every verb agrees on,
read-only for history, a full disk ends a run resumable, and resume never rewrites a finished run."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from harness.store import Store
from tests.conftest import mock_card

REPO = Path(__file__).resolve().parent.parent


def _one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


def test_junk_damaged_and_foreign_databases_are_refused_before_any_card(write_rack, burnin, tmp_path):
    rack = write_rack([mock_card("D1", 0)])
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    code, _, err = burnin("run", str(rack), "--db", str(junk), "-q")
    assert code == 2 and _one_line(err) and str(junk) in err, err

    good = tmp_path / "good.db"
    assert burnin("run", str(rack), "--db", str(good), "-q")[0] == 0
    data = bytearray(good.read_bytes())
    data[4096:] = os.urandom(len(data) - 4096)  # every page after the header is garbage
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(bytes(data))
    for verb in (("run", str(rack), "-q"), ("history", "D1")):
        code, _, err = burnin(*verb, "--db", str(damaged))
        assert code in (2, 3) and _one_line(err) and str(damaged) in err, (verb, err)

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE photos (id INTEGER)")
    code, _, err = burnin("run", str(rack), "--db", str(foreign), "-q")
    assert code == 2 and "other tables" in err and _one_line(err), err
    with sqlite3.connect(foreign) as c:  # and it was not touched
        assert [r[0] for r in c.execute("SELECT name FROM sqlite_master")] == ["photos"]


def test_db_in_a_missing_folder_or_a_folder_is_exit_2(write_rack, burnin, tmp_path):
    rack = write_rack([mock_card("D1", 0)])
    code, _, err = burnin("run", str(rack), "--db", str(tmp_path / "nope" / "x.db"), "-q")
    assert code == 2 and "does not exist" in err and _one_line(err), err
    code, _, err = burnin("history", "D1", "--db", str(tmp_path / "nope" / "x.db"))
    assert code == 2 and _one_line(err), err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes read-only files")
def test_read_only_database_cannot_run_but_history_reads_it(write_rack, burnin, tmp_path):
    rack = write_rack([mock_card("D1", 0)])
    db = tmp_path / "ro.db"
    assert burnin("run", str(rack), "--db", str(db), "-q")[0] == 0
    db.chmod(0o444)
    code, _, err = burnin("run", str(rack), "--db", str(db), "-q")
    assert code == 3 and _one_line(err), err
    code, out, err = burnin("history", "D1", "--db", str(db))
    assert code == 0 and "D1" in out, err


def test_history_opens_the_database_read_only(write_rack, burnin, tmp_path):
    rack = write_rack([mock_card("D1", 0)])
    db = tmp_path / "h.db"
    assert burnin("run", str(rack), "--db", str(db), "-q")[0] == 0
    before = (db.stat().st_mtime_ns, db.read_bytes())
    code, out, err = burnin("history", "D1", "--db", str(db))
    assert code == 0 and "D1" in out
    assert (db.stat().st_mtime_ns, db.read_bytes()) == before
    store = Store(db, readonly=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.mark_run("x", "finished")
    store.close()


def test_readme_run_then_history_finds_the_card_in_the_default_db(burnin, tmp_path, monkeypatch):
    """The README's first command, then `burnin history SIM-4090-0005` from the same folder."""
    monkeypatch.delenv("BURNIN_DB")
    code, out, err = burnin("run", str(REPO / "rack_configs" / "bench-mock.toml"), "-q", "--json", "run.json",
                            "--events", "run.events")
    default = tmp_path / "burnin.db"  # the burnin fixture runs in tmp_path
    assert code == 1 and default.is_file(), err
    # the event stream alone rebuilds the run's document: the whole quick plan, peers and verdicts
    assert burnin("report", "--events", "run.events", "--json", "rebuilt.json")[0] == 0
    assert json.loads(Path("rebuilt.json").read_text()) == json.loads(Path("run.json").read_text())
    assert str(default) in err  # every run says where its results are
    code, out, err = burnin("history", "SIM-4090-0005")
    assert code == 0 and "SIM-4090-0005" in out and "repair" in out.lower(), out + err
    code, out, err = burnin("history", "SIM-4090-0005", "-c", str(REPO / "rack_configs" / "bench-mock.toml"))
    assert code == 0 and "SIM-4090-0005" in out, out + err


def test_config_db_is_relative_to_the_config_from_any_folder(burnin, tmp_path, monkeypatch):
    racks = tmp_path / "racks"
    racks.mkdir()
    from tests.conftest import rack_toml

    (racks / "r.toml").write_text(rack_toml([mock_card("C1", 0)], extra_rack='db = "here.db"'))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert burnin("run", "../racks/r.toml", "-q")[0] == 0
    assert (racks / "here.db").is_file() and not (elsewhere / "here.db").exists()
    code, out, _ = burnin("history", "C1", "--config", "../racks/r.toml")
    assert code == 0 and "C1" in out


def test_resume_leaves_a_finished_run_untouched(write_rack, burnin):
    rack = write_rack([mock_card("F1", 0), mock_card("F2", 1, faults=[{"kind": "fan.stalled", "fan": 0}],
                                                   profile="rtx4090-blower-48gb")])
    assert burnin("run", str(rack), "--db", "f.db", "-q")[0] == 1
    db = sqlite3.connect("f.db")
    run_id = db.execute("SELECT run_id FROM runs").fetchone()[0]

    def snapshot() -> tuple:
        return (db.execute("SELECT * FROM runs").fetchall(), db.execute("SELECT * FROM run_cards").fetchall(),
                db.execute("SELECT * FROM findings ORDER BY id").fetchall(),
                db.execute("SELECT COUNT(*) FROM tests").fetchone())

    before = snapshot()
    for _ in range(2):
        code, out, err = burnin("resume", run_id, "--db", "f.db")
        assert code == 0 and "finished" in err and "nothing to resume" in err and _one_line(err), err
    assert snapshot() == before


def test_resumed_run_is_judged_only_on_history_older_than_it(write_rack, burnin):
    """A run resumed after later runs of the same card is judged as it would have been then."""
    lost = [{"kind": "bus.fall_off", "at_s": 0}]
    first = write_rack([mock_card("H1", 0, faults=lost)]).rename(Path("first.toml").resolve())
    assert burnin("run", str(first), "--db", "h.db", "-q")[0] == 1
    db = sqlite3.connect("h.db")
    run_id = db.execute("SELECT run_id FROM runs").fetchone()[0]
    # the harness crashed before the card finished
    db.execute("UPDATE run_cards SET state='running', verdict=NULL, findings=NULL")
    db.execute("DELETE FROM tests")
    db.execute("DELETE FROM findings")
    db.execute("UPDATE runs SET status='running', finished_at=NULL")
    db.commit()
    # later, the same card falls off the bus in another slot (that run is judged rma: it follows the card)
    later = write_rack([mock_card("H1", 3, faults=lost)])
    code, _, _ = burnin("run", str(later), "--db", "h.db", "-q", "--json", "later.json")
    assert json.loads(Path("later.json").read_text())["cards"][0]["verdict"] == "repair"
    code, out, err = burnin("resume", run_id, "--db", "h.db", "-q", "--json", "first.json")
    card = json.loads(Path("first.json").read_text())["cards"][0]
    assert card["verdict"] == "repair" and card["actions"] == ["reseat"], card  # not rma from the later run
    peer = db.execute("SELECT code, COUNT(*) FROM findings WHERE run_id=? GROUP BY code, message HAVING COUNT(*) > 1",
                      (run_id,)).fetchall()
    assert peer == []


def test_full_disk_mid_run_ends_it_interrupted_and_resumable(write_rack, burnin, monkeypatch, tmp_path):
    """SQLite's page limit stands in for a full disk: the run stops, says how to resume, keeps the
    cards it finished, and `burnin resume` completes it once there is room."""
    rack = write_rack([mock_card(f"Z{i}", i) for i in range(2)])
    plan = "quick"
    db = tmp_path / "full.db"
    real_init = Store.__init__
    limit = {"pages": 0}

    def small_disk(self, *a, **kw):
        real_init(self, *a, **kw)
        if limit["pages"]:
            self.db.execute(f"PRAGMA max_page_count={limit['pages']}")

    monkeypatch.setattr(Store, "__init__", small_disk)
    assert burnin("run", str(rack), "--db", str(db), "-q", "--plan", plan)[0] == 0
    pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
    Store(tmp_path / "empty.db").close()
    schema = sqlite3.connect(tmp_path / "empty.db").execute("PRAGMA page_count").fetchone()[0]
    assert pages - schema > 20
    limit["pages"] = pages + (pages - schema) // 3  # room for a third of a second run
    code, out, err = burnin("run", str(rack), "--db", str(db), "-q", "--plan", plan)
    assert code == 3 and _one_line(err) and "burnin resume" in err, err
    run_id = err.split("burnin resume ")[1].split()[0]
    with sqlite3.connect(db) as c:
        status = c.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()[0]
        states = c.execute("SELECT state FROM run_cards WHERE run_id=?", (run_id,)).fetchall()
    assert status in ("interrupted", "running"), status  # marked when the disk allows, resumable either way
    assert any(s[0] != "done" for s in states)
    limit["pages"] = 0
    code, out, err = burnin("resume", run_id, "--db", str(db), "-q", "--json", "z.json")
    assert code == 0, err
    doc = json.loads(Path("z.json").read_text())
    assert [c["verdict"] for c in doc["cards"]] == ["pass"] * 2
    assert all(len(c["tests"]) == len(doc["cards"][0]["tests"]) for c in doc["cards"])


def test_report_paths_are_checked_before_the_run_starts(write_rack, burnin, tmp_path):
    rack = write_rack([mock_card("P1", 0)])
    db = tmp_path / "p.db"
    (tmp_path / "afile").write_text("")
    for flag, path in (("--json", "/nonexistent/x.json"), ("--junit", str(tmp_path / "afile" / "r.xml")),
                       ("--html", "/nonexistent/r.html")):
        code, out, err = burnin("run", str(rack), "--db", str(db), "-q", flag, path)
        assert code == 2 and path in err and _one_line(err), err
    assert not db.exists()  # nothing ran, nothing was recorded
