"""The heating curve's fit: a first-order die, ``T(t) = T_inf - B exp(-t / tau)``.

A die under constant power heats like a first-order system and settles at ``inlet + power x
theta``. Fitting the curve gives the asymptote (where the die is heading, before it gets there)
and the time constant (how long it takes), which both the judge (theta from a soak that ended
before the die settled) and the stop rule (has it settled?) need. Apart from the stage so each
can be tested, and reused, on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TAU_GRID = 240  # candidate time constants for the fit (log-spaced)
MIN_FIT_RISE_C = 5.0  # a heating curve smaller than this (card already hot) gives no usable tau


@dataclass(frozen=True)
class Fit:
    t_inf: float  # asymptotic temperature, °C
    amplitude: float  # B in T_inf - B exp(-t/tau)
    tau: float  # seconds
    rmse: float

    def transient(self, t: float) -> float:
        """How far below its steady state the die still is, ``t`` seconds into the load."""
        return self.amplitude * math.exp(-t / self.tau)


def _best(t: np.ndarray, temp: np.ndarray, taus: np.ndarray) -> tuple[float, float, float, float]:
    """(sse, A, B, tau) of the best tau on the grid: for each tau the model is linear in (A, B),
    solved in closed form for the whole grid at once (normal equations of a 2-parameter fit)."""
    e = np.exp(-(t - t[0])[None, :] / taus[:, None])  # (taus, points)
    n = float(t.size)
    se, see = e.sum(axis=1), (e * e).sum(axis=1)
    sy, sey = float(temp.sum()), e @ temp
    det = n * see - se * se
    ok = det > 1e-9 * n * see  # a tau so long the curve is a constant: not identifiable
    det = np.where(ok, det, 1.0)
    a = (see * sy - se * sey) / det
    c = (n * sey - se * sy) / det  # = -B
    sse = np.where(ok, ((a[:, None] + c[:, None] * e - temp[None, :]) ** 2).sum(axis=1), np.inf)
    i = int(np.argmin(sse))
    return float(sse[i]), float(a[i]), float(-c[i]), float(taus[i])


def fit_first_order(t: np.ndarray, temp: np.ndarray) -> Fit | None:
    """Least squares ``temp = A - B exp(-t/tau)`` over a log grid of tau, refined once on a finer
    grid around the best. ``None`` with fewer than 4 points."""
    if len(t) < 4 or float(t[-1] - t[0]) <= 0:
        return None
    t = np.asarray(t, dtype=float)
    temp = np.asarray(temp, dtype=float)
    span = float(t[-1] - t[0])
    dt = float(np.min(np.diff(t)))
    coarse = np.geomspace(max(dt / 4, 1e-3), span * 10, TAU_GRID)
    sse0, _, _, tau0 = _best(t, temp, coarse)
    if not math.isfinite(sse0):
        return None
    ratio = float(coarse[1] / coarse[0])
    sse, a, b, tau = _best(t, temp, np.geomspace(tau0 / ratio, tau0 * ratio, 41))
    return Fit(t_inf=a, amplitude=b, tau=tau, rmse=math.sqrt(sse / len(t)))
