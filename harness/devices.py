"""``burnin devices``: identity, a telemetry snapshot and the findings of the stages that say
they belong in a listing (``Stage.listing_params``: preflight, the health stage with no
observation window), read in-process with no stress; and, for the plan, whether each card is
ready and which stages it will not be able to run (``ready``, ``cannot_run``: preflight's)."""

from __future__ import annotations

from typing import Any

from drivers.api import Device, DeviceError, DeviceLost
from drivers.derived import resolve_profile
from drivers.instruments.roles import BenchRoles
from drivers.profiles import ProfileError
from drivers.registry import get_backend
from harness.cards import CardSlot
from harness.session import bus_lost_finding, device_error_finding
from harness.verdict import dedupe
from stress.base import StageContext, listing_stages
from stress.model import soften

SCHEMA = "burnin.devices/1"


def _telemetry(dev: Device) -> dict[str, Any]:
    t = dev.telemetry()
    return {
        "temperature_c": t.temperature_c, "power_w": t.power_w, "power_limit_w": t.power_limit_w,
        "memory_total_mib": t.memory_total_mib, "memory_used_mib": t.memory_used_mib,
        "utilization_pct": t.utilization_pct, "clock_mhz": t.clock_mhz, "clock_max_mhz": t.clock_max_mhz,
        "fans_rpm": list(t.fans_rpm),
        "pcie": t.pcie.to_dict() if t.pcie else {"gen": None, "width": None, "max_gen": None, "max_width": None},
    }


def describe(card: CardSlot, stages: list[tuple[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "host": card.host, "slot": card.slot, "backend": card.backend,
        "model": card.locator.get("profile"), "serial": card.locator.get("serial"), "vendor": None,
        "uuid": None, "pci_bus_id": None, "profile": None, "profile_source": None, "firmware": {}, "telemetry": None, "findings": [],
    }
    dev: Device | None = None
    try:
        if card.locator.get("missing"):
            raise DeviceLost(str(card.locator["missing"]))
        dev = get_backend(card.backend).open(card.locator)
        ident = dev.identity()
        entry.update(model=ident.model, serial=ident.serial or ident.uuid, vendor=ident.vendor, uuid=ident.uuid,
                     pci_bus_id=ident.pci_bus_id, firmware=ident.firmware)
        entry["telemetry"] = _telemetry(dev)
        try:
            profile, source = resolve_profile(ident.to_dict(), card.locator)
        except ProfileError:
            return entry
        entry.update(profile=profile.name, profile_source=source)
        ctx = StageContext(device=dev, profile=profile, params=None, serial=ident.serial or card.key, slot=card.slot,
                           instruments=BenchRoles(port=str(card.instruments[0].get("port"))) if card.instruments
                           else BenchRoles())  # configured, not opened: a listing commands nothing
        ctx.facts.plan = stages or []
        found = []
        for stage in listing_stages():
            ctx.params = stage.Params.model_validate(stage.listing_params)
            res = stage().run(ctx)
            found += res.findings
            for key in ("ready", "cannot_run"):  # said up front by preflight
                if key in res.metrics:
                    entry[key] = res.metrics[key]
        entry["findings"] = [f.to_dict() for f in dedupe(soften(found, profile.assumed))]
    except DeviceLost as e:
        entry["findings"].append(bus_lost_finding("devices", e).to_dict())
    except DeviceError as e:
        entry["findings"].append(device_error_finding("devices", e).to_dict())
    finally:
        if dev is not None:
            try:
                dev.close()
            except Exception:  # noqa: BLE001
                pass
    return entry


def list_devices(cards: list[CardSlot], stages: list[tuple[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Every card; given the plan's stages, also what each will not be able to run."""
    return {"schema": SCHEMA, "devices": [describe(c, stages) for c in cards]}
