"""``burnin run --metrics``: Prometheus metrics with dcgm-exporter names while a run goes on."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from harness.errors import UsageError  # noqa: E402
from harness.views.metrics import parse_addr  # noqa: E402
from tests.conftest import mock_card  # noqa: E402

BLOCK = "tests.stages_for_tests:BlockStage"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_addresses_default_to_loopback() -> None:
    assert parse_addr("9400") == ("127.0.0.1", 9400)
    assert parse_addr("0.0.0.0:9400") == ("0.0.0.0", 9400)
    assert parse_addr("[::1]:9400") == ("::1", 9400)
    for bad in ("nine", "1.2.3.4:99999", "some-host:9400"):
        with pytest.raises(UsageError, match="--metrics"):
            parse_addr(bad)


def test_metrics_are_served_while_the_run_goes_on(write_rack, burnin, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.write_text("hold", encoding="utf-8")
    plan = tmp_path / "p.toml"
    plan.write_text('[[stages]]\nstage = "health"\nobserve_s = 1\n'
                    f'[[stages]]\nstage = "{BLOCK}"\nwhile_file = "{gate}"\n', encoding="utf-8")
    rack = write_rack([mock_card("MET-1", 0), mock_card("MET-2", 1, "rtx4090-blower-48gb",
                                                        faults=[{"kind": "ecc.row_remap_failure"}])])
    port = _free_port()
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(code=burnin(
        "run", str(rack), "--plan", str(plan), "--metrics", str(port), "--json", "m.json", "-q")))
    runner.start()
    try:
        deadline, seen = time.monotonic() + 60, {}
        while time.monotonic() < deadline and runner.is_alive():
            try:
                seen = _scrape(port)
            except OSError:
                seen = {}
            stages = [s for s in seen.get("burnin_stage", []) if s.labels["stage"] == BLOCK]
            if len(stages) == 2:
                break
            time.sleep(0.1)
        assert len(stages) == 2, seen.get("burnin_stage")
        temps = {s.labels["serial"]: s for s in seen["DCGM_FI_DEV_GPU_TEMP"]}
        assert set(temps) == {"MET-1", "MET-2"} and all(s.value > 0 for s in temps.values())
        assert temps["MET-1"].labels == {"host": "local", "slot": "0", "serial": "MET-1", "model": "h100-sxm5-80gb"}
        assert {s.labels["serial"] for s in seen["DCGM_FI_DEV_POWER_USAGE"]} == {"MET-1", "MET-2"}
        assert any(s.labels["serial"] == "MET-2" and s.value > 0 for s in seen["burnin_fan_speed_rpm"])
        assert {s.labels["serial"] for s in seen["DCGM_FI_DEV_SM_CLOCK"]} == {"MET-1", "MET-2"}
        progress = {s.labels["serial"]: s.value for s in seen["burnin_progress_ratio"]}
        assert all(0.5 <= v < 1.0 for v in progress.values())  # in the second of two stages
        assert {s.labels["state"] for s in seen["burnin_card_state"]} == {"running"}
        assert seen.get("burnin_verdict", []) == []  # no verdict before the run has one
    finally:
        gate.unlink()
        runner.join(60)
    assert result["code"][0] == 1
    cards = {c["serial"]: c["verdict"] for c in json.loads(Path("m.json").read_text())["cards"]}
    assert cards == {"MET-1": "pass", "MET-2": "rma"}
    with pytest.raises(OSError):  # the server stops with the run
        _scrape(port)


def test_metrics_port_in_use_is_one_line_exit_2(write_rack, burnin) -> None:
    rack = write_rack([mock_card("MET-3", 0)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code, _, err = burnin("run", str(rack), "--metrics", f"127.0.0.1:{s.getsockname()[1]}", "-q")
    assert code == 2 and "cannot listen" in err and "Traceback" not in err


def test_without_prometheus_client_metrics_say_how_to_install(write_rack, burnin, monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "prometheus_client", None)  # as if not installed
    code, _, err = burnin("run", str(write_rack([mock_card("MET-4", 0)])), "--metrics", "0", "-q")
    assert code == 3 and "pip install '.[metrics]'" in err
