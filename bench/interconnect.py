"""What the interconnect stage costs on mock boards: wall time of one stage over 2, 4 and 8 H100s
with the standard plan's parameters (every ordered pair copied and verified, a 60 s simulated
load, an all-reduce), in-process, and how that grows with the board (pairs grow as n(n-1)).

Not a test: run by hand, ``python bench/interconnect.py``. The stage runs on simulated time, so
the wall time is the harness's own work per pair, not the board's.
"""

from __future__ import annotations

import time

from drivers.mock import MockBackend
from drivers.profiles import load_profile
from stress.hoststage import HostCard, HostContext
from stress.interconnect.stage import InterconnectParams, InterconnectStage


def run(n: int, params: InterconnectParams) -> float:
    b = MockBackend()
    prof = load_profile("h100-sxm5-80gb")
    cards = [HostCard(f"h/{i}", i, f"S{i}", b.open({"backend": "mock", "slot": i, "serial": f"S{i}",
                                                    "profile": prof.name, "memory_mib": 1, "seed": None,
                                                    "faults": [], "host": "h"}), prof) for i in range(n)]
    t0 = time.perf_counter()
    res = InterconnectStage().run_host(HostContext("h", cards, params))
    wall = time.perf_counter() - t0
    assert all(t.status == "pass" for t in res.tests.values()), "a healthy board must pass"
    return wall


def main() -> None:
    std = InterconnectParams(copy_mib=256, repeats=5, load_s=60, allreduce_mib=1024, allreduce_repeats=3)
    base = None
    for n in (2, 4, 8):
        walls = sorted(run(n, std) for _ in range(3))
        base = base or walls[1]
        print(f"{n} cards ({n * (n - 1)} ordered pairs): median {walls[1] * 1e3:.1f} ms, "
              f"{walls[1] / base:.1f}x the 2-card board")


if __name__ == "__main__":
    main()
