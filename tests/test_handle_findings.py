"""A handle that cannot be built (CUDA libraries missing, a driver older than CuPy needs, any CUDA
error) is a finding on that card, never a dead worker; without CuPy it is simply absent."""

from __future__ import annotations

from typing import Any

import pytest

from drivers import registry
from drivers.api import BackendUnavailable, DeviceLost
from drivers.cuda import errors
from drivers.nvml import NvmlBackend, NvmlConfig
from tests import fake_cupy, fake_pynvml
from tests.test_nvml_backend import H100


def _session(monkeypatch: pytest.MonkeyPatch, stages: list[tuple[str, dict[str, Any]]]) -> tuple[str, list[dict]]:
    from harness.session import CardJob, run_card_session

    fake_pynvml.install(monkeypatch, H100)
    (loc,) = NvmlBackend().discover(NvmlConfig(backend="nvml", index=0), {})
    from stress.events import TestDone

    events: list[Any] = []
    out = run_card_session(CardJob("local/0", loc, stages), events.append)
    return out, [e.result.to_dict_full() for e in events if isinstance(e, TestDone)]


PLAN = [("memory", {}), ("health", {"observe_s": 0})]


def test_an_old_driver_for_cuda_is_a_fix_host_finding_and_the_run_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "_POISONED", {})
    fake_cupy.install(monkeypatch, 1, total=1 << 30).no_driver = True  # cudaErrorInsufficientDriver
    out, tests = _session(monkeypatch, PLAN)
    assert out == "done" and [t["name"] for t in tests] == ["memory", "health"]
    mem = tests[0]
    assert mem["status"] == "error"
    (f,) = mem["findings"]
    assert f["code"] == "host.driver_old" and f["action"] == "fix_host"  # the host's failure, not the card's
    assert "cudaErrorInsufficientDriver" in f["message"] and "update the driver" in f["message"]
    assert tests[1]["status"] == "pass"


@pytest.mark.parametrize("exc, code", [
    (ImportError("libcublasLt.so.12: cannot open shared object file"), "harness.stage_error"),
    (RuntimeError("something unforeseen"), "harness.stage_error"),
])
def test_any_exception_building_a_handle_is_a_finding(monkeypatch: pytest.MonkeyPatch, exc: Exception,
                                                      code: str) -> None:
    def broken(where: dict) -> Any:
        raise exc

    monkeypatch.setitem(registry._HANDLES, ("cuda", "memory"), broken)
    out, tests = _session(monkeypatch, PLAN)
    assert out == "done" and tests[0]["status"] == "error"
    assert [f["code"] for f in tests[0]["findings"]] == [code]
    assert tests[1]["name"] == "health" and tests[1]["status"] == "pass"


def test_a_card_lost_while_building_a_handle_is_bus_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    def lost(where: dict) -> Any:
        raise DeviceLost("CUDA device 0: cudaErrorUnknown")

    monkeypatch.setitem(registry._HANDLES, ("cuda", "memory"), lost)
    out, tests = _session(monkeypatch, PLAN)
    assert out == "lost"
    assert [f["code"] for f in tests[0]["findings"]] == ["bus.lost"]
    assert tests[1]["status"] == "skipped"


def test_backend_unavailable_means_no_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(where: dict) -> Any:
        raise BackendUnavailable("CuPy is not installed")

    monkeypatch.setitem(registry._HANDLES, ("cuda", "memory"), absent)
    out, tests = _session(monkeypatch, PLAN)
    assert out == "done" and tests[0]["status"] == "skipped" and tests[0].get("findings", []) == []


def test_a_replayed_recording_runs_cuda_only_on_its_own_card(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A recording is not a card: its stress stages run only where the recorded card itself is
    (found by UUID or bus id), never on whatever GPU this host has; elsewhere they are skipped."""
    import json

    from drivers.api import HostUnfit
    from tests.test_nvml_backend import snap

    asked: list[dict] = []

    def not_here(where: dict) -> Any:
        asked.append(where)
        raise HostUnfit("CUDA cannot see this card in this process")

    monkeypatch.setitem(registry._HANDLES, ("cuda", "memory"), not_here)
    # CuPy counts as installed (the factory above stands in for it), with or without the real one
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "cupy" else real_find_spec(name, *a))
    path = tmp_path / "h100.json"
    path.write_text(json.dumps(snap(H100)))
    backend = NvmlBackend()
    (loc,) = backend.discover(NvmlConfig(backend="nvml", replay=str(path)), {})
    dev = backend.open(loc)
    assert dev.memory is None and asked[0]["uuid"] == "GPU-3c5e1d9a-7f42-4b8e-9a61-2d0f8c7b5e13"
    assert "not on this host" in dev.unavailable("memory")
    dev.close()
    monkeypatch.setitem(registry._HANDLES, ("cuda", "memory"), lambda where: "the recorded card's memory")
    dev = backend.open(loc)
    assert dev.memory == "the recorded card's memory"  # replayed on the host it was recorded on
    dev.close()


def test_ecc_in_the_scan_is_a_memory_finding_and_no_reseat(monkeypatch: pytest.MonkeyPatch) -> None:
    """On HBM the scan's failure signal is the ECC error itself: a memory finding for the range,
    and the stages after it (the context is unusable until a reset) are not a lost card."""
    monkeypatch.setattr(errors, "_POISONED", {})
    gpus = fake_cupy.install(monkeypatch, [fake_cupy.Gpu(1 << 30, "0000:18:00.0", bytes(16))])
    gpus.inject(0, "march", status=214, nth=2)
    scan = {"algorithms": ["march_c-"], "backgrounds": ["55"], "max_bytes": 4 << 20, "powerup_check": False}
    out, tests = _session(monkeypatch, [("memory", scan), ("burn", {}), ("health", {"observe_s": 0})])
    assert out == "done" and [t["name"] for t in tests] == ["memory", "burn", "health"]
    (f,) = [g for g in tests[0]["findings"] if g["severity"] == "fail"]  # (a coverage warning: max_bytes)
    assert f["code"] == "memory.ecc_uncorrectable" and f["location"]["address"] == 0
    assert [g["code"] for g in tests[1]["findings"]] == ["harness.device_error"]
    assert "bus.lost" not in {g["code"] for t in tests for g in t.get("findings", [])}
