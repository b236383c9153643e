"""The fleet side of the Ray engine: which hosts joined, what each one found, and the findings a
host earns as a whole (contract section 6: ``host.lost``, ``host.unreachable``).

Discovery of a host's real cards runs on that host's node (``discover_on_host``, a Ray task
pinned there), because the cards, their vendor library and their serial ports are only there.
A host that has not joined within ``[rack] host_join_timeout_s``, whose discovery does not answer
in that time, that lacks the backend's library, or that has too little memory free, does not
stop the room: each of its device entries becomes one placeholder card carrying the finding
(locator key ``fleet_finding``), which the engine reports as that card's outcome without
running anything. Simulated (mock) cards are discovered here: they have no hardware to be near.
"""

from __future__ import annotations

import time
from typing import Any

from drivers.api import BackendUnavailable
from drivers.registry import get_backend, is_simulated
from drivers.units import MIB
from stress.model import Finding

FLEET_FINDING = "fleet_finding"  # locator key of a card that cannot run, with the finding why
JOIN_POLL_S = 0.5
DISCOVERY_TIMEOUT_S = 60.0  # a joined host's discovery answers within this (a worker start, a vendor tool)
ACTIONS = {"host.lost": "reset_and_retest", "host.unreachable": "reset_and_retest",
           "host.low_memory": "fix_host", "host.backend_unavailable": "fix_host", "host.no_cpu": "fix_host"}


def host_finding(code: str, host: str, message: str, **evidence: Any) -> dict[str, Any]:
    """A finding about a card's host rather than the card (the card is not proven either way)."""
    return Finding(code=code, severity="fail", action=ACTIONS[code], test="host", message=message,
                   evidence={"host": host, **evidence}).to_dict()


def discover_on_host(backend: str, raw: dict[str, Any], context: dict[str, Any], min_free_mib: float) -> dict[str, Any]:
    """Runs on the host's node: the entry's locators, or the finding that says why there are none."""
    import psutil

    host = str(context.get("host"))
    free = psutil.virtual_memory().available / MIB
    if free < min_free_mib:
        return {"finding": host_finding(
            "host.low_memory", host, f"host {host!r} has {free:.0f} MiB of memory free, below the "
            f"{min_free_mib:.0f} MiB a card's session needs ([rack] host_min_free_mib)", free_mib=round(free))}
    b = get_backend(backend)
    try:
        locators = b.discover(b.Config.model_validate(raw), context)
    except BackendUnavailable as e:
        return {"finding": host_finding("host.backend_unavailable", host, f"on host {host!r}: {e}", error=str(e))}
    return {"locators": locators}


def placeholder(entry: Any, finding: dict[str, Any]) -> dict[str, Any]:
    """The one card a device entry stands for when its host could not say which cards it has."""
    cfg = entry.config
    return {"backend": cfg.backend, "host": entry.host, "slot": cfg.slot if cfg.slot is not None else entry.index,
            "serial": cfg.serial, FLEET_FINDING: finding}


def discover_fleet(cfg: Any, placer: Any, ray: Any) -> list[tuple[Any, list[dict[str, Any]]]]:
    """Each device entry of ``cfg`` with its locators, real ones discovered on their host's node."""
    rack = cfg.rack
    deadline = time.monotonic() + rack.host_join_timeout_s
    real_hosts = {e.host for e in cfg.devices if not is_simulated(e.config.backend)}
    where: dict[str, dict[str, Any] | str] = {}
    while True:
        placer.refresh()
        where = {h: placer.options(h, real=True) for h in real_hosts}
        if all(isinstance(w, dict) for w in where.values()) or time.monotonic() >= deadline:
            break
        time.sleep(JOIN_POLL_S)
    task = ray.remote(num_cpus=0, max_retries=0)(discover_on_host)
    ctx0 = {"config_dir": str(cfg.path.parent.resolve())}
    pending: dict[int, Any] = {}
    for i, entry in enumerate(cfg.devices):
        w = where.get(entry.host)
        if isinstance(w, dict):
            ctx = {**ctx0, "host": entry.host, "index": entry.index}
            raw = entry.config.model_dump(exclude_none=True)
            pending[i] = task.options(**w).remote(entry.config.backend, raw, ctx, rack.host_min_free_mib)
    left = max(0.0, deadline - time.monotonic()) + DISCOVERY_TIMEOUT_S
    ready, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=left) if pending else ([], [])
    ready_set = set(ready)
    out: list[tuple[Any, list[dict[str, Any]]]] = []
    for i, entry in enumerate(cfg.devices):
        if is_simulated(entry.config.backend):  # a simulated card runs anywhere: discovered here
            ctx = {**ctx0, "host": entry.host, "index": entry.index,
                   "host_faults": next((h.faults for h in cfg.hosts if h.name == entry.host), [])}
            out.append((entry, get_backend(entry.config.backend).discover(entry.config, ctx)))
            continue
        ref = pending.get(i)
        if ref is None:
            out.append((entry, [placeholder(entry, host_finding(
                "host.unreachable", entry.host, f"host {entry.host!r} did not join the Ray cluster within "
                f"{rack.host_join_timeout_s:.0f} s: {where.get(entry.host)}"))]))
        elif ref not in ready_set:
            ray.cancel(ref, force=True)
            out.append((entry, [placeholder(entry, host_finding(
                "host.unreachable", entry.host, f"host {entry.host!r} did not answer discovery within "
                f"{left:.0f} s"))]))
        else:
            out.append((entry, _answer(ray, ref, entry)))
    return out


def _answer(ray: Any, ref: Any, entry: Any) -> list[dict[str, Any]]:
    try:
        answer = ray.get(ref)
    except Exception as e:  # noqa: BLE001 - the host's node died, or its worker could not start
        code = "host.lost" if isinstance(e, ray.exceptions.NodeDiedError) else "host.backend_unavailable"
        return [placeholder(entry, host_finding(code, entry.host, f"discovery on host {entry.host!r} failed: "
                                                f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"))]
    if "finding" in answer:
        return [placeholder(entry, answer["finding"])]
    return [{**loc, "host": entry.host} for loc in answer["locators"]]
