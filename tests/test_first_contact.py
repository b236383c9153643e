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
