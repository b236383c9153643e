"""Seeded physics of a simulated card: time, heat, power, clocks and fans.

First-order thermal model: the die approaches ``inlet + power x theta_eff`` with the profile's
time constant. ``theta_eff`` is the card's own theta (drawn inside the profile's healthy band,
times a ``thermal.resistance`` factor) scaled by airflow: a paste/conduction share that airflow
does not touch plus a convective share that grows as airflow drops (``airflow ** -0.8``,
the usual forced-convection exponent). Power follows load and clock (~ f^2 as voltage tracks
frequency); at the enforced limit, or at the slowdown temperature, clocks drop to hold it and the
matching throttle reason is reported, as on real cards. Nothing here sleeps: time is simulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from drivers.api import (
    THROTTLE_HW_SLOWDOWN,
    THROTTLE_HW_THERMAL,
    THROTTLE_IDLE,
    THROTTLE_SW_POWER_CAP,
    Clock,
)
from drivers.mock import faults as F
from drivers.profiles import Profile

PASTE_SHARE = 0.35  # part of theta that airflow does not change (die -> paste -> heatsink base)
CONVECTION_EXPONENT = 0.8
MIN_AIRFLOW = 0.05
POWER_CLOCK_EXPONENT = 2.0
FULL_LOAD_FRACTION_OF_TDP = 0.95  # a healthy card at full load draws just under its TDP
MAX_STEP_FRACTION_OF_TAU = 0.1


class SimClock(Clock):
    """Simulated seconds. ``sleep`` lets the card idle for that long (physics advances)."""

    def __init__(self, physics: CardPhysics) -> None:
        self._physics = physics

    def now(self) -> float:
        return self._physics.t

    def sleep(self, seconds: float) -> None:
        self._physics.advance(seconds, 0.0)


@dataclass
class FanState:
    duty_pct: float
    curve_rpm_max: float
    weak_fraction: float | None = None  # fan.weak: capped at this fraction of the curve's max
    stalled: bool = False
    tach_fault: bool = False


@dataclass
class CardPhysics:
    profile: Profile
    rng: np.random.Generator
    faults: list[F.Fault] = field(default_factory=list)
    t: float = 0.0

    def __post_init__(self) -> None:
        p = self.profile
        # card-to-card spread: centred in the healthy band, never outside it
        lo, hi = p.thermal.theta_min, p.thermal.theta_max
        mid = (lo + hi) / 2
        self.theta_card = float(np.clip(self.rng.normal(mid, mid * p.sim.theta_noise / 100.0), lo, hi))
        for f in self.faults:
            if isinstance(f, F.ThermalResistance):
                self.theta_card *= f.factor
        self.inlet = p.thermal.inlet + float(self.rng.normal(0.0, 0.5))
        self.full_load_w = p.power.tdp * FULL_LOAD_FRACTION_OF_TDP * (
            1.0 + float(self.rng.normal(0.0, p.sim.power_noise / 100.0)) / 2
        )
        self.power_limit = p.power.tdp
        self.aux_unplugged = False
        for f in self.faults:
            if isinstance(f, F.PowerCapped):
                self.power_limit = min(self.power_limit, f.watts)
            elif isinstance(f, F.PowerAuxUnplugged):
                self.aux_unplugged = True
        self.clock_min_ratio = p.clocks.min / p.clocks.max
        self.intensity = 0.0
        self.clock_ratio = 1.0
        self.throttle: frozenset[str] = frozenset({THROTTLE_IDLE})
        self.chassis = p.cooling.kind == "passive"
        n = p.cooling.fans if not self.chassis else p.cooling.chassis_fans
        default = p.cooling.default_duty_of(self.chassis)
        curve_max = p.cooling.rpm_at(100.0, chassis=self.chassis)
        self.fan_states = [FanState(duty_pct=default, curve_rpm_max=curve_max) for _ in range(n)]
        for f in self.faults:
            fan = getattr(f, "fan", None)
            if fan is None:
                continue
            idx = min(fan, n - 1)  # a one-fan card accepts fan = 1 for its only fan
            if isinstance(f, F.FanStalled):
                self.fan_states[idx].stalled = True
            elif isinstance(f, F.FanWeak):
                self.fan_states[idx].weak_fraction = f.max_fraction
            elif isinstance(f, F.FanTachFault):
                self.fan_states[idx].tach_fault = True
        self._default_rpm = p.cooling.rpm_at(default, chassis=self.chassis)
        self._airflow_key: tuple[float, ...] | None = None
        self._airflow = 1.0
        self.power_w = self._power(0.0, 1.0)
        self.temperature = self.inlet + self.power_w * self.theta_eff()

    # fans -------------------------------------------------------------------------------------
    def fan_true_rpm(self, i: int) -> float:
        fs = self.fan_states[i]
        if fs.stalled:
            return 0.0
        rpm = self.profile.cooling.rpm_at(fs.duty_pct, chassis=self.chassis)
        if fs.weak_fraction is not None:
            rpm = min(rpm, fs.weak_fraction * fs.curve_rpm_max)
        return rpm

    def fan_noisy_rpm(self, i: int) -> float:
        rpm = self.fan_true_rpm(i)
        if rpm <= 0:
            return 0.0
        return max(0.0, rpm * (1.0 + float(self.rng.normal(0.0, self.profile.sim.rpm_noise / 100.0))))

    def fan_reported_rpm(self, i: int) -> float:
        """What the card's own tach wire reports."""
        return 0.0 if self.fan_states[i].tach_fault else self.fan_noisy_rpm(i)

    def airflow(self) -> float:
        """Airflow relative to the default duty of a healthy fan (1.0 = the band's conditions).

        Cached on the commanded duties: it is asked at every physics step, and only a duty
        change (or nothing: faults are fixed at open) can move it."""
        key = tuple(fs.duty_pct for fs in self.fan_states)
        if key != self._airflow_key:
            self._airflow_key, self._airflow = key, self._compute_airflow()
        return self._airflow

    def _compute_airflow(self) -> float:
        if not self.fan_states or self._default_rpm <= 0:
            return 1.0
        rpms = [self.fan_true_rpm(i) for i in range(len(self.fan_states))]
        flow = sum(rpms) / (len(rpms) * self._default_rpm)
        return max(MIN_AIRFLOW, flow + self.profile.sim.stalled_fan_airflow * (flow < 1e-9))

    def theta_eff(self) -> float:
        a = self.airflow()
        return self.theta_card * (PASTE_SHARE + (1.0 - PASTE_SHARE) * a ** (-CONVECTION_EXPONENT))

    # power and clocks ------------------------------------------------------------------------
    def _power(self, intensity: float, ratio: float) -> float:
        idle = self.profile.power.idle
        return idle + (self.full_load_w - idle) * intensity * ratio**POWER_CLOCK_EXPONENT

    def _ratio_for_power(self, watts: float, intensity: float) -> float:
        idle = self.profile.power.idle
        span = (self.full_load_w - idle) * intensity
        if span <= 0:
            return 1.0
        if watts <= idle:
            return self.clock_min_ratio
        return max(self.clock_min_ratio, min(1.0, ((watts - idle) / span) ** (1 / POWER_CLOCK_EXPONENT)))

    def draw_limit(self) -> float:
        """What the card can actually draw: the enforced limit, or slot power without aux."""
        if self.aux_unplugged:
            return min(self.power_limit, self.profile.power.slot * 1.0)
        return self.power_limit

    # time ---------------------------------------------------------------------------------------
    def advance(self, seconds: float, intensity: float) -> None:
        """Run ``seconds`` of simulated time at ``intensity`` (0 idle .. 1 full load)."""
        self.intensity = max(0.0, min(1.0, intensity))
        p = self.profile
        remaining = max(0.0, seconds)
        max_step = p.thermal.tau * MAX_STEP_FRACTION_OF_TAU
        while True:
            step = min(remaining, max_step)
            self._step(step)
            remaining -= step
            if remaining <= 1e-12:
                break

    def _step(self, dt: float) -> None:
        p = self.profile
        theta = self.theta_eff()
        throttle: set[str] = set()
        ratio = 1.0
        limit = self.draw_limit()
        if self._power(self.intensity, 1.0) > limit:
            ratio = self._ratio_for_power(limit, self.intensity)
            throttle.add(THROTTLE_SW_POWER_CAP)
        # hold the die at the slowdown temperature by dropping clocks, as the firmware does
        max_power_thermal = (p.thermal.slowdown - self.inlet) / theta
        if self._power(self.intensity, ratio) > max_power_thermal and self.temperature >= p.thermal.slowdown - 0.5:
            ratio = min(ratio, self._ratio_for_power(max_power_thermal, self.intensity))
            throttle |= {THROTTLE_HW_THERMAL, THROTTLE_HW_SLOWDOWN}
        power = self._power(self.intensity, ratio)
        target = self.inlet + power * theta
        decay = math.exp(-dt / p.thermal.tau) if dt > 0 else 1.0
        temp = target + (self.temperature - target) * decay
        if temp > p.thermal.slowdown and THROTTLE_HW_THERMAL not in throttle and self.intensity > 0:
            temp = p.thermal.slowdown  # clocks drop at once when the die reaches the slowdown point
            ratio = min(ratio, self._ratio_for_power(max_power_thermal, self.intensity))
            throttle |= {THROTTLE_HW_THERMAL, THROTTLE_HW_SLOWDOWN}
            power = self._power(self.intensity, ratio)
        if self.intensity == 0:
            throttle.add(THROTTLE_IDLE)
        self.temperature = temp
        self.clock_ratio = ratio
        self.power_w = power
        self.throttle = frozenset(throttle)
        self.t += dt

    # readings -------------------------------------------------------------------------------
    def read_temperature(self) -> float:
        return round(self.temperature + float(self.rng.normal(0.0, self.profile.sim.temp_noise)), 1)

    def read_power(self) -> float:
        noise = float(self.rng.normal(0.0, self.profile.sim.power_noise / 100.0))
        return round(max(0.0, self.power_w * (1.0 + noise)), 1)

    def clock_mhz(self) -> float:
        return round(self.profile.clocks.max * self.clock_ratio) if self.intensity > 0 else 345.0

    def outlet_c(self) -> float:
        """Exhaust air temperature behind the card: inlet + heat / airflow."""
        return self.inlet + self.power_w * 0.02 / self.airflow()
