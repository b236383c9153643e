"""Rack config (contract.md section 4): TOML, strictly validated.

Every error is one line naming the file, the device and the field: an unknown key, a bad value,
an unknown profile, a fault outside the memory. Backends validate their own keys (each has a
strict pydantic model), so a new backend brings its config with it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drivers.registry import BackendConfig, ConfigFieldError, get_backend
from harness.errors import UsageError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RackSection(_Strict):
    name: str = Field(min_length=1)
    db: str | None = None
    plan: str | None = None
    parallel: int | None = Field(default=None, ge=1)  # cards run at once (default: all, capped by CPUs)
    engine: Literal["local", "ray"] = "local"  # ray: pip install '.[distributed]'
    ray_address: str | None = None  # "auto" joins this node's Ray cluster; None starts a local one
    host_join_timeout_s: float = Field(default=60.0, gt=0)  # ray: a host not joined by then is unreachable
    host_min_free_mib: float = Field(default=512.0, ge=0)  # ray: a host with less memory free runs no card


class InstrumentConfig(_Strict):
    """A bench instrument on a serial port; ``port = "sim"`` starts the simulator."""

    kind: Literal["bench"] = "bench"
    port: str
    baudrate: int = 115200
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=2, ge=0)
    slots: list[int] | None = None  # slots it serves (default: all on the host)
    power_cycle: bool = False  # after bus.lost, power-cycle the slot and re-probe once


class HostSection(_Strict):
    name: str = Field(min_length=1)
    address: str | None = None  # for a distributed engine; "local" runs here
    devices: list[dict[str, Any]] = Field(min_length=1)
    instruments: list[InstrumentConfig] = []


class RackFile(_Strict):
    rack: RackSection
    hosts: list[HostSection] = Field(min_length=1)


@dataclass
class DeviceEntry:
    host: str
    index: int  # position in the host's device list
    config: BackendConfig
    label: str  # how errors and progress name it


@dataclass
class RackConfig:
    path: Path
    rack: RackSection
    hosts: list[HostSection]
    devices: list[DeviceEntry] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.rack.name

    def instruments_for(self, host: str, slot: int) -> list[InstrumentConfig]:
        for h in self.hosts:
            if h.name == host:
                return [i for i in h.instruments if i.slots is None or slot in i.slots]
        return []


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _first_error(e: ValidationError) -> tuple[str, str]:
    err = e.errors()[0]
    where = _loc(tuple(err["loc"]))
    if err["type"] == "extra_forbidden":
        return where, f"unknown key {str(err['loc'][-1])!r}"
    if err["type"] == "missing":
        return where, "missing required key"
    return where, err["msg"].removeprefix("Value error, ")


def _device_label(host: str, index: int, raw: dict[str, Any]) -> str:
    who = raw.get("serial") or (f"slot {raw['slot']}" if "slot" in raw else f"#{index}")
    return f"hosts[{host}].devices[{index}] ({who})"


def load_rack(path: str | Path) -> RackConfig:
    """Load and validate a rack config; raises UsageError with one line on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{p}: cannot read config: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{p}: invalid TOML: {e}") from None
    try:
        rf = RackFile.model_validate(data)
    except ValidationError as e:
        where, msg = _first_error(e)
        raise UsageError(f"{p}: {where}: {msg}") from None

    cfg = RackConfig(path=p, rack=rf.rack, hosts=rf.hosts)
    seen_serials: dict[str, str] = {}
    for hi, host in enumerate(rf.hosts):
        seen_slots: set[int] = set()
        for di, raw in enumerate(host.devices):
            label = _device_label(host.name, di, raw)
            prefix = f"{p}: hosts[{hi}].devices[{di}]"
            name = raw.get("backend")
            if not isinstance(name, str):
                raise UsageError(f"{prefix}: backend: missing required key (e.g. backend = \"mock\")")
            try:
                backend = get_backend(name)
            except KeyError as e:
                raise UsageError(f"{prefix}: backend: {e.args[0]}") from None
            try:
                dev_cfg = backend.Config.model_validate(raw)
            except ValidationError as e:
                where, msg = _first_error(e)
                raise UsageError(f"{prefix} {label.split(' ', 1)[1]}: {where}: {msg}") from None
            try:
                dev_cfg.check()
            except ConfigFieldError as e:
                raise UsageError(f"{prefix} {label.split(' ', 1)[1]}: {e.field}: {e}") from None
            if dev_cfg.slot is not None:
                if dev_cfg.slot in seen_slots:
                    raise UsageError(f"{prefix} {label.split(' ', 1)[1]}: slot: slot {dev_cfg.slot} is used twice on host {host.name!r}")
                seen_slots.add(dev_cfg.slot)
            if dev_cfg.serial:
                if dev_cfg.serial in seen_serials:
                    raise UsageError(f"{prefix}: serial: {dev_cfg.serial!r} already used by {seen_serials[dev_cfg.serial]}")
                seen_serials[dev_cfg.serial] = label
            cfg.devices.append(DeviceEntry(host=host.name, index=di, config=dev_cfg, label=label))
    return cfg

