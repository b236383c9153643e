"""The links of a mock card and the board its host makes of them (docs/mock-faults.md, Interconnect).

A healthy board moves 0.80-0.88 of the nominal per-direction bandwidth between each pair (seeded
per pair and direction, from the profile's ``sim_fraction_min/max``), its error counters stay at
0 and peer copies are exact. A card's bandwidth to every peer falls by the share of its links
that are down (``link.down``, ``board.link`` down) or slowed (``link.degraded`` at its
``bandwidth_fraction``); a degraded link's replay and CRC counters grow at ``errors_per_s`` for
every second of traffic; ``p2p.corrupt`` flips one bit every ``every_bytes`` bytes through the
card. Host faults act on the whole board: ``host.p2p_blocked`` refuses peer access (copies are
staged through host memory at PCIe speed), ``fabric.manager_down`` leaves the NVSwitch fabric
unregistered (no NVLink P2P either). Everything runs on each card's simulated clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from drivers.api import (
    Collective,
    DeviceError,
    FabricState,
    LinkReport,
    LinkState,
    PeerCopy,
    PeerGroup,
)
from drivers.mock import faults as F
from drivers.mock.board import BoardLink, FabricManagerDown, HostP2pBlocked, board_key


class MockDevice(Protocol):
    """What the board needs of a mock card (drivers/mock/device.py's MockDevice), named here so
    this module does not import the device that imports it."""

    profile: Any
    faults: list[Any]
    host_faults: list[Any]
    seed: int
    slot: int
    link_traffic_s: float
    physics: Any

    @property
    def transfer(self) -> Any: ...

    def guard(self) -> None: ...

NVSWITCHES = 4  # NVSwitch chips on an HGX Hopper baseboard: the far end of each NVLink
HOST_STAGING = 0.5  # a copy staged through host memory crosses PCIe twice
COPY_LATENCY_S = 8e-6
LOAD_INTENSITY = 0.15  # copy engines busy, SMs idle: what the physics sees during a link load


@dataclass(frozen=True)
class LinkFault:
    """One link's fault on this card, from the card (``link.*``) or its slot (``board.link``)."""

    link: int
    down: bool
    fraction: float  # bandwidth fraction while up
    errors_per_s: float
    source: str  # "card" | "board"


def link_faults(dev: MockDevice) -> dict[int, LinkFault]:
    """The card's faulty links by index; a board fault of its slot counts as the card's while it sits there."""
    out: dict[int, LinkFault] = {}
    for f in dev.faults:
        if isinstance(f, F.LinkDown):
            out[f.link] = LinkFault(f.link, True, 0.0, 0.0, "card")
        elif isinstance(f, F.LinkDegraded):
            out[f.link] = LinkFault(f.link, False, f.bandwidth_fraction, f.errors_per_s, "card")
    for h in dev.host_faults:
        if isinstance(h, BoardLink) and h.slot == dev.slot:
            down = h.state == "down"
            out[h.link] = LinkFault(h.link, down, 0.0 if down else h.bandwidth_fraction,
                                    0.0 if down else h.errors_per_s, "board")
    return out


def card_fraction(dev: MockDevice) -> float:
    """The share of the card's nominal link bandwidth its links carry now (1.0: all healthy)."""
    lk = dev.profile.links
    if lk is None:
        return 0.0
    faults = link_faults(dev)
    total = sum(0.0 if (f := faults.get(i)) is not None and f.down else (f.fraction if f else 1.0)
                for i in range(lk.count))
    return total / lk.count


def _has(dev: MockDevice, kind: type) -> bool:
    return any(isinstance(h, kind) for h in dev.host_faults)


def link_report(dev: MockDevice) -> LinkReport | None:
    """What the card's link reader says now; None for a card without links (no reader)."""
    lk = dev.profile.links
    if lk is None:
        return None
    faults = link_faults(dev)
    traffic = dev.link_traffic_s
    links = []
    for i in range(lk.count):
        f = faults.get(i)
        errors = int(f.errors_per_s * traffic) if f is not None and not f.down else 0
        if lk.fabric == "nvswitch":
            remote, kind = f"nvswitch{i * NVSWITCHES // lk.count}", "switch"
        else:
            remote, kind = None, "npu"  # the i-th peer of the mesh: the stage maps it
        up = not (f is not None and f.down)
        speed = lk.speed * (f.fraction if f is not None and up else 1.0) if up else None
        counters: dict[str, int | None] = (
            {"replay": errors, "recovery": 0, "crc_flit": errors, "crc_data": 0} if lk.kind == "nvlink"
            else {"crc": errors, "retransmit": errors})
        links.append(LinkState(index=i, up=up, speed_gbps=speed, version=lk.version, remote=remote,
                               remote_kind=kind, counters=counters))
    fabric = None
    if lk.fabric == "nvswitch":
        fabric = (FabricState("not_started", detail="the fabric manager is not running")
                  if _has(dev, FabricManagerDown) else FabricState("completed", "success", degraded=False))
    return LinkReport(kind=lk.kind, links=tuple(links), counter_family="dl" if lk.kind == "nvlink" else "hccs",
                      fabric=fabric)


class MockPeers(PeerGroup):
    """Mock cards of one host opened together: the board's physics between them."""

    def __init__(self, devices: list[MockDevice]) -> None:
        self.devs = devices
        self._moved = [0] * len(devices)  # bytes through each card, for p2p.corrupt

    @property
    def size(self) -> int:
        return len(self.devs)

    def _guard(self, *idx: int) -> list[MockDevice]:
        for i in idx:
            if not 0 <= i < len(self.devs):
                raise DeviceError(f"no card {i} in a peer group of {len(self.devs)}")
        out = [self.devs[i] for i in idx]
        for d in out:
            d.guard()
        return out

    def access(self, src: int, dst: int) -> bool | None:
        a, b = self._guard(src, dst)
        if src == dst:
            return True
        if board_key(a.profile) is None or board_key(a.profile) != board_key(b.profile):
            return False
        return not any(_has(d, HostP2pBlocked) or _has(d, FabricManagerDown) for d in (a, b))

    def _pcie_gbps(self, a: MockDevice, b: MockDevice) -> float:
        return HOST_STAGING * min(a.transfer.bandwidth_gbps("d2h"), b.transfer.bandwidth_gbps("h2d"))

    def _noise(self, a: MockDevice, b: MockDevice, salt: int) -> float:
        lk = a.profile.links
        assert lk is not None
        rng = np.random.default_rng([a.seed & 0xFFFFFFFF, b.seed & 0xFFFFFFFF, salt])
        return float(rng.uniform(lk.sim_fraction_min, lk.sim_fraction_max)) / 100.0

    def pair_gbps(self, src: int, dst: int) -> tuple[float, str]:
        """The rate a large copy ``src -> dst`` gets now, and its path."""
        a, b = self._guard(src, dst)
        if not self.access(src, dst):
            return self._pcie_gbps(a, b), "host"
        lk = a.profile.links
        assert lk is not None
        return lk.pair_gbps * self._noise(a, b, 0x9E37) * min(card_fraction(a), card_fraction(b)), "p2p"

    def _spend(self, seconds: float, who: list[int], traffic: bool) -> None:
        for i in dict.fromkeys(who):
            d = self.devs[i]
            d.physics.advance(seconds, LOAD_INTENSITY)
            if traffic:
                d.link_traffic_s += seconds

    def _corrupt(self, i: int, nbytes: int) -> tuple[int, int | None]:
        """Flipped words among ``nbytes`` more bytes through card ``i``, and the offset of the first."""
        every = min((f.every_bytes for f in self.devs[i].faults if isinstance(f, F.P2pCorrupt)), default=0)
        before = self._moved[i]
        self._moved[i] += nbytes
        if not every:
            return 0, None
        flips = self._moved[i] // every - before // every
        first = (every - before % every) % every if flips else None
        return int(flips), first

    def copy(self, src: int, dst: int, nbytes: int, repeats: int = 3) -> PeerCopy:
        if nbytes <= 0 or repeats < 1:
            raise ValueError("a peer copy needs a positive size and at least one repeat")
        gbps, path = self.pair_gbps(src, dst)
        per = COPY_LATENCY_S + nbytes / (gbps * 1e9)
        self._spend(per * (repeats + 1), [src, dst], traffic=path == "p2p")
        bad, first = 0, None
        for i in {src, dst}:
            n, off = self._corrupt(i, nbytes * repeats)
            bad += n
            if off is not None:
                first = off % nbytes if first is None else min(first, off % nbytes)
        return PeerCopy(seconds=per, nbytes=nbytes, bad_words=bad, first_bad=first, path=path)

    def load(self, seconds: float) -> int:
        n = len(self.devs)
        if n < 2 or seconds <= 0:
            return 0
        moved = 0
        for i in range(n):
            gbps, path = self.pair_gbps(i, (i + 1) % n)
            nbytes = int(gbps * 1e9 * seconds)
            moved += nbytes
            self._corrupt(i, nbytes)
            self._corrupt((i + 1) % n, nbytes)
        self._spend(seconds, list(range(n)), traffic=all(self.access(i, (i + 1) % n) for i in range(n)))
        return moved

    def all_reduce(self, nbytes: int, repeats: int = 3, timeout_s: float = 120.0) -> Collective:
        n = len(self.devs)
        devs = self._guard(*range(n))
        lk = devs[0].profile.links
        assert lk is not None
        if all(self.access(0, j) for j in range(1, n)):
            busbw = lk.per_card_gbps * self._noise(devs[0], devs[-1], 0xA11) * min(card_fraction(d) for d in devs)
        else:  # staged through host memory by the collective library's fallback
            busbw = min(self._pcie_gbps(a, b) for a in devs for b in devs if a is not b)
        algbw = busbw * n / (2 * (n - 1))
        seconds = nbytes / (algbw * 1e9)
        self._spend(seconds * (repeats + 1), list(range(n)), traffic=True)
        wrong = 0
        for i in range(n):
            flips, _ = self._corrupt(i, int(nbytes * 2 * (n - 1) / n) * repeats)
            wrong += flips
        return Collective(seconds=seconds, nbytes=nbytes, ranks=n, wrong=wrong, library="mock")
