"""Verdicts while the run goes on: each card is judged the moment it finishes; identical cards are
compared once MIN_PEERS of them have finished; a verdict a later comparison changes says why.

Driven through the real Run with an engine that replays a scripted order of card events, so the
order in which cards finish (what this is about) is exact and nothing waits on wall time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import stress.base
from harness.config import load_rack
from harness.discovery import discover_cards
from harness.engine import Engine, EngineEvent
from harness.plans import load_plan
from harness.runner import Run
from harness.store import Store
from stress.base import Stage, StageContext
from stress.events import EventConsumer, Identity, Outcome, TestDone, Verdict
from stress.model import Finding, TestResult
from tests.conftest import mock_card


class PeerRate(Stage):
    """A stage whose results are compared among identical cards: > 10 % behind the best is slow."""

    name = "peer_rate_for_tests"
    codes: ClassVar[frozenset[str]] = frozenset({"compute.slow"})

    def run(self, ctx: StageContext) -> TestResult:
        raise AssertionError("never run: the scripted engine reports its results")

    @classmethod
    def compare_peers(cls, results: list[tuple[str, Any, TestResult]]) -> dict[str, list[Finding]]:
        best = max(r.metrics["rate"] for _, _, r in results)
        return {k: [Finding("compute.slow", "fail", "rma", cls.name, f"rate {r.metrics['rate']} vs best {best}")]
                for k, _, r in results if r.metrics["rate"] < 0.9 * best}


class ScriptedEngine(Engine):
    """Reports, card after card in the given order, an identity, one result and the outcome;
    ``interrupt_after``: Ctrl-C once that card's result is in (before its outcome)."""

    def __init__(self, script: list[tuple[str, str, TestResult]], interrupt_after: str | None = None) -> None:
        self.script = script
        self.interrupt_after = interrupt_after

    def submit(self, job: Any) -> None: ...

    def events(self) -> Iterator[EngineEvent]:
        for key, serial, result in self.script:
            yield EngineEvent(key, Identity({"serial": serial, "model": "H100", "profile": "h100-sxm5-80gb",
                                             "profile_source": "config"}))
            yield EngineEvent(key, TestDone(result, 0))
            if key == self.interrupt_after:
                raise KeyboardInterrupt
            yield EngineEvent(key, Outcome("done"))

    def cancel(self, key: str) -> None: ...

    def close(self) -> None: ...


class Tape(EventConsumer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def handle(self, key: str, event: Any) -> None:
        self.seen.append((key, event))


@pytest.fixture
def peer_stage(monkeypatch):
    monkeypatch.setitem(stress.base._REGISTRY, PeerRate.name, PeerRate)


def _run(write_rack, tmp_path, rates: list[float], own: dict[int, Finding] | None = None,
         interrupt_after: str | None = None) -> tuple[Tape, dict]:
    cfg = load_rack(str(write_rack([mock_card(f"EV-{i}", i) for i in range(len(rates))])))
    (tmp_path / "p.toml").write_text(f'[[stages]]\nstage = "{PeerRate.name}"\n[[stages]]\nstage = "health"\n')
    cards = discover_cards(cfg)
    script = [(c.key, f"EV-{i}", TestResult(PeerRate.name, "fail" if own and i in own else "pass",
                                           metrics={"rate": rates[i]}, findings=[own[i]] if own and i in own else []))
              for i, c in enumerate(cards)]
    tape = Tape()
    run = Run(cfg, load_plan(str(tmp_path / "p.toml")), Store(tmp_path / "r.db"), listeners=[tape],
              engine=ScriptedEngine(script, interrupt_after))
    run.start(cards)
    return tape, run.execute()


def test_each_card_is_judged_as_it_finishes_and_a_late_comparison_says_why_it_changed(
        peer_stage, write_rack, tmp_path):
    tape, doc = _run(write_rack, tmp_path, [80, 100, 99, 98, 97, 101, 105])
    order = [(k, type(e).__name__) for k, e in tape.seen if isinstance(e, Outcome | Verdict)]
    # every card's first verdict comes right after its own outcome, before the next card's
    for i in range(7):
        at = order.index((f"local/{i}", "Outcome"))
        assert order[at + 1] == (f"local/{i}", "Verdict"), order
    verdicts = [(k, e) for k, e in tape.seen if isinstance(e, Verdict)]
    slow = [e for k, e in verdicts if k == "local/0"]
    # fewer than MIN_PEERS finished: the profile decides (pass); the fifth card brings the comparison
    assert [v.verdict for v in slow] == ["pass", "rma"]
    assert slow[1].note.startswith("changed from pass to rma: compute.slow: rate 80")
    fifth = [k for k, e in tape.seen if isinstance(e, Outcome)].index("local/4")
    changed_at = next(i for i, (k, e) in enumerate(tape.seen) if isinstance(e, Verdict) and e.note)
    outcome_at = [i for i, (k, e) in enumerate(tape.seen) if isinstance(e, Outcome)][fifth]
    assert outcome_at < changed_at  # the change came with the fifth card, not at the end of the run
    assert all(len([e for k, e in verdicts if k == key]) == 1 for key in (f"local/{i}" for i in range(1, 7)))
    card0 = doc["cards"][0]
    assert card0["verdict"] == "rma" and card0["verdict_changes"][0]["from"] == "pass"
    assert all("verdict_changes" not in c and c["verdict"] == "pass" for c in doc["cards"][1:])


def test_a_failure_of_the_cards_own_checks_is_its_verdict_at_once(peer_stage, write_rack, tmp_path):
    bad = Finding("memory.stuck_bit", "fail", "rma", PeerRate.name, "bit stuck", {"address": 1, "bit": 0})
    tape, doc = _run(write_rack, tmp_path, [100, 100, 100], own={0: bad})
    first = next(e for k, e in tape.seen if k == "local/0" and isinstance(e, Verdict))
    assert first.verdict == "rma" and not first.note
    assert [c["verdict"] for c in doc["cards"]] == ["rma", "pass", "pass"]


def test_a_small_group_is_compared_once_all_of_it_has_finished(peer_stage, write_rack, tmp_path):
    tape, doc = _run(write_rack, tmp_path, [100, 70, 100])
    v1 = [e for k, e in tape.seen if k == "local/1" and isinstance(e, Verdict)]
    assert [v.verdict for v in v1] == ["pass", "rma"] and "compute.slow" in v1[1].note


def test_a_card_cut_short_keeps_the_verdict_of_what_it_measured(peer_stage, write_rack, tmp_path):
    """Ctrl-C while card 1 runs: it had failed its memory test, so it is rma (not "retest, no
    actions"), marked incomplete with the stage it did not run; card 2 never started: retest."""
    bad = Finding("memory.stuck_bit", "fail", "rma", PeerRate.name, "bit stuck", {"address": 1, "bit": 0})
    with pytest.raises(KeyboardInterrupt):
        _run(write_rack, tmp_path, [100, 100, 100], own={1: bad}, interrupt_after="local/1")
    store = Store(tmp_path / "r.db", readonly=True)
    run_id = store.latest_run_id()
    assert (store.run(run_id) or {})["status"] == "interrupted"
    rows = {r["key"]: r for r in store.run_cards(run_id)}
    assert rows["local/0"]["verdict"] == "pass" and rows["local/0"]["state"] == "done"
    assert rows["local/1"]["state"] == "cancelled" and rows["local/1"]["verdict"] == "rma"
    assert {f["code"] for f in rows["local/1"]["findings"]} == {"memory.stuck_bit", "harness.incomplete"}
    assert rows["local/2"]["verdict"] == "retest" and rows["local/2"]["state"] == "cancelled"
    rec = next(r for r in store.records(run_id) if r.key == "local/1")
    assert rec.verdict == "rma"
    store.close()
