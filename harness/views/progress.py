"""Live progress on stderr while a run goes: one bar per card (or one overall bar for a rack).

Descriptions and statuses carry device and plan strings, so the columns never parse markup and
every string goes through ``harness.views.safe``."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from harness.views.safe import cell, visible
from stress.events import Event, EventConsumer, Identity, Outcome, StageStarted, TestDone
from stress.events import Progress as ProgressEvent

PER_CARD_BARS_MAX = 24  # above this many cards, show one overall bar


class LiveProgress(EventConsumer):
    def __init__(self, cards: list[Any], plan: Any, enabled: bool = True) -> None:
        self.cards = cards
        self.n_stages = max(1, len(plan.stages))
        self.enabled = enabled
        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(bar_width=28),
            TextColumn("{task.fields[status]}", markup=False),
            TimeElapsedColumn(), console=self.console, transient=False,
            disable=not enabled, refresh_per_second=8,
        )
        self.tasks: dict[str, TaskID] = {}
        self.stage_index: dict[str, int] = {}
        self.done = 0
        self.flagged: set[str] = set()  # cards with a failed or errored test so far
        self.overall: TaskID | None = None

    def __enter__(self) -> LiveProgress:
        if not self.enabled:
            return self
        self.progress.start()
        if len(self.cards) <= PER_CARD_BARS_MAX:
            for c in self.cards:
                self.tasks[c.key] = self.progress.add_task(_label(c.key, c.locator.get("serial")),
                                                           total=self.n_stages, status="waiting")
        else:
            self.overall = self.progress.add_task(f"{len(self.cards)} cards", total=len(self.cards), status="")
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.enabled:
            self.progress.stop()

    def set_run(self, run_id: str, db: object) -> None:
        if self.enabled:
            self.console.print(cell(f"run {run_id}  (results: {db})", style="dim"))

    def handle(self, key: str, event: Event) -> None:
        if self.enabled:
            super().handle(key, event)

    def on_identity(self, key: str, ev: Identity) -> None:
        if (task := self.tasks.get(key)) is not None:
            self.progress.update(task, description=_label(key, ev.serial))

    def on_stage_start(self, key: str, ev: StageStarted) -> None:
        self.stage_index[key] = ev.index
        if (task := self.tasks.get(key)) is not None:
            self.progress.update(task, completed=ev.index, status=visible(ev.stage))

    def on_progress(self, key: str, ev: ProgressEvent) -> None:
        if (task := self.tasks.get(key)) is not None:
            self.progress.update(task, completed=self.stage_index.get(key, 0) + ev.fraction)

    def on_test(self, key: str, ev: TestDone) -> None:
        if ev.result.status not in ("fail", "error"):
            return
        self.flagged.add(key)
        if (task := self.tasks.get(key)) is not None:
            self.progress.update(task, status=visible(f"{ev.result.name}: {ev.result.status.upper()}"))

    def on_outcome(self, key: str, ev: Outcome) -> None:
        self.done += 1
        if (task := self.tasks.get(key)) is not None:
            self.progress.update(task, completed=self.n_stages, status=visible(ev.state))
        elif self.overall is not None:
            self.progress.update(self.overall, completed=self.done,
                                 status=f"{self.done} finished, {len(self.flagged)} with failures")
        if ev.state != "done":
            self.console.print(cell(f"{key}: {ev.state} {ev.detail or ''}".rstrip(), style="yellow"))


def _label(key: str, serial: str | None) -> str:
    """A bar's description: the card's place and serial, literal and bounded."""
    return f"{visible(key)[:40]:<10} {visible(serial or '')[:40]:<14}"


def isatty() -> bool:
    return sys.stderr.isatty()
