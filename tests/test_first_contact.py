"""The first-contact script and the ``[cuda]`` extra, on a machine without a GPU."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_first_contact_says_no_gpu_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from bench import first_contact

    monkeypatch.setitem(sys.modules, "pynvml", None)  # as on a host without the NVIDIA driver
    assert first_contact.main(["--out", str(tmp_path / "fc")]) == 3
    err = capsys.readouterr().err.strip()
    assert err == "first_contact: no NVIDIA GPU here (NVML does not start)"
    assert not (tmp_path / "fc").exists()


def test_the_cuda_extra_installs_what_cupy_needs_to_run() -> None:
    """CuPy 14 alone fails on a host with only the driver: ``libcublasLt.so.12`` (the burn) and
    NVRTC (every kernel) come from their wheels or ``[ctk]``; nothing uses cuRAND (the operands
    come from burnin's own kernel)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = " ".join(extras["cuda"])
    assert "cupy-cuda12x" in names
    if "cupy-cuda12x[ctk]" not in names:
        for lib in ("nvidia-cublas-cu12", "nvidia-cuda-nvrtc-cu12"):
            assert lib in names, lib
    assert extras["kernels"] == ["nvidia-cuda-nvrtc-cu12>=12.8"]  # what CI compiles the kernels with
    for path in (ROOT / "drivers" / "cuda").glob("*.py"):
        assert "cp.random" not in path.read_text(), path


def test_the_gpu_benches_run_on_the_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/memscan.py's and bench/burn.py's CUDA paths (what first contact measures) run end to end."""
    from bench import burn, memscan
    from drivers.cuda import errors
    from tests import fake_cupy

    monkeypatch.setattr(errors, "_POISONED", {})
    gpus = fake_cupy.install(monkeypatch, 2, total=1 << 30)
    scan, march, copy = memscan.gpu(1 << 20, 2, 1)
    assert scan > 0 and march > 0 and copy > 0
    out = burn.cuda(1, "bf16", size=64, products=4, rounds=2)
    assert (out["dtype"], out["size"], out["products"], out["wrong_elements"]) == ("bf16", 64, 8, 0)
    assert out["ratio"] > 0 and out["goal"] == 0.95
    assert gpus.contexts == {1} and gpus.pending() == []


def test_a_quick_pass_counts_only_when_no_finding_is_the_harness_s_own() -> None:
    from bench.first_contact import quick_card

    card = {"serial": "1", "model": "NVIDIA H200", "verdict": "pass", "tests": [{"duration_s": 30.0}],
            "findings": [{"code": "memory.coverage_low", "severity": "warn"}]}
    assert quick_card(card)["ok"] is True
    card["findings"].append({"code": "host.driver_old", "severity": "warn"})  # the H200's every-run warning
    assert quick_card(card)["ok"] is False and quick_card(card)["harness_or_host_findings"] == ["host.driver_old"]
