"""A recorded NVIDIA card replayed through the whole harness (backend = "nvml", replay = ...):
the real NVML code path in real worker processes, with no GPU. Preflight reads the host
conditions from the recording; a card not ready is retest and its stress stages are skipped."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRE = '[[stages]]\nstage = "preflight"\n[[stages]]\nstage = "health"\nobserve_s = 0\n'
PLAN = PRE + '[[stages]]\nstage = "memory"\nmax_bytes = 67108864\n'
LOAD = PRE + '[[stages]]\nstage = "tests.stages_for_tests:LoadStage"\n'
GIB = 1 << 30
NO_CUPY = importlib.util.find_spec("cupy") is None


def _snapshot(tmp: Path, name: str, system: dict | None = None, **answers) -> Path:
    snap = json.loads((ROOT / "fixtures" / "nvml" / name).read_text())
    snap["devices"][0]["calls"].update(answers)
    snap["system"].update(system or {})
    out = tmp / f"{len(list(tmp.glob('*.json')))}-{name}"
    out.write_text(json.dumps(snap))
    return out


@pytest.fixture
def run_replays(tmp_path, burnin):
    def _run(*snapshots: Path, plan: str = PLAN, args: tuple[str, ...] = ()) -> list[dict]:
        lines = ['[rack]', 'name = "replay"', '[[hosts]]', 'name = "local"']
        for i, s in enumerate(snapshots):
            lines += ['[[hosts.devices]]', 'backend = "nvml"', f'replay = "{s.name}"', f"slot = {i}"]
        (tmp_path / "rack.toml").write_text("\n".join(lines) + "\n")
        (tmp_path / "plan.toml").write_text(plan)
        code, out, err = burnin("run", str(tmp_path / "rack.toml"), "--plan", str(tmp_path / "plan.toml"),
                                "--json", "r.json", "-q", *args)
        assert code in (0, 1), out + err
        return json.loads((tmp_path / "r.json").read_text())["cards"]
    return _run


def fails(card: dict) -> dict[str, dict]:
    return {f["code"]: f for f in card["findings"] if f["severity"] == "fail"}


def test_recorded_cards_replay_through_the_harness(tmp_path, run_replays):
    h100 = _snapshot(tmp_path, "h100-sxm5-synthetic.json")
    rtx = _snapshot(tmp_path, "rtx4090-synthetic.json")
    bad = _snapshot(tmp_path, "h100-sxm5-synthetic.json", **{
        "nvmlDeviceGetRemappedRows": [0, 3, 0, 1],  # a bank out of spare rows
        "nvmlDeviceGetSerial": "1654922099999", "nvmlDeviceGetUUID": "GPU-00000000-0000-0000-0000-00000000bad1",
    })
    h100c, rtxc, badc = run_replays(h100, rtx, bad, plan=LOAD)
    assert h100c["verdict"] == "pass" and h100c["model"] == "NVIDIA H100 80GB HBM3"
    assert rtxc["verdict"] == "pass"
    assert rtxc["serial"].startswith("GPU-")  # a GeForce has no serial: tracked by UUID
    assert [t["status"] for t in h100c["tests"]] == ["pass", "pass", "pass"]
    assert h100c["tests"][0]["metrics"]["ready"] is True
    assert badc["verdict"] == "rma" and "ecc.row_remap_failure" in {f["code"] for f in badc["findings"]}


@pytest.mark.skipif(not NO_CUPY, reason="this install has CuPy")
def test_without_cupy_a_real_card_is_retest_naming_the_stages_and_the_extra(tmp_path, run_replays, burnin):
    h100 = _snapshot(tmp_path, "h100-sxm5-synthetic.json")
    (card,) = run_replays(h100)
    assert card["verdict"] == "retest" and card["actions"] == ["fix_host"]
    (f,) = card["findings"]
    assert f["code"] == "host.stages_skipped" and f["evidence"]["stages"] == ["memory"]
    assert "pip install 'burnin[cuda]'" in f["message"]
    assert [t["status"] for t in card["tests"]] == ["pass", "pass", "skipped"]
    # said up front: devices lists what the card cannot run under the plan
    code, out, err = burnin("devices", str(tmp_path / "rack.toml"), "--plan", "quick", "--json")
    assert code == 0, err
    (dev,) = json.loads(out)["devices"]
    assert dev["ready"] is True and {"memory", "pcie", "thermal", "burn", "power"} <= set(dev["cannot_run"])
    assert "burnin[cuda]" in dev["cannot_run"]["burn"]["reason"] and not dev["cannot_run"]["burn"]["optional"]
    assert dev["cannot_run"]["fans"]["optional"] is True  # a passive H100 with no bench: the plan allows it


@pytest.mark.skipif(NO_CUPY, reason="needs CuPy")
def test_with_cupy_a_recording_is_stressed_only_on_its_own_card(tmp_path, run_replays):
    """With CuPy, GPU or not: the recorded card is not on this host, so its memory stage is skipped
    and says why (never run on another GPU, never a harness finding from building the handle).
    On the host it was recorded on, the same plan would scan that very card (found by UUID)."""
    (card,) = run_replays(_snapshot(tmp_path, "h100-sxm5-synthetic.json"))
    assert [t["status"] for t in card["tests"]] == ["pass", "pass", "skipped"]
    assert "not on this host" in card["tests"][2]["error"]
    assert not any(f["code"].startswith("harness.") for f in card["findings"])


# one recorded host condition per card: (snapshot answers, system answers, finding code, words in its message)
CONDITIONS = {
    "busy": ({"nvmlDeviceGetComputeRunningProcesses": [{"pid": 4242, "usedGpuMemory": 70 * GIB}]},
             {"nvmlSystemGetProcessName:4242": "python3"}, "host.busy", ["4242", "python3", "70.0 GiB", "kill 4242"]),
    "graphics": ({"nvmlDeviceGetGraphicsRunningProcesses": [{"pid": 1777, "usedGpuMemory": None}]},
                 {"nvmlSystemGetProcessName:1777": "/usr/lib/xorg/Xorg"}, "host.busy", ["1777", "Xorg", "graphics"]),
    "mig": ({"nvmlDeviceGetMigMode": [1, 1]}, {}, "host.mig", ["-mig 0"]),
    "migpending": ({"nvmlDeviceGetMigMode": [0, 1]}, {}, "host.pending_reset", ["MIG", "-r"]),
    "display": ({"nvmlDeviceGetDisplayActive": 1}, {}, "host.display", ["display"]),
    "prohibited": ({"nvmlDeviceGetComputeMode": 2}, {}, "host.compute_mode", ["-c DEFAULT"]),
    "appclocks": ({"nvmlDeviceGetApplicationsClock:1": 1200}, {}, "host.clocks_locked", ["1200 MHz", "-rac", "-rgc"]),
    "locked": ({"nvmlDeviceGetCurrentClocksEventReasons": 2}, {}, "host.clocks_locked", ["-rgc"]),
    "power": ({"nvmlDeviceGetPowerManagementLimit": 400000, "nvmlDeviceGetEnforcedPowerLimit": 400000}, {},
              "power.capped", ["400 W", "700 W", "-pl 700"]),
    "eccpending": ({"nvmlDeviceGetEccMode": [1, 0]}, {}, "host.pending_reset", ["ECC"]),
    "reset": ({"nvmlDeviceGetFieldValues:[230]": [{"fieldId": 230, "latencyUsec": 0, "nvmlReturn": 0, "scopeId": 0,
                                                   "timestamp": 0, "value": {"uiVal": 2}, "valueType": 1}]}, {},
              "host.reset_required", ["node reboot", "reboot the host"]),
}


def test_each_recorded_condition_makes_the_card_retest_and_skips_its_stress_stages(tmp_path, run_replays):
    snaps = [_snapshot(tmp_path, "h100-sxm5-synthetic.json", system,
                       nvmlDeviceGetUUID=f"GPU-{i:08d}-0000-0000-0000-000000000000",
                       nvmlDeviceGetSerial=f"16549220{i:05d}", **answers)
             for i, (answers, system, _, _) in enumerate(CONDITIONS.values())]
    snaps.append(_snapshot(tmp_path, "h100-sxm5-synthetic.json", nvmlDeviceGetSerial="1654922077777",
                           nvmlDeviceGetUUID="GPU-77777777-0000-0000-0000-000000000000"))
    cards = run_replays(*snaps, plan=LOAD)
    for (name, (_, _, code, words)), card in zip(CONDITIONS.items(), cards, strict=False):
        assert card["verdict"] == "retest", (name, card["findings"])
        f = fails(card)[code]
        assert f["action"] == "fix_host" and f["test"] == "preflight"
        assert all(w in f["message"] for w in words), (name, f["message"])
        statuses = {t["name"]: (t["status"], t.get("error", "")) for t in card["tests"]}
        assert statuses["health"][0] != "skipped"  # reads only: it runs on a card that is not ready
        status, why = statuses["tests.stages_for_tests:LoadStage"]  # a stage skipped is named as the plan names it
        assert status == "skipped" and code in why, (name, why)
    gone = cards[-1]  # the same card with the condition gone: ready, tested, passed
    assert gone["verdict"] == "pass" and [t["status"] for t in gone["tests"]] == ["pass", "pass", "pass"]


def test_force_runs_a_busy_card_and_marks_what_it_measured(tmp_path, run_replays):
    busy, system = CONDITIONS["busy"][0], CONDITIONS["busy"][1]
    (card,) = run_replays(_snapshot(tmp_path, "h100-sxm5-synthetic.json", system, **busy), plan=LOAD,
                          args=("--force",))
    assert [t["status"] for t in card["tests"]] == ["pass", "pass", "pass"]
    f = next(f for f in card["findings"] if f["code"] == "host.busy")
    assert f["severity"] == "warn" and "forced" in f["message"]
    assert card["tests"][0]["metrics"]["forced"] is True
    assert card["tests"][2]["metrics"]["measured_under"][0].startswith("host.busy")


def test_the_real_h200_replays_as_a_healthy_card(tmp_path, run_replays):
    """The H200 recorded at first contact (fixtures/nvml/h200-real.json): the right profile, ready,
    and no finding of the harness's own. The recording process (pid 538, burnin's recorder holding
    a CUDA context) is not another workload on the card; a real other process still is."""
    h200 = _snapshot(tmp_path, "h200-real.json")
    procs = json.loads((ROOT / "fixtures" / "nvml" / "h200-real.json").read_text())["devices"][0]["calls"][
        "nvmlDeviceGetComputeRunningProcesses"]
    busy = _snapshot(tmp_path, "h200-real.json", system={"nvmlSystemGetProcessName:777": "trainer"},
                     nvmlDeviceGetComputeRunningProcesses=procs + [{"pid": 777, "usedGpuMemory": 40 * GIB,
                                                                   "gpuInstanceId": 4294967295,
                                                                   "computeInstanceId": 4294967295}])
    card, other = run_replays(h200, busy, plan=LOAD)
    assert card["model"] == "NVIDIA H200" and card["serial"] == "1654724127926"
    assert (card["profile"], card["profile_source"]) == ("h200-sxm5-141gb", "matched")
    assert card["verdict"] == "pass" and card["findings"] == [], card["findings"]
    pre = card["tests"][0]["metrics"]
    assert pre["ready"] is True and pre["conditions"]["processes"] == []
    assert pre["conditions"]["driver_version"] == "580.159.04"
    (f,) = other["findings"]
    assert f["code"] == "host.busy" and [p["pid"] for p in f["evidence"]["processes"]] == [777]
