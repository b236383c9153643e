"""Where each card of a run is: the one record discovery makes of a card before it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CardSlot:
    """One card of the run: its key (``host/slot``, unique in the run), where it is, the locator
    its backend opens it by, and the bench instruments wired to its slot."""

    key: str
    host: str
    slot: int
    backend: str
    label: str
    locator: dict[str, Any]
    instruments: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """What the run's ``RunStarted`` event says of this card."""
        return {"key": self.key, "host": self.host, "slot": self.slot, "backend": self.backend,
                "locator": dict(self.locator)}
