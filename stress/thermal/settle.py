"""When the soak has seen enough: the die has settled, or is clamped at its slowdown point.

The soak waits on one physical process, the die heating towards ``inlet + power x theta``. It
has settled when both hold:

- at least ``settle_taus`` fitted time constants have passed under load (3: the transient is
  down to 5 % of the rise, and the judge projects that last 5 % with the fitted curve), and
- the fitted asymptote has stopped moving: the fit now and the fit at least one time constant
  (and one sample) earlier agree within ``settle_tol_c``. A fit made too early (too few points,
  the wrong tau) moves as points arrive; a right one does not. A slow second pole (heatsink,
  chassis air) that creeps by less than the tolerance per time constant is left out; its share
  of theta is below ``settle_tol_c / power`` (0.001 °C/W at 500 W, a tenth of the band's margin).

A die that throttles for heat is clamped at its slowdown point: the first-order curve ends there
and the judge reads theta from the clamped tail, so the soak has seen enough once the clamped
temperature is flat (its fitted drift over the last ``plateau_samples`` within the tolerance).
A die that starts within ``MIN_FIT_RISE_C`` of its steady state shows no curve to fit: flat
counts as settled. Fewer than ``min_samples`` readings never settle (a fit needs points).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from drivers.api import THERMAL_THROTTLES, Telemetry
from stress.settle import drift_over
from stress.thermal.fit import MIN_FIT_RISE_C, Fit, fit_first_order


@dataclass
class SoakSettle:
    """Fed every soak sample (the first one at load start); ``settled()`` says whether to stop."""

    settle_taus: float = 3.0
    settle_tol_c: float = 0.5
    min_samples: int = 6
    plateau_samples: int = 3
    why: str = ""  # what decided, for the stage's metrics
    _t: list[float] = field(default_factory=list)
    _temp: list[float] = field(default_factory=list)
    _clamped: list[bool] = field(default_factory=list)
    _fits: list[tuple[float, Fit]] = field(default_factory=list)  # (time of the last point, fit)

    def add(self, s: Telemetry) -> None:
        if s.temperature_c is None:
            return
        self._t.append(s.time_s)
        self._temp.append(s.temperature_c)
        self._clamped.append(bool(s.throttle & THERMAL_THROTTLES))

    def settled(self) -> bool:
        n = len(self._t)
        if n < self.min_samples:
            return False
        if any(self._clamped):
            return self._plateau()
        fit = fit_first_order(np.array(self._t), np.array(self._temp))
        if fit is None:
            return False
        now = self._t[-1]
        self._fits.append((now, fit))
        if abs(fit.amplitude) < MIN_FIT_RISE_C:
            drift = drift_over(self._t, self._temp, now - self._t[max(0, n - self.plateau_samples)])
            if drift is not None and abs(drift) <= self.settle_tol_c:
                self.why = f"no heating curve (within {MIN_FIT_RISE_C:g} °C of steady state) and flat"
                return True
            return False
        elapsed = now - self._t[0]
        if elapsed < self.settle_taus * fit.tau:
            return False
        earlier = [(t, f) for t, f in self._fits[:-1] if now - t >= max(fit.tau, 1e-9)]
        if not earlier:
            return False
        t_prev, prev = earlier[-1]
        moved = abs(fit.t_inf - prev.t_inf)
        if moved > self.settle_tol_c:
            return False
        self.why = (f"{elapsed:.0f} s >= {self.settle_taus:g} x tau {fit.tau:.1f} s; asymptote {fit.t_inf:.1f} °C "
                    f"moved {moved:.2f} °C since {now - t_prev:.0f} s earlier (tolerance {self.settle_tol_c:g})")
        return True

    def _plateau(self) -> bool:
        """Clamped at the slowdown point: flat over the last samples since the clamp began."""
        first = self._clamped.index(True)
        t, temp = self._t[first:], self._temp[first:]
        if len(t) < self.plateau_samples:
            return False
        drift = drift_over(t, temp, t[-1] - t[-self.plateau_samples])
        if drift is None or abs(drift) > self.settle_tol_c:
            return False
        self.why = f"clamped at its slowdown point ({temp[-1]:.1f} °C) and flat over {len(t)} samples"
        return True
