"""The engine interface and its local implementation: one supervised process per card.

The interface is small on purpose (submit a job pinned to one card, stream its events, cancel
it, get its outcome) so a distributed engine (Ray, one actor per card) can take the local one's
place without touching the stages or the session. The local engine supervises each worker: a
worker that crashes, hangs past its stage's deadline or loses its card costs only that card,
and nothing is retried silently.

Each worker sends its events down its own pipe, synchronously: once ``emit`` returns, the
event is in the kernel's buffer, so a worker that dies a moment later (a segfault in a vendor
library) has lost nothing it already reported. A worker's death shows as end-of-file on its
pipe, at once.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, ClassVar

from drivers.registry import is_simulated
from harness.cards import CardSlot
from harness.discovery import discover_here
from harness.engines import EngineKind, register_engine
from harness.host_session import HostJob, run_job
from harness.session import CardJob
from stress.events import CardEvent, Outcome, StageStarted

if TYPE_CHECKING:  # ForkServerContext exists only where fork does (not on Windows)
    from multiprocessing.context import ForkServerContext, SpawnContext

POLL_S = 0.05
KILL_GRACE_S = 2.0


class RunCancelled(Exception):
    """The run was stopped on request (Ctrl-C in the TUI, a cancel from a controller)."""


@dataclass(frozen=True)
class EngineEvent:
    """A card event (``stress.events``) and the key of the card it is about."""

    key: str  # the job's card key
    event: CardEvent

    @property
    def kind(self) -> str:
        return self.event.kind


class Engine(ABC):
    shares_host_bench: ClassVar[bool] = False  # workers run on this machine: they can reach a host's bench broker

    @abstractmethod
    def submit(self, job: CardJob | HostJob) -> None:
        """Queue a card's job, or a host's (its events carry its cards' keys; its Outcome, its own)."""

    @abstractmethod
    def events(self) -> Iterator[EngineEvent]:
        """Events of every submitted job as they arrive; ends after the last job's ``outcome``."""

    @abstractmethod
    def cancel(self, key: str) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Stop every job still running (its worker is killed) and release resources."""


@dataclass
class JobRecord:
    """What a supervising engine knows of one submitted job."""

    job: CardJob | HostJob
    started: float
    deadline: float | None = None
    timeout_s: float | None = None
    stage: str | None = None
    finished: bool = False

    def note(self, event: CardEvent) -> None:
        """Track the stage a job is in and its wall-clock watchdog (from ``StageStarted``)."""
        if isinstance(event, StageStarted):
            self.stage = event.stage
            self.timeout_s = float(event.timeout_s) if event.timeout_s else None
            self.deadline = time.monotonic() + self.timeout_s if self.timeout_s else None


class SupervisingEngine(Engine):
    """What every engine does the same way: a queue of jobs, at most ``parallel`` at once, a
    per-stage watchdog, cancel, and the list of jobs that never reported an outcome. Subclasses
    say how a job is started, read and killed."""

    def __init__(self, parallel: int | None) -> None:
        self._pending: list[CardJob | HostJob] = []
        self._running: dict[str, Any] = {}  # key -> a JobRecord subclass
        self._parallel = parallel

    def submit(self, job: CardJob | HostJob) -> None:
        self._pending.append(job)

    def _active(self) -> list[Any]:
        return [r for r in self._running.values() if not r.finished]

    @abstractmethod
    def _kill(self, run: Any) -> None: ...

    def _deadlines(self) -> Iterator[EngineEvent]:
        now = time.monotonic()
        for run in self._active():
            if run.deadline is not None and now > run.deadline:
                self._kill(run)
                run.finished = True
                yield EngineEvent(run.job.key, Outcome(
                    "timed_out", run.stage, f"stage {run.stage!r} ran past its {run.timeout_s:.0f} s watchdog"))

    def cancel(self, key: str) -> None:
        self._pending = [j for j in self._pending if j.key != key]
        run = self._running.get(key)
        if run and not run.finished:
            self._kill(run)
            run.finished = True

    def unfinished(self) -> list[str]:
        """Keys of jobs that had not reported an outcome (for marking them cancelled)."""
        return [j.key for j in self._pending] + [r.job.key for r in self._running.values() if not r.finished]


class _WorkerStopped(BaseException):
    """The supervisor ended this worker (SIGTERM) or went away (a broken pipe): unwind quietly."""


_QUIET_EXITS = (_WorkerStopped, BrokenPipeError, ConnectionResetError, EOFError, KeyboardInterrupt)


def _quiet_worker_signals() -> None:
    """Ctrl-C and a closed terminal reach the whole process group: the supervisor decides what
    stops, so workers ignore SIGINT and SIGHUP. SIGTERM (the supervisor's kill) unwinds the session
    so its teardown runs (fans restored, instruments and their temp folders closed), without a
    traceback."""
    def on_term(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the teardown short
        raise _WorkerStopped()

    for name in ("SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)


def _run_one(job: CardJob | HostJob, conn: Connection) -> None:
    def send(key: str, event: Any) -> None:
        try:  # a host job's events belong to its cards (or the run): they travel with their key
            conn.send(event if key == job.key else (key, event))
        except (BrokenPipeError, ConnectionResetError, EOFError) as e:  # the supervisor is gone
            raise _WorkerStopped() from e

    state = run_job(job, send)
    conn.send(Outcome(state))


def _worker_main(job: CardJob | HostJob, conn: Connection) -> None:
    """Entry point of a card's worker process; it never prints a traceback of its own ending."""
    _quiet_worker_signals()
    try:
        _run_one(job, conn)
        conn.close()
    except _QUIET_EXITS:
        os._exit(143)


def _pool_worker_main(conn: Connection) -> None:
    """Entry point of a reusable worker: one card at a time, the next job once the last is done,
    until it is sent None. A worker that dies still costs only the card it was running."""
    _quiet_worker_signals()
    try:
        while (job := conn.recv()) is not None:
            _run_one(job, conn)
        conn.close()
    except _QUIET_EXITS:
        os._exit(143)


@dataclass
class _Running(JobRecord):
    proc: Any = field(kw_only=True)
    conn: Connection = field(kw_only=True)


class LocalEngine(SupervisingEngine):
    """Runs each card in its own process on this host, at most ``parallel`` at once.

    ``should_stop`` is polled between events (at least every POLL_S): when it returns True,
    ``events`` raises RunCancelled, even if every card is hung and silent.

    ``reuse_workers`` (simulated racks) hands a worker the next card once its last one is done,
    instead of a fresh process per card: starting a process costs the controller more than a
    mock card's whole health check. A worker still runs one card at a time, and one that dies or
    is killed is replaced, so a crash or a hang still costs only its card.
    """

    shares_host_bench = True
    _parallel: int  # always set: a default when none is given

    def __init__(self, parallel: int | None = None, should_stop: Callable[[], bool] | None = None,
                 reuse_workers: bool = False) -> None:
        super().__init__(parallel or max(2, (os.cpu_count() or 2) * 2))
        self._ctx: ForkServerContext | SpawnContext = (
            mp.get_context("forkserver") if os.name == "posix" else mp.get_context("spawn"))
        if os.name == "posix":
            self._ctx.set_forkserver_preload(["harness.session", "harness.host_session", "harness.worker_preload",
                                              "numpy", "pydantic"])
        self._should_stop = should_stop or (lambda: False)
        self._reuse = reuse_workers
        self._idle: list[tuple[Any, Connection]] = []  # reusable workers waiting for a card

    def _start_more(self) -> None:
        while self._pending and len(self._active()) < self._parallel:
            job = self._pending.pop(0)
            if self._reuse:
                proc, conn = self._idle.pop() if self._idle else self._spawn_pooled(job.key)
                try:
                    conn.send(job)
                except OSError:  # the idle worker died meanwhile: a fresh one takes the card
                    proc, conn = self._spawn_pooled(job.key)
                    conn.send(job)
            else:
                conn, writer = self._ctx.Pipe(duplex=False)
                proc = self._ctx.Process(target=_worker_main, args=(job, writer), name=f"burnin-{job.key}",
                                         daemon=True)
                proc.start()
                writer.close()  # the worker holds the only write end: its death is EOF here
            self._running[job.key] = _Running(job=job, started=time.monotonic(), proc=proc, conn=conn)

    def _spawn_pooled(self, key: str) -> tuple[Any, Connection]:
        mine, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_pool_worker_main, args=(theirs,), name=f"burnin-pool-{key}", daemon=True)
        proc.start()
        theirs.close()  # the worker holds the only other end: its death is EOF here
        return proc, mine

    def events(self) -> Iterator[EngineEvent]:
        self._start_more()
        while self._pending or self._active():
            if self._should_stop():
                raise RunCancelled("stopped on request")
            by_conn = {r.conn: r for r in self._active()}
            for conn in wait(list(by_conn), timeout=POLL_S):
                run = by_conn[conn]
                yield from self._read(run)
            yield from self._deadlines()
            self._start_more()
        self._reap()

    def _read(self, run: _Running) -> Iterator[EngineEvent]:
        key = run.job.key
        try:
            event = run.conn.recv()
        except (EOFError, OSError):
            run.finished = True
            run.proc.join(KILL_GRACE_S)
            run.conn.close()
            yield EngineEvent(key, Outcome("failed", run.stage, f"worker process exited with code {run.proc.exitcode}"))
            return
        if isinstance(event, tuple):  # a host job's event about one of its cards (or the run)
            key, event = event
        run.note(event)
        if isinstance(event, Outcome) and key == run.job.key:
            run.finished = True  # the worker is exiting (or idle): reaped later, not waited for here
            if self._reuse:
                self._idle.append((run.proc, run.conn))
            else:
                run.conn.close()
        yield EngineEvent(key, event)

    def _kill(self, run: _Running) -> None:
        """SIGTERM (the worker tears its card down), then SIGKILL. By pid, not through the
        Process object: when a hang-up has taken the fork server with it, the object reports
        every worker dead while they still run."""
        if not _gone(run.proc.pid, 0.0):
            _send(run.proc.pid, signal.SIGTERM)
            if not _gone(run.proc.pid, KILL_GRACE_S):
                _send(run.proc.pid, signal.SIGKILL)
                _gone(run.proc.pid, KILL_GRACE_S)
        run.proc.join(0)
        run.conn.close()

    def _reap(self) -> None:
        while self._idle:
            proc, conn = self._idle.pop()
            try:
                conn.send(None)
                conn.close()
            except OSError:
                pass
        for run in self._running.values():
            if run.proc.is_alive():
                run.proc.join(KILL_GRACE_S)
            if run.proc.is_alive():
                self._kill(run)

    def close(self) -> None:
        for run in self._running.values():
            if not run.finished:
                self._kill(run)
                run.finished = True
        self._pending.clear()
        self._reap()


def _send(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _gone(pid: int | None, wait_s: float) -> bool:
    """Has process ``pid`` ended (and been reaped by the fork server or init)? Asked only of a
    worker whose outcome has not arrived, so its pid is still its own."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if not pid:
                return True
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


MOCK_CARDS_PER_CPU = 4


@register_engine
class LocalKind(EngineKind):
    """``engine = "local"``: cards discovered and run on this machine."""

    name = "local"

    @classmethod
    def discover(cls, cfg: Any) -> list[tuple[Any, list[dict[str, Any]]]]:
        return list(discover_here(cfg))

    @classmethod
    def build(cls, cfg: Any, cards: list[CardSlot], should_stop: Callable[[], bool] | None) -> Engine:
        """Real cards all run at once (each is its own hardware); simulated cards share the CPUs,
        so a large simulated rack runs a few per core at a time, in reused workers."""
        simulated = all(is_simulated(c.backend) for c in cards)
        parallel = cfg.rack.parallel
        if parallel is None and simulated:
            parallel = min(len(cards), MOCK_CARDS_PER_CPU * (os.cpu_count() or 2)) or 1
        return LocalEngine(parallel=parallel or max(1, len(cards)), should_stop=should_stop,
                           reuse_workers=simulated)
