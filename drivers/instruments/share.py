"""One bench controller for every card worker of a host: a broker that owns the port.

A serial port has one owner (it is opened exclusively), but a chassis has one controller for all
its slots and every card of the host runs in its own worker process. So the harness opens the
controller once per host and serves it from a :class:`BenchBroker` (threads in the harness
process, a ``multiprocessing.connection`` listener on a Linux abstract socket or a private temp
path). Each card's worker connects a :class:`BenchClient`: the same typed calls as a
:class:`~drivers.instruments.bench.BenchController`, plus the chassis lease, which lives in the
broker so that it spans every card of the host. A worker that dies or hangs up releases its
lease at once (its connection closes), so a killed card never holds the chassis.

Errors keep their types across the pipe (``InstrumentError`` pickles), so a stage sees the same
``instrument.*`` failure it would see on a port of its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from drivers.instruments.roles import LeaseMode, LeaseRecord, LocalLease, SlotMap
from drivers.instruments.transport import InstrumentDisconnected

CALLS = frozenset({"set_fan_duty", "fan_duty", "fan_rpm", "tach_rpm", "inlet_c", "outlet_c",
                   "slot_power", "slot_powered", "errors"})
PROPERTIES = frozenset({"fans", "tachs", "slots", "probes"})
LISTEN_BACKLOG = 128


@dataclass(frozen=True)
class BenchAccess:
    """How one card's worker reaches its host's bench (picklable: it travels in the card's job).

    ``address``/``authkey``: the host broker; ``slot``: this card's channels. ``error``: the
    harness could not open the port (the card reports it as ``instrument.unavailable`` and runs
    without the bench, still under the chassis lease)."""

    port: str
    address: str
    authkey: bytes
    slot: SlotMap = field(default_factory=SlotMap)
    power_cycle: bool = False
    error: str | None = None


class BenchBroker:
    """Serve one controller (or, with ``controller=None``, only the chassis lease) to the
    card workers of one host. ``start()`` then hand out :meth:`access`; ``close()`` at the end."""

    def __init__(self, controller: Any | None, port: str) -> None:
        self.controller = controller
        self.port = port
        self.lease = LocalLease()
        self.authkey = secrets.token_bytes(16)
        self._dir: str | None = None
        self._listener: Listener | None = None
        self._conns: list[Connection] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()

    @property
    def address(self) -> str:
        assert self._listener is not None, "BenchBroker is not started"
        addr = self._listener.address
        return addr.decode() if isinstance(addr, bytes) else str(addr)

    @property
    def log(self) -> list[LeaseRecord]:
        """Every lease granted so far (copies)."""
        with self.lease._cond:
            return [LeaseRecord(**vars(r)) for r in self.lease.log]

    def start(self) -> BenchBroker:
        if sys.platform.startswith("linux"):  # abstract namespace: nothing on disk to leak if killed
            address = f"\0burnin-bench-{os.getpid()}-{secrets.token_hex(6)}"
        else:  # pragma: no cover - other POSIX hosts
            self._dir = tempfile.mkdtemp(prefix="burnin-broker-")
            address = os.path.join(self._dir, "bench.sock")
        self._listener = Listener(address, family="AF_UNIX", backlog=LISTEN_BACKLOG, authkey=self.authkey)
        t = threading.Thread(target=self._accept, name=f"bench-broker {self.port}", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def access(self, slot: SlotMap, *, power_cycle: bool = False, error: str | None = None) -> BenchAccess:
        if self.controller is None and error is None:
            error = "no controller on this port"
        return BenchAccess(port=self.port, address=self.address, authkey=self.authkey, slot=slot,
                           power_cycle=power_cycle, error=error)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                conn = self._listener.accept()
            except Exception:  # noqa: BLE001 - a client that failed the handshake, or our close()
                if self._closed.is_set():
                    return
                continue
            with self._lock:
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()

    def _serve(self, conn: Connection) -> None:
        holder = "?"
        try:
            while True:
                op, args = conn.recv()
                try:
                    if op == "hello":
                        holder = str(args[0])
                        value: Any = self.controller is not None
                    else:
                        value = self._do(holder, op, args)
                    reply: tuple[str, Any] = ("ok", value)
                except Exception as e:  # noqa: BLE001 - the caller gets the error, typed
                    reply = ("err", e)
                try:
                    conn.send(reply)
                except (TypeError, AttributeError, ValueError):  # an unpicklable error: send its text
                    conn.send(("err", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))
        except (EOFError, OSError):
            pass
        finally:
            self.lease.release_all(holder)  # a dead or departed card never holds the chassis
            with contextlib.suppress(OSError):
                conn.close()

    def _do(self, holder: str, op: str, args: tuple[Any, ...]) -> Any:
        if op == "lease":
            self.lease.acquire(holder, args[0])
            return None
        if op == "release":
            self.lease.release(holder, args[0])
            return None
        if self.controller is None:
            raise InstrumentDisconnected(self.port, op, "this host's bench is not shared (no controller)")
        if op == "call" and args[0] in CALLS:
            return getattr(self.controller, args[0])(*args[1])
        if op == "get" and args[0] in PROPERTIES:
            return getattr(self.controller, args[0])
        raise ValueError(f"bench broker: {op} {args[0]!r} is not served")

    def close(self) -> None:
        """Stop serving and close the controller. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
                wake.connect(self.address)  # unblock accept(): it fails the handshake and sees closed
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()
        if self.controller is not None:
            with contextlib.suppress(Exception):
                self.controller.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


class BenchClient:
    """A card worker's handle on its host's bench: the controller's calls and the chassis lease.

    Thread-safe (one exchange at a time). If the broker goes away every call raises
    ``InstrumentDisconnected`` naming the port, as a pulled cable would."""

    def __init__(self, access: BenchAccess, holder: str) -> None:
        self.access = access
        self.port = access.port
        self.holder = holder
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        try:
            self._conn = Client(access.address, family="AF_UNIX", authkey=access.authkey)
        except (OSError, EOFError) as e:
            raise InstrumentDisconnected(access.port, "connect", f"host bench broker unreachable: {e}") from e
        self.shared = bool(self._ask("hello", holder))

    def _ask(self, op: str, *args: Any) -> Any:
        with self._lock:
            if self._conn is None:
                raise InstrumentDisconnected(self.port, str(args[0] if args else op), "host bench broker closed")
            try:
                self._conn.send((op, args))
                status, value = self._conn.recv()
            except (OSError, EOFError) as e:
                self._conn = None
                raise InstrumentDisconnected(self.port, str(args[0] if args else op),
                                             f"host bench broker gone: {e}") from e
        if status == "err":
            raise value
        return value

    # -- the controller's vocabulary, over the broker -------------------------------------------
    def _call(self, name: str, *args: Any) -> Any:
        return self._ask("call", name, args)

    @property
    def fans(self) -> int:
        return int(self._ask("get", "fans"))

    @property
    def tachs(self) -> int:
        return int(self._ask("get", "tachs"))

    @property
    def slots(self) -> int:
        return int(self._ask("get", "slots"))

    def set_fan_duty(self, ch: int, pct: float) -> None:
        self._call("set_fan_duty", ch, pct)

    def fan_duty(self, ch: int) -> float:
        return float(self._call("fan_duty", ch))

    def fan_rpm(self, ch: int) -> float:
        return float(self._call("fan_rpm", ch))

    def tach_rpm(self, head: int) -> float | None:
        v = self._call("tach_rpm", head)
        return None if v is None else float(v)

    def inlet_c(self, probe: int | None = None) -> float:
        return float(self._call("inlet_c", *(() if probe is None else (probe,))))

    def outlet_c(self, probe: int | None = None) -> float:
        return float(self._call("outlet_c", *(() if probe is None else (probe,))))

    def slot_power(self, slot: int, on: bool) -> None:
        self._call("slot_power", slot, on)

    def slot_powered(self, slot: int) -> bool:
        return bool(self._call("slot_powered", slot))

    # -- the lease -------------------------------------------------------------------------------
    def acquire(self, holder: str, mode: LeaseMode) -> None:
        self._ask("lease", mode)

    def release(self, holder: str, mode: LeaseMode) -> None:
        with contextlib.suppress(InstrumentDisconnected):  # a gone broker holds nothing any more
            self._ask("release", mode)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
