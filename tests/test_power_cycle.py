"""After bus.lost the slot is power-cycled through the bench relay and the card re-probed once;
a card that falls off again in a slot where other cards pass is escalated to rma."""

from __future__ import annotations

import json

from tests.conftest import mock_card

RELAY = '\n[[hosts.instruments]]\nkind = "bench"\nport = "sim"\npower_cycle = true\n'


def _cards(path):
    return {c["serial"]: c for c in json.loads(open(path).read())["cards"]}


def test_power_cycle_reprobe_and_escalation(write_rack, burnin):
    # run 1: a good card proves slot 0; the others show both re-probe outcomes
    rack = write_rack([
        mock_card("GOOD", 0),
        mock_card("FLAKY", 1, faults=[{"kind": "bus.fall_off", "at_s": 20}]),
        mock_card("ONCE", 2, "rtx4090-blower-48gb", faults=[{"kind": "bus.fall_off", "at_s": 200}]),
    ], host_extra=RELAY)
    code, out, err = burnin("run", str(rack), "--db", "p.db", "--json", "r1.json")
    assert code == 1, out + err
    cards = _cards("r1.json")
    assert cards["GOOD"]["verdict"] == "pass"
    flaky = next(f for f in cards["FLAKY"]["findings"] if f["code"] == "bus.lost")
    assert flaky["evidence"]["power_cycled"] and flaky["evidence"]["came_back"] and flaky["evidence"]["lost_again"]
    assert "fell off the bus again" in flaky["message"]
    assert cards["FLAKY"]["verdict"] == "repair"  # slot 1 is not known to be good yet
    once = next(f for f in cards["ONCE"]["findings"] if f["code"] == "bus.lost")
    assert once["evidence"]["came_back"] and not once["evidence"]["lost_again"]
    assert cards["ONCE"]["verdict"] == "repair" and cards["ONCE"]["actions"] == ["reseat"]

    # run 2: FLAKY moved into slot 0, where GOOD passed: it falls off again there -> rma
    rack = write_rack([mock_card("FLAKY", 0, faults=[{"kind": "bus.fall_off", "at_s": 20}])], host_extra=RELAY)
    code, out, err = burnin("run", str(rack), "--db", "p.db", "--json", "r2.json")
    assert code == 1
    flaky = _cards("r2.json")["FLAKY"]
    assert flaky["verdict"] == "rma", flaky["findings"]
    lost = next(f for f in flaky["findings"] if f["code"] == "bus.lost")
    assert lost["evidence"]["escalated_from"] == "reseat"
