"""Host<->device copies on a simulated card, timed from the trained PCIe link.

The bandwidth a copy gets is what the link *as trained* carries: lanes x per-lane transfer rate x
line-code efficiency, times the DMA/protocol efficiency real cards reach with large pinned copies
(about 80 %: a Gen4 x16 card moves ~25 GB/s, a Gen5 x16 card ~50 GB/s, which is what the profiles'
``h2d_bandwidth`` says). A ``pcie.downtrained`` fault trains the link narrower or slower, so copies
slow down in proportion. Each copy advances the card's simulated time (nothing sleeps), so the
replay counter of a ``pcie.replays`` fault grows while the copies run.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from drivers.api import PcieLink, TransferHandle
from drivers.mock.physics import CardPhysics
from drivers.pcie import link_gbps

DMA_EFFICIENCY = {"h2d": 0.80, "d2h": 0.80}  # large pinned copies on real cards (TLP headers, DLLPs)
COPY_LATENCY_S = 10e-6  # launch + completion of one copy
BANDWIDTH_NOISE = 0.01  # copy-to-copy spread (1 sigma)
TRANSFER_INTENSITY = 0.1  # copy engines and memory busy, SMs idle: what the physics sees meanwhile


class BusCard(Protocol):
    """What copies need of the card (``MockDevice`` provides it). Named here rather than importing
    the device, which builds this handle: the two modules import one way only."""

    serial: str
    seed: int
    physics: CardPhysics

    def guard(self) -> None: ...

    def pcie_link(self) -> PcieLink: ...


class MockTransfer(TransferHandle):
    """Timed copies over the mock card's trained link; every call goes through the bus guard."""

    def __init__(self, device: BusCard) -> None:
        self._dev = device
        self._rng = np.random.default_rng([device.seed & 0xFFFFFFFF, 0x7C1E])

    def _link(self) -> PcieLink:
        return self._dev.pcie_link()

    def bandwidth_gbps(self, direction: str) -> float:
        """Mean rate a large copy gets on the link as trained now."""
        link = self._link()
        return link_gbps(link.gen, link.width) * DMA_EFFICIENCY[direction]

    def _copy(self, nbytes: int, direction: str) -> float:
        self._dev.guard()
        if isinstance(nbytes, bool) or not isinstance(nbytes, int | np.integer) or nbytes <= 0:
            raise ValueError(f"{self._dev.serial}: transfer size must be a positive byte count, got {nbytes!r}")
        bw = self.bandwidth_gbps(direction)
        if bw <= 0:
            raise ValueError(f"{self._dev.serial}: PCIe link has no usable bandwidth ({self._link()})")
        bw *= max(0.5, 1.0 + float(self._rng.normal(0.0, BANDWIDTH_NOISE)))
        seconds = COPY_LATENCY_S + int(nbytes) / (bw * 1e9)
        self._dev.physics.advance(seconds, TRANSFER_INTENSITY)
        self._dev.guard()  # the card may have left the bus during the copy
        return seconds

    def host_to_device(self, nbytes: int) -> float:
        return self._copy(nbytes, "h2d")

    def device_to_host(self, nbytes: int) -> float:
        return self._copy(nbytes, "d2h")
