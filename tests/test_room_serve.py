"""``burnin serve``: the room's page and /metrics over real HTTP, from a store being written
(a run going on) and after the run; a 256-card room in a real headless browser."""

from __future__ import annotations

import contextlib
import http.client
import io
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.room.exposition import LABELS
from harness.room.server import RoomHandler, RoomServer, start
from harness.room.state import read_room
from harness.store import Store
from stress.model import Finding, TestResult
from tests.conftest import mock_card, wait_for

BLOCK = "tests.stages_for_tests:BlockStage"
HOSTS, SLOTS = 8, 32  # a 256-card room
VERDICTS = {(0, 3): "rma", (2, 7): "repair", (5, 30): "retest", (7, 0): "rma"}  # (host, slot) -> not pass
RUNNING = {(3, 1), (6, 12)}


def _room(store: Store, tag: str = "R") -> None:
    """A 256-card room: eight benches of 32 slots, all judged but a few still running; one card
    tested at one slot, then moved to another bench."""
    for h in range(HOSTS):
        rid = f"{tag}-run-{h}"
        store.create_run(rid, f"rack-{h}", "quick", "/c", "/p", f"2026-01-01T00:0{h}:00Z", ["health", "burn", "power"])
        for s in range(SLOTS):
            key, serial = f"host-{h}/{s}", f"{tag}-{h:02d}-{s:02d}"
            store.add_card(rid, key, f"host-{h}", s, "mock", {"serial": serial, "slot": s, "index": s})
            store.card_identity(rid, key, {"serial": serial, "model": "NVIDIA H100 80GB HBM3", "vendor": "nvidia",
                                           "uuid": f"GPU-{h:04d}{s:04d}", "pci_bus_id": f"0000:{s:02x}:00.0"}, "t")
            store.card_stage(rid, key, "burn", 1)
            store.add_samples(rid, key, [{"time_s": 1.0, "temperature_c": 40.0 + s, "power_w": 300.0}])
            if (h, s) in RUNNING:
                store.card_started(rid, key, "t")
                continue
            verdict = VERDICTS.get((h, s), "pass")
            fail = Finding("ecc.row_remap_failure", "fail", "rma", "health", "out of spare rows",
                           evidence={"xid": 64}) if verdict != "pass" else None
            store.add_test(rid, key, TestResult("health", "fail" if fail else "pass", 1.0,
                                                metrics={"pcie_replays": s, "dbe_volatile": 0, "row_remap_failure": bool(fail)},
                                                findings=[fail] if fail else []), 0)
            store.card_outcome(rid, key, "done", None, "t")
            actions = {"rma": ["rma"], "repair": ["reseat"], "retest": ["reset_and_retest"]}.get(verdict, [])
            store.card_verdict(rid, key, verdict, actions, [fail] if fail else [])
        store.finish_run(rid, "t")
    # the card of host-1 slot 5 was moved to a later bench's slot 40
    store.create_run(f"{tag}-run-moved", "rack-9", "quick", "/c", "/p", "2026-01-02T00:00:00Z", ["health"])
    store.add_card(f"{tag}-run-moved", "host-9/40", "host-9", 40, "mock", {"serial": f"{tag}-01-05", "slot": 40})
    store.card_outcome(f"{tag}-run-moved", "host-9/40", "done", None, "t")
    store.card_verdict(f"{tag}-run-moved", "host-9/40", "pass", [], [])


@pytest.fixture(scope="module")
def room_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("room") / "room.db"
    store = Store(db)
    _room(store)
    store.close()
    return db


class _Serving:
    def __init__(self, server: RoomServer) -> None:
        self.server = server
        self.port = server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


@contextlib.contextmanager
def _serve(target: object, listen: str = "127.0.0.1:0", token: str | None = None) -> Iterator[_Serving]:
    server = start(target, listen, token)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield _Serving(server)
    finally:
        server.shutdown()
        server.server_close()
        server.reader.close()


@pytest.fixture(scope="module")
def served(room_db: Path) -> Iterator[_Serving]:
    with _serve(room_db) as srv:
        yield srv


def _picks(html: str) -> list[str]:
    return re.findall(r'<tr class="pick">.*?<code>([^<]+)</code>', html)


def test_the_page_as_served_names_every_card_to_pull(served: _Serving) -> None:
    status, headers, body = served.get("/")
    html = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    expected = [f"R-{h:02d}-{s:02d}" for (h, s), v in sorted(VERDICTS.items(), key=lambda kv: (
        {"rma": 0, "repair": 1, "retest": 2}[kv[1]], kv[0]))]
    assert _picks(html) == expected  # rma first, then repair, then retest; nothing else
    assert "Pick list: 4 cards to pull" in html
    hosts = re.findall(r'<div class="hname">([^<]+)<span>', html)
    assert len(hosts) == HOSTS + 1 and hosts[:2] == ["host-0", "host-7"]  # hosts with an rma card first
    assert html.count('class="cell ') == HOSTS * SLOTS + 1 and html.count('class="cell v-rma"') == 2
    assert 'data-serial="R-01-05"' in html and "moved to host-9/40" in html  # the moved card, at its old slot
    assert html.count('class="cell v-running"') == len(RUNNING)
    assert len(body) < 200_000  # 256 cards


def test_a_card_page_its_evidence_pack_and_read_only(served: _Serving) -> None:
    status, _, body = served.get("/card/R-00-03")
    page = body.decode()
    assert status == 200 and "ecc.row_remap_failure" in page and "History of R-00-03" in page
    link = re.search(r'href="(/evidence/R-00-03\.zip\?run=[^"]+)"', page)
    assert link is not None
    status, headers, data = served.get(link.group(1).replace("&amp;", "&"))
    assert status == 200 and headers["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "evidence-R-00-03/findings.json" in names and "evidence-R-00-03/README.md" in names
    assert served.get("/card/NO-SUCH")[0] == 404 and served.get("/nowhere")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    for method in ("POST", "PUT", "DELETE"):
        conn.request(method, "/", body=b"x")
        r = conn.getresponse()
        r.read()
        assert r.status == 405
    conn.request("HEAD", "/")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"" and int(r.headers["Content-Length"]) > 0
    conn.close()


def test_metrics_carry_dcgm_labels_and_burnin_series(served: _Serving) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    status, headers, body = served.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in parser.text_string_to_metric_families(body.decode())}
    temp = fams["DCGM_FI_DEV_GPU_TEMP"].samples
    assert len(temp) == HOSTS * SLOTS - 1 and all(tuple(s.labels) == LABELS for s in temp)  # moved: at its new slot
    one = next(s for s in temp if s.labels["serial"] == "R-00-03")
    assert one.labels == {"gpu": "3", "UUID": "GPU-00000003", "Hostname": "host-0", "modelName": "NVIDIA H100 80GB HBM3",
                          "pci_bus_id": "0000:03:00.0", "serial": "R-00-03", "slot": "3", "rack": "rack-0"}
    verdicts = {s.labels["serial"]: s.labels["verdict"] for s in fams["burnin_verdict"].samples}
    assert len(verdicts) == HOSTS * SLOTS - len(RUNNING) and verdicts["R-00-03"] == "rma"
    assert fams["burnin_xid"].type == "counter"
    assert {(s.labels["serial"], s.labels["xid"], s.value) for s in fams["burnin_xid"].samples} == {
        (f"R-{h:02d}-{s:02d}", "64", 1.0) for h, s in VERDICTS}
    replays = {s.labels["serial"]: s.value for s in fams["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"].samples}
    assert replays["R-02-07"] == 7.0
    assert {s.labels["serial"] for s in fams["DCGM_FI_DEV_ROW_REMAP_FAILURE"].samples if s.value} == {
        f"R-{h:02d}-{s:02d}" for h, s in VERDICTS}
    stages = {s.labels["serial"]: s.value for s in fams["burnin_stage_index"].samples}
    assert stages["R-03-01"] == 1.0
    assert {s.labels["serial"] for s in fams["burnin_card_state"].samples if s.labels["state"] == "running"} == {
        f"R-{h:02d}-{s:02d}" for h, s in RUNNING}


def test_listening_beyond_loopback_needs_a_token(burnin, room_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BURNIN_TOKEN", raising=False)
    code, _, err = burnin("serve", "--db", str(room_db), "--listen", "0.0.0.0:0")
    assert code == 2 and "token" in err and err.count("\n") == 1, err
    code, _, err = burnin("serve", "--db", str(room_db.parent / "nope.db"))
    assert code == 2 and "no such results database" in err, err
    with _serve(room_db, "0.0.0.0:0", token="sesame") as srv:
        assert srv.get("/")[0] == 401 and srv.get("/metrics")[0] == 401
        assert srv.get("/", {"Authorization": "Bearer wrong"})[0] == 401
        assert srv.get("/metrics", {"Authorization": "Bearer sesame"})[0] == 200
        status, headers, _ = srv.get("/?token=sesame")
        assert status == 200 and "burnin_token=sesame" in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]
        assert srv.get("/card/R-00-03", {"Cookie": "burnin_token=sesame"})[0] == 200


def test_the_page_and_metrics_follow_a_run_and_survive_its_end(write_rack, burnin, tmp_path: Path) -> None:
    """A real run writes the store; the server (started before it) shows it live, then judged."""
    parser = pytest.importorskip("prometheus_client.parser")
    gate = tmp_path / "gate"
    gate.write_text("hold", encoding="utf-8")
    plan = tmp_path / "p.toml"
    plan.write_text(f'[[stages]]\nstage = "health"\nobserve_s = 1\n[[stages]]\nstage = "{BLOCK}"\n'
                    f'while_file = "{gate}"\n', encoding="utf-8")
    rack = write_rack([mock_card("LIVE-1", 0), mock_card("LIVE-2", 1, faults=[
        {"kind": "ecc.dbe", "count": 2}, {"kind": "ecc.row_remap_failure"}, {"kind": "pcie.replays", "per_minute": 600},
        {"kind": "xid", "code": 79}])], name="live-rack")
    db = tmp_path / "live.db"
    Store(db).close()  # the server starts first, on an empty store
    with _serve(db) as srv:
        assert "no runs in this store yet" in srv.get("/")[2].decode()
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(code=burnin(
            "run", str(rack), "--plan", str(plan), "--db", str(db), "-q")))
        runner.start()
        try:
            def in_block() -> bool:
                text = srv.get("/metrics")[2].decode()
                return text.count(f'stage="{BLOCK}"') == 2
            wait_for(in_block, 60)
            live = {f.name: f for f in parser.text_string_to_metric_families(srv.get("/metrics")[2].decode())}
            assert live["burnin_verdict"].samples == []  # no verdict before the run has one
            assert {s.labels["state"] for s in live["burnin_card_state"].samples} == {"running"}
            assert {s.value for s in live["burnin_progress_ratio"].samples} == {0.5}  # one of two stages ended
            page = srv.get("/")[2].decode()
            assert page.count('class="cell v-failing"') == 1 and "LIVE-2" in page  # failing already, live
        finally:
            gate.unlink()
            runner.join(120)
        assert result["code"][0] == 1
        after = {f.name: f for f in parser.text_string_to_metric_families(srv.get("/metrics")[2].decode())}
        verdicts = {s.labels["serial"]: s.labels["verdict"] for s in after["burnin_verdict"].samples}
        assert verdicts == {"LIVE-1": "pass", "LIVE-2": "rma"}
        card = {f: {s.labels["serial"]: s.value for s in after[f].samples} for f in (
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ROW_REMAP_FAILURE", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
            "DCGM_FI_DEV_XID_ERRORS")}
        assert card["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"]["LIVE-2"] == 2 and card["DCGM_FI_DEV_ROW_REMAP_FAILURE"]["LIVE-2"] == 1
        assert card["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"]["LIVE-2"] > 0 == card["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"]["LIVE-1"]
        assert card["DCGM_FI_DEV_XID_ERRORS"] == {"LIVE-1": 0, "LIVE-2": 79}
        assert {s.labels["xid"] for s in after["burnin_xid"].samples if s.labels["serial"] == "LIVE-2"} >= {"79", "48"}
        page = srv.get("/")[2].decode()
        assert _picks(page) == ["LIVE-2"] and '<span class="chip action">rma</span>' in page


def test_a_room_server_waits_for_the_first_bench(pg_admin_url: str) -> None:
    """Started on an empty room store, the server says so, then shows what the first bench writes."""
    from tests.pg_server import new_database

    url = new_database(pg_admin_url, "empty_room")
    with _serve(url) as srv:
        first = srv.get("/")
        assert first[0] == 200 and "no bench has written to this store yet" in first[2].decode()
        bench = Store(url)
        bench.create_run("E-1", "rack-e", "quick", "/c", "/p", "2026-01-01T00:00:00Z", ["health"])
        bench.add_card("E-1", "h/0", "h", 0, "mock", {"serial": "E-1"})
        bench.card_verdict("E-1", "h/0", "rma", ["rma"], [])
        bench.close()
        assert _picks(srv.get("/")[2].decode()) == ["E-1"]


def test_the_room_reads_the_same_from_postgresql(pg_url: str, room_db: Path) -> None:
    """The room query (latest card per slot, moved cards, live figures) on the room store."""
    small = Store(pg_url)
    lite = Store(room_db.parent / "small.db")
    try:
        for st in (small, lite):
            st.create_run("P-old", "rack-p", "quick", "/c", "/p", "2026-01-01T00:00:00Z", ["health"])
            st.create_run("P-new", "rack-p", "quick", "/c", "/p", "2026-01-01T00:00:00Z", ["health"])  # same second
            for rid, serial in (("P-old", "P-1"), ("P-new", "P-2")):
                st.add_card(rid, "h/0", "h", 0, "mock", {"serial": serial})
                st.card_verdict(rid, "h/0", "rma" if rid == "P-new" else "pass", ["rma"], [])
            st.add_card("P-new", "h/1", "h", 1, "mock", {"serial": "P-1"})
        for st in (small, lite):
            room = read_room(st)
            assert [(c.serial, c.verdict, c.moved_to) for c in room.cards if c.rack == "rack-p"] == [
                ("P-2", "rma", None), ("P-1", None, None)]
    finally:
        small.close()
        lite.close()
    with _serve(pg_url) as srv:
        assert _picks(srv.get("/")[2].decode()) == ["P-2"]


# -- in a real browser ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_a_256_card_room_live_in_a_real_browser(room_db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A verdict stored after the page loaded shows up by itself (the page's script fetches the
    room again and swaps it in; the store changes when that fetch arrives, so nothing races), and
    the rma cells are red: pixels counted in the browser's screenshot."""
    image = pytest.importorskip("PIL.Image", reason="pillow is not installed (the [dev] extra has it)")
    db = tmp_path / "swap.db"
    shutil.copyfile(room_db, db)
    route = RoomHandler._route

    def judged_on_refresh(self: RoomHandler, path: str, query: dict, part: bool):  # type: ignore[no-untyped-def]
        if part and path == "/":
            store = Store(db)
            store.card_verdict("R-run-3", "host-3/1", "rma", ["rma"], [])
            store.close()
        return route(self, path, query, part)

    monkeypatch.setattr(RoomHandler, "_route", judged_on_refresh)
    shot = tmp_path / "room.png"
    with _serve(db) as srv:
        assert "R-03-01" not in _picks(srv.get("/")[2].decode())
        dom = _chromium("--window-size=1400,1600", "--virtual-time-budget=15000", "--dump-dom",
                        f"--screenshot={shot}", srv.url + "/").stdout
    assert "R-03-01" in _picks(dom) and len(_picks(dom)) == 5, dom[:500]
    colours = image.open(shot).convert("RGB").getcolors(maxcolors=1 << 22)

    def near(rgb: tuple[int, int, int]) -> int:
        return sum(n for n, px in colours if all(abs(a - b) < 12 for a, b in zip(px, rgb, strict=True)))

    red, green = near((0xC6, 0x28, 0x28)), near((0x1A, 0x7F, 0x37))  # the report's --rma and --pass
    cell = 104 * 58
    assert red >= 3 * cell * 0.7, red  # the three rma cells (plus the small badges and a tile's edge)
    assert red < 5 * cell and green > 50 * cell * 0.7, (red, green)  # and not everything: most cards passed
