"""NVIDIA backend through NVML (nvidia-ml-py, imported as ``pynvml``).

Reads identity, telemetry, error counters and XID events, and drives the card's own fans where the
driver allows it. Memory and compute handles come from a CUDA path elsewhere, so they are None here.

Three rules shape every read:
- "NVML cannot tell" (NOT_SUPPORTED, FUNCTION_NOT_FOUND, NO_PERMISSION) is a value: the field is
  None (``fans_rpm == []`` on a fanless SXM card, ECC fields None on a GeForce card). Any other
  unexpected code (NOT_READY, ARGUMENT_VERSION_MISMATCH, ...) makes that one field "cannot tell"
  too, never the whole read; ``NvmlDevice.unreadable`` keeps what each such call said.
- A card that no longer answers (GPU_IS_LOST; UNKNOWN / NOT_FOUND when a re-lookup of the card by
  UUID also fails; XID 79) is ``DeviceLost``, with a message naming the index and serial.
- ``pynvml`` is imported lazily, so this module imports on hosts without a GPU; without NVML,
  ``discover`` raises ``BackendUnavailable`` (the CLI's exit 3).

The device takes the pynvml module as a parameter, so the recorder (``drivers.nvml_record``) can
wrap it and tests can hand it a fake.
"""

from drivers.nvml.backend import NvmlBackend, NvmlConfig  # noqa: F401 - importing registers the backend
from drivers.nvml.core import (  # noqa: F401
    VALUE_MEMBERS,
    cuda_runtime_version,
    error_name,
    import_pynvml,
    nvml_init,
    nvml_shutdown,
)
from drivers.nvml.device import NvmlDevice  # noqa: F401
from drivers.nvml.fans import NvmlFanControl  # noqa: F401
