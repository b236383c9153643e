"""Whose failure is it? Failures injected at the real call sites of the CUDA path (the CuPy stand-in
raising CompileException, ImportError, CUDA driver and runtime errors where CuPy would), run
through a card session on a recorded H100: the harness's and the host's own failures are
``harness.*``/``host.*`` findings with ``fix_host`` (verdict retest), never a card finding or a
card action; the card's own faults map to the findings that name them."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.cuda import errors
from drivers.nvml import NvmlBackend, NvmlConfig
from harness.verdict import judge_card
from stress.model import Finding
from tests import fake_cupy, fake_pynvml
from tests.test_nvml_backend import H100

SCAN = {"algorithms": ["march_c-"], "backgrounds": ["55"], "max_bytes": 4 << 20, "powerup_check": False,
        "coverage_min": 0}
BURN = {"size": 64, "duration_s": 0.001, "products_min": 8, "batch": 4, "settle_max_s": 0, "cool_retest": False,
        "dtypes": ["fp16", "fp32"], "kernel_timeout_s": 0.2}
HEALTH = {"observe_s": 0}
CARD_ACTIONS = {"rma", "repaste", "replace_fan", "replace_memory", "reseat", "check_power", "reflash_firmware"}


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> fake_cupy.FakeCuda:
    """The recorded H100 (bus 18) is CUDA device 1 of two: nothing may touch device 0."""
    monkeypatch.setattr(errors, "_POISONED", {})
    return fake_cupy.install(monkeypatch, [fake_cupy.Gpu(1 << 30, "0000:3b:00.0", bytes(16)),
                                           fake_cupy.Gpu(1 << 30, "0000:18:00.0", bytes(range(16)), flops=2e15)])


def _session(monkeypatch: pytest.MonkeyPatch, stages: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    from harness.session import CardJob, run_card_session
    from stress.events import FindingRaised, TestDone

    fake_pynvml.install(monkeypatch, H100)
    (loc,) = NvmlBackend().discover(NvmlConfig(backend="nvml", index=0), {})
    events: list[Any] = []
    run_card_session(CardJob("local/0", loc, stages), events.append)
    tests = [e.result.to_dict_full() for e in events if isinstance(e, TestDone)]
    assert not [e for e in events if isinstance(e, FindingRaised)]
    return tests


def _findings(tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for t in tests for f in t.get("findings", [])]


def _verdict(tests: list[dict[str, Any]]) -> tuple[str, list[str]]:
    v = judge_card([Finding(**{k: f[k] for k in ("code", "severity", "action", "test", "message", "location",
                                                  "evidence")}) for f in _findings(tests)])
    return v.verdict, v.actions


def _assert_not_the_cards(tests: list[dict[str, Any]], code: str, *words: str) -> dict[str, Any]:
    (f,) = _findings(tests)
    assert f["code"] == code and f["action"] == "fix_host" and f["severity"] == "fail"
    for w in words:
        assert w in f["message"], f["message"]
    assert _verdict(tests) == ("retest", ["fix_host"])
    assert tests[-1]["name"] == "health" and tests[-1]["status"] == "pass"  # the session went on
    return f


# --- the harness's and the host's own failures --------------------------------------------------------
@pytest.mark.parametrize("module, stage, params", [("abft", "burn", BURN), ("memscan", "memory", SCAN)])
def test_a_kernel_that_does_not_compile_is_the_harness_s_failure(
        monkeypatch: pytest.MonkeyPatch, gpu: fake_cupy.FakeCuda, module: str, stage: str, params: dict) -> None:
    gpu.fail_compile(module, "abft.cu(119): error: user-defined literal operator not found")
    tests = _session(monkeypatch, [(stage, params), ("health", HEALTH)])
    f = _assert_not_the_cards(tests, "harness.kernel_unavailable", "does not compile", "user-defined literal",
                              "burnin bug")
    assert f"{module}" in f["message"] and "CompileException" in f["message"]
    assert gpu.contexts == {1}


def test_a_missing_cublas_is_the_host_s_failure(monkeypatch: pytest.MonkeyPatch, gpu: fake_cupy.FakeCuda) -> None:
    gpu.lack("cublas")
    tests = _session(monkeypatch, [("burn", BURN), ("health", HEALTH)])
    _assert_not_the_cards(tests, "harness.handle_unavailable", "libcublasLt.so.12", "pip install 'burnin[cuda]'")


def test_a_missing_nvrtc_is_the_host_s_failure(monkeypatch: pytest.MonkeyPatch, gpu: fake_cupy.FakeCuda) -> None:
    gpu.lack("nvrtc")
    tests = _session(monkeypatch, [("memory", SCAN), ("health", HEALTH)])
    _assert_not_the_cards(tests, "harness.handle_unavailable", "libnvrtc.so.12", "pip install 'burnin[cuda]'")


@pytest.mark.parametrize("status", [222, 218])
def test_a_driver_that_cannot_load_the_kernels_is_host_driver_old(monkeypatch: pytest.MonkeyPatch,
                                                                  gpu: fake_cupy.FakeCuda, status: int) -> None:
    gpu.driver_version, gpu.nvrtc_version = 13000, (13, 2)  # the H200's: runtime 13.2 over a 13.0 driver
    gpu.fail_load("abft", status)
    tests = _session(monkeypatch, [("burn", BURN), ("health", HEALTH)])
    _assert_not_the_cards(tests, "host.driver_old", "driver CUDA 13.0, NVRTC 13.2", "update the driver")


def test_kernels_built_for_another_architecture_are_the_harness_s_failure(
        monkeypatch: pytest.MonkeyPatch, gpu: fake_cupy.FakeCuda) -> None:
    gpu.fail_load("memscan", 209)
    tests = _session(monkeypatch, [("memory", SCAN), ("health", HEALTH)])
    _assert_not_the_cards(tests, "harness.kernel_unavailable", "another GPU architecture")


def test_a_driver_older_than_the_runtime_is_host_driver_old(monkeypatch: pytest.MonkeyPatch,
                                                             gpu: fake_cupy.FakeCuda) -> None:
    gpu.no_driver = True  # every CUDA call: cudaErrorInsufficientDriver
    tests = _session(monkeypatch, [("memory", SCAN), ("health", HEALTH)])
    _assert_not_the_cards(tests, "host.driver_old", "cudaErrorInsufficientDriver")


def test_a_healthy_card_loads_each_kernel_module_once_per_handle_and_only_on_itself(
        monkeypatch: pytest.MonkeyPatch, gpu: fake_cupy.FakeCuda) -> None:
    tests = _session(monkeypatch, [("memory", SCAN), ("burn", BURN), ("health", HEALTH)])
    assert [t["status"] for t in tests] == ["pass", "pass", "pass"] and _findings(tests) == []
    assert gpu.modules == ["memscan", "abft", "abft"]  # one module per handle (scan) or engine (two dtypes)
    assert gpu.contexts == {1} and {d for _, d, _ in gpu.launches} == {1}
    assert gpu.pending() == []


# --- the card's own faults ---------------------------------------------------------------------------
@pytest.mark.parametrize("op, status, hang, stage, code, action", [
    ("march", 214, False, "memory", "memory.ecc_uncorrectable", "reset_and_retest"),
    ("march", 700, False, "memory", "compute.fault", "reset_and_retest"),
    ("march", 719, False, "memory", "compute.fault", "reset_and_retest"),
    ("march", None, True, "memory", "compute.hang", "reset_and_retest"),
    ("gemm", 214, False, "burn", "ecc.dbe", "reset_and_retest"),
    ("gemm", 715, False, "burn", "compute.fault", "reset_and_retest"),
    ("gemm", None, True, "burn", "compute.hang", "reset_and_retest"),
    ("check_f32", 214, False, "burn", "ecc.dbe", "reset_and_retest"),  # the check's own kernel: not a hang
    ("gemm", 999, False, "burn", "bus.lost", "reseat"),
])
def test_cuda_errors_of_the_card_map_to_its_findings(monkeypatch: pytest.MonkeyPatch, gpu: fake_cupy.FakeCuda,
                                                     op: str, status: int | None, hang: bool, stage: str,
                                                     code: str, action: str) -> None:
    params = SCAN if stage == "memory" else BURN
    monkeypatch.setattr("drivers.cuda.memory.KERNEL_TIMEOUT_S", 0.2)
    gpu.inject(1, op, status=status, hang=hang)
    tests = _session(monkeypatch, [(stage, params), ("health", HEALTH)])
    fails = [f for f in _findings(tests) if f["severity"] == "fail"]
    assert [(f["code"], f["action"]) for f in fails] == [(code, action)], fails
    assert not any(f["code"].startswith(("harness.", "host.")) for f in _findings(tests))
    assert gpu.contexts == {1}
