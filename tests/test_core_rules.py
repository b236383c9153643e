"""Verdict rules, profile units and the layering contract (the core never imports textual)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from drivers.profiles import PROFILE_DIR, ProfileError, load_profile, load_profile_file, profile_for_model
from drivers.units import parse_quantity
from harness.verdict import dedupe, judge_card
from stress.model import Finding, actions_of, verdict_of


def F(code: str, severity: str = "fail", action: str = "reseat", **kw) -> Finding:  # noqa: N802
    return Finding(code=code, severity=severity, action=action, test="t", message=code, **kw)


@pytest.mark.parametrize(
    ("actions", "verdict"),
    [
        ([], "pass"),
        (["rma", "replace_fan"], "rma"),
        (["replace_fan", "reset_and_retest"], "repair"),
        (["fix_host"], "retest"),
        (["reset_and_retest"], "retest"),
        (["reflash_firmware"], "repair"),
    ],
)
def test_verdict_from_fail_actions(actions, verdict):
    assert verdict_of([F(f"x.{a}", action=a) for a in actions]) == verdict


def test_warn_findings_never_set_the_verdict_but_list_their_action():
    fs = [F("pcie.x", "warn", "reseat"), F("fan.y", "info", "none")]
    assert verdict_of(fs) == "pass"
    assert actions_of(fs) == ["reseat"]


def test_dedupe_keeps_the_most_severe_per_code_and_location():
    fs = [F("ecc.dbe", "warn", "none"), F("ecc.dbe", "fail", "reset_and_retest"),
          F("memory.stuck_bit", location={"address": 1}), F("memory.stuck_bit", location={"address": 2})]
    out = dedupe(fs)
    assert [(f.code, f.severity) for f in out] == [("ecc.dbe", "fail"), ("memory.stuck_bit", "fail"), ("memory.stuck_bit", "fail")]


def _hist(slot, *codes):
    return {"slot": slot, "findings": [{"code": c, "severity": "fail"} for c in codes]}


def test_reset_fixable_fault_escalates_on_third_run():
    once = judge_card([F("xid.61", action="reset_and_retest")], [_hist(0, "xid.61")], 0)
    assert once.verdict == "retest"
    thrice = judge_card([F("xid.61", action="reset_and_retest")], [_hist(0, "xid.61"), _hist(0, "xid.61")], 0)
    assert thrice.verdict == "rma" and "reset has not fixed" in thrice.findings[0].message


def test_hang_and_dbe_escalate_when_they_recur():
    # an uncorrectable ECC error during a scan, again after the reset that remapped it: rma
    for code in ("compute.hang", "ecc.dbe", "memory.ecc_uncorrectable"):
        v = judge_card([F(code, action="reset_and_retest")], [_hist(0, code)], 0)
        assert v.verdict == "rma", code


def test_link_fault_escalates_only_when_it_follows_the_card():
    same_slot = judge_card([F("pcie.link_degraded")], [_hist(1, "pcie.link_degraded")], 1)
    assert same_slot.verdict == "repair" and "another slot" in same_slot.findings[0].message
    moved = judge_card([F("pcie.link_degraded")], [_hist(1, "pcie.link_degraded")], 4)
    assert moved.verdict == "rma"


def test_quantities_carry_units_and_reject_the_wrong_dimension():
    assert parse_quantity("700000 mW", "W") == pytest.approx(700.0)
    assert parse_quantity("0.061 C/W", "C/W") == pytest.approx(0.061)
    with pytest.raises(ValueError, match="this field is in W"):
        parse_quantity("700 C", "W")
    with pytest.raises(ValueError):
        parse_quantity(700, "W")  # a bare number has no unit


def test_profiles_load_and_bad_profile_names_file_and_field(tmp_path):
    for name in ("h100-sxm5-80gb", "rtx4090-blower-48gb", "ascend-910b"):
        p = load_profile(name)
        assert p.thermal.theta_min < p.thermal.theta_max < p.thermal.theta_fail
        assert p.sources
    bad = tmp_path / "bad.toml"
    text = (PROFILE_DIR / "h100-sxm5-80gb.toml").read_text()
    bad.write_text(text.replace('tdp = "700 W"', 'tdp = "700 C"'))
    with pytest.raises(ProfileError, match=r"bad\.toml: power\.tdp"):
        load_profile_file(bad)


def test_real_device_names_map_to_profiles():
    assert profile_for_model("NVIDIA H100 80GB HBM3").name == "h100-sxm5-80gb"
    assert profile_for_model("NVIDIA GeForce RTX 4090", 49140, 1).name == "rtx4090-blower-48gb"
    assert profile_for_model("NVIDIA GeForce RTX 4090", 24564, 2).name == "rtx4090-24gb"
    assert profile_for_model("Ascend 910B3").name == "ascend-910b"
    assert profile_for_model("Matrox G200") is None


def test_core_never_imports_textual():
    code = (
        "import sys, harness.cli, harness.runner, harness.engine, harness.session, harness.store, "
        "harness.verdict, drivers.registry, drivers.mock, stress.base\n"
        "from stress.base import stages; stages()\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dedupe_prefers_the_more_specific_action_among_equals():
    out = dedupe([F("thermal.over_temp", action="reset_and_retest"), F("thermal.over_temp", action="repaste")])
    assert [f.action for f in out] == ["repaste"]


def test_findings_are_ordered_by_what_decides_the_verdict():
    v = judge_card([F("fan.stalled", action="replace_fan"), F("ecc.sbe_rate", "warn", "none"),
                    F("memory.stuck_bit", action="rma"), F("xid.119", action="reset_and_retest")])
    assert [f.code for f in v.findings] == ["memory.stuck_bit", "fan.stalled", "xid.119", "ecc.sbe_rate"]
