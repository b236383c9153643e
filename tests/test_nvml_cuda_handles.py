"""NVIDIA cards get device memory, compute and transfer handles from the CUDA path when CuPy is
installed, and none (stages skipped, not errors) when it is not."""

from __future__ import annotations

import sys

import pytest

from drivers import registry
from tests.test_nvml_backend import open_first, snap


def test_without_cupy_the_handles_are_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)
    for kind in ("memory", "compute", "transfer"):
        monkeypatch.delitem(registry._HANDLES, ("cuda", kind), raising=False)
    _fake, dev = open_first(monkeypatch, snap("h100-sxm5-synthetic.json"))
    assert dev.memory is None and dev.compute is None and dev.transfer is None


def test_registered_cuda_handles_are_built_for_the_card_by_bus_id_and_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, dict]] = []

    class Handle:
        def __init__(self, kind: str, where: dict) -> None:
            built.append((kind, where))
            self.closed = False

        def close(self) -> None:
            self.closed = True

    for kind in ("memory", "compute", "transfer"):
        monkeypatch.setitem(registry._HANDLES, ("cuda", kind), lambda i, k=kind: Handle(k, i))
    _fake, dev = open_first(monkeypatch, snap("h100-sxm5-synthetic.json"))
    mem = dev.memory
    assert dev.memory is mem  # built once per session
    assert dev.compute is not None and dev.transfer is not None
    # the CUDA side is told where the card is, by PCI bus id and UUID, not only the NVML index
    where = {"index": 0, "uuid": "GPU-3c5e1d9a-7f42-4b8e-9a61-2d0f8c7b5e13", "pci_bus_id": "00000000:18:00.0"}
    assert sorted(k for k, _ in built) == ["compute", "memory", "transfer"]
    assert all(w == where for _, w in built)
    dev.release_handles()  # after a stage: the memory scan's hold on GPU memory is let go
    assert mem.closed and dev.memory is not mem
    mem2 = dev.memory
    dev.close()
    assert mem2.closed
