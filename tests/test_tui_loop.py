"""The repair loop in the bench TUI (issue 13), driven with a Pilot: select the failing card, open
its view (chip map), read its history with dates, record a repair, retest only that card while
the others keep their results, and quit with q then y at any moment."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from harness.config import load_rack
from harness.discovery import discover_cards
from harness.plans import load_plan
from tests.conftest import mock_card
from tests.test_tui import SIZE, _cell, _plain, _until

pytest.importorskip("textual")

from textual.widgets import Input, Select, Static  # noqa: E402

from harness.tui.app import BenchApp  # noqa: E402
from harness.tui.screens import CardScreen, QuitScreen, RepairScreen  # noqa: E402

GDDR = "rtx4090-blower-48gb"
PLAN = ('[[stages]]\nstage = "health"\nobserve_s = 5\n'
        '[[stages]]\nstage = "memory"\nalgorithms = ["march_c-"]\nbackgrounds = ["00"]\n'
        '[[stages]]\nstage = "health"\nfinal = true\nobserve_s = 0\n')
RACK = [
    mock_card("LOOP-1", 0, GDDR),
    mock_card("LOOP-2", 1, GDDR, faults=[{"kind": "memory.stuck_bit", "address": 0x1234, "bit": 3, "value": 1}]),
    mock_card("LOOP-3", 2),
]


def _app(write_rack, tmp_path: Path, plan: str = PLAN) -> BenchApp:
    rack = write_rack(RACK)
    (tmp_path / "plan.toml").write_text(plan, encoding="utf-8")
    cfg = load_rack(str(rack))
    return BenchApp(cfg, load_plan(str(tmp_path / "plan.toml")), tmp_path / "loop.db", discover_cards(cfg))


def test_failing_card_history_repair_retest_and_quit(write_rack, tmp_path):
    app = _app(write_rack, tmp_path)

    async def go() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, lambda: app.phase == "finished", "the run to finish")
            first_run = app.bench.run_id
            await pilot.press("j")
            assert app.selected == "local/1" and _cell(app, "local/1", "verdict") == "REPAIR"

            await pilot.press("enter")  # the card's own screen, with the chip map
            assert isinstance(app.screen, CardScreen)
            body = _plain(app.screen.query_one("#card-body", Static).content)
            assert "memory.stuck_bit" in body and "GDDR6X chip map (24 chips)" in body and "chip 18: 1 cells" in body
            await pilot.press("h")  # history next to the findings, with dates
            story = _plain(app.screen.query_one("#card-history-body", Static).content)
            assert first_run[:4] + "-" in story and "REPAIR" in story and "(this run)" in story
            assert app.screen.query_one("#card-history").display

            await pilot.press("p")  # record a repair from the card screen
            await _until(pilot, lambda: isinstance(app.screen, RepairScreen), "the repair dialog")
            assert app.screen.query_one("#repair-action", Select).value == "replace_memory"  # proposed
            app.screen.query_one("#repair-part", Input).value = "GDDR chip 18"
            app.screen.query_one("#repair-note", Input).focus()
            await pilot.press(*"reballed", "enter")
            await _until(pilot, lambda: isinstance(app.screen, CardScreen), "back to the card")
            story = _plain(app.screen.query_one("#card-history-body", Static).content)
            assert "replace_memory (GDDR chip 18) · reballed" in story and "not retested yet" in story

            await pilot.press("r")  # retest this card only
            # started on this card (a mock retest may already be over: no assertion on the phase)
            assert app.last_retest == "local/1" and app.retesting in ("local/1", None)
            await pilot.press("escape")
            assert _cell(app, "local/0", "verdict") == "PASS"  # the others keep their results
            await _until(pilot, lambda: app.phase == "finished" and app.retesting is None, "the retest to finish")
            await pilot.pause()
            assert app.bench.run_id != first_run
            # the fault is still there (the mock card was not changed): back after its repair -> rma
            assert _cell(app, "local/1", "verdict") == "RMA"
            assert [_cell(app, k, "verdict") for k in ("local/0", "local/2")] == ["PASS", "PASS"]
            assert [c["serial"] for c in app.bench.doc["cards"]] == ["LOOP-1", "LOOP-2", "LOOP-3"]

            await pilot.press("h")
            story = _plain(app.screen.query_one("#card-history-body", Static).content)
            assert story.index("REPAIR") < story.index("replace_memory") < story.index("RMA")
            assert "not fixed" in story
            await pilot.press("q")  # finished: q quits at once
            await pilot.pause()
        assert app.return_code == 1

    asyncio.run(go())
    db = sqlite3.connect(tmp_path / "loop.db")
    assert db.execute("SELECT serial FROM run_cards ORDER BY rowid").fetchall() == [
        ("LOOP-1",), ("LOOP-2",), ("LOOP-3",), ("LOOP-2",)]
    assert db.execute("SELECT action, part, note FROM repairs").fetchall() == [
        ("replace_memory", "GDDR chip 18", "reballed")]


def test_q_then_y_quits_even_when_the_run_ended_meanwhile(write_rack, tmp_path):
    app = _app(write_rack, tmp_path)

    async def go() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("q")
            await _until(pilot, lambda: isinstance(app.screen, QuitScreen), "the quit question")
            await _until(pilot, lambda: app.phase == "finished", "the run to end under the question")
            await pilot.press("y")
            await pilot.pause()
        assert app.return_code == 1  # the run finished: its verdicts decide, as `burnin run`

    asyncio.run(go())


def test_verdict_is_final_as_soon_as_the_card_and_its_peers_are_done(write_rack, tmp_path):
    from tests.test_tui import HANG_PLAN

    plan = HANG_PLAN.replace("TUI-0002", "LOOP-2")
    app = _app(write_rack, tmp_path, plan=plan)

    def rest_done() -> bool:
        cards = app.bench.cards
        return cards["local/1"].stage == "tests.stages_for_tests:HangStage" and all(
            c.finished for k, c in cards.items() if k != "local/1")

    async def go() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, rest_done, "two cards done and one hung")
            await pilot.pause(0.3)
            # no stage of this plan compares peers: a finished card's verdict is final at once
            assert _cell(app, "local/0", "verdict") == "PASS" and _cell(app, "local/2", "verdict") == "PASS"
            assert app.provisional_why("local/0") == ""
            assert app.provisional_why("local/1").startswith("running (2/2: tests.stages_for_tests:HangStage")
            await pilot.press("q")
            await _until(pilot, lambda: isinstance(app.screen, QuitScreen), "the quit question")
            await pilot.press("y")
            await _until(pilot, lambda: app.phase == "stopped", "the run to stop")

    asyncio.run(go())


def test_peers_are_compared_once_enough_of_them_have_finished(write_rack, tmp_path):
    """MIN_PEERS (5: the best of five healthy cards beats their median 97 % of the time) finished
    identical cards, or the whole group: before that the profile's target is the reference."""
    from harness.judging import MIN_PEERS, peer_ready
    from stress.record import CardRecord

    assert MIN_PEERS == 5
    cfg = load_rack(str(write_rack([mock_card(f"P-{i}", i) for i in range(7)])))
    recs = [CardRecord(c.key, c.host, c.slot, c.backend, dict(c.locator)) for c in discover_cards(cfg)]
    for r in recs[:4]:
        r.state = "done"
    assert peer_ready(recs) == []  # 4 of 7 finished: not yet
    recs[4].state = "lost"
    assert [r.key for r in peer_ready(recs)] == [r.key for r in recs[:5]]
    assert len(peer_ready(recs[:3])) == 3  # a whole group of three, all finished
    recs[2].state = "running"
    assert peer_ready(recs[:3]) == []
