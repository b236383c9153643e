"""Where an Ascend chip's memory, compute and transfer handles come from: an NPU runtime module.

The rack config's ``npu_runtime`` names a module and its arguments, like a command line
(``"drivers.ascend.torch_npu"``, the default: torch + torch_npu on the ``npu`` device; the CI
simulator: ``"fixtures.ascend.npu_runtime_sim --state sim_state.json"``). The module defines
``open_runtime(where, args) -> NpuRuntime``; ``where`` says which chip (npu_id, chip_id,
logic_id, pci_bus_id). Opening it raises BackendUnavailable when the runtime is not installed
(the message says what to install): the device then offers no such handles and the stages that
need them say "not tested: install ...".
"""

from __future__ import annotations

import importlib
import shlex
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from drivers.api import BackendUnavailable, Clock

DEFAULT_RUNTIME = "drivers.ascend.torch_npu"
KINDS = ("memory", "compute", "transfer")


class NpuRuntime(ABC):
    """The handles of one chip. ``clock`` is the runtime's own clock when it runs on simulated
    time (the CI simulator), None on hardware (wall time)."""

    clock: Clock | None = None

    @abstractmethod
    def handle(self, kind: str) -> Any:
        """The ``kind`` handle ("memory", "compute", "transfer"); built on first use."""

    def stressed(self, seconds: float) -> None:  # noqa: B027 - optional hook
        """A vendor tool held the chip under stress for ``seconds``: a runtime on simulated time
        moves its clock on; on hardware the tool took that long and there is nothing to do."""

    def release(self) -> None:  # noqa: B027 - optional hook
        """Free what the handles hold (the memory scan takes nearly all of the HBM)."""

    def close(self) -> None:
        self.release()


def runtime_argv(spec: str, config_dir: str | Path | None) -> list[str]:
    """The module name and its arguments; file arguments relative to the config resolved."""
    try:
        argv = shlex.split(spec)
    except ValueError as e:
        raise BackendUnavailable(f"ascend: npu_runtime {spec!r}: {e}") from None
    if not argv:
        raise BackendUnavailable("ascend: npu_runtime is empty")
    if config_dir is not None:
        for i, a in enumerate(argv[1:], 1):
            cand = Path(config_dir) / a
            if not a.startswith("-") and not Path(a).is_absolute() and cand.exists():
                argv[i] = str(cand.resolve())
    return argv


def open_runtime(argv: list[str], where: dict[str, Any]) -> NpuRuntime:
    """Import the runtime module and open the chip; BackendUnavailable says what is missing."""
    name = argv[0]
    try:
        mod = importlib.import_module(name)
    except ImportError as e:
        raise BackendUnavailable(f"NPU runtime module {name!r} does not import: {e}") from None
    opener = getattr(mod, "open_runtime", None)
    if opener is None:
        raise BackendUnavailable(f"NPU runtime module {name!r} has no open_runtime(where, args)")
    rt = opener(where, argv[1:])
    if not isinstance(rt, NpuRuntime):
        raise BackendUnavailable(f"NPU runtime module {name!r}: open_runtime returned {type(rt).__name__}")
    return rt
