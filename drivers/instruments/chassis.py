"""A whole chassis behind one bench controller: shared chassis fans, per-slot heads, probes, relays.

The simulator serves a :class:`ChassisPlant`. A one-slot :class:`~drivers.instruments.plant.BenchPlant`
(a mock card, a ``StaticPlant``) is served through :class:`OneSlot`; :class:`SimChassis` is a
chassis of several slots in which the chassis fans cool every card: each slot's exhaust is
``inlet + heat x k / airflow`` and its die ``inlet + heat x theta(airflow)``, with airflow set by
the chassis fans' speed, so one card's fan sweep moves every other card's temperatures, as in a
real chassis (which is why stages that change airflow take the chassis lease, ``roles.py``).

Channels are 0-based here, as in the rest of burnin; the simulator translates the wire's
1-based suffixes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from drivers.instruments.plant import BenchPlant

CONVECTION_EXPONENT = 0.8  # forced convection: the convective share of theta goes as airflow ** -0.8
PASTE_SHARE = 0.35  # share of theta airflow does not touch
EXHAUST_K = 0.02  # exhaust rise per watt at nominal airflow, °C/W
MIN_AIRFLOW = 0.05


@runtime_checkable
class ChassisPlant(Protocol):
    """What one bench controller sees of a chassis."""

    def chassis_fans(self) -> int: ...
    def set_chassis_duty(self, ch: int, pct: float) -> None: ...
    def chassis_duty(self, ch: int) -> float: ...
    def chassis_rpm(self, ch: int) -> float: ...
    def tach_heads(self) -> int: ...
    def tach_rpm(self, head: int) -> float | None: ...
    def probes(self) -> int: ...
    def probe_inlet_c(self, probe: int) -> float: ...
    def probe_outlet_c(self, probe: int) -> float: ...
    def relays(self) -> int: ...
    def set_relay(self, relay: int, on: bool) -> None: ...
    def relay_closed(self, relay: int) -> bool: ...


class OneSlot:
    """A one-slot plant as a chassis: one relay, one probe pair, ``tach_channels`` heads aimed
    at the card's fans ``0..n-1``."""

    def __init__(self, plant: BenchPlant, tach_channels: int = 2) -> None:
        self.plant, self.tach_channels = plant, tach_channels

    def chassis_fans(self) -> int:
        return self.plant.chassis_fans()

    def set_chassis_duty(self, ch: int, pct: float) -> None:
        self.plant.set_chassis_duty(ch, pct)

    def chassis_duty(self, ch: int) -> float:
        return self.plant.chassis_duty(ch)

    def chassis_rpm(self, ch: int) -> float:
        return self.plant.chassis_rpm(ch)

    def tach_heads(self) -> int:
        return self.tach_channels

    def tach_rpm(self, head: int) -> float | None:
        return self.plant.card_fan_true_rpm(head)

    def probes(self) -> int:
        return 1

    def probe_inlet_c(self, probe: int) -> float:
        return self.plant.inlet_c()

    def probe_outlet_c(self, probe: int) -> float:
        return self.plant.outlet_c()

    def relays(self) -> int:
        return 1

    def set_relay(self, relay: int, on: bool) -> None:
        self.plant.slot_power(on)

    def relay_closed(self, relay: int) -> bool:
        return self.plant.slot_powered()


def as_chassis(plant: BenchPlant | ChassisPlant, tach_channels: int = 2) -> ChassisPlant:
    return plant if isinstance(plant, ChassisPlant) else OneSlot(plant, tach_channels)


@dataclass
class SlotLoad:
    """One card in the chassis, as the chassis model needs it."""

    heat_w: float = 300.0  # what the card dissipates now
    theta: float = 0.065  # its die-to-air rise per watt at nominal airflow, °C/W
    card_fans_rpm: list[float] = field(default_factory=list)  # what tach heads see ([] = passive)
    powered: bool = True


class SimChassis:
    """A chassis of ``len(slots)`` cards cooled by ``fans`` shared chassis fans.

    Tach heads are numbered slot by slot, ``heads_per_slot`` each (head ``s * heads_per_slot + i``
    looks at card fan ``i`` of slot ``s``); probe pair ``s`` and relay ``s`` belong to slot ``s``.
    ``rpm_at(duty)`` is the chassis fans' curve (default linear to ``max_rpm``); airflow is the
    mean fan speed relative to the speed at ``nominal_duty``. Thread-safe.
    """

    def __init__(self, slots: list[SlotLoad] | int = 4, *, fans: int = 4, inlet: float = 25.0,
                 nominal_duty: float = 60.0, duty_pct: float | None = None, max_rpm: float = 16500.0,
                 rpm_at: Callable[[float], float] | None = None, heads_per_slot: int = 2) -> None:
        self.slots = [SlotLoad() for _ in range(slots)] if isinstance(slots, int) else list(slots)
        self.fans = fans
        self.inlet = inlet
        self.heads_per_slot = heads_per_slot
        self._rpm_at = rpm_at or (lambda d: d / 100.0 * max_rpm)
        self._nominal_rpm = max(self._rpm_at(nominal_duty), 1e-9)
        self._duty = [nominal_duty if duty_pct is None else duty_pct] * fans
        self._lock = threading.Lock()

    # -- chassis fans ---------------------------------------------------------------------------
    def _check_fan(self, ch: int) -> None:
        if not 0 <= ch < self.fans:
            raise ValueError(f"chassis fan {ch} does not exist (fans 0-{self.fans - 1})")

    def chassis_fans(self) -> int:
        return self.fans

    def set_chassis_duty(self, ch: int, pct: float) -> None:
        self._check_fan(ch)
        if not (math.isfinite(pct) and 0.0 <= pct <= 100.0):
            raise ValueError(f"duty {pct!r} % is outside 0-100")
        with self._lock:
            self._duty[ch] = float(pct)

    def chassis_duty(self, ch: int) -> float:
        self._check_fan(ch)
        with self._lock:
            return self._duty[ch]

    def chassis_rpm(self, ch: int) -> float:
        return self._rpm_at(self.chassis_duty(ch))

    def airflow(self) -> float:
        """Chassis airflow relative to nominal (1.0 = every fan at the nominal duty)."""
        with self._lock:
            duties = list(self._duty)
        if not duties:
            return 1.0
        return max(MIN_AIRFLOW, sum(self._rpm_at(d) for d in duties) / (len(duties) * self._nominal_rpm))

    # -- per slot -------------------------------------------------------------------------------
    def _slot(self, s: int) -> SlotLoad:
        if not 0 <= s < len(self.slots):
            raise ValueError(f"slot {s} does not exist (slots 0-{len(self.slots) - 1})")
        return self.slots[s]

    def die_c(self, s: int) -> float:
        """Steady die temperature of slot ``s`` at the present airflow (what a soak settles at)."""
        load = self._slot(s)
        if not load.powered:
            return self.inlet
        theta = load.theta * (PASTE_SHARE + (1.0 - PASTE_SHARE) * self.airflow() ** -CONVECTION_EXPONENT)
        return self.inlet + load.heat_w * theta

    def tach_heads(self) -> int:
        return len(self.slots) * self.heads_per_slot

    def tach_rpm(self, head: int) -> float | None:
        if not 0 <= head < self.tach_heads():
            raise ValueError(f"tach head {head} does not exist")
        load = self.slots[head // self.heads_per_slot]
        fan = head % self.heads_per_slot
        return load.card_fans_rpm[fan] if fan < len(load.card_fans_rpm) and load.powered else None

    def probes(self) -> int:
        return len(self.slots)

    def probe_inlet_c(self, probe: int) -> float:
        self._slot(probe)
        return self.inlet

    def probe_outlet_c(self, probe: int) -> float:
        load = self._slot(probe)
        heat = load.heat_w if load.powered else 0.0
        return self.inlet + heat * EXHAUST_K / self.airflow()

    def relays(self) -> int:
        return len(self.slots)

    def set_relay(self, relay: int, on: bool) -> None:
        load = self._slot(relay)
        with self._lock:
            load.powered = bool(on)

    def relay_closed(self, relay: int) -> bool:
        load = self._slot(relay)
        with self._lock:
            return load.powered
