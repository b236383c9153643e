"""The bench TUI, driven headless with a Pilot on a small fixed mock rack: the run finishes on
screen with the right verdicts, the faulty card's detail names its finding, the filter and the
keys work, and quitting (even mid-run, with a card hung) is clean and keeps what was stored."""

from __future__ import annotations

import asyncio
import io
import multiprocessing as mp
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from harness.config import load_rack
from harness.discovery import discover_cards
from harness.plans import load_plan
from harness.tui.state import BenchState
from stress.events import Identity, Outcome, Progress, Sample, StageStarted, TestDone
from stress.model import Finding, TestResult
from tests.conftest import mock_card

pytest.importorskip("textual")

from textual.widgets import DataTable, Static  # noqa: E402

from harness.tui.app import BenchApp  # noqa: E402
from harness.tui.screens import CardScreen, QuitScreen  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 60.0
SIZE = (160, 45)
RACK = [
    mock_card("TUI-0001", 0),
    mock_card("TUI-0002", 1, faults=[{"kind": "pcie.downtrained", "gen": 3, "width": 8}]),
    mock_card("TUI-0003", 2, profile="rtx4090-blower-48gb"),
    mock_card("TUI-0004", 3, profile="ascend-910b"),
]
PLAN = '[[stages]]\nstage = "health"\nobserve_s = 5\n[[stages]]\nstage = "health"\nfinal = true\nobserve_s = 0\n'


def _app(write_rack: Callable[..., Path], tmp_path: Path, plan_text: str = PLAN, devices: list | None = None) -> BenchApp:
    rack = write_rack(devices or RACK)
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(plan_text, encoding="utf-8")
    cfg = load_rack(str(rack))
    return BenchApp(cfg, load_plan(str(plan_path)), tmp_path / "tui.db", discover_cards(cfg))


async def _until(pilot, cond: Callable[[], bool], what: str) -> None:
    """Let the app work until ``cond`` holds; fail (not hang) after DEADLINE_S."""
    end = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def _plain(renderable) -> str:
    console = Console(file=io.StringIO(), width=150, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def _cell(app: BenchApp, key: str, col: str) -> str:
    return app.query_one("#cards", DataTable).get_cell(key, col).plain


def test_run_to_verdicts_detail_filter_and_quit(write_rack, tmp_path):
    app = _app(write_rack, tmp_path)

    async def go() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, lambda: app.phase != "running", "the run to finish")
            assert app.phase == "finished", app.error
            await pilot.pause()
            keys = app.card_row_keys()
            assert [_cell(app, k, "serial") for k in keys] == ["TUI-0001", "TUI-0002", "TUI-0003", "TUI-0004"]
            verdicts = {_cell(app, k, "serial"): _cell(app, k, "verdict") for k in keys}
            assert verdicts == {"TUI-0001": "PASS", "TUI-0002": "REPAIR", "TUI-0003": "PASS", "TUI-0004": "PASS"}
            assert _cell(app, "local/1", "actions") == "reseat"
            assert "done" in _cell(app, "local/0", "progress")
            assert _cell(app, "local/0", "temp") != "-"  # the latest sample reached the row
            summary = _plain(app.query_one("#summary", Static).content)
            assert "4 cards: 3 pass · 1 repair" in summary

            # move to the faulty card with j, open its detail with enter
            await pilot.press("j")
            assert app.selected == "local/1"
            await pilot.press("enter")  # opens the card's own screen
            assert isinstance(app.screen, CardScreen) and app.screen.key == "local/1"
            detail = _plain(app.screen.query_one("#card-body", Static).content)
            assert "TUI-0002" in detail and "pcie.link_degraded" in detail and "reseat" in detail
            assert "gen3 x8" in detail  # the finding's message
            assert "link=pcie" in detail  # its location
            assert app.bench.cards["local/1"].temps  # sparkline history from samples
            await pilot.press("escape")
            assert not isinstance(app.screen, CardScreen) and app.focused is app.query_one("#cards")

            # the non-pass filter keeps only the faulty card, and toggles back
            await pilot.press("f")
            assert app.card_row_keys() == ["local/1"]
            await pilot.press("f")
            assert len(app.card_row_keys()) == 4

            await pilot.press("q")  # finished: quits at once, no question
            await pilot.pause()
        assert app.return_code == 1  # one card did not pass, as `burnin run`

    asyncio.run(go())
    db = sqlite3.connect(tmp_path / "tui.db")
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "finished"


def test_all_pass_exits_zero(write_rack, tmp_path):
    app = _app(write_rack, tmp_path, devices=[mock_card("OK-1", 0), mock_card("OK-2", 1)])

    async def go() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, lambda: app.phase != "running", "the run to finish")
            await pilot.press("q")
            await pilot.pause()
        assert app.return_code == 0

    asyncio.run(go())


HANG_PLAN = (PLAN.split("[[stages]]\nstage = \"health\"\nfinal")[0]
             + '[[stages]]\nstage = "tests.stages_for_tests:HangStage"\nonly_serial = "TUI-0002"\ntimeout_s = 120\n')


def test_quit_mid_run_asks_then_stops_cleanly_keeping_results(write_rack, tmp_path):
    app = _app(write_rack, tmp_path, plan_text=HANG_PLAN)

    def hung_and_rest_done() -> bool:
        cards = app.bench.cards
        return cards["local/1"].stage == "tests.stages_for_tests:HangStage" and all(
            c.finished for k, c in cards.items() if k != "local/1")

    async def go() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, hung_and_rest_done, "three cards done and one hung")
            await pilot.press("q")
            await _until(pilot, lambda: isinstance(app.screen, QuitScreen), "the quit question")
            await pilot.press("n")  # keep running
            await pilot.pause()
            assert app.phase == "running" and not isinstance(app.screen, QuitScreen)
            await pilot.press("q")
            await _until(pilot, lambda: isinstance(app.screen, QuitScreen), "the quit question")
            t0 = time.monotonic()
            await pilot.press("y")
            await _until(pilot, lambda: app.phase == "stopped", "the run to stop")
            assert time.monotonic() - t0 < 15  # the hung worker was killed, not waited for
        assert app.return_code == 1

    asyncio.run(go())
    assert not [p for p in mp.active_children() if p.name.startswith("burnin-")]
    db = sqlite3.connect(tmp_path / "tui.db")
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "stopped"
    states = dict(db.execute("SELECT serial, state FROM run_cards").fetchall())
    assert states == {"TUI-0001": "done", "TUI-0002": "cancelled", "TUI-0003": "done", "TUI-0004": "done"}
    # what the hung card measured before the hang stays stored
    assert db.execute("SELECT COUNT(*) FROM tests WHERE key='local/1' AND name='health'").fetchone()[0] == 1


def test_state_folds_events_and_finds_non_pass(write_rack, tmp_path):
    cfg = load_rack(str(write_rack([mock_card("S-1", 0)])))
    bench = BenchState(discover_cards(cfg), n_stages=2)
    card = bench.cards["local/0"]
    assert card.serial == "S-1" and card.state == "pending" and not card.needs_attention()
    bench.apply("local/0", Identity({"serial": "S-1", "model": "H100 SXM5"}))
    bench.apply("local/0", StageStarted(1, "thermal"))
    bench.apply("local/0", Progress(0.5, "soak"))
    assert card.done_fraction == pytest.approx(0.75)
    bench.apply("local/0", Sample({"time_s": 1.0, "temperature_c": 61.5, "power_w": 402.0}, "thermal"))
    bench.apply("local/0", Sample({"time_s": 1.0, "inlet_c": 25.0}, "thermal bench"))  # no temperature: ignored
    assert (card.temperature_c, card.power_w, list(card.temps)) == (61.5, 402.0, [61.5])
    finding = Finding("fan.stalled", "fail", "replace_fan", "fans", "fan 0 <b>[bold]0 RPM[/bold]", {"fan": 0})
    bench.apply("local/0", TestDone(TestResult("fans", "fail", 3.0, findings=[finding])))
    assert card.needs_attention() and card.provisional_verdict() == "repair"
    assert bench.apply("nowhere/9", Sample({})) is None
    bench.apply("local/0", Outcome("done"))
    assert card.finished and bench.exit_code() == 1  # no verdicts yet: not a pass
    bench.finish({"cards": [{"key": "local/0", "verdict": "pass", "actions": [], "findings": [], "tests": []}]})
    assert card.verdict == "pass" and not card.needs_attention() and bench.exit_code() == 0

    from harness.tui.render import detail_body

    card.findings = [finding.to_dict()]
    assert "fan 0 <b>[bold]0 RPM[/bold]" in _plain(detail_body(card))  # shown as written, never as markup


def test_core_never_imports_textual():
    code = ("import sys, harness.runner, harness.engine, harness.session, harness.cli, drivers.registry;"
            "from stress.base import stages; stages();"
            "from harness.views import table, progress;"
            "assert 'textual' not in sys.modules, sorted(m for m in sys.modules if m.startswith('textual'))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
