"""A fleet on a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster): hosts are
nodes carrying ``host:NAME``; replayed NVIDIA cards, simulated Ascend NPUs and mock cards run on
their hosts; a node that dies costs its cards (host.lost), a host that never joins is
host.unreachable, and a killed controller leaves a run that ``resume`` finishes on the cluster.

Kept small for a two-core machine: one CPU per node, a few cards, one cluster for the module.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from harness.config import load_rack  # noqa: E402
from harness.discovery import discover_cards  # noqa: E402
from harness.engines.fleet import discover_on_host  # noqa: E402
from harness.plans import load_plan  # noqa: E402
from harness.runner import Run  # noqa: E402
from harness.store import Store  # noqa: E402
from stress.events import EventConsumer, StageStarted  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ASCEND_SIM = ROOT / "fixtures" / "ascend" / "npu_smi_sim.py"
HANG = "tests.stages_for_tests:HangStage"
BLOCK = "tests.stages_for_tests:BlockStage"
HOSTS = ("gpu-a", "npu-b", "mock-c")
HEALTH = '[[stages]]\nstage = "health"\nobserve_s = 0\n'
FAST_HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                      "health_check_initial_delay_ms": 0}


@pytest.fixture(scope="module")
def cluster():
    """A head (the controller's node) and three nodes labelled as hosts, one CPU each."""
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old_path) if p)  # tests.* on workers
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 2**20,
        "_system_config": FAST_HEALTH_CHECKS})
    nodes = {h: c.add_node(num_cpus=1, resources={f"host:{h}": 1}, object_store_memory=80 * 2**20) for h in HOSTS}
    try:
        c.wait_for_nodes()
        ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


def _mock(serial: str, slot: int) -> list[str]:
    return ["[[hosts.devices]]", 'backend = "mock"', 'profile = "h100-sxm5-80gb"', f'serial = "{serial}"', f"slot = {slot}"]


def _ascend_state(tmp_path: Path) -> Path:
    state = json.loads((ROOT / "fixtures" / "ascend" / "sim_state.json").read_text(encoding="utf-8"))
    state["writable"] = True
    out = tmp_path / "npu-state.json"
    out.write_text(json.dumps(state), encoding="utf-8")
    return out


def _fleet_rack(tmp_path: Path, address: str, extra_hosts: list[str] | None = None) -> Path:
    """Replayed NVIDIA cards on gpu-a, a simulated Ascend NPU on npu-b (and an NVML entry whose
    library it lacks), mock cards on mock-c and on the controller's node, a host that never joins."""
    nvml = ROOT / "fixtures" / "nvml"
    npu_smi = f"{sys.executable} -S -E {ASCEND_SIM} --state {_ascend_state(tmp_path)}"
    lines = ["[rack]", 'name = "fleet"', 'engine = "ray"', f'ray_address = "{address}"', "host_join_timeout_s = 3",
             "", "[[hosts]]", 'name = "local"', *_mock("LOCAL-0", 0),
             "", "[[hosts]]", 'name = "gpu-a"',
             "[[hosts.devices]]", 'backend = "nvml"', f'replay = "{nvml / "h100-sxm5-synthetic.json"}"', "slot = 0",
             "[[hosts.devices]]", 'backend = "nvml"', f'replay = "{nvml / "rtx4090-synthetic.json"}"', "slot = 1",
             "", "[[hosts]]", 'name = "npu-b"',
             "[[hosts.devices]]", 'backend = "ascend"', f"npu_smi = {json.dumps(npu_smi)}", "npu_id = 1", "slot = 0",
             "[[hosts.devices]]", 'backend = "nvml"', f'replay = "{tmp_path / "no-such-recording.json"}"', "slot = 7",
             "", "[[hosts]]", 'name = "mock-c"', *_mock("MOCK-C0", 0), *_mock("MOCK-C1", 1),
             "", "[[hosts]]", 'name = "ghost"', "[[hosts.devices]]", 'backend = "nvml"', "index = 0", "slot = 0",
             *(extra_hosts or [])]
    path = tmp_path / "fleet.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _codes(card: dict[str, Any]) -> set[str]:
    return {f["code"] for f in card["findings"]}


def test_fleet_runs_each_host_on_its_node(cluster, tmp_path: Path, burnin) -> None:
    c, _ = cluster
    rack = _fleet_rack(tmp_path, c.address)
    plan = tmp_path / "health.toml"
    plan.write_text(HEALTH, encoding="utf-8")
    code, out, err = burnin("run", str(rack), "--plan", str(plan), "--json", "fleet.json", "--db", "fleet.db", "-q")
    assert code == 1, out + err  # the ghost host and npu-b's missing recording are not a pass
    cards = {(c["host"], c["slot"]): c for c in json.loads(Path("fleet.json").read_text())["cards"]}
    assert set(cards) == {("local", 0), ("gpu-a", 0), ("gpu-a", 1), ("npu-b", 0), ("npu-b", 7),
                          ("mock-c", 0), ("mock-c", 1), ("ghost", 0)}
    for key in [("local", 0), ("gpu-a", 0), ("gpu-a", 1), ("npu-b", 0), ("mock-c", 0), ("mock-c", 1)]:
        assert cards[key]["verdict"] == "pass" and cards[key]["state"] == "done", (key, cards[key]["findings"])
    assert cards[("gpu-a", 0)]["model"] == "NVIDIA H100 80GB HBM3"  # the replayed card, opened on gpu-a
    assert cards[("npu-b", 0)]["backend"] == "ascend" and cards[("npu-b", 0)]["serial"]
    ghost = cards[("ghost", 0)]
    assert ghost["verdict"] == "retest" and "host.unreachable" in _codes(ghost)
    assert ghost["actions"] == ["reset_and_retest"]
    lacking = cards[("npu-b", 7)]
    assert lacking["verdict"] == "retest" and "host.backend_unavailable" in _codes(lacking)
    assert "npu-b" in next(f["message"] for f in lacking["findings"] if f["code"] == "host.backend_unavailable")


def test_discovery_and_sessions_run_on_the_hosts_node(cluster, tmp_path: Path) -> None:
    """Each card's locator comes from its host's node, and its session runs there too."""
    c, nodes = cluster
    rack = _fleet_rack(tmp_path, c.address)
    cfg = load_rack(rack)
    cfg.devices = [d for d in cfg.devices if d.host in ("gpu-a", "mock-c")]
    from harness.engines.fleet import discover_fleet
    from harness.engines.ray_engine import Placer

    found = discover_fleet(cfg, Placer(ray), ray)
    assert [len(locs) for _, locs in found] == [1, 1, 1, 1]
    where = ray.get(ray.remote(num_cpus=0)(lambda: ray.get_runtime_context().get_node_id())
                    .options(resources={"host:gpu-a": 0.001}).remote())
    assert where == nodes["gpu-a"].node_id


def test_low_memory_host_answers_with_a_finding() -> None:
    answer = discover_on_host("mock", {"backend": "mock", "profile": "h100-sxm5-80gb", "serial": "M"},
                              {"host": "tiny", "index": 0}, min_free_mib=1e12)
    assert answer["finding"]["code"] == "host.low_memory" and answer["finding"]["action"] == "fix_host"
    assert "tiny" in answer["finding"]["message"]


def test_fleet_node_death_costs_only_its_cards(cluster, tmp_path: Path) -> None:
    c, _ = cluster
    doomed = c.add_node(num_cpus=1, resources={"host:doomed": 1}, object_store_memory=80 * 2**20)
    c.wait_for_nodes()
    lines = ["[rack]", 'name = "fleet-kill"', 'engine = "ray"', "host_join_timeout_s = 5",
             "", "[[hosts]]", 'name = "mock-c"', *_mock("OK-0", 0), *_mock("OK-1", 1),
             "", "[[hosts]]", 'name = "doomed"', *_mock("DOOM-1", 0), *_mock("DOOM-2", 1)]
    rack = tmp_path / "kill.toml"
    rack.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plan = tmp_path / "kill-plan.toml"
    plan.write_text(HEALTH + f'[[stages]]\nstage = "{HANG}"\nonly_serial = "DOOM-1"\ntimeout_s = 120\n'
                    f'[[stages]]\nstage = "{HANG}"\nonly_serial = "DOOM-2"\ntimeout_s = 120\n', encoding="utf-8")
    cfg, pl = load_rack(rack), load_plan(str(plan))
    store = Store(tmp_path / "kill.db")
    hanging: set[str] = set()
    killed: list[float] = []

    class KillWhenBothHang(EventConsumer):
        def on_stage_start(self, key: str, ev: StageStarted) -> None:
            if (key, ev.index) in (("doomed/0", 1), ("doomed/1", 2)):
                hanging.add(key)
                if len(hanging) == 2 and not killed:
                    killed.append(time.monotonic())
                    c.remove_node(doomed, allow_graceful=False)

    run = Run(cfg, pl, store, listeners=[KillWhenBothHang()])
    run.start(discover_cards(cfg))
    doc = run.execute()
    store.close()
    assert killed, "the doomed cards never reached their hang"
    assert time.monotonic() - killed[0] < 60  # found lost long before the 120 s watchdog
    cards = {c["serial"]: c for c in doc["cards"]}
    for serial in ("OK-0", "OK-1"):
        assert cards[serial]["verdict"] == "pass" and cards[serial]["state"] == "done"
    for serial in ("DOOM-1", "DOOM-2"):
        card = cards[serial]
        assert card["verdict"] == "retest" and card["state"] == "failed", card
        assert "host.lost" in _codes(card) and "compute.hang" not in _codes(card)
        assert card["tests"][0]["name"] == "health" and card["tests"][0]["status"] == "pass"  # kept


def test_resume_after_the_controller_dies_reattaches_to_the_cluster(cluster, tmp_path: Path, burnin) -> None:
    c, _ = cluster
    gate = tmp_path / "gate"
    gate.write_text("hold", encoding="utf-8")
    lines = ["[rack]", 'name = "fleet-resume"', 'engine = "ray"', f'ray_address = "{c.address}"',
             "", "[[hosts]]", 'name = "local"', *_mock("RES-0", 0),
             "", "[[hosts]]", 'name = "mock-c"', *_mock("RES-1", 0), *_mock("RES-2", 1)]
    rack = tmp_path / "resume.toml"
    rack.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plan = tmp_path / "resume-plan.toml"
    plan.write_text(HEALTH + f'[[stages]]\nstage = "{BLOCK}"\nwhile_file = "{gate}"\n', encoding="utf-8")
    db = tmp_path / "resume.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ctl = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(rack), "--plan", str(plan),
                            "--db", str(db), "-q"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        blocked = 0
        while time.monotonic() < deadline and ctl.poll() is None and blocked < 3:
            time.sleep(0.2)
            if db.exists():
                try:
                    with sqlite3.connect(db) as conn:
                        blocked = conn.execute("SELECT COUNT(DISTINCT key) FROM tests WHERE name='health'").fetchone()[0]
                except sqlite3.OperationalError:
                    blocked = 0
        assert blocked == 3, ctl.stderr.read().decode() if ctl.poll() is not None else "cards never reached the gate"
    finally:
        ctl.send_signal(signal.SIGKILL)
        ctl.wait()
        ctl.stderr.close()
    with sqlite3.connect(db) as conn:
        run_id, status = conn.execute("SELECT run_id, status FROM runs").fetchone()
        states = {r[0] for r in conn.execute("SELECT state FROM run_cards")}
    assert status == "running" and states == {"running"}
    gate.unlink()
    code, out, err = burnin("resume", run_id, "--db", str(db), "--json", "resumed.json", "-q")
    assert code == 0, out + err
    doc = json.loads(Path("resumed.json").read_text())
    assert doc["run_id"] == run_id
    assert sorted(c["serial"] for c in doc["cards"]) == ["RES-0", "RES-1", "RES-2"]
    assert all(c["verdict"] == "pass" and c["state"] == "done" for c in doc["cards"])
