"""LocalEngine with reusable workers: one card at a time per worker; a crash or a hang still costs
only its card, and the cards after it run in a fresh worker."""

from __future__ import annotations

from pathlib import Path

from harness.config import load_rack
from harness.discovery import discover_cards
from harness.engine import LocalEngine
from harness.session import CardJob
from stress.events import Outcome
from tests.conftest import mock_card, rack_toml

CRASH = "tests.stages_for_tests:CrashStage"
HANG = "tests.stages_for_tests:HangStage"


def test_reused_workers_keep_each_failure_to_its_card(tmp_path: Path) -> None:
    rack = tmp_path / "rack.toml"
    serials = ["OK-A", "CRASH", "OK-B", "HANG", "OK-C"]
    rack.write_text(rack_toml([mock_card(s, i) for i, s in enumerate(serials)]), encoding="utf-8")
    stages = [("health", {"observe_s": 1}), (CRASH, {"only_serial": "CRASH"}),
              (HANG, {"only_serial": "HANG", "timeout_s": 1.5})]
    engine = LocalEngine(parallel=1, reuse_workers=True)
    for c in discover_cards(load_rack(rack)):
        engine.submit(CardJob(key=c.key, locator=c.locator, stages=stages, instruments=c.instruments))
    outcomes: dict[str, list[Outcome]] = {}
    pids: dict[str, int] = {}
    try:
        for ev in engine.events():
            pids.setdefault(ev.key, engine._running[ev.key].proc.pid)
            if isinstance(ev.event, Outcome):
                outcomes.setdefault(ev.key, []).append(ev.event)
    finally:
        engine.close()
    states = {k: [o.state for o in v] for k, v in outcomes.items()}
    assert states == {"local/0": ["done"], "local/1": ["failed"], "local/2": ["done"],
                      "local/3": ["timed_out"], "local/4": ["done"]}
    # the first two cards shared a worker; the card after the crash and after the hang got a new one
    assert pids["local/0"] == pids["local/1"]
    assert pids["local/2"] != pids["local/1"] and pids["local/4"] != pids["local/3"]
    assert engine.unfinished() == []
