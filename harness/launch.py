"""One way to start a run, for the CLI (``run``, ``resume``) and the TUI alike.

Everything a run needs is checked before its first card starts, in the same order wherever it is
started from: the results database (``resolve_db`` is the one place its default is decided), the
cards (discovered, narrowed by ``--only``, on resume only those not finished), the card locks;
then ``start_run`` runs it through ``harness.runner.Run`` with the caller's listeners.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.cards import CardSlot
from harness.config import RackConfig
from harness.db.target import DbTarget, as_target
from harness.discovery import discover_cards
from harness.errors import UsageError
from harness.locks import lock_cards
from harness.pick import pick_cards
from harness.plans import Plan
from harness.runner import Run
from harness.store import Store, default_db_path
from stress.events import EventConsumer
from stress.record import FINISHED_STATES


def resolve_db(cli_db: str | None, cfg: RackConfig | None) -> DbTarget:
    """The results database every verb agrees on: ``--db`` (a path relative to the working
    directory, or a ``postgresql://`` URL), else the config's ``db`` (a path relative to the
    config's folder, or a URL), else the default (``$BURNIN_DB``, else ``./burnin.db``)."""
    if cli_db:
        return as_target(cli_db)
    if cfg is not None and cfg.rack.db:
        try:
            return as_target(cfg.rack.db, base=cfg.base_dir)
        except UsageError as e:
            raise UsageError(f"{cfg.path}: rack.db: {e}") from None
    return default_db_path()


def open_store(cli_db: str | None, cfg: RackConfig | None, readonly: bool = False) -> Store:
    """Open (and check) the results database before any card starts."""
    return Store(resolve_db(cli_db, cfg), readonly=readonly)


@dataclass
class RunRequest:
    """What the user asked for: a plan over a rack (or some of its cards), or the rest of an
    interrupted run."""

    cfg: RackConfig
    plan: Plan
    db: str | None = None
    only: tuple[str, ...] = ()
    resume_id: str | None = None
    listeners: list[EventConsumer] = field(default_factory=list)

    @property
    def db_path(self) -> DbTarget:
        return resolve_db(self.db, self.cfg)


def select_cards(req: RunRequest, store: Store, discovered: list[CardSlot] | None = None) -> list[CardSlot]:
    """The cards this run tests: those ``--only`` names (all by default); on resume, those the
    interrupted run had not finished."""
    cards = pick_cards(discovered if discovered is not None else discover_cards(req.cfg), req.only,
                       str(req.cfg.path))
    if req.resume_id is None:
        return cards
    done = {r["key"] for r in store.run_cards(req.resume_id) if r["state"] in FINISHED_STATES}
    return [c for c in cards if c.key not in done]


def start_run(req: RunRequest, store: Store, cards: Iterable[CardSlot], engine: Any = None,
              started: Callable[[Run], None] | None = None, lock: bool = True) -> dict[str, Any]:
    """Lock the cards (unless the caller holds them), start or resume the run, run it to its end;
    the result document. ``started`` hears of the run once it has its id (progress, TUI)."""
    cards = list(cards)
    locks = lock_cards(cards, store.path) if lock else None
    try:
        run = Run(req.cfg, req.plan, store, listeners=req.listeners, engine=engine)
        if req.resume_id is None:
            run.start(cards)
        else:
            run.resume(req.resume_id, cards)
        if started is not None:
            started(run)
        return run.execute()
    finally:
        if locks is not None:
            locks.release()
