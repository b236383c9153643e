"""The tests' pynvml: the NVML replay module (drivers/nvml_replay.py), which serves a recorded
snapshot, plus the steering only tests need (init that fails, a card lost, XIDs queued, answers
changed), kept out of the shipped module. Every other name is the replay module's own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from drivers import nvml_replay
from drivers.nvml_replay import FakeNvml


class SteeredNvml(FakeNvml):
    """A replayed host the test can change while the backend reads it."""

    def fail_init(self, error: str = "NVML_ERROR_LIBRARY_NOT_FOUND") -> None:
        self.init_error = error

    def lose(self, index: int, error: str = "NVML_ERROR_GPU_IS_LOST", vanish: bool = False) -> None:
        """From now on every call on card ``index`` raises ``error``; ``vanish`` also drops it from
        enumeration (the driver no longer lists it, so a lookup by UUID is NOT_FOUND)."""
        self.lost[index] = error
        if vanish:
            self.vanished.add(index)

    def queue_xid(self, index: int, code: int) -> None:
        self.queues[index].append((nvml_replay.nvmlEventTypeXidCriticalError, code))

    def set_answer(self, index: int, key: str, value: Any) -> None:
        self.devices[index]["calls"][key] = value


def load(snapshot: dict[str, Any], strict: bool = True) -> SteeredNvml:
    host = nvml_replay.load(snapshot, strict, host=SteeredNvml)
    assert isinstance(host, SteeredNvml)
    return host


def install(monkeypatch: Any, snapshot: dict[str, Any] | str | Path) -> SteeredNvml:
    """Put the replay module in ``sys.modules["pynvml"]`` (undone by monkeypatch) serving ``snapshot``."""
    monkeypatch.setitem(sys.modules, "pynvml", nvml_replay)
    return load(snapshot if isinstance(snapshot, dict) else nvml_replay.read_snapshot(snapshot))


def __getattr__(name: str) -> Any:  # PEP 562: everything else is the replay module's
    return getattr(nvml_replay, name)
