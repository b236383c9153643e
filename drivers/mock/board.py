"""Board and host faults of a mock host (docs/mock-faults.md, Interconnect): they go in the host's
own ``faults`` (``[[hosts]] faults = [...]``) and stay with the slot whatever card sits in it.

A board is the cards of one host whose profiles give them the same kind of link (NVLink of one
generation and count, or HCCS); a card with no links, or another kind, is not on it. These kinds
need a board on the host, and ``board.link`` a card with that link in that slot: anything else
is an exit-2 error naming the host and the fault when the config loads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from drivers.mock.faults import FaultError, _Fault
from drivers.profiles import Profile


class BoardLink(_Fault):
    """A baseboard link fault at one slot: as ``link.down`` / ``link.degraded`` on whatever card
    sits there; a card moved to another slot is clean."""

    kind: Literal["board.link"]
    slot: Annotated[int, Field(ge=0, le=1023)]
    link: Annotated[int, Field(ge=0, le=63)]
    state: Literal["down", "degraded"]
    bandwidth_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5
    errors_per_s: Annotated[float, Field(ge=0, le=1e9)] = 50.0


class HostP2pBlocked(_Fault):
    """P2P access is refused between every pair (ACS / IOMMU): copies go through host memory."""

    kind: Literal["host.p2p_blocked"]


class FabricManagerDown(_Fault):
    """The NVSwitch fabric manager is not running: the fabric state says so, no NVLink P2P."""

    kind: Literal["fabric.manager_down"]


HOST_FAULT_KINDS: dict[str, type[_Fault]] = {
    "board.link": BoardLink, "host.p2p_blocked": HostP2pBlocked, "fabric.manager_down": FabricManagerDown,
}


def board_key(profile: Profile) -> tuple[Any, ...] | None:
    """Cards with equal keys are on one board; None: the card has no links."""
    return None if profile.links is None else profile.links.board_key


def parse_host_fault(spec: Any, cards: dict[int, Profile] | None = None) -> _Fault:
    """Validate one host fault, and against the host's mock cards (slot -> profile) when given."""
    if not isinstance(spec, dict):
        raise FaultError("faults", f"a fault must be a table like {{ kind = ... }}, got {spec!r}")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in HOST_FAULT_KINDS:
        raise FaultError("kind", f"unknown host fault kind {kind!r} (known: {', '.join(sorted(HOST_FAULT_KINDS))})")
    try:
        fault = HOST_FAULT_KINDS[kind].model_validate(spec)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "kind"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown parameter {field!r} for {kind}"
        elif err["type"] == "missing":
            msg = f"missing parameter {field!r} for {kind}"
        raise FaultError(field, msg) from None
    if cards is None:
        return fault
    linked = {s: p for s, p in cards.items() if p.links is not None}
    if not linked:
        raise FaultError("kind", f"{kind}: the host has no board (none of its mock cards has links)")
    if isinstance(fault, BoardLink):
        prof = linked.get(fault.slot)
        if prof is None or prof.links is None:
            have = ", ".join(map(str, sorted(linked)))
            raise FaultError("slot", f"no card with links in slot {fault.slot} (board slots: {have})")
        if fault.link >= prof.links.count:
            raise FaultError("link", f"link {fault.link} does not exist in slot {fault.slot} "
                                     f"(links 0-{prof.links.count - 1})")
    return fault


def slot_faults(faults: list[_Fault], slot: int) -> list[_Fault]:
    """The host faults that act on the card in ``slot``: its board links, and the host-wide ones."""
    return [f for f in faults if not isinstance(f, BoardLink) or f.slot == slot]
