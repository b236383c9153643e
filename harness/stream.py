"""The run's event stream outside the process: a JSON-lines file written as the run goes
(``burnin run --events FILE``: one event a line, flushed per event, for CI, batch systems and other
tools) and read back (``burnin report --events FILE``: the result document rebuilt from it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from harness.clock import utcnow
from harness.errors import UsageError
from harness.records import RunRecords
from stress.events import Event, EventCodecError, EventConsumer, event_from_json, to_json

MAX_LINE = 64 * 1024 * 1024  # characters; one event (a test with its findings) is far smaller


class EventLog(EventConsumer):
    """Writes every event as one JSON line the moment it is handled (``at``: when the harness
    received it). ``append`` continues a file (a resumed run adds to its first session's log)."""

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path = Path(path)
        self._f: IO[str] | None = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def handle(self, key: str, event: Event) -> None:
        if self._f is None:
            return
        line = {**to_json(key, event), "at": utcnow()}
        self._f.write(json.dumps(line, default=_jsonable, separators=(",", ":")) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _jsonable(x: Any) -> Any:
    """What json cannot write itself (numpy scalars, tuples in sets, paths) as plain values."""
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, set | frozenset):
        return sorted(x)
    return str(x)


def read_events(path: str | Path) -> Iterator[tuple[str, Event]]:
    """(key, event) of every line of an events file; a line that is not a burnin event is a
    UsageError naming the file and line. A last line cut short (the run was killed mid-write) is
    skipped: everything before it is intact."""
    p = Path(path)
    try:
        f = open(p, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise UsageError(f"{p}: cannot read the events file: {e.strerror or e}") from None
    with f:
        bad: str | None = None  # a line that did not parse: fatal unless it turns out to be the last
        for n, line in enumerate(f, 1):
            if bad is not None:
                raise UsageError(bad)
            if not line.strip():
                continue
            if len(line) > MAX_LINE:
                raise UsageError(f"{p}:{n}: line longer than {MAX_LINE} bytes: not a burnin event")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                bad = f"{p}:{n}: not a JSON event ({e.msg})"
                continue
            try:
                yield event_from_json(obj)
            except EventCodecError as e:
                raise UsageError(f"{p}:{n}: {e}") from None
        # a last line that did not parse was being written when the run stopped: everything
        # before it is intact, so it is skipped


def rebuild_records(path: str | Path) -> RunRecords:
    """The run's records folded from an events file, exactly as the run folded them."""
    records = RunRecords()
    seen_start = False
    for key, event in read_events(path):
        seen_start = seen_start or event.kind == "run_start"
        records.handle(key, event)
    if not seen_start:
        raise UsageError(f"{path}: no run_start event: not the events file of a run (burnin run --events)")
    return records


def rebuild_document(path: str | Path) -> dict[str, Any]:
    """The result document of the run an events file records."""
    return rebuild_records(path).document()
