"""The mock backend: simulated cards with fault injection (mock-faults.md)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from drivers.api import Device
from drivers.mock.faults import FaultError, parse_fault
from drivers.profiles import ProfileError, load_profile
from drivers.registry import Backend, BackendConfig, ConfigFieldError, register_backend
from drivers.units import MIB


class MockConfig(BackendConfig):
    profile: str
    serial: str | None = None  # default: derived from host and slot, so it is stable across runs
    slot: int | None = None
    memory_mib: int = Field(default=64, ge=1, le=65536)
    seed: int | None = None
    faults: list[dict[str, Any]] = []

    def check(self) -> None:
        """The profile must exist and every fault must be valid for that card."""
        try:
            profile = load_profile(self.profile)
        except ProfileError as e:
            raise ConfigFieldError("profile", str(e)) from None
        for fi, spec in enumerate(self.faults):
            try:
                parse_fault(spec, self.memory_mib * MIB, profile.cooling.fault_fans)
            except FaultError as e:
                kind = spec.get("kind") if isinstance(spec, dict) else None
                raise ConfigFieldError(f"faults[{fi}] ({kind}).{e.field}", str(e)) from None


@register_backend
class MockBackend(Backend):
    name = "mock"
    Config = MockConfig

    def discover(self, cfg: BackendConfig, context: dict[str, Any]) -> list[dict[str, Any]]:
        assert isinstance(cfg, MockConfig)
        slot = cfg.slot if cfg.slot is not None else context.get("index", 0)
        host = context.get("host", "local")
        return [
            {
                "backend": "mock",
                "slot": slot,
                "serial": cfg.serial or f"SIM-{host}-{slot:02d}",
                "profile": cfg.profile,
                "memory_mib": cfg.memory_mib,
                "seed": cfg.seed,
                "faults": list(cfg.faults),
                "host": context.get("host", "local"),
            }
        ]

    def open(self, locator: dict[str, Any]) -> Device:
        from drivers.mock.device import MIB, MockDevice
        from drivers.profiles import load_profile

        profile = load_profile(locator["profile"])
        size = locator["memory_mib"] * MIB
        faults = [parse_fault(f, size, profile.cooling.fault_fans) for f in locator["faults"]]
        return MockDevice(
            profile,
            serial=locator["serial"],
            slot=locator["slot"],
            memory_mib=locator["memory_mib"],
            seed=locator["seed"],
            faults=faults,
            host=locator.get("host", "local"),
        )
