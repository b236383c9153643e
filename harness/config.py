"""Rack config (docs/contract.md section 4): TOML, strictly validated.

Every error is one line naming the file, the device and the field: an unknown key, a bad value,
an unknown profile, a fault outside the memory. Backends validate their own keys (each has a
strict pydantic model), so a new backend brings its config with it.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import psutil
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from drivers.instruments.roles import SlotMap
from drivers.registry import BackendConfig, ConfigFieldError, get_backend, is_simulated
from harness.engines import engine_names
from harness.errors import UsageError
from harness.inputs import read_toml

MAX_SLOT = 1023
MAX_CARDS_PER_HOST = 256
# a host is a machine's name: it becomes a Ray resource (host:NAME), a lock file's name and a
# mock card's serial, so DNS characters only (no spaces, markup or control characters)
HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")
ADDRESS = re.compile(r"[A-Za-z0-9._:/\[\]%-]{1,255}")  # a host name, an IPv4/IPv6 address, "auto", ray://HOST:PORT
INTERFACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}")  # a network interface (Linux: at most 15 characters)


def printable_name(v: str) -> str:
    """A name shown on every report (the rack's): any printable text, no control characters."""
    if not v.isprintable():
        bad = next(c for c in v if not c.isprintable())
        raise ValueError(f"contains a control character ({ascii(bad)}); a name is printable text")
    return v


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(v: str) -> str:
        if not pattern.fullmatch(v):
            raise ValueError(f"{ascii(v[:64])}{'...' if len(v) > 64 else ''} is not {what}")
        return v
    return AfterValidator(check)


HostName = Annotated[str, _matching(HOST_NAME, "a host name (letters, digits, '.', '-', '_'; at most 253)")]
Address = Annotated[str, _matching(ADDRESS, "an address (a host name or IP address, optionally with :PORT)")]
Interface = Annotated[str, _matching(INTERFACE, "a network interface name such as eth1 (at most 15 characters)")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)


class RackSection(_Strict):
    """The ``[rack]`` table."""

    name: Annotated[str, AfterValidator(printable_name)] = Field(min_length=1, max_length=128)
    db: str | None = Field(default=None, min_length=1, max_length=4096)  # relative: to the config's folder
    plan: str | None = Field(default=None, min_length=1, max_length=4096)
    parallel: int | None = Field(default=None, ge=1, le=4096)  # cards run at once (default: all, capped by CPUs)
    engine: str = "local"  # a registered engine (harness/engines): local, ray (pip install '.[distributed]')
    ray_address: Address | None = None  # "auto" joins this node's Ray cluster; None starts a local one
    # ray: the network interface (e.g. "eth1", the bench's own network) this controller's Ray
    # node binds to; unset: Ray's choice. Checked to exist when the engine starts.
    ray_interface: Interface | None = None
    host_join_timeout_s: float = Field(default=60.0, gt=0, le=86400)  # ray: a host not joined by then is unreachable
    host_min_free_mib: float = Field(default=512.0, ge=0, le=1 << 30)  # ray: a host with less memory free runs no card

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        if v not in engine_names():
            raise ValueError(f"unknown engine {v!r} (known: {', '.join(engine_names())})")
        return v


Channel = Annotated[int, Field(ge=0, le=999)]


class SlotWiring(_Strict):
    """Which controller channels belong to one slot (0-based, like every channel in burnin)."""

    slot: Channel
    fans: list[Channel] | None = Field(default=None, min_length=1)  # chassis fans cooling it (default: all)
    tachs: list[Channel] | None = None  # tach heads aimed at card fans 0, 1, ... ([]: none)
    relay: Channel | None = None  # its power relay (default: the slot number)
    probe: Channel | None = None  # its inlet/outlet probe pair (default: the controller's first)

    def slot_map(self) -> SlotMap:
        return SlotMap(fans=None if self.fans is None else tuple(self.fans),
                       tachs=None if self.tachs is None else tuple(self.tachs),
                       relay=self.slot if self.relay is None else self.relay, probe=self.probe)


class InstrumentConfig(_Strict):
    """A bench controller on a serial port, opened once per host by the harness and shared by
    the cards of its slots; ``port = "sim"`` gives each mock card a simulator wired to itself."""

    kind: Literal["bench"] = "bench"
    port: str = Field(min_length=1)
    baudrate: int = Field(default=115200, gt=0, le=10_000_000)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=2, ge=0, le=10)
    slots: list[Channel] | None = None  # slots it serves (default: the wired slots, else all on the host)
    power_cycle: bool = False  # after bus.lost, power-cycle the slot and re-probe once
    wiring: list[SlotWiring] = []  # per-slot channels on a shared controller

    @model_validator(mode="after")
    def _check_wiring(self) -> InstrumentConfig:
        if self.wiring and self.port == "sim":
            raise ValueError('wiring: applies to a shared controller on a real port, not port = "sim"'
                             " (each mock card gets a simulator of its own)")
        for name, pick in (("slot", lambda w: [w.slot]), ("relay", lambda w: [] if w.relay is None else [w.relay]),
                           ("tachs", lambda w: w.tachs or [])):
            seen: dict[int, int] = {}
            for i, w in enumerate(self.wiring):
                for ch in pick(w):
                    if ch in seen:
                        raise ValueError(f"wiring[{i}].{name}: {name} {ch} is already wired to"
                                         f" slot {self.wiring[seen[ch]].slot} (wiring[{seen[ch]}])")
                    seen[ch] = i
        wired = {w.slot for w in self.wiring}
        if self.wiring and self.slots is not None and set(self.slots) != wired:
            raise ValueError(f"slots: {sorted(self.slots)} differ from the wired slots {sorted(wired)}")
        return self

    def serves(self, slot: int) -> bool:
        if self.wiring:
            return any(w.slot == slot for w in self.wiring)
        return self.slots is None or slot in self.slots

    def slot_map(self, slot: int) -> SlotMap:
        """This slot's channels; unwired: every fan, heads 0.., the first probe, relay = slot."""
        for w in self.wiring:
            if w.slot == slot:
                return w.slot_map()
        return SlotMap(relay=0 if self.port == "sim" else slot)


class HostSection(_Strict):
    name: HostName
    address: Address | None = None  # for a distributed engine; "local" runs here
    # the cards this host should have (slots 0..cards-1): one discovery misses is reported bus.lost
    # (N: slots 0 to N-1; a list: those slot numbers, e.g. npu-smi's NPU ids)
    cards: Annotated[int, Field(ge=1, le=MAX_CARDS_PER_HOST)] | list[Annotated[int, Field(ge=0, le=MAX_SLOT)]] | None = None
    devices: list[dict[str, Any]] = Field(min_length=1)
    instruments: list[InstrumentConfig] = []
    # board and host faults of a simulated host (docs/mock-faults.md, Interconnect): they stay with
    # the slot, whatever card sits in it; validated by the simulating backend
    faults: list[dict[str, Any]] = Field(default=[], max_length=1024)

    @model_validator(mode="after")
    def _one_bench_per_slot(self) -> HostSection:
        """A slot's chassis has one controller: two benches serving one slot is a config error."""
        def served(inst: InstrumentConfig) -> set[int] | None:  # None: every slot of the host
            return {w.slot for w in inst.wiring} if inst.wiring else (set(inst.slots) if inst.slots is not None else None)

        for i, a in enumerate(self.instruments):
            for j in range(i):
                sa, sb = served(a), served(self.instruments[j])
                both = "every slot" if sa is None or sb is None else ", ".join(map(str, sorted(sa & sb)))
                if both:
                    raise ValueError(f"instruments[{i}]: serves {both} already served by instruments[{j}]"
                                     " (one bench controller per slot)")
        return self

    @field_validator("cards")
    @classmethod
    def _cards(cls, v: int | list[int] | None) -> int | list[int] | None:
        if isinstance(v, list) and (not v or len(set(v)) != len(v) or len(v) > MAX_CARDS_PER_HOST):
            raise ValueError("a list of distinct slot numbers, at least one")
        return v

    @property
    def expected_slots(self) -> list[int] | None:
        """The slots that should hold a card, when the host says so."""
        if self.cards is None:
            return None
        return list(range(self.cards)) if isinstance(self.cards, int) else sorted(self.cards)


class RackFile(_Strict):
    rack: RackSection
    hosts: list[HostSection] = Field(min_length=1)

    @field_validator("hosts")
    @classmethod
    def _unique_hosts(cls, hosts: list[HostSection]) -> list[HostSection]:
        seen: set[str] = set()
        for h in hosts:
            if h.name in seen:
                raise ValueError(f"host {h.name!r} is named twice (each [[hosts]] needs its own name)")
            seen.add(h.name)
        return hosts


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

    @property
    def base_dir(self) -> Path:
        """Relative paths in the config (db, plan, replay files, npu-smi) resolve against this."""
        return self.path.resolve().parent

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def ray_node_ip(self) -> str | None:
        """The address of ``[rack] ray_interface`` on this machine (IPv4 first), for the Ray node
        of the controller; None when unset. A missing interface is a one-line UsageError."""
        name = self.rack.ray_interface
        if name is None:
            return None
        addrs = psutil.net_if_addrs()
        if name not in addrs:
            raise UsageError(f"{self.path}: rack.ray_interface: no network interface {name!r} on this machine "
                             f"(have: {', '.join(sorted(addrs)) or 'none'})")
        for family in (socket.AF_INET, socket.AF_INET6):
            for a in addrs[name]:
                if a.family == family:
                    return str(a.address).split("%", 1)[0]  # an IPv6 link-local's %zone is not an address
        raise UsageError(f"{self.path}: rack.ray_interface: interface {name!r} has no IP address")

    def instruments_for(self, host: str, slot: int) -> list[InstrumentConfig]:
        for h in self.hosts:
            if h.name == host:
                return [i for i in h.instruments if i.serves(slot)]
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
    serial = raw.get("serial")
    who = (str(serial).strip()[:64] if isinstance(serial, str) and serial.strip() else None) or (
        f"slot {raw['slot']}" if isinstance(raw.get("slot"), int) else f"#{index}")
    return f"hosts[{host}].devices[{index}] ({who})"


def load_rack(path: str | Path) -> RackConfig:
    """Load and validate a rack config; raises UsageError with one line on any problem."""
    p = Path(path)
    data = read_toml(p, "config")
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
                expected = host.expected_slots
                if expected is not None and dev_cfg.slot not in expected:
                    raise UsageError(f"{prefix} {label.split(' ', 1)[1]}: slot: slot {dev_cfg.slot} is not one of the "
                                     f"host's cards (hosts[{hi}].cards: slots {expected})")
                if dev_cfg.slot in seen_slots:
                    raise UsageError(f"{prefix} {label.split(' ', 1)[1]}: slot: slot {dev_cfg.slot} is used twice on host {host.name!r}")
                seen_slots.add(dev_cfg.slot)
            if dev_cfg.serial:
                if dev_cfg.serial in seen_serials:
                    raise UsageError(f"{prefix}: serial: {dev_cfg.serial!r} already used by {seen_serials[dev_cfg.serial]}")
                seen_serials[dev_cfg.serial] = label
            cfg.devices.append(DeviceEntry(host=host.name, index=di, config=dev_cfg, label=label))
        _check_wiring_slots(p, hi, host)
        _check_host_faults(p, hi, host, [d.config for d in cfg.devices if d.host == host.name])
    return cfg


def _check_host_faults(p: Path, hi: int, host: HostSection, configs: list[BackendConfig]) -> None:
    """A host's faults are checked by the backend that simulates its cards (the mock's board)."""
    if not host.faults:
        return
    simulated = sorted({c.backend for c in configs if is_simulated(c.backend)})
    backend = get_backend(simulated[0] if simulated else configs[0].backend)
    try:
        backend.check_host_faults(host.faults, [c for c in configs if c.backend == backend.name])
    except ConfigFieldError as e:
        raise UsageError(f"{p}: hosts[{hi}] ({host.name}).{e.field}: {e}") from None


def _check_wiring_slots(p: Path, hi: int, host: HostSection) -> None:
    """A wired slot must be a slot of the host (when every device names its slot)."""
    named = [d.get("slot") for d in host.devices]
    slots = [x for x in named if isinstance(x, int)]
    if len(slots) != len(named):
        return
    for ii, inst in enumerate(host.instruments):
        for wi, w in enumerate(inst.wiring):
            if w.slot not in slots:
                raise UsageError(f"{p}: hosts[{hi}].instruments[{ii}].wiring[{wi}].slot: host {host.name!r}"
                                 f" has no device in slot {w.slot} (slots: {', '.join(map(str, sorted(slots)))})")
