"""RayEngine gives the same events and outcomes as LocalEngine, and supervises hangs and crashes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from harness.config import load_rack  # noqa: E402
from harness.discovery import discover_cards  # noqa: E402
from harness.engine import Engine, EngineEvent, LocalEngine, RunCancelled  # noqa: E402
from harness.engines.ray_engine import RayEngine  # noqa: E402
from harness.plans import load_plan  # noqa: E402
from harness.session import CardJob  # noqa: E402
from stress.events import Identity, Outcome, StageStarted, TestDone  # noqa: E402
from tests.conftest import mock_card, rack_toml  # noqa: E402

HANG = "tests.stages_for_tests:HangStage"
CRASH = "tests.stages_for_tests:CrashStage"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _jobs(tmp_path: Path, devices: list[dict[str, Any]], stages: list[tuple[str, dict[str, Any]]] | None = None,
          plan: str = "quick") -> list[CardJob]:
    """Jobs built the way harness.runner builds them from a rack config and a plan."""
    rack = tmp_path / "rack.toml"
    rack.write_text(rack_toml(devices), encoding="utf-8")
    cards = discover_cards(load_rack(rack))
    if stages is None:
        stages = [(s.stage, s.params) for s in load_plan(plan).stages]
    return [CardJob(key=c.key, locator=c.locator, stages=stages, instruments=c.instruments) for c in cards]


def _run(engine: Engine, jobs: list[CardJob]) -> dict[str, list[EngineEvent]]:
    for job in jobs:
        engine.submit(job)
    out: dict[str, list[EngineEvent]] = {j.key: [] for j in jobs}
    try:
        for ev in engine.events():
            out[ev.key].append(ev)
    finally:
        engine.close()
    return out


def _shape(events: list[EngineEvent]) -> list[tuple[str, Any]]:
    """What must match between engines: the order of stages and tests and the outcome (samples and
    progress may be batched differently)."""
    keep = []
    for ev in events:
        e = ev.event
        if isinstance(e, StageStarted):
            keep.append(("stage_start", e.stage))
        elif isinstance(e, TestDone):
            keep.append(("test", (e.result.name, e.result.status)))
        elif isinstance(e, Identity):
            keep.append(("identity", e.serial))
        elif isinstance(e, Outcome):
            keep.append(("outcome", e.state))
    return keep


def test_quick_plan_matches_local_engine(tmp_path: Path) -> None:
    devices = [mock_card("RAY-0001", 0), mock_card("RAY-0002", 1, "rtx4090-blower-48gb")]
    jobs = _jobs(tmp_path, devices)
    by_ray = _run(RayEngine(), jobs)
    by_local = _run(LocalEngine(parallel=2), jobs)
    for key in by_local:
        ray_shape = _shape(by_ray[key])
        assert ray_shape == _shape(by_local[key])
        assert ray_shape[0][0] == "identity" and ray_shape[1] == ("stage_start", load_plan("quick").stages[0].stage)
        assert ray_shape[-1] == ("outcome", "done")
        assert [ev.kind for ev in by_ray[key]].count("outcome") == 1
        assert [ev.kind for ev in by_ray[key]][-1] == "outcome"


def test_hang_times_out_and_crash_fails_while_others_finish(tmp_path: Path) -> None:
    stages = [
        ("health", {"observe_s": 1}),
        (CRASH, {"only_serial": "CRASH"}),
        (HANG, {"only_serial": "HANG", "timeout_s": 1.5}),
    ]
    jobs = _jobs(tmp_path, [mock_card("CRASH", 0), mock_card("HANG", 1), mock_card("FINE", 2)], stages)
    t0 = time.monotonic()
    out = _run(RayEngine(cpus_per_card=0.5), jobs)
    assert time.monotonic() - t0 < 30
    outcomes = {key: [vars(e.event) for e in evs if isinstance(e.event, Outcome)] for key, evs in out.items()}
    crash, hang, fine = outcomes["local/0"], outcomes["local/1"], outcomes["local/2"]
    assert fine == [vars(Outcome("done"))]
    assert len(crash) == 1 and crash[0]["state"] == "failed" and crash[0]["stage"] == CRASH
    assert "died" in crash[0]["detail"]
    # what the crashed card measured before it died is kept, in order
    assert _shape(out["local/0"])[:4] == [("identity", "CRASH"), ("stage_start", "health"),
                                          ("test", ("health", "pass")), ("stage_start", CRASH)]
    assert len(hang) == 1 and hang[0]["state"] == "timed_out" and hang[0]["stage"] == HANG
    assert "watchdog" in hang[0]["detail"]


def test_should_stop_and_cancel(tmp_path: Path) -> None:
    stages = [(HANG, {"only_serial": "STUCK", "timeout_s": 60.0})]
    jobs = _jobs(tmp_path, [mock_card("STUCK", 0), mock_card("STUCK2", 1)], stages)
    stop = {"now": False}
    engine = RayEngine(should_stop=lambda: stop["now"])
    for job in jobs:
        engine.submit(job)
    seen: list[EngineEvent] = []
    with pytest.raises(RunCancelled):
        for ev in engine.events():
            seen.append(ev)
            if isinstance(ev.event, StageStarted) and ev.key == "local/0":
                stop["now"] = True
    assert "local/0" in engine.unfinished()
    engine.cancel("local/0")
    assert "local/0" not in engine.unfinished()
    engine.close()
    assert engine.unfinished() == []


def test_real_card_on_unknown_host_fails_with_a_clear_detail() -> None:
    engine = RayEngine()
    job = CardJob(key="nowhere-7/0", locator={"backend": "nvml", "host": "nowhere-7", "index": 0}, stages=[])
    assert isinstance(engine.placement(job), str)
    engine.submit(job)
    events = list(engine.events())
    engine.close()
    assert [e.kind for e in events] == ["outcome"]
    assert events[0].event.state == "failed" and "host:nowhere-7" in events[0].event.detail
    assert events[0].event.finding.code == "host.unreachable"


def test_a_node_offering_the_host_resource_gets_the_card() -> None:
    engine = RayEngine()
    n1 = "ab" * 28  # a node id is 28 bytes of hex
    engine._nodes = [{"Alive": True, "NodeID": n1, "NodeManagerHostname": "gpu-07.dc", "Resources": {}},
                     {"Alive": True, "NodeID": "cd" * 28, "NodeManagerHostname": "x", "Resources": {"host:rack3-a": 1.0}}]
    job = CardJob(key="rack3-a/0", locator={"backend": "nvml", "host": "rack3-a"}, stages=[])
    assert engine.placement(job) == {"resources": {"host:rack3-a": 0.001}}
    by_name = engine.placement(CardJob(key="gpu-07/0", locator={"backend": "nvml", "host": "gpu-07"}, stages=[]))
    assert isinstance(by_name, dict) and by_name["scheduling_strategy"].node_id == n1
    engine.close()


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.errors import HarnessUnavailable

    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if ray were not installed
    with pytest.raises(HarnessUnavailable, match=r"pip install '\.\[distributed\]'"):
        RayEngine()


def test_rack_config_selects_the_ray_engine(write_rack, burnin) -> None:
    from tests.conftest import mock_card

    rack = write_rack([mock_card("RY0", 0), mock_card("RY1", 1, faults=[{"kind": "ecc.row_remap_failure"}])],
                      extra_rack='engine = "ray"')
    code, out, err = burnin("run", str(rack), "--json", "ray.json", "-q")
    assert code == 1, out + err
    import json

    cards = {c["serial"]: c for c in json.loads(open("ray.json").read())["cards"]}
    assert cards["RY0"]["verdict"] == "pass" and cards["RY1"]["verdict"] == "rma"


def test_run_resume_and_tui_build_the_engine_the_config_names(tmp_path: Path) -> None:
    import threading

    from harness.engine import LocalEngine as Local
    from harness.engines import make_engine
    from harness.tui.bridge import prepare_engine

    for engine, expected in (("ray", RayEngine), ("local", Local)):
        rack = tmp_path / f"{engine}.toml"
        rack.write_text(rack_toml([mock_card("ENG-0", 0)], extra_rack=f'engine = "{engine}"'), encoding="utf-8")
        cfg = load_rack(rack)
        cards = discover_cards(cfg)
        for built in (make_engine(cfg, cards), prepare_engine(threading.Event(), cfg, cards)):
            assert isinstance(built, expected)
            built.close()


def test_a_host_node_without_cpu_answers_with_a_finding_not_a_queue() -> None:
    engine = RayEngine()
    engine._nodes = [{"Alive": True, "NodeID": "cd" * 28, "NodeManagerHostname": "x",
                      "Resources": {"host:rack3-b": 1.0, "CPU": 0.0}}]
    engine._next_host_check = float("inf")  # keep the made-up node list
    engine.submit(CardJob(key="rack3-b/0", locator={"backend": "nvml", "host": "rack3-b"}, stages=[]))
    events = list(engine.events())
    engine.close()
    assert [e.kind for e in events] == ["outcome"] and events[0].event.state == "failed"
    assert events[0].event.finding.code == "host.no_cpu" and "--num-cpus" in events[0].event.detail
