"""The engine interface and its local implementation: one supervised process per card.

The interface is small on purpose (submit a job pinned to one card, stream its events, cancel
it, get its outcome) so a distributed engine (Ray, one actor per card) can take the local one's
place without touching the stages or the session. The local engine supervises each worker: a
worker that crashes, hangs past its stage's deadline or loses its card costs only that card,
and nothing is retried silently.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from harness.session import CardJob, run_card_session

Outcome = Literal["done", "failed", "timed_out", "lost", "hung", "cancelled"]
POLL_S = 0.05
KILL_GRACE_S = 2.0
DEAD_GRACE_S = 0.3


@dataclass(frozen=True)
class EngineEvent:
    key: str  # the job's card key
    kind: str  # identity | stage_start | progress | sample | test | finding | outcome
    data: dict[str, Any]


class Engine(ABC):
    @abstractmethod
    def submit(self, job: CardJob) -> None: ...

    @abstractmethod
    def events(self) -> Iterator[EngineEvent]:
        """Events of every submitted job as they arrive; ends after the last job's ``outcome``."""

    @abstractmethod
    def cancel(self, key: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


def _worker_main(job: CardJob, q: Any) -> None:
    """Entry point of a card's worker process."""
    def emit(kind: str, data: dict[str, Any]) -> None:
        q.put((job.key, kind, data))

    state = run_card_session(job, emit)
    q.put((job.key, "outcome", {"state": state}))


@dataclass
class _Running:
    job: CardJob
    proc: Any
    started: float
    deadline: float | None = None
    stage: str | None = None
    finished: bool = False
    dead_since: float | None = None


class LocalEngine(Engine):
    """Runs each card in its own process on this host, at most ``parallel`` at once."""

    def __init__(self, parallel: int | None = None) -> None:
        self._ctx = mp.get_context("forkserver" if os.name == "posix" else "spawn")
        if os.name == "posix":
            self._ctx.set_forkserver_preload(["harness.session", "numpy", "pydantic"])
        self._queue = self._ctx.Queue()
        self._pending: list[CardJob] = []
        self._running: dict[str, _Running] = {}
        self._parallel = parallel or max(2, (os.cpu_count() or 2) * 2)

    def submit(self, job: CardJob) -> None:
        self._pending.append(job)

    def _start_more(self) -> None:
        while self._pending and sum(not r.finished for r in self._running.values()) < self._parallel:
            job = self._pending.pop(0)
            proc = self._ctx.Process(target=_worker_main, args=(job, self._queue), name=f"burnin-{job.key}", daemon=True)
            proc.start()
            self._running[job.key] = _Running(job=job, proc=proc, started=time.monotonic())

    def events(self) -> Iterator[EngineEvent]:
        self._start_more()
        while self._pending or any(not r.finished for r in self._running.values()):
            try:
                key, kind, data = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                yield from self._supervise()
                self._start_more()
                continue
            run = self._running.get(key)
            if run is None or run.finished:
                continue
            if kind == "stage_start":
                run.stage = data.get("stage")
                timeout = data.get("timeout_s")
                run.deadline = time.monotonic() + float(timeout) if timeout else None
            if kind == "outcome":
                run.finished = True
                run.proc.join(KILL_GRACE_S)
            yield EngineEvent(key, kind, data)
            if kind == "outcome":
                self._start_more()
        self._reap()

    def _supervise(self) -> Iterator[EngineEvent]:
        now = time.monotonic()
        for key, run in self._running.items():
            if run.finished:
                continue
            if run.deadline is not None and now > run.deadline:
                self._kill(run)
                run.finished = True
                yield EngineEvent(key, "outcome", {
                    "state": "timed_out", "stage": run.stage,
                    "detail": f"stage {run.stage!r} ran past its {run.deadline - run.started:.0f} s watchdog",
                })
            elif not run.proc.is_alive():
                # what a dead worker sent before dying may still be in the pipe: give it a moment
                if run.dead_since is None:
                    run.dead_since = now
                    continue
                if now - run.dead_since < DEAD_GRACE_S:
                    continue
                run.finished = True
                yield EngineEvent(key, "outcome", {
                    "state": "failed", "stage": run.stage,
                    "detail": f"worker process exited with code {run.proc.exitcode}",
                })

    def cancel(self, key: str) -> None:
        self._pending = [j for j in self._pending if j.key != key]
        run = self._running.get(key)
        if run and not run.finished:
            self._kill(run)
            run.finished = True
            self._queue.put((key, "outcome", {"state": "cancelled"}))

    def _kill(self, run: _Running) -> None:
        run.proc.terminate()
        run.proc.join(KILL_GRACE_S)
        if run.proc.is_alive():
            run.proc.kill()
            run.proc.join(KILL_GRACE_S)

    def _reap(self) -> None:
        for run in self._running.values():
            if run.proc.is_alive():
                run.proc.join(KILL_GRACE_S)
            if run.proc.is_alive():
                self._kill(run)

    def close(self) -> None:
        for run in self._running.values():
            if not run.finished and run.proc.is_alive():
                self._kill(run)
        self._pending.clear()
        self._reap()
