"""The card's own fans through NVML (where the driver allows control)."""

from __future__ import annotations

from typing import Any, Protocol

from drivers.api import (
    DeviceError,
    FanControl,
    Unsupported,
)
from drivers.nvml.core import _CONTROL_REFUSED, error_name


class FanCard(Protocol):
    """What fan control needs of its card (``NvmlDevice`` provides it). Named here rather than
    importing the device, which builds its fan control: the two modules import one way only."""

    _nv: Any
    _h: Any
    _label: str
    _num_fans: int

    def _guard(self) -> None: ...

    def _classify(self, err: Any, call: str, on: dict[str, Any] | None = ..., soft: frozenset[str] = ...,
                  strict: bool = ...) -> Any: ...

    def _read(self, fn: str, *args: Any, device: bool = ...) -> Any: ...


class NvmlFanControl(FanControl):
    """The card's own fans via ``nvmlDeviceSetFanSpeed_v2`` (root, and a driver that allows it)."""

    def __init__(self, dev: FanCard) -> None:
        self._dev = dev
        self._touched: set[int] = set()

    @property
    def count(self) -> int:
        return self._dev._num_fans

    def _check(self, fan: int) -> None:
        if not 0 <= fan < self.count:
            raise ValueError(f"nvml: {self._dev._label}: fan {fan} out of range (card has {self.count})")

    def _control(self, fn: str, fan: int, *args: Any) -> None:
        dev, nv = self._dev, self._dev._nv
        dev._guard()
        try:
            getattr(nv, fn)(dev._h, fan, *args)
        except AttributeError:
            raise Unsupported(f"nvml: {dev._label}: this nvidia-ml-py has no {fn}") from None
        except nv.NVMLError as e:
            name = error_name(nv, e)
            if name in _CONTROL_REFUSED:
                raise Unsupported(
                    f"nvml: {dev._label}: fan {fan} control refused by the driver ({name}; needs root)"
                ) from None
            dev._classify(e, fn, soft=frozenset(), strict=True)  # DeviceLost when the card is gone
            raise DeviceError(f"nvml: {dev._label}: {fn} on fan {fan} failed: {e} [{name}]") from None

    def set_duty(self, fan: int, duty_pct: float) -> None:
        self._check(fan)
        if not 0.0 <= duty_pct <= 100.0:
            raise ValueError(f"nvml: {self._dev._label}: fan duty {duty_pct} % outside 0-100 %")
        self._control("nvmlDeviceSetFanSpeed_v2", fan, int(round(duty_pct)))
        self._touched.add(fan)

    def duty(self, fan: int) -> float | None:
        """NVML's intended fan speed in percent (what the card aims for, not a tach reading)."""
        self._check(fan)
        v = self._dev._read("nvmlDeviceGetFanSpeed_v2", fan)
        return float(v) if v is not None else None

    def restore(self) -> None:
        """Hand every fan we commanded back to the driver's automatic policy."""
        first: DeviceError | None = None
        for fan in sorted(self._touched):
            try:
                self._control("nvmlDeviceSetDefaultFanSpeed_v2", fan)
            except DeviceError as e:
                first = first or e
            else:
                self._touched.discard(fan)
        if first is not None:
            raise first
