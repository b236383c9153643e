"""The room store: PostgreSQL (a real server the tests start, tests/pg_server.py) behind the same
Store as SQLite. Readers mean the same on both; two benches writing at once lose and mix nothing;
a card moved between benches keeps one history; the same card is refused across machines; a
bench's SQLite history moves in once however often migrate runs; passwords are never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.db.target import DbUrl, mask
from harness.errors import HarnessUnavailable, UsageError
from harness.store import Store
from stress.model import Finding, TestResult
from tests.conftest import mock_card, rack_toml, wait_for

REPO = Path(__file__).resolve().parent.parent
BLOCK = "tests.stages_for_tests:BlockStage"


def _one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


# -- the readers mean the same on SQLite and PostgreSQL ------------------------------------------

def _write_history(store: Store, tag: str) -> None:
    """The same story into any store: three runs, two hosts whose names sort differently by
    locale than byte-wise, a NULL serial, a slot that a different card passed in before."""
    hosts = [f"{tag}-Bench_b", f"{tag}-bench-a", f"{tag}-Bench-a"]
    for n, started in enumerate(("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")):
        rid = f"{tag}-run{n}"
        store.create_run(rid, "rack", "quick", "/c.toml", "/p.toml", started, ["health", "burn"])
        for i, host in enumerate(hosts):
            serial = None if (n, i) == (1, 2) else f"{tag}-S{(i + n) % 3}"
            key = f"{host}/{i}"
            store.add_card(rid, key, host, i, "mock", {"serial": serial, "slot": i})
            store.card_started(rid, key, started)
            store.card_stage(rid, key, "health", 0)
            store.card_identity(rid, key, {"serial": serial, "model": "m", "vendor": "mock"}, started)
            f = Finding("fan.stalled", "fail", "replace_fan", "health", "fan 0", location={"fan": 0},
                        evidence={"rpm": 0.0})
            store.add_test(rid, key, TestResult(name="health", status="fail" if i == 1 else "pass", duration_s=1.5,
                                                metrics={"x": 1.25}, findings=[f] if i == 1 else []), 0)
            store.add_finding(rid, key, Finding("burn.peer_slow", "warn", "none", "burn", "slower than peers"))
            store.add_samples(rid, key, [{"time_s": 1.0, "tag": "health", "temperature_c": 40.5}])
            store.card_outcome(rid, key, "done", None, started)
            store.card_verdict(rid, key, "repair" if i == 1 else "pass", ["replace_fan"] if i == 1 else [],
                               [f] if i == 1 else [])
        store.finish_run(rid, started)
    store.add_repair(f"{tag}-S1", "2026-01-01T12:00:00Z", "tech", "h", "replace_fan", "n", "fan 0", f"{tag}-run1")


def _read_back(store: Store, tag: str) -> dict:
    runs = [f"{tag}-run{n}" for n in range(3)]
    seqs = [store.run_seq(r) for r in runs]
    rank = {s: i for i, s in enumerate(sorted(s for s in seqs if s is not None))}

    def card(r: dict) -> dict:
        return {k: v for k, v in r.items() if k != "run_seq"} | {"run_rank": rank[r["run_seq"]]}

    hosts = [f"{tag}-Bench_b", f"{tag}-bench-a", f"{tag}-Bench-a"]
    return {
        "order": [rank[s] for s in seqs],
        "runs": [store.run(r) for r in runs],
        "cards": [store.run_cards(r) for r in runs],
        "records": [[c.card_document() for c in store.records(r)] for r in runs],
        "history": [[card(r) for r in store.card_history(f"{tag}-S{i}")] for i in range(3)],
        "good": [store.slot_known_good(h, i, s, r) for r in runs for i, h in enumerate(hosts)
                 for s in (None, f"{tag}-S0", f"{tag}-S1")],
        "repairs": [{k: v for k, v in r.items() if k != "id"} for r in store.repairs(f"{tag}-S1")],
        "samples": store.samples(runs[0], f"{hosts[0]}/0", "health"),
    }


def test_readers_mean_the_same_on_sqlite_and_postgresql(pg_url: str, tmp_path: Path) -> None:
    lite, room = Store(tmp_path / "same.db"), Store(pg_url)
    try:
        assert room.is_room and not lite.is_room
        _write_history(lite, "same")
        _write_history(room, "same")
        a, b = _read_back(lite, "same"), _read_back(room, "same")
        assert a["cards"][0][0]["host"] == "same-Bench-a"  # byte order: '-' < '_' and 'B' < 'b'
        assert a["order"] == [0, 1, 2] and any(a["good"]) and not all(a["good"])
        for k in a:
            assert a[k] == b[k], k
    finally:
        lite.close()
        room.close()


# -- two benches at once, one card moved between them --------------------------------------------

def _bench(tmp_path: Path, name: str, host: str, cards: list[dict], gate: Path | None) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    plan = folder / "plan.toml"
    stages = '[[stages]]\nstage = "health"\nobserve_s = 1\n'
    if gate is not None:
        stages += f'[[stages]]\nstage = "{BLOCK}"\nwhile_file = "{gate}"\n'
    plan.write_text(stages, encoding="utf-8")
    cfg = rack_toml(cards, name=name, plan=str(plan)).replace('name = "local"', f'name = "{host}"')
    (folder / "rack.toml").write_text(cfg, encoding="utf-8")
    return folder


def _burnin(folder: Path, *args: str, machine: str) -> subprocess.Popen:
    """``burnin`` as its own process, on a 'machine' of its own (its own card-lock folder)."""
    env = {**os.environ, "BURNIN_LOCK_DIR": str(folder.parent / f"locks-{machine}"), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_benches_write_at_once_and_a_moved_card_keeps_one_history(pg_url: str, tmp_path: Path, burnin,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two benches (two processes, two configs) write to the room store at once; a third harness
    on another machine may not run bench A's cards meanwhile; then a card of A is reseated and
    retested at B, and its history (from any bench) is one story."""
    from harness.records import stored_document

    gate = tmp_path / "gate"
    gate.write_text("hold", encoding="utf-8")
    a = _bench(tmp_path, "bench-a", "host-a", [mock_card("TWO-A1", 0), mock_card("MOVE-1", 1, faults=[
        {"kind": "pcie.downtrained", "gen": 3, "width": 8}]), mock_card("TWO-A3", 2, "rtx4090-blower-48gb")], gate)
    b = _bench(tmp_path, "bench-b", "host-b", [mock_card("TWO-B1", 0), mock_card("TWO-B2", 1, faults=[
        {"kind": "ecc.row_remap_failure"}])], None)
    with_password = pg_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")  # trust: ignored
    procs = {"a": _burnin(a, "run", "rack.toml", "--db", with_password, "-q", "--json", "a.json", machine="a"),
             "b": _burnin(b, "run", "rack.toml", "--db", pg_url, "-q", "--json", "b.json", machine="b")}
    opened: list[Store] = []  # the two benches make the schema of the empty store (at once: one waits)
    try:
        def a_blocked() -> bool:
            if not opened:
                try:
                    opened.append(Store(pg_url, readonly=True))
                except UsageError:
                    return False
            rows = opened[0].sql.rows("SELECT stage FROM run_cards rc JOIN runs r ON r.run_id = rc.run_id "
                                   "WHERE r.rack = 'bench-a'")
            return len(rows) == 3 and all(r["stage"] == BLOCK for r in rows)

        wait_for(a_blocked, 120)
        reader = opened[0]
        # bench A's cards are under test: a harness on another machine (its own lock folder) may not run them
        monkeypatch.setenv("BURNIN_LOCK_DIR", str(tmp_path / "locks-c"))
        code, _, err = burnin("run", str(a / "rack.toml"), "--db", pg_url, "-q")
        assert code == 3 and _one_line(err), err
        assert "TWO-A1" in err and "is being tested by pid" in err and "room store" in err, err
        holders = [r["holder"] for r in reader.sql.rows("SELECT holder FROM card_locks")]
        by_a = [h for h in holders if f"pid {procs['a'].pid} " in h]  # (bench B may still hold its own)
        assert len(by_a) == 3 and all("postgres:***@" in h for h in by_a), holders  # A's three cards
        assert not any("s3cret" in h for h in holders), holders
    finally:
        gate.unlink()
        outs = {k: p.communicate(timeout=180) for k, p in procs.items()}
        if not opened:
            opened.append(Store(pg_url, readonly=True))
        reader = opened[0]
    try:
        assert procs["a"].returncode == 1 and procs["b"].returncode == 1, outs  # each has a card to repair
        assert "s3cret" not in "".join(outs["a"]) and "postgres:***@" in outs["a"][1], outs["a"]
        for name, folder in (("a", a), ("b", b)):
            doc = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
            stored = stored_document(reader, doc["run_id"])
            # everything each bench measured is in the room store, under its own run, and nothing else
            assert [c["serial"] for c in stored["cards"]] == [c["serial"] for c in doc["cards"]]
            for mine, kept in zip(doc["cards"], stored["cards"], strict=True):
                assert kept["tests"] == mine["tests"] and kept["findings"] == mine["findings"], mine["serial"]
                assert kept["verdict"] == mine["verdict"] and kept["host"] == f"host-{name}"
            if name == "a":
                assert {c["serial"]: c["verdict"] for c in stored["cards"]}["MOVE-1"] == "repair"
    finally:
        reader.close()

    # MOVE-1 is reseated at bench B and retested there: one history across both benches
    monkeypatch.setenv("BURNIN_LOCK_DIR", str(tmp_path / "locks-b"))
    assert burnin("repair", "MOVE-1", "--action", "reseat", "--part", "slot", "--db", pg_url)[0] == 0
    b2 = _bench(tmp_path, "bench-b2", "host-b", [mock_card("MOVE-1", 5)], None)
    assert burnin("run", str(b2 / "rack.toml"), "--db", pg_url, "-q")[0] == 0
    code, out, err = burnin("history", "MOVE-1", "--db", pg_url, "--json")
    entries = json.loads(out)
    assert [(e.get("kind"), e.get("host"), e.get("verdict") or e.get("outcome")) for e in entries] == [
        ("run", "host-a", "repair"), ("repair", entries[1]["host"], "fixed"), ("run", "host-b", "pass")], entries
    assert burnin("evidence", "MOVE-1", "--out", str(tmp_path / "pack"), "--db", pg_url)[0] == 0
    assert len(json.loads((tmp_path / "pack" / "history.json").read_text())) == 3


# -- one harness per card, across machines ---------------------------------------------------------

class _Card:
    def __init__(self, serial: str, slot: int, backend: str = "mock") -> None:
        self.key, self.host, self.slot, self.backend = f"local/{slot}", "local", slot, backend
        self.locator = {"serial": serial}


def test_a_card_locked_in_the_room_store_is_refused_until_its_holder_goes(pg_url: str, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.locks import lock_cards

    url = DbUrl(pg_url)
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from harness.locks import lock_cards; "
            "from harness.db.target import DbUrl\nclass C:\n key, host, slot, backend = 'local/0', 'local', 0, 'nvml'\n"
            " locator = {'serial': 'LOCK-1'}\nl = lock_cards([C()], DbUrl(sys.argv[2])); print('locked', flush=True); "
            "time.sleep(120)")
    env = {**os.environ, "BURNIN_LOCK_DIR": str(tmp_path / "other-machine")}
    holder = subprocess.Popen([sys.executable, "-c", code, str(REPO), pg_url], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv("BURNIN_LOCK_DIR", str(tmp_path / "this-machine"))
        with pytest.raises(HarnessUnavailable, match=rf"LOCK-1.* is being tested by pid {holder.pid} .*room store"):
            lock_cards([_Card("LOCK-1", 3)], url)  # same serial, another slot: still the same card
        with pytest.raises(HarnessUnavailable, match="room store"):
            lock_cards([_Card("OTHER", 0, "nvml")], url)  # the same slot of the same machine
        lock_cards([_Card("FREE-1", 1)], url).release()  # another card is free
    finally:
        holder.kill()  # however the holder ends, its locks go with its connection
        holder.wait()
    wait_for(lambda: _locks_free(url), 30)
    mine = lock_cards([_Card("LOCK-1", 0, "nvml")], url)
    mine.release()


def _locks_free(url: DbUrl) -> bool:
    from harness.locks import lock_cards

    try:
        lock_cards([_Card("LOCK-1", 0, "nvml")], url).release()
    except HarnessUnavailable:
        return False
    return True


# -- a bench's history moves into the room, once ----------------------------------------------------

def test_migrate_moves_a_bench_history_once(pg_url: str, write_rack, burnin, tmp_path: Path) -> None:
    rack = write_rack([mock_card("MIG-1", 0), mock_card("MIG-2", 1, faults=[
        {"kind": "pcie.downtrained", "gen": 3, "width": 8}])], name="bench-mig")
    plan = tmp_path / "plan.toml"
    plan.write_text('[[stages]]\nstage = "health"\nobserve_s = 1\n', encoding="utf-8")
    lite = str(tmp_path / "bench.db")
    assert burnin("run", str(rack), "--plan", str(plan), "--db", lite, "-q")[0] == 1
    assert burnin("repair", "MIG-2", "--action", "reseat", "--db", lite)[0] == 0
    assert burnin("run", str(rack), "--plan", str(plan), "--db", lite, "-q")[0] == 1  # not fixed
    code, out, err = burnin("db", "migrate", "--from", lite, "--to", pg_url)
    assert code == 0 and "2 runs copied" in out and "1 repairs copied" in out, out + err
    code, out, err = burnin("db", "migrate", "--from", lite, "--to", pg_url)
    assert code == 0 and "0 runs copied" in out and "2 already there" in out and "1 already there" in out, out
    for serial in ("MIG-1", "MIG-2"):
        here = json.loads(burnin("history", serial, "--db", lite, "--json")[1])
        there = json.loads(burnin("history", serial, "--db", pg_url, "--json")[1])
        for e in here + there:
            e.pop("id", None)  # a repair's row id is the store's own
        assert there == here and len(here) == (3 if serial == "MIG-2" else 2)
    assert here[1]["outcome"] == "not fixed" and here[1]["targets"]
    room = Store(pg_url, readonly=True)
    try:
        rid = here[-1]["run_id"]
        assert room.records(rid)[0].samples == Store(lite, readonly=True).records(rid)[0].samples
    finally:
        room.close()


# -- one-line errors, never a password ----------------------------------------------------------------

def test_a_missing_driver_is_exit_3_naming_the_extra(burnin, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    code, _, err = burnin("history", "X", "--db", "postgresql://bench:s3cret@db.example/burnin")
    assert code == 3 and _one_line(err) and "burnin[postgres]" in err and "s3cret" not in err, err


def test_passwords_are_masked_in_every_message(burnin, write_rack, tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    bad = f"postgresql://bench:s3cret@/burnin?host={tmp_path}/no-server-here"
    for verb in (("history", "X", "--db", bad), ("serve", "--db", bad),
                 ("run", str(write_rack([mock_card("PW-1", 0)])), "--db", bad, "-q")):
        code, out, err = burnin(*verb)
        assert code == 3 and _one_line(err) and "s3cret" not in out + err and "bench:***@" in err, (verb, err)
    assert mask("x postgresql://u:p%40ss@h/d y password=abc") == "x postgresql://u:***@h/d y password=***"
    assert str(DbUrl("postgres://u:pw@h:5432/d")) == "postgres://u:***@h:5432/d" and "pw" not in repr(DbUrl("postgres://u:pw@h/d"))
    rack = tmp_path / "mysql.toml"
    rack.write_text(rack_toml([mock_card("PW-2", 0)], extra_rack='db = "mysql://u:pw@h/d"'), encoding="utf-8")
    code, _, err = burnin("run", str(rack), "-q")
    assert code == 2 and "rack.db" in err and "mysql://u:***@h/d" in err and _one_line(err), err


def test_a_foreign_postgresql_database_is_refused(pg_admin_url: str) -> None:
    import psycopg

    from tests.pg_server import new_database

    url = new_database(pg_admin_url, "foreign")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(UsageError, match="other tables \\(photos\\)"):
        Store(url)
    with psycopg.connect(url) as c:  # and it was not touched
        assert [r[0] for r in c.execute("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema='public'")] == ["photos"]
    with pytest.raises(UsageError, match="no burnin results"):
        Store(new_database(pg_admin_url, "empty"), readonly=True)
