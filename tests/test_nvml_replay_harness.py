"""A recorded NVIDIA card replayed through the whole harness (backend = "nvml", replay = ...):
the real NVML code path in real worker processes, with no GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLAN = '[[stages]]\nstage = "health"\nobserve_s = 0\n[[stages]]\nstage = "memory"\n'


def _snapshot(tmp: Path, name: str, **answers) -> Path:
    snap = json.loads((ROOT / "fixtures" / "nvml" / name).read_text())
    snap["devices"][0]["calls"].update(answers)
    out = tmp / f"{len(list(tmp.glob('*.json')))}-{name}"
    out.write_text(json.dumps(snap))
    return out


@pytest.fixture
def run_replays(tmp_path, burnin):
    def _run(*snapshots: Path) -> list[dict]:
        lines = ['[rack]', 'name = "replay"', '[[hosts]]', 'name = "local"']
        for i, s in enumerate(snapshots):
            lines += ['[[hosts.devices]]', 'backend = "nvml"', f'replay = "{s.name}"', f"slot = {i}"]
        (tmp_path / "rack.toml").write_text("\n".join(lines) + "\n")
        (tmp_path / "plan.toml").write_text(PLAN)
        code, out, err = burnin("run", str(tmp_path / "rack.toml"), "--plan", str(tmp_path / "plan.toml"),
                                "--json", "r.json", "-q")
        assert code in (0, 1), out + err
        return json.loads((tmp_path / "r.json").read_text())["cards"]
    return _run


def test_recorded_cards_replay_through_the_harness(tmp_path, run_replays):
    h100 = _snapshot(tmp_path, "h100-sxm5-synthetic.json")
    rtx = _snapshot(tmp_path, "rtx4090-synthetic.json")
    bad = _snapshot(tmp_path, "h100-sxm5-synthetic.json", **{
        "nvmlDeviceGetRemappedRows": [0, 3, 0, 1],  # a bank out of spare rows
        "nvmlDeviceGetSerial": "1654922099999", "nvmlDeviceGetUUID": "GPU-00000000-0000-0000-0000-00000000bad1",
    })
    h100c, rtxc, badc = run_replays(h100, rtx, bad)
    assert h100c["verdict"] == "pass" and h100c["model"] == "NVIDIA H100 80GB HBM3"
    assert rtxc["verdict"] == "pass"
    assert rtxc["serial"].startswith("GPU-")  # a GeForce has no serial: tracked by UUID
    # no CuPy here: the memory scan is skipped, not failed
    assert [t["status"] for t in h100c["tests"]] == ["pass", "skipped"]
    assert badc["verdict"] == "rma" and "ecc.row_remap_failure" in {f["code"] for f in badc["findings"]}
