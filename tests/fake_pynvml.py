"""The tests' name for the NVML replay module (drivers/nvml_replay.py): a faithful stand-in for
pynvml serving a recorded snapshot."""

import sys

from drivers import nvml_replay

sys.modules[__name__] = nvml_replay
