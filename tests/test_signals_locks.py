"""Signals end a run like Ctrl-C (quietly, resumable, nothing left in /tmp); one harness per card;
a host's missing card is reported at its slot; the package works from a plain install."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import mock_card, rack_toml, wait_for

REPO = Path(__file__).resolve().parent.parent


def _blocking_run(tmp_path: Path, n_cards: int = 3, instruments: bool = True):
    """Start `burnin run` in its own process group, blocked in a stage until ``block`` is removed."""
    block = tmp_path / "block"
    block.write_text("")
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[[stages]]\nstage = "health"\nobserve_s = 1\n'
                    f'[[stages]]\nstage = "tests.stages_for_tests:BlockStage"\nwhile_file = "{block}"\n')
    host_extra = '[[hosts.instruments]]\nport = "sim"\n' if instruments else ""
    rack = tmp_path / "rack.toml"
    rack.write_text(rack_toml([mock_card(f"G{i}", i) for i in range(n_cards)], name="sig", host_extra=host_extra))
    db = tmp_path / "s.db"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}
    cmd = [sys.executable, "-m", "harness.cli", "run", str(rack), "--plan", str(plan), "--db", str(db), "-q"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)

    def health_stored() -> bool:
        if not db.exists():
            return False
        with sqlite3.connect(db) as c:
            try:
                return c.execute("SELECT COUNT(*) FROM tests WHERE name='health'").fetchone()[0] == n_cards
            except sqlite3.OperationalError:
                return False

    try:
        wait_for(health_stored)
    except AssertionError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc, db, tmp, block


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_signal_to_the_process_group_stops_quietly_and_resumably(tmp_path, sig, code):
    """As a terminal (Ctrl-C, hang-up) or a service manager would send it: to every process."""
    proc, db, tmp, block = _blocking_run(tmp_path)
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Error" not in err, err  # no worker tracebacks either
    assert err.strip().count("\n") == 0 and "burnin resume" in err, err
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
        assert c.execute("SELECT COUNT(*) FROM tests WHERE name='health' AND status='pass'").fetchone()[0] == 3
    assert list(tmp.iterdir()) == []  # no burnin-bench-* folder left behind
    block.unlink()


def test_a_second_harness_on_the_same_cards_is_told_who_holds_them(tmp_path):
    proc, db, tmp, block = _blocking_run(tmp_path, n_cards=2, instruments=False)
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        res = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(tmp_path / "rack.toml"), "-q",
                              "--db", str(tmp_path / "other.db")], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 3, res.stderr
        assert f"pid {proc.pid}" in res.stderr and "G0" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: the kernel drops its locks
        proc.communicate(timeout=60)
    block.unlink()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(tmp_path / "rack.toml"), "-q",
                          "--db", str(tmp_path / "other.db"), "--plan", "quick"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr  # no stale lock after the crash


def test_missing_card_is_reported_bus_lost_at_its_slot(burnin, tmp_path):
    rack = tmp_path / "r.toml"
    rack.write_text(rack_toml([mock_card("M0", 0), mock_card("M2", 2)], host_extra="cards = 4"))
    code, out, err = burnin("run", str(rack), "-q", "--json", "m.json", "--db", "m.db")
    doc = json.loads(Path("m.json").read_text())
    assert [c["slot"] for c in doc["cards"]] == [0, 1, 2, 3]
    missing = [c for c in doc["cards"] if c["serial"] is None]
    assert [c["slot"] for c in missing] == [1, 3]
    assert all(c["findings"][0]["code"] == "bus.lost" and c["verdict"] != "pass" for c in missing)
    assert code == 1


def test_ascend_sim_declares_eight_npus_and_reports_the_lost_one(burnin, tmp_path):
    (tmp_path / "p.toml").write_text('[[stages]]\nstage = "health"\nobserve_s = 0\n')
    code, out, err = burnin("run", str(REPO / "rack_configs" / "ascend-sim.toml"), "-q", "--db", "a.db",
                            "--json", "a.json", "--plan", str(tmp_path / "p.toml"))
    doc = json.loads(Path("a.json").read_text())
    assert len(doc["cards"]) == 8, [c["slot"] for c in doc["cards"]]
    lost = [c for c in doc["cards"] if any(f["code"] == "bus.lost" for f in c["findings"])]
    assert [c["slot"] for c in lost] == [6]


def test_plans_and_profiles_ship_in_a_plain_install(tmp_path):
    """A wheel (what `pip install .` installs) carries the plans: `validate` works from it alone."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", "build", "*.egg-info", "__pycache__", ".git",
                                                             "*.db", ".pytest_cache", ".ruff_cache", "tests"))
    wheels = tmp_path / "wheels"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(wheels)],
                         capture_output=True, text=True, timeout=240)
    if res.returncode != 0:
        if any(w in res.stderr for w in ("No matching distribution", "Could not find", "connection", "Network")):
            pytest.skip("building a wheel needs setuptools from an index: offline")
        raise AssertionError(res.stderr[-2000:])
    whl = next(wheels.glob("burnin-*.whl"))
    names = zipfile.ZipFile(whl).namelist()
    assert {"rack_configs/plans/quick.toml", "rack_configs/plans/standard.toml",
            "fixtures/profiles/h100-sxm5-80gb.toml"} <= set(names)
    site = tmp_path / "site"
    with zipfile.ZipFile(whl) as z:
        z.extractall(site)  # what pip install puts in site-packages
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-c", "import harness.plans as p, sys; print(p.__file__); "
                          "print(p.available_plans()); p.load_plan('quick')"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert str(site) in res.stdout and "['overnight', 'quick', 'standard']" in res.stdout, res.stdout
