"""A healthy Ascend NPU can pass: the stress rack (ascend-dmi, the NPU runtime simulator standing
for torch_npu, npu-smi) through the whole harness with every stress stage of the plans, and the
same cards on a host without the tools (retest, naming what to install)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "ascend"
NPU_SMI, DMI = FIX / "npu_smi_sim.py", FIX / "ascend_dmi_sim.py"

# every stage of the bundled plans, short (simulated time: the windows cost no wall time, but
# each sample is a few npu-smi calls)
PLAN = """name = "ascend-stress-test"
description = "the bundled plans' stages, short"
[[stages]]
stage = "preflight"
[[stages]]
stage = "health"
observe_s = 0
[[stages]]
stage = "memory"
algorithms = ["march_c-"]
backgrounds = ["00"]
coverage_min = 0.0
[[stages]]
stage = "pcie"
duration_s = 1
samples = 1
[[stages]]
stage = "fans"
optional_for = ["passive"]
[[stages]]
stage = "thermal"
soak_s = 60
sample_interval_s = 15
[[stages]]
stage = "burn"
duration_s = 10
products_min = 120
sample_interval_s = 10
settle_max_s = 0
cool_settle_max_s = 0
cool_duration_s = 10
cool_products_min = 100
[[stages]]
stage = "power"
hold_s = 10
settle_s = 0
sample_interval_s = 10
[[stages]]
stage = "diagnose"
optional_for = ["nvidia", "mock"]
power_s = 10
[[stages]]
stage = "health"
final = true
observe_s = 0
"""

# NPU id: verdict, actions, fail codes (sim_state_stress.json)
EXPECT: dict[int, tuple[str, list[str], set[str]]] = {
    1: ("pass", [], set()),
    2: ("retest", ["reset_and_retest"], {"diag.hbm", "memory.ecc_uncorrectable", "ecc.dbe",
                                         "ecc.retired_pages_pending"}),
    3: ("rma", ["reset_and_retest", "rma"], {"diag.aicore", "compute.miscompare", "npu.80C98008"}),
    4: ("rma", ["rma"], {"compute.slow"}),
    5: ("rma", ["rma"], {"memory.bandwidth_low"}),
    6: ("pass", ["fix_host"], set()),  # PCIe copies at 40 %: a host warning, as the pcie stage says it
    8: ("repair", ["reseat"], {"bus.lost"}),
    9: ("pass", [], set()),
}


def rack(tmp_path: Path, tools: bool) -> Path:
    state = json.loads((FIX / "sim_state_stress.json").read_text(encoding="utf-8"))
    state["writable"] = True
    sp = tmp_path / f"state-{tools}.json"
    sp.write_text(json.dumps(state), encoding="utf-8")
    py = f"{sys.executable} -S -E"
    dev = {"backend": "ascend", "npu_smi": f"{py} {NPU_SMI} --state {sp}"}
    if tools:
        dev |= {"ascend_dmi": f"{py} {DMI} --state {sp}", "npu_runtime": f"fixtures.ascend.npu_runtime_sim --state {sp}"}
    else:
        dev |= {"ascend_dmi": "no-ascend-dmi-here", "npu_runtime": "drivers.ascend.torch_npu"}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in dev.items())
    path = tmp_path / f"rack-{tools}.toml"
    path.write_text(f'[rack]\nname = "stress-{tools}"\n\n[[hosts]]\nname = "local"\n\n[[hosts.devices]]\n{body}\n',
                    encoding="utf-8")
    return path


def run(burnin: Any, cfg: Path, plan: Path) -> dict[int, dict[str, Any]]:
    out = cfg.with_suffix(".json")
    code, _, err = burnin("run", str(cfg), "--plan", str(plan), "--json", str(out), "--db", str(cfg.with_suffix(".db")),
                          "--quiet")
    assert code == 1, err
    return {c["slot"]: c for c in json.loads(out.read_text(encoding="utf-8"))["cards"]}


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    p = tmp_path / "plan.toml"
    p.write_text(PLAN, encoding="utf-8")
    return p


def fails(card: dict[str, Any]) -> set[str]:
    return {f["code"] for f in card["findings"] if f["severity"] == "fail"}


def test_stress_faults_get_their_verdicts_and_healthy_npus_pass(burnin: Any, tmp_path: Path, plan: Path) -> None:
    cards = run(burnin, rack(tmp_path, tools=True), plan)
    assert sorted(cards) == sorted(EXPECT)
    for slot, (verdict, actions, codes) in EXPECT.items():
        c = cards[slot]
        assert (c["verdict"], c["actions"]) == (verdict, actions), (slot, c["findings"])
        assert codes <= fails(c), (slot, c["findings"])
    healthy = cards[1]
    status = {t["name"]: t["status"] for t in healthy["tests"]}
    assert all(status[s] == "pass" for s in ("memory", "pcie", "thermal", "burn", "power", "diagnose")), status
    figures = {m["name"]: m for t in healthy["tests"] for m in t.get("measurements", [])}
    for name, floor in (("fp16 FLOPS (ascend-dmi)", 142.5), ("H2D bandwidth (ascend-dmi)", 20.0),
                        ("on-card memory bandwidth (ascend-dmi)", 960.0), ("power under ascend-dmi stress", 300.0),
                        ("power under full load", 300.0), ("fp16 rate", 142.5)):
        m = figures[name]
        assert m["limit"] == pytest.approx(floor) and m["op"] == "min" and m["value"] >= floor, m
    assert figures["max temperature"]["value"] > 45  # the load heated it, read through npu-smi
    slow = next(f for f in cards[4]["findings"] if f["code"] == "compute.slow" and f["test"] == "diagnose")
    assert slow["evidence"]["tflops"] < slow["evidence"]["floor_tflops"]
    hbm = next(f for f in cards[2]["findings"] if f["code"] == "diag.hbm")
    assert hbm["evidence"]["word"] == "IMPORTANT_WARN" and "80E01801" in hbm["evidence"]["codes"]
    pcie = next(f for f in cards[6]["findings"] if f["code"] == "pcie.bandwidth_low")
    assert pcie["severity"] == "warn" and pcie["evidence"]["gbps"] < 10


def test_without_the_tools_the_same_cards_are_retest_naming_them(burnin: Any, tmp_path: Path, plan: Path) -> None:
    cards = run(burnin, rack(tmp_path, tools=False), plan)
    c = cards[1]
    assert (c["verdict"], c["actions"]) == ("retest", ["fix_host"]), c["findings"]
    (f,) = [f for f in c["findings"] if f["severity"] == "fail"]
    assert f["code"] == "host.stages_skipped"
    assert f["evidence"]["stages"] == ["memory", "pcie", "thermal", "burn", "power", "diagnose"]
    assert "ascend-dmi is not installed" in f["message"] and "torch_npu" in f["message"]
    statuses = {t["name"]: t["status"] for t in c["tests"]}
    assert statuses["diagnose"] == "skipped" and statuses["health"] == "pass"
