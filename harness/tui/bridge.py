"""The worker side of the TUI: run the plan in a thread and hand every event to the app.

The app never talks to a device or the store; this module starts the run the way the CLI does
(``harness.launch.start_run``, which owns the store connection, created in the worker thread
because SQLite connections stay in the thread that made them) and posts Textual messages: every
event of the run's stream, verdicts included, as they happen. Stopping is cooperative: a flag the engine
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

from harness.cards import CardSlot
from harness.engine import Engine, LocalEngine, RunCancelled
from harness.engines import make_engine
from harness.errors import HarnessUnavailable, UsageError
from harness.launch import RunRequest, start_run
from harness.records import RunRecords
from harness.runner import Run
from harness.store import Store
from stress.events import Event, EventConsumer


class RunStarted(Message):
    """The run has its id; ``records`` are the run's own card records (read-only for the app)."""

    def __init__(self, run_id: str, records: RunRecords | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.records = records


class EngineUpdate(Message):
    """One event of the run's stream (``stress.events``) for the card ``key``."""

    def __init__(self, key: str, event: Event) -> None:
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

    def handle(self, key: str, event: Event) -> None:
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
    """Run the plan to the end (or until stopped), posting every event; never raises. The app
    holds the cards' locks for as long as it lives."""
    run_id = ""

    def started(run: Run) -> None:
        nonlocal run_id
        run_id = run.run_id
        post(RunStarted(run.run_id, run.records))

    store: Store | None = None
    try:
        store = Store(db_path)
        req = RunRequest(cfg, plan, str(db_path), listeners=[_Poster(post)])
        post(RunFinished(start_run(req, store, cards, engine=engine, started=started, lock=False)))
    except RunCancelled:
        post(RunStopped(run_id))
    except (UsageError, HarnessUnavailable) as e:
        post(RunFailed(str(e), getattr(e, "exit_code", 3)))
    except Exception as e:  # noqa: BLE001 - shown in the UI and on exit, never a traceback
        post(RunFailed(f"{type(e).__name__}: {e}", 3))
    finally:
        if store is not None:
            store.close()
