"""The worker side of the TUI: run the plan in a thread and hand every event to the app.

The app never talks to a device or the store; this module runs ``harness.runner.Run`` (which
owns the store connection, created in the worker thread because SQLite connections stay in the
thread that made them) and posts Textual messages. Stopping is cooperative: a flag the engine
checks while it waits for events, so even a card whose kernel hangs without a word is stopped
within one poll; the engine's ``close()`` then kills the workers and what was stored stays.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.message import Message

from harness.engine import Engine, LocalEngine, RunCancelled
from harness.errors import HarnessUnavailable, UsageError
from harness.runner import CardSlot, Run, make_engine, utcnow
from harness.store import Store
from stress.events import CardEvent, EventConsumer


class RunStarted(Message):
    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id


class EngineUpdate(Message):
    """One card event (``stress.events``) for the card ``key``."""

    def __init__(self, key: str, event: CardEvent) -> None:
        super().__init__()
        self.key = key
        self.event = event


class RunFinished(Message):
    """The verdict engine's document (each card carries its key)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        super().__init__()
        self.doc = doc


class RunStopped(Message):
    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id


class RunFailed(Message):
    def __init__(self, error: str, exit_code: int) -> None:
        super().__init__()
        self.error = error
        self.exit_code = exit_code


class _Poster(EventConsumer):
    """Hands every card event to the app as a message (the app folds it on its own thread)."""

    def __init__(self, post: Callable[[Message], Any]) -> None:
        self.post = post

    def handle(self, key: str, event: CardEvent) -> None:
        self.post(EngineUpdate(key, event))


def prepare_engine(stop: threading.Event, cfg: Any, cards: list[CardSlot]) -> Engine:
    """Build the engine the config names and start its process server now, on the main thread.

    Once Textual runs, ``sys.stderr`` is its capture object without a real file descriptor, and
    the forkserver would fail to start from the run's thread ("bad value(s) in fds_to_keep").
    """
    engine = make_engine(cfg, cards, should_stop=stop.is_set)
    if os.name == "posix" and isinstance(engine, LocalEngine):
        from multiprocessing import forkserver

        forkserver.ensure_running()
    return engine


def execute_run(cfg: Any, plan: Any, db_path: Path, cards: list[CardSlot], engine: Engine,
                post: Callable[[Message], Any]) -> None:
    """Run the plan to the end (or until ``stop``), posting every event; never raises."""
    run_id = ""
    store: Store | None = None
    try:
        store = Store(db_path)

        run = Run(cfg, plan, store, listeners=[_Poster(post)], engine=engine)
        run_id = run.start(cards)
        post(RunStarted(run_id))
        post(RunFinished(run.execute()))
    except RunCancelled:
        if store is not None and run_id:
            _mark_stopped(store, run_id)
        post(RunStopped(run_id))
    except (UsageError, HarnessUnavailable) as e:
        post(RunFailed(str(e), getattr(e, "exit_code", 3)))
    except Exception as e:  # noqa: BLE001 - shown in the UI and on exit, never a traceback
        post(RunFailed(f"{type(e).__name__}: {e}", 3))
    finally:
        if store is not None:
            store.close()


def _mark_stopped(store: Store, run_id: str) -> None:
    """Cards cut short say so (``burnin resume`` runs them again); finished ones keep their results."""
    at = utcnow()
    for row in store.run_cards(run_id):
        if row["state"] in ("pending", "running"):
            store.card_outcome(run_id, row["key"], "cancelled", "stopped from the bench TUI", at)
    store.finish_run(run_id, at, status="stopped")
