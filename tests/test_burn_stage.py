"""The burn stage on mock cards of every profile: what it finds and the verdict it gives."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from drivers.api import ComputeHandle, LoadReport
from drivers.mock.device import MockDevice
from drivers.mock.faults import parse_fault
from drivers.profiles import load_profile
from stress.base import StageContext, get_stage
from stress.burn import BurnParams, BurnStage
from stress.facts import SessionFacts
from stress.model import Finding, verdict_of
from stress.model import TestResult as Result

PROFILES = ("h100-sxm5-80gb", "rtx4090-blower-48gb", "ascend-910b")
QUICK: dict[str, Any] = {"duration_s": 120, "products_min": 400}  # the quick plan's table


def burn(profile: str, faults: list[dict] | None = None, serial: str = "SIM-1", facts: SessionFacts | None = None,
         **params: Any) -> Result:
    prof = load_profile(profile)
    dev = MockDevice(prof, serial, faults=[parse_fault(f) for f in faults or []])
    ctx = StageContext(device=dev, profile=prof, params=BurnParams(**{**QUICK, **params}), serial=serial,
                       facts=facts or SessionFacts())
    return BurnStage().run(ctx)


def codes(r: Result) -> dict[str, Finding]:
    return {f.code: f for f in r.findings}


def test_registered_with_strict_params() -> None:
    assert get_stage("burn") is BurnStage and BurnStage.requires == frozenset({"compute"})
    with pytest.raises(ValueError):
        BurnParams(duration_s=10, typo=1)


@pytest.mark.parametrize("profile", PROFILES)
def test_healthy_cards_never_fail_many_seeds(profile: str) -> None:
    for i in range(12):
        r = burn(profile, serial=f"SIM-{profile[:4]}-{i}")
        assert r.status == "pass", [f.message for f in r.findings]
        assert not [f for f in r.findings if f.severity == "fail"]
        m = r.metrics
        assert m["products"] >= 400 and m["full_checks"] >= 4 and m["wrong_elements"] == 0
        for d in load_profile(profile).compute.dtypes:
            assert m[f"ratio_{d}"] >= 0.95
        assert m["max_temp_c"] < load_profile(profile).thermal.max_operating


@pytest.mark.parametrize("profile", PROFILES)
def test_sdc_every_n_is_found_with_element_and_bit_and_persists_cool(profile: str) -> None:
    r = burn(profile, [{"kind": "compute.sdc", "every": 50}])
    f = codes(r)["compute.miscompare"]
    assert (f.severity, f.action, verdict_of(r.findings)) == ("fail", "rma", "rma")
    assert {"row", "col", "bit", "dtype"} <= set(f.location)
    ex = f.evidence["examples"][0]
    assert ex["row"] == f.location["row"] and len(ex["bits"]) == 1 and ex["expected"] != ex["actual"]
    # one wrong element in every 50th product, however many products the hot phase ran
    assert f.evidence["count"] == r.metrics["products"] // 50 >= 8 and "persist cool" in f.message
    assert r.metrics["cool_wrong"] > 0


def test_sdc_probability_is_found() -> None:
    r = burn("rtx4090-blower-48gb", [{"kind": "compute.sdc", "probability": 0.02}])
    f = codes(r)["compute.miscompare"]
    assert f.action == "rma" and f.evidence["count"] >= 2


def test_hot_only_errors_on_a_high_theta_card_say_repaste() -> None:
    for profile, factor in (("h100-sxm5-80gb", 1.6), ("rtx4090-blower-48gb", 1.3), ("ascend-910b", 1.6)):
        faults = [{"kind": "compute.sdc", "every": 20, "above_temp_c": 72},
                  {"kind": "thermal.resistance", "factor": factor}]
        for serial in ("SIM-1", "SIM-2", "SIM-3", "SIM-4"):
            _hot_only_repaste(burn(profile, faults, serial=serial), profile)


def _hot_only_repaste(r: Result, profile: str) -> None:
    f = codes(r)["compute.miscompare"]
    assert f.action == "repaste", (profile, f.message)
    assert "repaste" in f.message and f.evidence["cool_wrong"] == 0
    assert f.evidence["cool_max_temp_c"] < f.evidence["min_error_temp_c"]
    assert verdict_of(r.findings) == "repair"


def test_hot_only_errors_with_healthy_cooling_are_silicon() -> None:
    r = burn("h100-sxm5-80gb", [{"kind": "compute.sdc", "every": 20, "above_temp_c": 55}])
    f = codes(r)["compute.miscompare"]
    assert f.action == "rma" and "marginal silicon" in f.message


def test_thermal_stage_theta_is_preferred() -> None:
    faults = [{"kind": "compute.sdc", "every": 20, "above_temp_c": 55}]
    r = burn("h100-sxm5-80gb", faults, facts=SessionFacts(theta_c_per_w=0.1))
    f = codes(r)["compute.miscompare"]
    assert f.action == "repaste" and f.evidence["theta_source"] == "thermal stage"


def test_cool_retest_raises_card_fans_and_restores_them() -> None:
    prof = load_profile("rtx4090-blower-48gb")
    dev = MockDevice(prof, "SIM-F", faults=[parse_fault({"kind": "compute.sdc", "every": 50})])
    before = dev.physics.fan_states[0].duty_pct
    ctx = StageContext(device=dev, profile=prof, params=BurnParams(**QUICK), serial="SIM-F")
    r = BurnStage().run(ctx)
    assert "1 card fan(s) at 100%" in codes(r)["compute.miscompare"].evidence["airflow"]
    assert dev.physics.fan_states[0].duty_pct == before


@pytest.mark.parametrize("profile", PROFILES)
def test_slow_silicon_is_rma_and_throttling_is_not(profile: str) -> None:
    r = burn(profile, [{"kind": "compute.slow", "factor": 0.8}])
    assert codes(r)["compute.slow"].action == "rma" and verdict_of(r.findings) == "rma"
    capped = burn(profile, [{"kind": "power.capped", "watts": load_profile(profile).power.min_limit}])
    assert "compute.slow" not in codes(capped) and capped.status == "pass"
    assert codes(capped)["compute.power_limited"].severity == "warn"


def test_thermal_throttle_is_blamed_on_its_cause() -> None:
    r = burn("h100-sxm5-80gb", [{"kind": "thermal.resistance", "factor": 2.0}])
    assert "compute.slow" not in codes(r) and codes(r)["thermal.slowdown"].action == "repaste"
    r = burn("rtx4090-blower-48gb", [{"kind": "fan.stalled", "fan": 0}])
    assert codes(r)["thermal.slowdown"].action == "replace_fan"


@pytest.mark.parametrize("at_s", [0.0, 60.0])
def test_hang_stops_at_once_and_fast(at_s: float) -> None:
    wall = time.monotonic()
    r = burn("h100-sxm5-80gb", [{"kind": "compute.hang", "at_s": at_s}], kernel_timeout_s=20)
    assert time.monotonic() - wall < 2.0
    f = codes(r)["compute.hang"]
    assert (f.severity, f.action, verdict_of(r.findings)) == ("fail", "reset_and_retest", "retest")
    assert len(r.findings) == 1 and r.duration_s < at_s + 50
    assert (r.metrics["products"] > 100) == (at_s > 0)


def test_bad_dtype_is_a_clear_error() -> None:
    r = burn("ascend-910b", dtypes=["bf16"])
    assert r.status == "error" and "bf16 not offered by ascend-910b" in (r.error or "")


class _NanCompute(ComputeHandle):
    """A handle whose 5th product has one NaN (a real fault the mock cannot make)."""

    def __init__(self, inner: ComputeHandle) -> None:
        self.inner, self.n = inner, 0

    @property
    def dtypes(self) -> tuple[str, ...]:
        return self.inner.dtypes

    def matmul(self, a: np.ndarray, b: np.ndarray, timeout_s: float = 60.0, dtype: str | None = None) -> np.ndarray:
        c = self.inner.matmul(a, b, timeout_s, dtype)
        self.n += 1
        if self.n == 5:
            c[3, 4] = np.nan
        return c

    def load(self, seconds: float, intensity: float = 1.0) -> LoadReport:
        return self.inner.load(seconds, intensity)


def test_nan_result_is_compute_nan() -> None:
    prof = load_profile("ascend-910b")
    dev = MockDevice(prof, "SIM-N")
    dev._compute = _NanCompute(dev.compute)
    ctx = StageContext(device=dev, profile=prof, params=BurnParams(**QUICK), serial="SIM-N")
    r = BurnStage().run(ctx)
    f = codes(r)["compute.nan"]
    assert f.location["row"] == 3 and f.location["col"] == 4 and f.evidence["examples"][0]["actual"] == "nan"
    assert "compute.miscompare" not in codes(r)


def _result(rate: float, throttle: list[str] | None = None, findings: list[Finding] | None = None) -> Result:
    return Result("burn", "pass", metrics={"tflops_fp16": rate, "tflops_fp32": 60.0, "throttle": throttle or []},
                      findings=findings or [])


def test_peers_more_than_gap_behind_the_best_identical_card() -> None:
    prof = load_profile("rtx4090-blower-48gb")
    other = load_profile("ascend-910b")
    out = BurnStage.compare_peers([
        ("a", prof, _result(150.0)), ("b", prof, _result(140.0)), ("c", prof, _result(130.0)),
        ("d", prof, _result(120.0, ["hw_thermal"])), ("e", other, _result(100.0)),
    ])
    assert set(out) == {"c", "d"}
    assert out["c"][0].code == "compute.slow" and out["c"][0].action == "rma"
    assert out["c"][0].evidence["best_card"] == "a"
    assert out["d"][0].severity == "warn"
    already = Finding("compute.slow", "fail", "rma", "burn", "slow")
    assert BurnStage.compare_peers([("a", prof, _result(150.0)), ("c", prof, _result(100.0, findings=[already]))]) == {}
