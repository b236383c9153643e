"""Heat versus silicon: more airflow for a cooler retest, and a rough theta from telemetry.

A miscompare that follows temperature is a cooling problem (dried paste, loose heatsink) when the
card's temperature rise per watt is high; one that persists when the card is cool is the
silicon. To cool the card we command more air where we can: the card's own fans through the
device API, a passive card's chassis fans through the bench's fan controller role (holding the
chassis lease, since every card of the chassis feels that air); without either, a lower load
alone. Whatever happens, the fans go back to what they were.
"""

from __future__ import annotations

import contextlib
import math

from drivers.api import DeviceError, Telemetry
from drivers.instruments.roles import FanController
from stress.base import StageContext

FULL_DUTY_PCT = 100.0


class Airflow:
    """Fans up for a cool retest; ``restore`` undoes exactly what ``boost`` did."""

    def __init__(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._card = False
        self._chassis: list[tuple[int, float]] = []
        self._bench: FanController | None = ctx.instruments.fan_controller
        self._lease: contextlib.ExitStack | None = None

    def boost(self) -> list[str]:
        """Raise every fan we can reach to full duty; returns what was raised (for the report)."""
        done: list[str] = []
        fans = self._ctx.device.fans
        if fans is not None and fans.count > 0:
            try:
                for i in range(fans.count):
                    fans.set_duty(i, FULL_DUTY_PCT)
                self._card = True
                done.append(f"{fans.count} card fan(s) at {FULL_DUTY_PCT:.0f}%")
            except DeviceError:
                self._restore_card()
        if self._bench is not None:
            self._lease = contextlib.ExitStack()
            try:
                self._lease.enter_context(self._ctx.instruments.lease.airflow())
                for ch in range(self._bench.count):
                    self._chassis.append((ch, self._bench.duty(ch)))
                    self._bench.set_duty(ch, FULL_DUTY_PCT)
                if self._chassis:
                    done.append(f"{len(self._chassis)} chassis fan(s) at {FULL_DUTY_PCT:.0f}%")
            except Exception:  # noqa: BLE001 - a bench fault must not stop the retest; load alone then
                self._restore_chassis()
        return done

    def _restore_card(self) -> None:
        fans = self._ctx.device.fans
        if fans is not None:
            with contextlib.suppress(Exception):
                fans.restore()
        self._card = False

    def _restore_chassis(self) -> None:
        for ch, duty in self._chassis:
            with contextlib.suppress(Exception):
                assert self._bench is not None
                self._bench.set_duty(ch, duty)
        self._chassis = []
        lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(Exception):  # a gone bench broker holds no lease any more
                lease.close()

    def restore(self) -> None:
        if self._card:
            self._restore_card()
        self._restore_chassis()


def theta_from_steps(idle: Telemetry, hot: list[Telemetry], seconds_loaded: float, tau_s: float,
                     thermal_throttled: bool) -> float | None:
    """Rough steady-state rise per watt, (T_hot - T_idle) / (P_hot - P_idle).

    The card went from a settled idle to full load ``seconds_loaded`` ago; a first-order die
    has then covered ``1 - exp(-t/tau)`` of its rise, which we divide out (unless thermal
    throttling clamped the temperature, which already sits at its ceiling). None when the
    readings are missing or the load added too little power to tell.
    """
    ts = [t.temperature_c for t in hot if t.temperature_c is not None]
    ps = [t.power_w for t in hot if t.power_w is not None]
    if not ts or not ps or idle.temperature_c is None or idle.power_w is None:
        return None
    dp = sum(ps) / len(ps) - idle.power_w
    if dp <= 0.1 * max(idle.power_w, 1.0):
        return None
    rise = sum(ts) / len(ts) - idle.temperature_c
    covered = 1.0 - math.exp(-seconds_loaded / tau_s) if tau_s > 0 else 1.0
    if not thermal_throttled and covered > 0.2:
        rise /= covered
    return rise / dp
