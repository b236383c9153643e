"""A run stopped with Ctrl-C keeps what it measured and `burnin resume` finishes it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import mock_card, rack_toml, wait_for

REPO = Path(__file__).resolve().parent.parent


def test_ctrl_c_then_resume_keeps_measured_results(tmp_path):
    block = tmp_path / "block"
    block.write_text("")
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[[stages]]\nstage = "health"\nobserve_s = 1\n'
                    f'[[stages]]\nstage = "tests.stages_for_tests:BlockStage"\nwhile_file = "{block}"\n')
    rack = tmp_path / "rack.toml"
    rack.write_text(rack_toml([mock_card("I1", 0), mock_card("I2", 1, "rtx4090-blower-48gb")], name="irq"))
    db = tmp_path / "i.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    events = tmp_path / "run.events"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(rack), "--plan", str(plan), "--db", str(db), "-q",
           "--events", str(events)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def health_stored() -> bool:
        if not db.exists():
            return False
        with sqlite3.connect(db) as c:
            try:
                return c.execute("SELECT COUNT(*) FROM tests WHERE name='health'").fetchone()[0] == 2
            except sqlite3.OperationalError:
                return False

    wait_for(health_stored)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "burnin resume" in err and "Traceback" not in err
    run_id = err.split("burnin resume ")[1].split()[0]
    with sqlite3.connect(db) as c:
        kept = c.execute("SELECT key, status FROM tests WHERE name='health' ORDER BY key").fetchall()
    assert kept == [("local/0", "pass"), ("local/1", "pass")]

    block.unlink()
    assert json.loads(events.read_text().splitlines()[-1])["type"] == "run_end"  # the stop is in the stream
    res = subprocess.run([sys.executable, "-m", "harness.cli", "resume", run_id, "--db", str(db), "-q",
                          "--json", str(tmp_path / "r.json"), "--events", str(events)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    # both sessions' events in one file rebuild the resumed run's document
    from harness.stream import rebuild_document

    assert rebuild_document(events) == json.loads(json.dumps(doc))
    assert doc["run_id"] == run_id
    assert [c["verdict"] for c in doc["cards"]] == ["pass", "pass"]
    assert all([t["name"] for t in c["tests"]] == ["health", "block"] for c in doc["cards"])
