"""Rack config validation: every bad input is exit 2 with one line naming file, device, field."""

from __future__ import annotations

import pytest

from tests.conftest import mock_card


@pytest.mark.parametrize(
    ("card", "expect"),
    [
        (mock_card("A", 0, colour="red"), ["devices[0]", "colour", "unknown key"]),
        (mock_card("A", 0, profile="h200-nope"), ["devices[0]", "profile", "h200-nope"]),
        (mock_card("A", 0, memory_mib="lots"), ["devices[0]", "memory_mib"]),
        (mock_card("A", 0, faults=[{"kind": "memory.stuck_bit", "address": 64 << 20, "bit": 1, "value": 1}]),
         ["devices[0]", "(A)", "faults[0]", "address", "outside"]),
        (mock_card("A", 0, faults=[{"kind": "memory.stuck_bit", "address": 5, "bit": 8, "value": 1}]),
         ["faults[0]", "bit"]),
        (mock_card("A", 0, faults=[{"kind": "warp.drive"}]), ["faults[0]", "kind", "warp.drive"]),
        (mock_card("A", 0, faults=[{"kind": "fan.stalled", "fan": 1, "speed": 3}]), ["faults[0]", "speed"]),
        (mock_card("A", 0, faults=[{"kind": "pcie.replays"}]), ["faults[0]", "per_minute", "missing"]),
        (mock_card("A", 0, faults=[{"kind": "compute.sdc", "every": 3, "probability": 0.1}]), ["faults[0]", "every"]),
        (mock_card("A", 0, profile="rtx4090-blower-48gb", faults=[{"kind": "fan.weak", "fan": 3, "max_fraction": 0.5}]),
         ["faults[0]", "fan 3"]),
        ({"backend": "warp", "serial": "A"}, ["devices[0]", "backend", "warp"]),
    ],
)
def test_bad_device_is_exit_2_one_line(write_rack, burnin, card, expect):
    rack = write_rack([card])
    code, out, err = burnin("run", str(rack))
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(rack) in err
    for word in expect:
        assert word in err, (word, err)


def test_unknown_top_level_and_rack_keys(tmp_path, burnin):
    p = tmp_path / "r.toml"
    p.write_text('[rack]\nname = "x"\nflavour = 1\n[[hosts]]\nname = "local"\n[[hosts.devices]]\nbackend = "mock"\n'
                 'profile = "h100-sxm5-80gb"\nserial = "S"\n')
    code, _, err = burnin("run", str(p))
    assert code == 2 and "rack.flavour" in err and "unknown key" in err


def test_invalid_toml_and_missing_file(tmp_path, burnin):
    p = tmp_path / "r.toml"
    p.write_text("[rack\nname=")
    code, _, err = burnin("run", str(p))
    assert code == 2 and "invalid TOML" in err and str(p) in err
    code, _, err = burnin("run", str(tmp_path / "nope.toml"))
    assert code == 2 and "nope.toml" in err


def test_duplicate_serial_and_slot(write_rack, burnin):
    code, _, err = burnin("run", str(write_rack([mock_card("A", 0), mock_card("A", 1)])))
    assert code == 2 and "serial" in err and "'A'" in err
    code, _, err = burnin("run", str(write_rack([mock_card("A", 0), mock_card("B", 0)])))
    assert code == 2 and "slot 0" in err


def test_bad_plan_is_exit_2(write_rack, burnin, tmp_path):
    rack = write_rack([mock_card("A", 0)])
    code, _, err = burnin("run", str(rack), "--plan", "nonexistent")
    assert code == 2 and "nonexistent" in err
    plan = tmp_path / "p.toml"
    plan.write_text('[[stages]]\nstage = "health"\nobserve_seconds = 3\n')
    code, _, err = burnin("run", str(rack), "--plan", str(plan))
    assert code == 2 and "stages[0]" in err and "observe_seconds" in err
    plan.write_text('[[stages]]\nstage = "levitate"\n')
    code, _, err = burnin("run", str(rack), "--plan", str(plan))
    assert code == 2 and "levitate" in err


def test_fault_fan_index_on_passive_names_chassis_fan(write_rack, burnin):
    # passive cards: fan faults name chassis fans (4 on the H100 bench)
    code, _, err = burnin("devices", str(write_rack([mock_card("A", 0, faults=[{"kind": "fan.stalled", "fan": 1}])])))
    assert code == 0, err
    code, _, err = burnin("devices", str(write_rack([mock_card("A", 0, faults=[{"kind": "fan.stalled", "fan": 9}])])))
    assert code == 2 and "fan 9" in err
