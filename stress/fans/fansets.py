"""The fans under test: card fans (device API), chassis fans (bench), or chassis fans the host
only reads (no bench). One interface, so the sweep and the judging do not care which."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from drivers.api import Device, FanControl
from drivers.profiles import Profile
from stress.fans.link import BenchLink


class FanSet(ABC):
    """Fans that can be commanded and read: card fans (device) or chassis fans (bench)."""

    kind: str
    chassis: bool
    bench: BenchLink

    @abstractmethod
    def count(self) -> int: ...
    @abstractmethod
    def set_all(self, duty: float) -> None: ...
    @abstractmethod
    def set_one(self, fan: int, duty: float) -> None: ...
    @abstractmethod
    def reported(self) -> list[float | None]: ...
    @abstractmethod
    def true(self, fan: int) -> float | None: ...
    @abstractmethod
    def restore(self) -> None: ...

    def fixed_duty(self) -> float | None:
        """The duty the fans run at when they cannot be commanded (None: they can)."""
        return None


class CardFans(FanSet):
    kind, chassis = "card", False

    def __init__(self, dev: Device, fans: FanControl, bench: BenchLink) -> None:
        self.dev, self.fans, self.bench = dev, fans, bench

    def count(self) -> int:
        return self.fans.count

    def set_all(self, duty: float) -> None:
        for i in range(self.count()):
            self.fans.set_duty(i, duty)

    def set_one(self, fan: int, duty: float) -> None:
        self.fans.set_duty(fan, duty)

    def reported(self) -> list[float | None]:
        rpm = self.dev.telemetry().fans_rpm
        return [None if r is None else float(r) for r in rpm] + [None] * (self.count() - len(rpm))

    def true(self, fan: int) -> float | None:
        return self.bench.tach(fan)

    def restore(self) -> None:
        self.fans.restore()


class ChassisFans(FanSet):
    """The chassis fans that cool this slot, commanded and read through the bench's fan controller."""

    kind, chassis = "chassis", True

    def __init__(self, bench: BenchLink, n: int, default_duty: float) -> None:
        assert bench.chassis is not None
        self.bench, self.n, self.ctl = bench, n, bench.chassis
        saved = [bench.call(f"chassis fan {ch} duty", self.ctl.duty, ch) for ch in range(n)]
        self.saved = [default_duty if d is None else d for d in saved]

    def count(self) -> int:
        return self.n

    def set_all(self, duty: float) -> None:
        for ch in range(self.n):
            self.set_one(ch, duty)

    def set_one(self, fan: int, duty: float) -> None:
        self.bench.call(f"chassis fan {fan} duty", self.ctl.set_duty, fan, duty)

    def reported(self) -> list[float | None]:
        return [self.bench.call(f"chassis fan {ch} rpm", self.ctl.rpm, ch) for ch in range(self.n)]

    def true(self, fan: int) -> float | None:
        return None  # the optical heads look at card fans; a chassis fan has only its own tach wire

    def restore(self) -> None:
        for ch, d in enumerate(self.saved):
            self.bench.call(f"restore chassis fan {ch} duty", self.ctl.set_duty, ch, d, force=True)


class HostChassisFans(FanSet):
    """A passive card's chassis fans with no bench controller: the chassis runs them at its fixed
    default duty and the host still reads their own tach wires (as a BMC reports them), so they
    can be judged at that one duty but not swept, and a 0 RPM reading cannot be told apart from
    a dead tach wire by an airflow probe."""

    kind, chassis = "chassis", True

    def __init__(self, dev: Any, n: int, bench: BenchLink, default_duty: float) -> None:
        self.dev, self.n, self.bench, self.default_duty = dev, n, bench, default_duty

    @classmethod
    def of(cls, dev: Device, prof: Profile, bench: BenchLink) -> HostChassisFans | None:
        count, rpm = getattr(dev, "chassis_fans", None), getattr(dev, "chassis_rpm", None)
        if not callable(count) or not callable(rpm):
            return None  # a real host without a bench: nothing reads the chassis fans
        n = min(int(count()), prof.cooling.chassis_fans)
        return cls(dev, n, bench, prof.cooling.chassis_default_duty) if n > 0 else None

    def count(self) -> int:
        return self.n

    def set_all(self, duty: float) -> None:
        pass  # nothing to command them with

    def set_one(self, fan: int, duty: float) -> None:
        pass

    def reported(self) -> list[float | None]:
        return [float(self.dev.chassis_rpm(ch)) for ch in range(self.n)]

    def true(self, fan: int) -> float | None:
        return None

    def restore(self) -> None:
        pass

    def fixed_duty(self) -> float | None:
        duty = getattr(self.dev, "chassis_duty", None)
        return float(duty(0)) if callable(duty) else self.default_duty


@contextmanager
def restoring(fans: FanSet) -> Iterator[None]:
    """Restore fan settings on the way out; a restore failure never hides the original error."""
    try:
        yield
    except BaseException:
        try:
            fans.restore()
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        raise
    else:
        fans.restore()
