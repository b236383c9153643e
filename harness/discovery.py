"""From a rack config to the run's cards: each device entry discovered by its engine, each card
given its key, and every card a host says it has but discovery did not find listed as missing."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

from drivers.api import BackendUnavailable
from drivers.registry import get_backend, is_simulated
from harness.cards import CardSlot
from harness.config import DeviceEntry, RackConfig
from harness.engines import engine_kind
from harness.errors import HarnessUnavailable

__all__ = ["CardSlot", "discover_cards", "discover_here"]


def discover_here(cfg: RackConfig) -> Iterator[tuple[DeviceEntry, list[dict[str, Any]]]]:
    """Each device entry with its locators, discovered on this machine (the local engine)."""
    here = {"local", "localhost", socket.gethostname(), socket.gethostname().split(".")[0]}
    for entry in cfg.devices:
        if entry.host not in here and not is_simulated(entry.config.backend):
            raise HarnessUnavailable(
                f"{cfg.path}: {entry.label}: host {entry.host!r} is not this machine; the local engine runs "
                f"real cards only here (run burnin on {entry.host}, name this host \"local\", "
                f"or use [rack] engine = \"ray\")"
            )
        backend = get_backend(entry.config.backend)
        ctx = {"config_dir": str(cfg.path.parent.resolve()), "host": entry.host, "index": entry.index,
               "host_faults": next((h.faults for h in cfg.hosts if h.name == entry.host), [])}
        try:
            yield entry, backend.discover(entry.config, ctx)
        except BackendUnavailable as e:
            raise HarnessUnavailable(f"{cfg.path}: {entry.label}: {e}") from None


def discover_cards(cfg: RackConfig, engine: str | None = None) -> list[CardSlot]:
    """Turn the config's device entries into one CardSlot per card (exit 3 if a backend can't run
    here; on Ray a host that cannot run its cards gives them a finding instead). ``engine``
    overrides the config's (``devices`` opens cards in-process, so it discovers here)."""
    cards: list[CardSlot] = []
    used: set[str] = set()
    for entry, locators in engine_kind(engine or cfg.rack.engine).discover(cfg):
        for loc in locators:
            slot = int(loc.get("slot", entry.index))
            key = f"{entry.host}/{slot}"
            n = 1
            while key in used:
                key, n = f"{entry.host}/{slot}.{n}", n + 1
            used.add(key)
            loc.setdefault("host", entry.host)
            insts = [i.model_dump() for i in cfg.instruments_for(entry.host, slot)]
            cards.append(CardSlot(key, entry.host, slot, entry.config.backend, entry.label, loc, insts))
    return cards + _missing_cards(cfg, cards)


def _missing_cards(cfg: RackConfig, found: list[CardSlot]) -> list[CardSlot]:
    """A card the host says it has (``cards = N``) that discovery did not find: listed at its
    slot, so the run reports it ``bus.lost`` instead of quietly testing fewer cards."""
    out: list[CardSlot] = []
    for host in cfg.hosts:
        expected = host.expected_slots
        if expected is None:
            continue
        have = {c.slot for c in found if c.host == host.name}
        backend = str(host.devices[0].get("backend"))
        for slot in expected:
            if slot in have:
                continue
            why = f"no card found in slot {slot} of host {host.name!r}, which should have {len(expected)}"
            loc = {"backend": backend, "slot": slot, "host": host.name, "serial": None, "missing": why}
            insts = [i.model_dump() for i in cfg.instruments_for(host.name, slot)]
            out.append(CardSlot(f"{host.name}/{slot}", host.name, slot, backend,
                                f"hosts[{host.name}] slot {slot} (missing)", loc, insts))
    return out
