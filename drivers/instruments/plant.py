"""What the bench simulator measures and drives: the physical world behind the serial port.

The simulator (``simulator.py``) speaks the line protocol; a *plant* supplies the physics. The
mock card implements :class:`BenchPlant` so that ``open_instrument("sim", plant=card)`` drives
the mock card's chassis fans and reads its inlet temperature; tests use :class:`StaticPlant`.

Channels here are 0-based, like the rest of burnin (``Telemetry.fans_rpm``, fault ``fan = 1``);
the wire protocol's 1-based SCPI suffixes are translated in exactly one place, the simulator.

Threading: the simulator calls the plant from its own server thread. A plant whose state is also
changed by another thread (a mock card stepped by a stage) must guard that state with a lock.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@runtime_checkable
class BenchPlant(Protocol):
    """The bench's view of one slot: chassis fans, the card's fans as an optical tach sees them,
    air temperature probes, and the slot's power relay."""

    def chassis_fans(self) -> int:
        """How many chassis fans the fan controller drives (channels ``0..n-1``)."""
        ...

    def set_chassis_duty(self, ch: int, pct: float) -> None:
        """Command chassis fan ``ch`` to ``pct`` percent PWM duty (0-100)."""
        ...

    def chassis_duty(self, ch: int) -> float:
        """The duty last commanded on chassis fan ``ch``, in percent."""
        ...

    def chassis_rpm(self, ch: int) -> float:
        """True speed of chassis fan ``ch`` in RPM (what its tach wire reports)."""
        ...

    def card_fan_true_rpm(self, fan: int) -> float | None:
        """What an optical tachometer aimed at card fan ``fan`` sees, in RPM.

        ``None`` when there is no such fan to see (passive card, or fewer fans): "not available"
        is a value, distinct from a stalled fan at 0 RPM."""
        ...

    def inlet_c(self) -> float:
        """Air temperature at the card's inlet, in degrees C."""
        ...

    def outlet_c(self) -> float:
        """Air temperature at the card's exhaust, in degrees C."""
        ...

    def slot_power(self, on: bool) -> None:
        """Close (``True``) or open (``False``) the relay that powers the slot."""
        ...

    def slot_powered(self) -> bool:
        """Whether the slot's power relay is closed."""
        ...


@dataclass
class StaticPlant:
    """A trivial, thread-safe plant for tests: fixed temperatures, chassis RPM linear in duty.

    ``card_fans_rpm`` lists what the tachometer sees on each card fan (``[]`` = passive card).
    """

    fans: int = 4
    max_rpm: float = 12000.0  # chassis fan RPM at 100 % duty
    duty_pct: float = 60.0  # initial duty of every chassis fan
    card_fans_rpm: list[float] = field(default_factory=lambda: [2400.0])
    inlet: float = 25.0
    outlet: float = 41.5
    powered: bool = True
    _duty: list[float] = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._duty = [self.duty_pct] * self.fans

    def _check(self, ch: int) -> None:
        if not 0 <= ch < self.fans:
            raise ValueError(f"chassis fan {ch} does not exist (fans 0-{self.fans - 1})")

    def chassis_fans(self) -> int:
        return self.fans

    def set_chassis_duty(self, ch: int, pct: float) -> None:
        self._check(ch)
        if not (math.isfinite(pct) and 0.0 <= pct <= 100.0):
            raise ValueError(f"duty {pct!r} % is outside 0-100")
        with self._lock:
            self._duty[ch] = float(pct)

    def chassis_duty(self, ch: int) -> float:
        self._check(ch)
        with self._lock:
            return self._duty[ch]

    def chassis_rpm(self, ch: int) -> float:
        return self.chassis_duty(ch) / 100.0 * self.max_rpm

    def card_fan_true_rpm(self, fan: int) -> float | None:
        return self.card_fans_rpm[fan] if 0 <= fan < len(self.card_fans_rpm) else None

    def inlet_c(self) -> float:
        return self.inlet

    def outlet_c(self) -> float:
        return self.outlet

    def slot_power(self, on: bool) -> None:
        with self._lock:
            self.powered = bool(on)

    def slot_powered(self) -> bool:
        with self._lock:
            return self.powered
