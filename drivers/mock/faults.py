"""Fault kinds a mock card can be given (docs/mock-faults.md), validated when the config loads.

Each kind is a strict pydantic model: an unknown kind or parameter, a bit outside 0-7 or an
address outside the simulated memory is an error that names the fault. The device API
components (memory, compute, physics) receive these typed objects, never raw dicts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from drivers.api import PROCESS_NAME_MAX

Bit = Annotated[int, Field(ge=0, le=7)]
DAY_S = 86400.0 * 365  # no fault is scheduled further out than a year of simulated time
NonNegSeconds = Annotated[float, Field(ge=0, le=DAY_S)]
Rate = Annotated[float, Field(gt=0, le=1e6)]  # events per minute
Count = Annotated[int, Field(ge=1, le=1_000_000)]
PID_MAX = 1 << 22  # Linux's pid_max ceiling


class _Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    kind: str


def _check_address(value: int, info: ValidationInfo) -> int:
    size = (info.context or {}).get("memory_bytes")
    if value < 0:
        raise ValueError(f"address {value:#x} is negative")
    if size is not None and value >= size:
        raise ValueError(f"address {value:#x} is outside the simulated memory (0 to {size - 1:#x})")
    return value


class StuckBit(_Fault):
    kind: Literal["memory.stuck_bit"]
    address: int
    bit: Bit
    value: Literal[0, 1]
    _a = field_validator("address")(_check_address)


class Transition(_Fault):
    kind: Literal["memory.transition"]
    address: int
    bit: Bit
    direction: Literal["up", "down"]  # up = can't go 0->1, down = can't go 1->0
    _a = field_validator("address")(_check_address)


class Coupling(_Fault):
    kind: Literal["memory.coupling"]
    aggressor: int
    aggressor_bit: Bit
    victim: int
    victim_bit: Bit
    trigger: Literal["up", "down", "any"]
    effect: Literal["invert", "set", "reset"]
    _a = field_validator("aggressor", "victim")(_check_address)

    @model_validator(mode="after")
    def _distinct(self) -> Coupling:
        if self.aggressor == self.victim and self.aggressor_bit == self.victim_bit:
            raise ValueError("aggressor and victim are the same bit")
        return self


class AddressDecoder(_Fault):
    kind: Literal["memory.address_decoder"]
    address: int
    alias: int
    _a = field_validator("address", "alias")(_check_address)

    @model_validator(mode="after")
    def _distinct(self) -> AddressDecoder:
        if self.address == self.alias:
            raise ValueError("alias equals address")
        return self


class Retention(_Fault):
    kind: Literal["memory.retention"]
    address: int
    bit: Bit
    seconds: Annotated[float, Field(gt=0, le=DAY_S)]
    _a = field_validator("address")(_check_address)


class Intermittent(_Fault):
    kind: Literal["memory.intermittent"]
    address: int
    bit: Bit
    probability: Annotated[float, Field(gt=0, le=1)]
    _a = field_validator("address")(_check_address)


class ComputeSdc(_Fault):
    kind: Literal["compute.sdc"]
    every: Count | None = None
    probability: Annotated[float, Field(gt=0, le=1)] | None = None
    above_temp_c: Annotated[float, Field(ge=-50, le=200)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ComputeSdc:
        if (self.every is None) == (self.probability is None):
            raise ValueError("give exactly one of 'every' or 'probability'")
        return self


class ComputeHang(_Fault):
    kind: Literal["compute.hang"]
    at_s: NonNegSeconds = 0.0


class ComputeSlow(_Fault):
    kind: Literal["compute.slow"]
    factor: Annotated[float, Field(gt=0, lt=1)]


class ThermalResistance(_Fault):
    kind: Literal["thermal.resistance"]
    factor: Annotated[float, Field(gt=1, le=100)]


class FanStalled(_Fault):
    kind: Literal["fan.stalled"]
    fan: Annotated[int, Field(ge=0, le=64)]


class FanWeak(_Fault):
    kind: Literal["fan.weak"]
    fan: Annotated[int, Field(ge=0, le=64)]
    max_fraction: Annotated[float, Field(ge=0, lt=1)]


class FanTachFault(_Fault):
    kind: Literal["fan.tach_fault"]
    fan: Annotated[int, Field(ge=0, le=64)]


class PcieDowntrained(_Fault):
    kind: Literal["pcie.downtrained"]
    gen: Annotated[int, Field(ge=1, le=6)]
    width: Literal[1, 2, 4, 8, 16]


class PcieReplays(_Fault):
    kind: Literal["pcie.replays"]
    per_minute: Rate


class EccSbeStorm(_Fault):
    kind: Literal["ecc.sbe_storm"]
    per_minute: Rate


class EccDbe(_Fault):
    kind: Literal["ecc.dbe"]
    count: Count = 1
    at_s: NonNegSeconds = 0.0


class RowRemapPending(_Fault):
    kind: Literal["ecc.row_remap_pending"]


class RowRemapFailure(_Fault):
    kind: Literal["ecc.row_remap_failure"]


class RetiredPages(_Fault):
    kind: Literal["ecc.retired_pages"]
    count: Count


class BusFallOff(_Fault):
    kind: Literal["bus.fall_off"]
    at_s: NonNegSeconds


class Xid(_Fault):
    kind: Literal["xid"]
    code: Annotated[int, Field(ge=1, le=65535)]
    at_s: NonNegSeconds = 0.0


class PowerCapped(_Fault):
    kind: Literal["power.capped"]
    watts: Annotated[float, Field(gt=0, le=10_000)]


class PowerAuxUnplugged(_Fault):
    kind: Literal["power.aux_unplugged"]


class InforomCorrupt(_Fault):
    kind: Literal["firmware.inforom_corrupt"]


class HostBusy(_Fault):
    """Another process holds the card (and ``memory_mib`` of its memory)."""

    kind: Literal["host.busy"]
    pid: Annotated[int, Field(ge=1, le=PID_MAX)]
    name: str = Field(default="python3", min_length=1, max_length=PROCESS_NAME_MAX)
    memory_mib: Annotated[int, Field(ge=0)] = 0
    graphics: bool = False  # a graphics (display/render) process rather than a compute one

    @field_validator("name")
    @classmethod
    def _printable(cls, v: str) -> str:
        """A process name as a driver would report it: printable (what reaches a terminal and a
        report), so a config cannot smuggle ESC sequences or newlines in through it."""
        if not v.isprintable():
            raise ValueError(f"contains a control character ({ascii(next(c for c in v if not c.isprintable()))})")
        return v

    @field_validator("memory_mib")
    @classmethod
    def _fits(cls, v: int, info: ValidationInfo) -> int:
        size = (info.context or {}).get("memory_bytes")
        if size is not None and v * (1 << 20) > size:
            raise ValueError(f"memory_mib {v} is more than the card's {size >> 20} MiB")
        return v


class HostMig(_Fault):
    kind: Literal["host.mig"]
    pending: bool = False  # only pending: MIG comes on at the next reset


class HostDisplay(_Fault):
    kind: Literal["host.display"]


class HostClocksLocked(_Fault):
    kind: Literal["host.clocks_locked"]
    mhz: Annotated[float, Field(gt=0)] | None = None  # the clock it is held at (default: the base clock)


class LinkDown(_Fault):
    """docs/mock-faults.md, Interconnect: that link of the card is inactive."""

    kind: Literal["link.down"]
    link: Annotated[int, Field(ge=0, le=63)]


class LinkDegraded(_Fault):
    """The link is up; under traffic its replay and CRC counters grow and its bandwidth falls."""

    kind: Literal["link.degraded"]
    link: Annotated[int, Field(ge=0, le=63)]
    bandwidth_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5
    errors_per_s: Annotated[float, Field(ge=0, le=1e9)] = 50.0


class P2pCorrupt(_Fault):
    """Peer copies to or from the card get one flipped bit every ``every_bytes`` bytes."""

    kind: Literal["p2p.corrupt"]
    every_bytes: Annotated[int, Field(ge=1, le=1 << 50)] = 1 << 30


FAULT_KINDS: dict[str, type[_Fault]] = {
    m.model_fields["kind"].annotation.__args__[0]: m  # type: ignore[union-attr]
    for m in (
        StuckBit, Transition, Coupling, AddressDecoder, Retention, Intermittent,
        ComputeSdc, ComputeHang, ComputeSlow, ThermalResistance,
        FanStalled, FanWeak, FanTachFault, PcieDowntrained, PcieReplays,
        EccSbeStorm, EccDbe, RowRemapPending, RowRemapFailure, RetiredPages,
        BusFallOff, Xid, PowerCapped, PowerAuxUnplugged, InforomCorrupt,
        HostBusy, HostMig, HostDisplay, HostClocksLocked,
        LinkDown, LinkDegraded, P2pCorrupt,
    )
}
LINK_FAULTS = (LinkDown, LinkDegraded, P2pCorrupt)
MEMORY_FAULTS = (StuckBit, Transition, Coupling, AddressDecoder, Retention, Intermittent)
HOST_FAULTS = (HostBusy, HostMig, HostDisplay, HostClocksLocked)
Fault = _Fault


class FaultError(ValueError):
    """A fault spec is invalid; ``field`` is the offending parameter (or ``kind``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_fault(spec: dict[str, Any], memory_bytes: int | None = None, fans: int | None = None,
                links: int | None = None) -> _Fault:
    """Validate one fault table from a rack config; ``links`` is how many links the card's
    profile gives it (0: none, so a link fault is an error; None: not checked)."""
    if not isinstance(spec, dict):
        raise FaultError("faults", f"a fault must be a table like {{ kind = ... }}, got {spec!r}")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in FAULT_KINDS:
        raise FaultError("kind", f"unknown fault kind {kind!r} (known: {', '.join(sorted(FAULT_KINDS))})")
    try:
        fault = FAULT_KINDS[kind].model_validate(spec, context={"memory_bytes": memory_bytes})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "kind"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown parameter {field!r} for {kind}"
        elif err["type"] == "missing":
            msg = f"missing parameter {field!r} for {kind}"
        raise FaultError(field, msg) from None
    fan = getattr(fault, "fan", None)
    # fans are numbered from 0 (NVML, the bench's channels); a number equal to the count is read
    # as 1-based numbering of the last fan (``fan = 1`` on a one-fan card is its only fan)
    if fan is not None and fans is not None and (fans == 0 or fan > fans):
        have = "no fans" if fans == 0 else f"fans 0-{fans - 1}"
        raise FaultError("fan", f"fan {fan} does not exist on this card ({have})")
    if isinstance(fault, LINK_FAULTS) and links is not None:
        if links == 0:
            raise FaultError("kind", f"{kind}: this card has no links (its profile has no [links]: a PCIe card)")
        link = getattr(fault, "link", None)
        if link is not None and link >= links:
            raise FaultError("link", f"link {link} does not exist on this card (links 0-{links - 1})")
    return fault
