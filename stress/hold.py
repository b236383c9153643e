"""Holding a card under load while sampling it: the loop the power and thermal stages share.

Both hold full load for a stretch of device time and read telemetry between steps; one loop
keeps their step lengths (the last step is cut to end exactly on time) and their progress alike.
"""

from __future__ import annotations

from collections.abc import Iterator

from drivers.api import ComputeHandle, Telemetry
from stress.base import StageContext

EPS_S = 1e-9  # a hold that ends within this of its length is complete (float steps)


def hold_load(ctx: StageContext, compute: ComputeHandle, seconds: float, interval_s: float, intensity: float,
              tag: str, message: str) -> Iterator[Telemetry]:
    """Load the card for ``seconds`` in steps of at most ``interval_s``, yielding a recorded sample
    after each step; progress is reported once the caller has handled the sample."""
    held = 0.0
    while held < seconds - EPS_S:
        step = min(interval_s, seconds - held)
        compute.load(step, intensity)
        held += step
        yield ctx.sample(tag)
        ctx.progress(held / seconds, message)

