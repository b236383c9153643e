"""The bench as one card's stages see it: typed roles over a shared controller, and the chassis lease.

One controller serves every slot of a chassis; a :class:`SlotMap` says which of its channels
belong to one slot (the chassis fans that cool it, the tachometer heads aimed at its card's
fans, its power relay, its air probe pair). The roles translate a stage's slot-local numbering
(card fan 0, "the inlet") into the controller's channels, so a stage never learns the wiring.

Chassis fans cool every card in the chassis, so a stage that changes chassis airflow takes the
chassis for itself (:meth:`ChassisLease.airflow`, exclusive) and a stage whose measurement
airflow would spoil holds :meth:`ChassisLease.measure` (shared): one card's fan sweep never
runs during another card's thermal soak. :class:`LocalLease` is the lease in one process; the
host's bench broker (``share.py``) serves the same lease to every card worker of the host.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

LeaseMode = Literal["airflow", "measure"]


@dataclass(frozen=True)
class SlotMap:
    """Which controller channels belong to one slot (all 0-based). ``None``: the legacy default
    (every chassis fan; heads ``0..n-1`` for card fans ``0..n-1``; the unnumbered probe pair)."""

    fans: tuple[int, ...] | None = None
    tachs: tuple[int, ...] | None = None
    relay: int | None = None
    probe: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"fans": self.fans, "tachs": self.tachs, "relay": self.relay, "probe": self.probe}


# -- the lease ------------------------------------------------------------------------------------
@dataclass
class LeaseRecord:
    """One lease, as the log keeps it (``time.monotonic()`` seconds; ``released`` None while held)."""

    holder: str
    mode: LeaseMode
    requested: float
    granted: float
    released: float | None = None


class ChassisLease(Protocol):
    def airflow(self) -> contextlib.AbstractContextManager[None]:
        """Hold the chassis alone while changing its airflow (waits for every measurement)."""
        ...

    def measure(self) -> contextlib.AbstractContextManager[None]:
        """Hold the chassis's airflow still while measuring heat (shared with other measurements)."""
        ...


class LocalLease:
    """A readers-writer lease with writer preference, for the holders of one chassis.

    ``measure`` holders share it; an ``airflow`` holder has it alone. A waiting ``airflow`` request
    blocks new ``measure`` holders, so a stream of soaks cannot starve a fan sweep. A holder that
    asks again while it holds (a stage that measures inside its own sweep) is granted at once:
    a card never waits for itself; but a measurement is never upgraded to airflow (two cards
    doing that would wait for each other forever). Every grant is logged (:attr:`log`) for tests and reports.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._measuring: dict[str, int] = {}  # holder -> nesting depth
        self._airflow: tuple[str, int] | None = None  # (holder, depth)
        self._airflow_waiting = 0
        self.log: list[LeaseRecord] = []

    def acquire(self, holder: str, mode: LeaseMode, timeout_s: float | None = None) -> LeaseRecord | None:
        """Wait for the lease; returns its log record (``None``: a nested grant, not logged)."""
        requested = time.monotonic()
        with self._cond:
            if self._airflow is not None and self._airflow[0] == holder:
                self._airflow = (holder, self._airflow[1] + 1)  # the airflow holder may do anything
                return None
            if mode == "measure" and holder in self._measuring:
                self._measuring[holder] += 1
                return None
            if mode == "airflow":
                if holder in self._measuring:  # two such upgrades would wait for each other forever
                    raise RuntimeError(f"chassis lease: {holder} holds a measurement; release it before"
                                       " changing airflow")
                self._airflow_waiting += 1
                try:
                    ok = self._cond.wait_for(lambda: self._airflow is None and not self._measuring, timeout_s)
                finally:
                    self._airflow_waiting -= 1
                if not ok:
                    raise TimeoutError(f"chassis airflow lease for {holder}: not granted in {timeout_s:g} s")
                self._airflow = (holder, 1)
            else:
                ok = self._cond.wait_for(lambda: self._airflow is None and not self._airflow_waiting, timeout_s)
                if not ok:
                    raise TimeoutError(f"chassis measure lease for {holder}: not granted in {timeout_s:g} s")
                self._measuring[holder] = 1
            record = LeaseRecord(holder, mode, requested, time.monotonic())
            self.log.append(record)
            return record

    def release(self, holder: str, mode: LeaseMode) -> None:
        """Give back one level of ``holder``'s lease (releasing what is not held is a no-op)."""
        with self._cond:
            if self._airflow is not None and self._airflow[0] == holder:
                depth = self._airflow[1] - 1
                self._airflow = (holder, depth) if depth else None
                if not depth:
                    self._close(holder, "airflow")
            elif holder in self._measuring:
                self._measuring[holder] -= 1
                if not self._measuring[holder]:
                    del self._measuring[holder]
                    self._close(holder, "measure")
            self._cond.notify_all()

    def release_all(self, holder: str) -> None:
        """Everything ``holder`` holds (its worker died or hung up)."""
        with self._cond:
            if self._airflow is not None and self._airflow[0] == holder:
                self._airflow = None
                self._close(holder, "airflow")
            if self._measuring.pop(holder, None):
                self._close(holder, "measure")
            self._cond.notify_all()

    def _close(self, holder: str, mode: LeaseMode) -> None:
        for rec in reversed(self.log):
            if rec.holder == holder and rec.mode == mode and rec.released is None:
                rec.released = time.monotonic()
                return

    def bound(self, holder: str) -> BoundLease:
        return BoundLease(self.acquire, self.release, holder)


class BoundLease:
    """A lease for one holder, as stages use it: two context managers."""

    def __init__(self, acquire: Callable[[str, LeaseMode], Any], release: Callable[[str, LeaseMode], None],
                 holder: str) -> None:
        self._acquire, self._release, self.holder = acquire, release, holder

    @contextlib.contextmanager
    def _hold(self, mode: LeaseMode) -> Iterator[None]:
        self._acquire(self.holder, mode)
        try:
            yield
        finally:
            self._release(self.holder, mode)

    def airflow(self) -> contextlib.AbstractContextManager[None]:
        return self._hold("airflow")

    def measure(self) -> contextlib.AbstractContextManager[None]:
        return self._hold("measure")


def solo_lease(holder: str = "card") -> BoundLease:
    """A lease nobody else shares (a card alone on its bench, or a unit test)."""
    return LocalLease().bound(holder)


# -- the roles ------------------------------------------------------------------------------------
class FanController:
    """The chassis fans that cool this slot, numbered ``0..count-1`` for the stage."""

    def __init__(self, ctl: Any, channels: tuple[int, ...] | None) -> None:
        self._ctl, self._channels = ctl, channels

    @property
    def count(self) -> int:
        return len(self._channels) if self._channels is not None else int(self._ctl.fans)

    def channel(self, fan: int) -> int:
        if self._channels is None:
            return fan
        if not 0 <= fan < len(self._channels):
            raise ValueError(f"this slot has chassis fans 0-{len(self._channels) - 1}, not {fan}")
        return self._channels[fan]

    def duty(self, fan: int) -> float:
        return float(self._ctl.fan_duty(self.channel(fan)))

    def set_duty(self, fan: int, pct: float) -> None:
        self._ctl.set_fan_duty(self.channel(fan), pct)

    def rpm(self, fan: int) -> float:
        return float(self._ctl.fan_rpm(self.channel(fan)))


class Tachometer:
    """Optical heads aimed at this card's fans: ``rpm(i)`` is card fan ``i`` as a head sees it."""

    def __init__(self, ctl: Any, heads: tuple[int, ...] | None) -> None:
        self._ctl, self._heads = ctl, heads

    @property
    def heads(self) -> int:
        if self._heads is not None:
            return len(self._heads)
        return int(self._ctl.tachs) if hasattr(self._ctl, "tachs") else 1

    def rpm(self, fan: int) -> float | None:
        """``None`` when no head looks at that fan, or the head sees no fan."""
        if not 0 <= fan < self.heads:
            return None
        return self._ctl.tach_rpm(fan if self._heads is None else self._heads[fan])


class AirProbes:
    """The inlet and outlet air probes of this slot."""

    def __init__(self, ctl: Any, probe: int | None) -> None:
        self._ctl, self._probe = ctl, probe

    def inlet_c(self) -> float:
        return float(self._ctl.inlet_c() if self._probe is None else self._ctl.inlet_c(self._probe))

    def outlet_c(self) -> float:
        return float(self._ctl.outlet_c() if self._probe is None else self._ctl.outlet_c(self._probe))


class Relay:
    """This slot's power relay. Present only where the config allows power-cycling the slot."""

    def __init__(self, ctl: Any, channel: int) -> None:
        self._ctl, self.channel = ctl, channel

    def power_cycle(self, off_s: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Off for ``off_s`` (the card's own clock: simulated on mock cards), then on again even
        if the wait is interrupted."""
        self._ctl.slot_power(self.channel, False)
        try:
            sleep(off_s)
        finally:
            self._ctl.slot_power(self.channel, True)


@dataclass
class BenchRoles:
    """What a card's stages get of the bench; every role is ``None`` without a bench."""

    fan_controller: FanController | None = None
    tachometer: Tachometer | None = None
    probes: AirProbes | None = None
    relay: Relay | None = None
    lease: ChassisLease = field(default_factory=solo_lease)
    port: str | None = None
    closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def present(self) -> bool:
        return any(r is not None for r in (self.fan_controller, self.tachometer, self.probes, self.relay))

    @classmethod
    def of(cls, ctl: Any, slot: SlotMap | None = None, *, power_cycle: bool = False,
           lease: ChassisLease | None = None, close: Callable[[], None] | None = None) -> BenchRoles:
        """Roles over one controller (a :class:`BenchController`, a broker client or a test fake);
        a role the controller cannot play is left ``None``."""
        m = slot or SlotMap()
        has = lambda *names: all(callable(getattr(ctl, n, None)) for n in names)  # noqa: E731
        return cls(
            fan_controller=FanController(ctl, m.fans) if has("set_fan_duty", "fan_duty", "fan_rpm") else None,
            tachometer=Tachometer(ctl, m.tachs) if has("tach_rpm") else None,
            probes=AirProbes(ctl, m.probe) if has("inlet_c", "outlet_c") else None,
            relay=Relay(ctl, m.relay if m.relay is not None else 0) if power_cycle and has("slot_power") else None,
            lease=lease or solo_lease(),
            port=str(getattr(ctl, "port", "")) or None,
            closers=[close] if close else [],
        )

    def close(self) -> None:
        """Release what this card opened (never raises: it runs in teardown)."""
        for fn in self.closers:
            with contextlib.suppress(Exception):
                fn()
        self.closers = []
