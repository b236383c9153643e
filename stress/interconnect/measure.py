"""What the interconnect stage measures on one board, in the order the reference gives
(../shared/reference/interconnect.md section 0): the read-only inventory (links, fabric), the host
gates (peer access), verified copies between every ordered pair, a sustained load over every link,
the inventory again (counter deltas), then an all-reduce. Nothing here judges: ``localise`` does.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.api import (
    Collective,
    DeviceError,
    DeviceLost,
    HostUnfit,
    LinkReport,
    PeerGroup,
    Unsupported,
)
from drivers.profiles import LinksSpec
from drivers.units import MIB
from stress.hoststage import HostCard

Progress = Callable[[float, str], None]


@dataclass
class BoardData:
    """Everything measured on one board; index ``i`` is ``cards[i]`` throughout."""

    spec: LinksSpec
    cards: list[HostCard]
    before: list[LinkReport | None]
    after: list[LinkReport | None] = field(default_factory=list)
    unreadable: dict[int, str] = field(default_factory=dict)  # card -> why its links could not be read
    access: list[list[bool | None]] = field(default_factory=list)
    gbps: list[list[float | None]] = field(default_factory=list)
    bad: list[list[int]] = field(default_factory=list)
    first_bad: list[list[int | None]] = field(default_factory=list)
    paths: list[list[str]] = field(default_factory=list)
    load_bytes: int = 0
    load_s: float = 0.0
    allreduce: Collective | None = None
    not_tested: dict[str, str] = field(default_factory=dict)  # what -> why (peer copies, all-reduce)
    lost: dict[int, str] = field(default_factory=dict)  # card -> why it stopped answering
    trouble: str | None = None  # a device error that stopped the data tests

    @property
    def n(self) -> int:
        return len(self.cards)

    def pairs(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.n) for j in range(self.n) if i != j]

    def median_gbps(self) -> float | None:
        vals = [v for row in self.gbps for v in row if v is not None]
        return statistics.median(vals) if vals else None


def _read_links(card: HostCard) -> LinkReport | None:
    return card.device.links()


def read_inventory(data: BoardData, into: list[LinkReport | None]) -> None:
    """Each card's links now; a card that cannot be read says why, a lost one is set aside."""
    into.clear()
    for i, c in enumerate(data.cards):
        rep: LinkReport | None = None
        if i not in data.lost:
            try:
                rep = _read_links(c)
                if rep is None:
                    data.unreadable.setdefault(i, c.device.unavailable("links") or
                                               f"the {c.device.backend} backend cannot read links")
            except DeviceLost as e:
                data.lost[i] = str(e)
            except DeviceError as e:
                data.unreadable[i] = str(e)
        into.append(rep)


def measure_board(data: BoardData, group: PeerGroup | None, why_no_group: str, copy_mib: float, repeats: int,
                  load_s: float, allreduce_mib: float, allreduce_repeats: int, allreduce_timeout_s: float,
                  progress: Progress) -> None:
    """Access, copies, load, inventory again, all-reduce: fills ``data`` (never raises a device error)."""
    n = data.n
    data.access = [[i == j or None for j in range(n)] for i in range(n)]
    data.gbps = [[None] * n for _ in range(n)]
    data.bad = [[0] * n for _ in range(n)]
    data.first_bad = [[None] * n for _ in range(n)]
    data.paths = [[""] * n for _ in range(n)]
    if group is None:
        data.not_tested["peer copies"] = why_no_group
        data.not_tested["all-reduce"] = why_no_group
        progress(0.8, "no peer path: links read only")
        data.after = list(data.before)  # no load ran: nothing to compare counters over
        return
    try:
        for i, j in data.pairs():
            data.access[i][j] = group.access(i, j)
        if not any(data.access[i][j] for i, j in data.pairs()):
            return  # a host gate: nothing to copy over (localise says whose)
        nbytes = max(1, int(copy_mib * MIB))
        for k, (i, j) in enumerate(data.pairs()):
            if not data.access[i][j]:
                continue
            cp = group.copy(i, j, nbytes, repeats)
            data.gbps[i][j], data.bad[i][j], data.first_bad[i][j], data.paths[i][j] = (
                cp.gbps, cp.bad_words, cp.first_bad, cp.path)
            progress(0.1 + 0.5 * (k + 1) / len(data.pairs()), f"copies {k + 1}/{len(data.pairs())}")
        progress(0.6, f"load over every link for {load_s:g} s")
        data.load_bytes, data.load_s = group.load(load_s), load_s
        read_inventory(data, data.after)
        progress(0.85, "all-reduce")
        try:
            data.allreduce = group.all_reduce(max(1, int(allreduce_mib * MIB)), allreduce_repeats, allreduce_timeout_s)
        except Unsupported as e:
            data.not_tested["all-reduce"] = str(e)
        except HostUnfit as e:
            data.not_tested["all-reduce"] = str(e)
    except DeviceLost as e:
        _lost_during(data, e)
    except (DeviceError, HostUnfit) as e:
        data.trouble = f"{type(e).__name__}: {e}"


def _lost_during(data: BoardData, err: DeviceLost) -> None:
    """A card stopped answering during the data tests: find which (each is asked once)."""
    for i, c in enumerate(data.cards):
        try:
            c.device.identity()
            c.device.telemetry()
        except DeviceLost as e:
            data.lost[i] = str(e)
        except DeviceError:
            pass
    if not data.lost:
        data.trouble = f"DeviceLost: {err}"
