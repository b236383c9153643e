"""When a stage that waits on physics has seen enough: the shared tests behind each stop rule.

A soak, a burn and a counter watch used to run for a fixed time; the physics usually settles
sooner (an H200's die settles in seconds, the plan waited 150 s). Each such stage now keeps its
fixed time as an upper bound and stops as soon as its own criterion holds, saying why in its
metrics as ``stop_reason``:

- ``settled``: the quantity it waits on has settled (a temperature, a fitted asymptote, a rate);
- ``decided``: counts already decide a rate against its limit either way (the health watch);
- ``limit``: the plan's time ran out first (the old behaviour; what it measured is judged as before);
- ``fixed``: the plan asked for the full time (``stop_early = false``).

The criteria themselves live with their stages (``stress/thermal/settle.py``, the burn's
``stress/compute/settle.py``, the health watch); here are the pieces they share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

StopReason = Literal["settled", "decided", "limit", "fixed"]


def slope_per_s(times: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of ``values`` over ``times`` (units per second); None with fewer
    than 3 points or no spread in time. A slope, not a difference of two readings: sensor noise
    and a 1 °C quantum do not make a flat curve look like a rising one."""
    n = len(times)
    if n < 3 or n != len(values):
        return None
    mt, mv = sum(times) / n, sum(values) / n
    var = sum((t - mt) ** 2 for t in times)
    if var <= 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in zip(times, values, strict=True)) / var


def drift_over(times: Sequence[float], values: Sequence[float], window_s: float) -> float | None:
    """How much the value moved (fitted slope x window) over the last ``window_s``; None until
    the readings span that window with at least 3 points in it."""
    if not times or times[-1] - times[0] < window_s - 1e-9:
        return None
    start = times[-1] - window_s
    pts = [(t, v) for t, v in zip(times, values, strict=True) if t >= start - 1e-9]
    s = slope_per_s([t for t, _ in pts], [v for _, v in pts])
    return None if s is None else s * window_s


def _poisson_cdf(k: int, lam: float) -> float:
    """P(N <= k) for N ~ Poisson(lam), summed in logs (k up to a few thousand)."""
    if k < 0:
        return 0.0
    if lam <= 0:
        return 1.0
    log_term = -lam
    total = math.exp(log_term)
    for i in range(1, k + 1):
        log_term += math.log(lam) - math.log(i)
        total += math.exp(log_term)
    return min(1.0, total)


def _bisect(below: Callable[[float], bool], hi: float) -> float:
    """The boundary in [0, hi] of a monotone predicate true below it."""
    lo = 0.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if below(mid) else (lo, mid)
    return (lo + hi) / 2


def count_upper(k: int, alpha: float = 0.05) -> float:
    """The largest Poisson mean consistent with seeing at most ``k`` counts (one-sided 1-alpha):
    with none seen, 3.0 at 95 %."""
    return _bisect(lambda lam: _poisson_cdf(k, lam) > alpha, 10.0 * k + 30.0)


def count_lower(k: int, alpha: float = 0.05) -> float:
    """The smallest Poisson mean consistent with seeing at least ``k`` counts (one-sided 1-alpha)."""
    if k <= 0:
        return 0.0
    return _bisect(lambda lam: _poisson_cdf(k - 1, lam) > 1.0 - alpha, 10.0 * k + 30.0)
