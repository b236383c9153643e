"""PCIe link physics shared by every backend and stage: what a link of a given gen and width carries.

Kept apart from any backend so a stage (which may import only the device API and neutral
helpers) and the mock's copy model use one table: a stage that judged copies against a
different rate than the simulator produces would fail healthy cards.
"""

from __future__ import annotations

# PCIe generation -> (GT/s per lane, line-code efficiency). Gen1-2: 8b/10b; Gen3-5: 128b/130b;
# Gen6: PAM4 with 242/256 FLIT framing. Source: PCI-SIG base specifications.
LINK_RATES: dict[int, tuple[float, float]] = {
    1: (2.5, 8 / 10),
    2: (5.0, 8 / 10),
    3: (8.0, 128 / 130),
    4: (16.0, 128 / 130),
    5: (32.0, 128 / 130),
    6: (64.0, 242 / 256),
}


def link_gbps(gen: int | None, width: int | None) -> float:
    """Raw payload rate of a link in GB/s (after line coding, before protocol overhead); 0 if unknown."""
    if gen is None or width is None or gen not in LINK_RATES or width <= 0:
        return 0.0
    gts, enc = LINK_RATES[gen]
    return gts * enc * width / 8.0


def link_label(gen: int | None, width: int | None) -> str:
    """The finding location key of a link (``gen4x16``), so findings on one link de-duplicate."""
    return f"gen{gen}x{width}"
