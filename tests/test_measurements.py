"""Key figures carry the limit they were judged against, from the stage to every view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stress.model import Measurement, TestResult, measurement_text, out_of_limits
from tests.conftest import mock_card

PLAN = """
[[stages]]
stage = "thermal"
soak_s = 150
cooldown_s = 30
sample_interval_s = 5

[[stages]]
stage = "power"
hold_s = 20
settle_s = 5
"""


def test_measurement_reads_as_a_user_reads_it() -> None:
    hot = Measurement("theta", 0.0812, 0.077, "°C/W")
    assert hot.within is False and measurement_text(hot.to_dict()) == "theta 0.0812 °C/W, limit ≤ 0.077"
    low = Measurement("power", 300.0, 525.0, "W", "min")
    assert low.within is False and out_of_limits(low.to_dict())
    assert measurement_text(low.to_dict()) == "power 300 W, limit ≥ 525"
    unmeasured = Measurement("theta", None, 0.077, "°C/W")
    assert unmeasured.within is None and not out_of_limits(unmeasured.to_dict())
    res = TestResult("thermal", "fail", measurements=[hot, low])
    assert TestResult.from_dict(res.to_dict()).measurements == [hot, low]
    assert "measurements" not in TestResult("x", "pass").to_dict()  # the contract's shape when none


def test_thermal_and_power_limits_reach_document_table_and_html(write_rack, burnin, tmp_path: Path) -> None:
    rack = write_rack([mock_card("M-OK", 0), mock_card("M-HOT", 1, faults=[{"kind": "thermal.resistance", "factor": 2.0}])])
    (tmp_path / "plan.toml").write_text(PLAN, encoding="utf-8")
    code, out, err = burnin("run", str(rack), "--plan", "plan.toml", "--db", "m.db", "--json", "m.json",
                            "--html", "m.html")
    assert code == 1, err
    doc = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    cards = {c["serial"]: c for c in doc["cards"]}
    thermal = {c: next(t for t in cards[c]["tests"] if t["name"] == "thermal") for c in cards}
    theta = {c: next(m for m in thermal[c]["measurements"] if m["name"] == "theta") for c in cards}
    assert theta["M-HOT"]["unit"] == "°C/W" and theta["M-HOT"]["op"] == "max"
    assert out_of_limits(theta["M-HOT"]) and not out_of_limits(theta["M-OK"])
    assert theta["M-HOT"]["value"] == thermal["M-HOT"]["metrics"]["theta_c_per_w"]
    power = next(t for t in cards["M-OK"]["tests"] if t["name"] == "power")
    assert [m["name"] for m in power["measurements"]] == ["power under full load"]
    # the verdict table says which limit the failing figure broke
    assert "thermal.high_resistance" in out and "limit ≤" in out
    html = (tmp_path / "m.html").read_text(encoding="utf-8")
    assert html.count('class="meas bad"') >= 1 and "theta " in html


@pytest.mark.parametrize("stage", ["thermal", "power"])
def test_history_keeps_measurements(write_rack, burnin, tmp_path: Path, stage: str) -> None:
    rack = write_rack([mock_card("H-1", 0)])
    (tmp_path / "plan.toml").write_text(PLAN, encoding="utf-8")
    burnin("run", str(rack), "--plan", "plan.toml", "--db", "h.db", "-q")
    code, out, _ = burnin("history", "H-1", "--db", "h.db", "--json")
    assert code == 0
    test = next(t for t in json.loads(out)[0]["tests"] if t["name"] == stage)
    assert test["measurements"] and all("limit" in m for m in test["measurements"])
