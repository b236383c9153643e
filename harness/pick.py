"""``--only SERIAL|HOST/SLOT``: the cards of a rack one run (or a TUI retest) is limited to."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.errors import UsageError


def _names(card: Any) -> set[str]:
    loc = card.locator or {}
    out = {card.key, f"{card.host}/{card.slot}"}
    for k in ("serial", "uuid"):
        if loc.get(k):
            out.add(str(loc[k]))
    return out


def pick_cards(cards: list[Any], only: Iterable[str], where: str = "") -> list[Any]:
    """The cards any selector names, in rack order; a selector that names none is an error."""
    wanted = [s.strip() for s in only if s.strip()]
    if not wanted:
        return cards
    names = {c.key: _names(c) for c in cards}
    for sel in wanted:
        if not any(sel in n for n in names.values()):
            have = ", ".join(sorted({str((c.locator or {}).get("serial") or c.key) for c in cards}))
            raise UsageError(f"{where + ': ' if where else ''}--only {sel}: no card with that serial or host/slot "
                             f"(have: {have})")
    return [c for c in cards if names[c.key] & set(wanted)]
