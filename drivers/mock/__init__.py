"""The mock backend: simulated cards with fault injection (docs/mock-faults.md)."""

from __future__ import annotations

import hashlib
from typing import Any

import psutil
from pydantic import Field

from drivers.api import Device
from drivers.mock.board import parse_host_fault
from drivers.mock.faults import FaultError, parse_fault
from drivers.profiles import ProfileError, load_profile
from drivers.registry import (
    SERIAL_MAX,
    Backend,
    BackendConfig,
    ConfigFieldError,
    check_serial,
    register_backend,
)
from drivers.units import MIB

MAX_MEMORY_MIB = 4096  # simulated memory lives in host RAM; also capped by this machine's (check)
MEMORY_SHARE = 4  # one simulated card may take at most 1/MEMORY_SHARE of this machine's memory


class MockConfig(BackendConfig):
    # a profile's name (fixtures/profiles/NAME.toml), never a path
    profile: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    memory_mib: int = Field(default=64, ge=1, le=MAX_MEMORY_MIB)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    faults: list[dict[str, Any]] = Field(default=[], max_length=1024)

    def check(self) -> None:
        """The profile must exist and every fault must be valid for that card."""
        try:
            profile = load_profile(self.profile)
        except ProfileError as e:
            raise ConfigFieldError("profile", str(e)) from None
        limit = psutil.virtual_memory().total // MEMORY_SHARE
        if self.memory_mib * MIB > limit:
            raise ConfigFieldError("memory_mib", f"{self.memory_mib} MiB is more than this machine can give one "
                                                 f"simulated card (at most {limit // MIB} MiB)")
        for fi, spec in enumerate(self.faults):
            try:
                parse_fault(spec, self.memory_mib * MIB, profile.cooling.fault_fans,
                            profile.links.count if profile.links else 0)
            except FaultError as e:
                kind = spec.get("kind") if isinstance(spec, dict) else None
                raise ConfigFieldError(f"faults[{fi}] ({kind}).{e.field}", str(e)) from None


def default_serial(host: str, slot: int) -> str:
    """The serial of a mock card the config names none for, ``SIM-{host}-{slot}``, checked like
    any configured serial; a host name too long for it is shortened with a digest, so two hosts
    never share a simulated serial."""
    serial = f"SIM-{host}-{slot:02d}"
    if len(serial) > SERIAL_MAX:
        digest = hashlib.sha256(host.encode()).hexdigest()[:12]
        serial = f"SIM-{host[:SERIAL_MAX - 30]}~{digest}-{slot:02d}"
    return check_serial(serial)


@register_backend
class MockBackend(Backend):
    name = "mock"
    simulated = True
    Config = MockConfig

    def check_host_faults(self, faults: list[dict[str, Any]], configs: list[BackendConfig]) -> None:
        """The host's board faults against its mock cards (docs/mock-faults.md, Interconnect)."""
        cards: dict[int, Any] = {}
        for i, c in enumerate(configs):
            if isinstance(c, MockConfig):
                cards[c.slot if c.slot is not None else i] = load_profile(c.profile)
        for fi, spec in enumerate(faults):
            try:
                parse_host_fault(spec, cards)
            except FaultError as e:
                kind = spec.get("kind") if isinstance(spec, dict) else None
                raise ConfigFieldError(f"faults[{fi}] ({kind}).{e.field}", str(e)) from None

    def discover(self, cfg: BackendConfig, context: dict[str, Any]) -> list[dict[str, Any]]:
        assert isinstance(cfg, MockConfig)
        slot = cfg.slot if cfg.slot is not None else context.get("index", 0)
        host = context.get("host", "local")
        return [
            {
                "backend": "mock",
                "slot": slot,
                "serial": cfg.serial or default_serial(host, slot),
                "profile": cfg.profile,
                "memory_mib": cfg.memory_mib,
                "seed": cfg.seed,
                "faults": list(cfg.faults),
                "host": context.get("host", "local"),
                **({"host_faults": list(context["host_faults"])} if context.get("host_faults") else {}),
            }
        ]

    def open(self, locator: dict[str, Any]) -> Device:
        from drivers.mock.device import MIB, MockDevice
        from drivers.profiles import load_profile

        profile = load_profile(locator["profile"])
        size = locator["memory_mib"] * MIB
        faults = [parse_fault(f, size, profile.cooling.fault_fans) for f in locator["faults"]]
        host_faults = [parse_host_fault(f) for f in locator.get("host_faults") or []]  # checked at config load
        return MockDevice(
            profile,
            serial=locator["serial"],
            slot=locator["slot"],
            memory_mib=locator["memory_mib"],
            seed=locator["seed"],
            faults=faults,
            host=locator.get("host", "local"),
            host_faults=host_faults,
        )

