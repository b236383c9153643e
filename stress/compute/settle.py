"""When the burn's hot phase has seen enough: statistics, a settled die, a steady throughput.

The hot phase exists to check products on a die at its working temperature: heat-dependent
errors need a hot die, and throughput is judged where it settles. It has seen enough when all of:

- **products**: at least ``products_min`` verified products (the statistics: an error every N
  products, N <= products_min, is seen at least once), every datatype in turn;
- **a settled die**: over the last window ``W`` under load the die's fitted drift is within
  ``delta_c``. ``W`` is one thermal time constant (the soak's fitted tau where it measured one,
  else the profile's), at least ``window_min_s``: a first-order die that rises less than delta in
  one time constant is within ``delta / (1 - 1/e)``, about 1.6 delta, of where it settles;
- **a steady throughput**: every datatype's rate over the second half of that window is within
  ``rate_tol`` of its rate over the first half (a throttle taking hold would move it).

Until then it runs, at most the plan's ``duration_s`` (stop reason ``limit``). On a card whose
products are tiny (a mock), products are paced over the time the die is expected to take to
settle (``horizon_s``: one window from a die already hot, longer from a cold one), so the phase
runs about ``products_min`` products whichever way it starts; the stop rule does not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.api import Telemetry
from stress.settle import drift_over


@dataclass
class BurnSettle:
    window_s: float
    horizon_s: float = 0.0  # when the die is expected to have settled: products are paced over it
    delta_c: float = 1.0
    rate_tol: float = 0.05
    why: str = ""
    _t: list[float] = field(default_factory=list)
    _temp: list[float] = field(default_factory=list)
    _batches: list[tuple[float, str, float, float]] = field(default_factory=list)  # (end, dtype, flops, seconds)

    def add_sample(self, s: Telemetry) -> None:
        if s.temperature_c is not None:
            self._t.append(s.time_s)
            self._temp.append(s.temperature_c)

    def add_batch(self, end_s: float, dtype: str, flops: float, seconds: float) -> None:
        self._batches.append((end_s, dtype, flops, seconds))

    def settled(self, now: float) -> bool:
        drift = drift_over(self._t, self._temp, self.window_s)
        if drift is None or abs(drift) > self.delta_c:
            return False
        mid, start = now - self.window_s / 2, now - self.window_s
        worst = 0.0
        for dtype in sorted({d for _, d, _, _ in self._batches}):
            halves = [(0.0, 0.0), (0.0, 0.0)]
            for end, d, flops, secs in self._batches:
                if d == dtype and end > start:
                    h = int(end > mid)
                    halves[h] = (halves[h][0] + flops, halves[h][1] + secs)
            if any(secs <= 0 for _, secs in halves):
                return False  # a datatype with no product in half the window: not yet seen steady
            first, second = (f / s for f, s in halves)
            worst = max(worst, abs(second / first - 1.0))
        if worst > self.rate_tol:
            return False
        self.why = (f"die drifted {drift:+.2f} °C over the last {self.window_s:.0f} s (within {self.delta_c:g}); "
                    f"throughput steady within {worst:.1%} across that window")
        return True
