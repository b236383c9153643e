"""Live progress on stderr while a run goes: one bar per card (or one overall bar for a rack)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from harness.engine import EngineEvent

PER_CARD_BARS_MAX = 24  # above this many cards, show one overall bar


class LiveProgress:
    def __init__(self, cards: list[Any], plan: Any, enabled: bool = True) -> None:
        self.cards = cards
        self.n_stages = max(1, len(plan.stages))
        self.enabled = enabled
        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=28), TextColumn("{task.fields[status]}"),
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
                self.tasks[c.key] = self.progress.add_task(f"{c.key:<10} {c.locator.get('serial') or '':<14}",
                                                           total=self.n_stages, status="waiting")
        else:
            self.overall = self.progress.add_task(f"{len(self.cards)} cards", total=len(self.cards), status="")
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.enabled:
            self.progress.stop()

    def set_run(self, run_id: str, db: Path) -> None:
        if self.enabled:
            self.console.print(f"run {run_id}  (results: {db})", style="dim")

    def on_event(self, ev: EngineEvent) -> None:
        if not self.enabled:
            return
        task = self.tasks.get(ev.key)
        if ev.kind == "identity" and task is not None:
            self.progress.update(task, description=f"{ev.key:<10} {ev.data.get('serial') or '':<14}")
        elif ev.kind == "stage_start":
            self.stage_index[ev.key] = int(ev.data.get("index", 0))
            if task is not None:
                self.progress.update(task, completed=self.stage_index[ev.key], status=str(ev.data.get("stage")))
        elif ev.kind == "progress" and task is not None:
            frac = float(ev.data.get("fraction", 0.0))
            self.progress.update(task, completed=self.stage_index.get(ev.key, 0) + frac)
        elif ev.kind == "test" and ev.data.get("status") in ("fail", "error"):
            self.flagged.add(ev.key)
            if task is not None:
                self.progress.update(task, status=f"{ev.data['name']}: {ev.data['status'].upper()}")
        elif ev.kind == "outcome":
            self.done += 1
            state = ev.data.get("state", "done")
            if task is not None:
                self.progress.update(task, completed=self.n_stages, status=state)
            elif self.overall is not None:
                self.progress.update(self.overall, completed=self.done,
                                     status=f"{self.done} finished, {len(self.flagged)} with failures")
            if state != "done":
                self.console.print(f"{ev.key}: {state} {ev.data.get('detail') or ''}".rstrip(), style="yellow")


def isatty() -> bool:
    return sys.stderr.isatty()
