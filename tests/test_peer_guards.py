"""Peer comparison runs on the run's records, through a real run: the burn stage's guards (skip a
hung card, skip a card already flagged slow) see each test's own findings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stress.burn import BurnStage
from tests.conftest import mock_card

PLAN = """
[[stages]]
stage = "burn"
duration_s = 20
products_min = 100
batch = 8
full_check_every = 50
kernel_timeout_s = 30
settle_max_s = 60
cool_duration_s = 10
cool_products_min = 20
"""


def test_guards_see_the_findings_of_a_hung_and_a_slow_card(write_rack, burnin, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, Any, Any]] = []
    real = BurnStage.compare_peers.__func__  # type: ignore[attr-defined]

    def spy(cls: type[BurnStage], results: list[tuple[str, Any, Any]]) -> dict[str, Any]:
        seen.extend(results)
        return real(cls, results)

    monkeypatch.setattr(BurnStage, "compare_peers", classmethod(spy))
    rack = write_rack([
        mock_card("OK-1", 0), mock_card("OK-2", 1),
        mock_card("HANG-3", 2, faults=[{"kind": "compute.hang", "at_s": 8}]),
        mock_card("SLOW-4", 3, faults=[{"kind": "compute.slow", "factor": 0.5}]),
    ])
    (tmp_path / "plan.toml").write_text(PLAN, encoding="utf-8")
    code, _, err = burnin("run", str(rack), "--plan", "plan.toml", "--db", "r.db", "--json", "r.json", "-q")
    assert code == 1, err
    by_key = {key: res for key, _, res in seen}
    assert set(by_key) == {"local/0", "local/1", "local/2", "local/3"}  # every card's burn, from the records
    assert [f.code for f in by_key["local/2"].findings] == ["compute.hang"]
    assert [f.code for f in by_key["local/3"].findings] == ["compute.slow"]

    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    cards = {c["serial"]: c for c in doc["cards"]}
    assert cards["OK-1"]["verdict"] == cards["OK-2"]["verdict"] == "pass"
    assert [f["code"] for f in cards["HANG-3"]["findings"]] == ["compute.hang"]  # not also slow
    assert cards["HANG-3"]["verdict"] == "retest"
    assert cards["SLOW-4"]["verdict"] == "rma" and cards["SLOW-4"]["key"] == "local/3"
    # the stored findings: one compute.slow, from the stage; the peer comparison added none
    import sqlite3

    db = sqlite3.connect(tmp_path / "r.db")
    rows = db.execute("SELECT key, code, test_id IS NULL FROM findings ORDER BY key").fetchall()
    assert rows == [("local/2", "compute.hang", 0), ("local/3", "compute.slow", 0)]


def test_peer_findings_land_in_records_store_and_document(write_rack, burnin, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A finding the peer comparison adds reaches the card's verdict, its stored findings (outside
    any test) and the document, once."""
    from stress.model import Finding

    def flag_slot_1(cls: type[BurnStage], results: list[tuple[str, Any, Any]]) -> dict[str, Any]:
        return {"local/1": [Finding("compute.slow", "fail", "rma", "burn", "behind its peers")]}

    monkeypatch.setattr(BurnStage, "compare_peers", classmethod(flag_slot_1))
    rack = write_rack([mock_card("P-1", 0), mock_card("P-2", 1)])
    (tmp_path / "plan.toml").write_text(PLAN, encoding="utf-8")
    code, _, err = burnin("run", str(rack), "--plan", "plan.toml", "--db", "r.db", "--json", "r.json", "-q")
    assert code == 1, err
    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    cards = {c["serial"]: c for c in doc["cards"]}
    assert cards["P-1"]["verdict"] == "pass"
    assert cards["P-2"]["verdict"] == "rma" and [f["code"] for f in cards["P-2"]["findings"]] == ["compute.slow"]
    import sqlite3

    db = sqlite3.connect(tmp_path / "r.db")
    assert db.execute("SELECT key, code, test_id FROM findings").fetchall() == [("local/1", "compute.slow", None)]
