"""A bench controller that serves PROTOCOL.md on a pseudo-terminal, for tests and simulated runs.

The driver under test opens the pty's slave end with the real pyserial ``Serial``, so the whole
tty path (termios, select, timeouts, EIO on unplug) is exercised. The simulator publishes a
stable symlink (like ``/dev/serial/by-id/...``) to the current ``/dev/pts/N``; an unplug removes
the pty and the link, a re-plug makes a fresh pty and repoints the link, as udev does when a
USB-serial cable comes back.

Misbehaviours for tests (:class:`SimFaults`, changed live with :meth:`BenchSimulator.inject`):
garbage replies, replies that never come, "stop answering", and an unplug after N commands.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import select
import tempfile
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass

from drivers.instruments.chassis import ChassisPlant, as_chassis
from drivers.instruments.plant import BenchPlant

SCPI_NAN = "9.91E+37"  # SCPI's not-a-number: the tach has no fan in view
ERROR_QUEUE_DEPTH = 10
MAX_LINE = 256

# SCPI standard error numbers used by this instrument (PROTOCOL.md lists them).
ERRORS: dict[int, str] = {
    0: "No error",
    -102: "Syntax error",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -222: "Data out of range",
    -224: "Illegal parameter value",
    -300: "Device-specific error",
    -350: "Queue overflow",
}

# Garbled replies, cycled deterministically: line noise, a torn number, a bare control byte.
_GARBAGE = (b"\xff\xfe\x00\x93\x8a\n", b"1#.4E+\n", b"\x1b[0~?\n")
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


@dataclass(frozen=True)
class SimFaults:
    """Misbehaviours. Counters are consumed as they fire; ``disconnect_after`` fires once."""

    garbage_replies: int = 0  # the next N replies are line noise
    drop_replies: int = 0  # the next N replies are never sent (the caller times out)
    disconnect_after: int | None = None  # serve N more commands, then unplug on the next one
    silent: bool = False  # stop answering altogether (hung firmware; the port stays up)


class _ScpiError(Exception):
    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


def _number(param: str) -> float:
    if not _NUMBER.match(param):
        raise _ScpiError(-104)
    return float(param)


def _boolean(param: str) -> bool:
    word = param.upper()
    if word in ("ON", "1"):
        return True
    if word in ("OFF", "0"):
        return False
    raise _ScpiError(-224)


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else SCPI_NAN


Handler = Callable[[re.Match[str], str | None], str | None]


class BenchSimulator:
    """Serve the bench protocol for ``plant`` on a fresh pty, from a daemon thread.

    ``start()`` returns self; ``path`` is the stable link to open; ``stop()`` tears all down.
    ``plant`` is a whole chassis (:class:`~drivers.instruments.chassis.ChassisPlant`: its heads,
    probe pairs and relays) or one slot (:class:`BenchPlant`: ``tach_channels`` optical heads
    aimed at card fans 0..n-1, one probe pair, one power relay SLOT1). ``*RST`` sets every chassis fan to ``reset_duty_pct`` (full speed
    by default: a controller that lost its settings must fail cool) and never touches the relay.
    """

    def __init__(
        self,
        plant: BenchPlant | ChassisPlant,
        *,
        faults: SimFaults | None = None,
        tach_channels: int = 2,
        reset_duty_pct: float = 100.0,
        idn: str = "BURNIN,BENCH-SIM,SIM-BENCH-0001,1.0",
    ) -> None:
        self.plant = plant
        self.chassis: ChassisPlant = as_chassis(plant, tach_channels)
        self.tach_channels = tach_channels
        self.reset_duty_pct = reset_duty_pct
        self.idn = idn
        self._faults = faults or SimFaults()
        self._lock = threading.Lock()
        self._errors: list[int | tuple[int, str]] = []
        self._received: list[str] = []
        self._served_since_inject = 0
        self._garbage_index = 0
        self._dir: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._tty: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._table: list[tuple[re.Pattern[str], bool, Handler]] = [
            (re.compile(p), wants_param, h)
            for p, wants_param, h in (
                (r"\*IDN\?", False, lambda m, p: self.idn),
                (r"\*RST", False, self._reset),
                (r"\*CLS", False, self._clear),
                (r"\*OPC\?", False, lambda m, p: "1"),
                (r"SYST:ERR\?", False, lambda m, p: self._pop_error()),
                (r"FAN:COUNT\?", False, lambda m, p: str(self.chassis.chassis_fans())),
                (r"TACH:COUNT\?", False, lambda m, p: str(self.chassis.tach_heads())),
                (r"SLOT:COUNT\?", False, lambda m, p: str(self.chassis.relays())),
                (r"TEMP:COUNT\?", False, lambda m, p: str(self.chassis.probes())),
                (r"FAN(\d+):DUTY", True, self._set_duty),
                (r"FAN(\d+):DUTY\?", False, lambda m, p: _fmt(self.chassis.chassis_duty(self._fan(m)), 2)),
                (r"FAN(\d+):RPM\?", False, lambda m, p: _fmt(self.chassis.chassis_rpm(self._fan(m)), 1)),
                (r"TACH(\d+):RPM\?", False, self._tach),
                (r"TEMP(\d*):INLET\?", False, lambda m, p: _fmt(self.chassis.probe_inlet_c(self._probe(m)), 2)),
                (r"TEMP(\d*):OUTLET\?", False, lambda m, p: _fmt(self.chassis.probe_outlet_c(self._probe(m)), 2)),
                (r"SLOT(\d+):POWER", True, self._set_power),
                (r"SLOT(\d+):POWER\?", False, lambda m, p: "1" if self._powered(m) else "0"),
            )
        ]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> BenchSimulator:
        """Make the link directory and plug the cable in. Idempotent."""
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="burnin-bench-")
            self._wake_r, self._wake_w = os.pipe()
        self.plug()
        return self

    def stop(self) -> None:
        """Unplug and remove everything the simulator made. Safe to call twice."""
        if self._dir is None:
            return
        self.unplug()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)
        self._dir = None

    def __enter__(self) -> BenchSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def path(self) -> str:
        """The stable port path to open (a symlink to the current ``/dev/pts/N``)."""
        if self._dir is None:
            raise RuntimeError("BenchSimulator is not started")
        return os.path.join(self._dir, "bench")

    @property
    def tty_path(self) -> str | None:
        """The current slave tty, or ``None`` while unplugged."""
        return self._tty

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def plug(self) -> None:
        """Connect the cable: a fresh pty behind ``path``, served by a new thread."""
        if self._dir is None:
            raise RuntimeError("BenchSimulator is not started")
        old = self._thread
        if old is not None and self._master is not None:
            return  # already plugged
        if old is not None:
            old.join(timeout=2.0)  # a thread that unplugged itself is on its way out
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing, no CR/LF translation before pyserial opens it
        os.set_blocking(master, False)
        tty_path = os.ttyname(slave)
        tmp = self.path + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(tty_path, tmp)
        os.replace(tmp, self.path)
        while select.select([self._wake_r], [], [], 0)[0]:
            os.read(self._wake_r, 64)
        with self._lock:
            self._master, self._slave, self._tty = master, slave, tty_path
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(master, self._stop), name=f"bench-sim {tty_path}", daemon=True
        )
        self._thread.start()

    def unplug(self) -> None:
        """Pull the cable: the pty disappears (the driver's next I/O fails) and the link goes."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            self._stop.set()
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            thread.join(timeout=2.0)
        self._close_fds()

    def _close_fds(self) -> None:
        with self._lock:
            fds, self._master, self._slave, self._tty = (self._master, self._slave), None, None, None
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self._dir is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    # -- test hooks --------------------------------------------------------------------------

    def inject(self, **changes: object) -> None:
        """Change faults live, e.g. ``inject(garbage_replies=3)``; resets the command count
        that ``disconnect_after`` counts from."""
        with self._lock:
            self._faults = dataclasses.replace(self._faults, **changes)  # type: ignore[arg-type]
            self._served_since_inject = 0

    @property
    def faults(self) -> SimFaults:
        return self._faults

    @property
    def received(self) -> list[str]:
        """Every command line the instrument processed, in order (a copy)."""
        with self._lock:
            return list(self._received)

    # -- the server --------------------------------------------------------------------------

    def _serve(self, master: int, stop: threading.Event) -> None:
        buf = b""
        while not stop.is_set():
            ready, _, _ = select.select([master, self._wake_r], [], [])
            if self._wake_r in ready or stop.is_set():
                return
            try:
                chunk = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return  # the pty died under us; nothing more to serve
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                if self._cable_pulled_now():
                    self._close_fds()
                    return
                reply = self._answer(raw.rstrip(b"\r"))
                if reply is not None:
                    self._send(master, reply)
            if len(buf) > MAX_LINE:
                buf = b""
                self._push_error(-102)

    def _cable_pulled_now(self) -> bool:
        with self._lock:
            limit = self._faults.disconnect_after
            if limit is not None and self._served_since_inject >= limit:
                self._faults = dataclasses.replace(self._faults, disconnect_after=None)
                return True
            self._served_since_inject += 1
            return False

    def _send(self, master: int, reply: str) -> None:
        with self._lock:
            f = self._faults
            if f.silent:
                return
            if f.drop_replies > 0:
                self._faults = dataclasses.replace(f, drop_replies=f.drop_replies - 1)
                return
            if f.garbage_replies > 0:
                self._faults = dataclasses.replace(f, garbage_replies=f.garbage_replies - 1)
                data = _GARBAGE[self._garbage_index % len(_GARBAGE)]
                self._garbage_index += 1
            else:
                data = reply.encode("ascii") + b"\n"
        with contextlib.suppress(OSError):  # a full or dead pty: the reply is lost, as on a wire
            os.write(master, data)

    def _answer(self, raw: bytes) -> str | None:
        """One command line in, the reply line out (``None``: no reply, as SCPI does for
        commands and for queries that failed; the failure goes to the error queue)."""
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            line = None
        with self._lock:
            self._received.append(raw.decode("ascii", "replace").strip())
        if not line:
            if line is None:
                self._push_error(-102)
            return None
        words = line.split(None, 1)
        header = words[0].upper()
        param = words[1].strip() if len(words) > 1 else None
        try:
            for pattern, wants_param, handler in self._table:
                m = pattern.fullmatch(header)
                if m is None:
                    continue
                if wants_param and param is None:
                    raise _ScpiError(-109)
                if not wants_param and param is not None:
                    raise _ScpiError(-108)
                return handler(m, param)
            raise _ScpiError(-113)
        except _ScpiError as e:
            self._push_error(e.code, e.detail)
        except Exception as e:  # the plant failed: report it the SCPI way, keep serving
            self._push_error(-300, f"{type(e).__name__}: {e}")
        return None

    # -- error queue -------------------------------------------------------------------------

    def _push_error(self, code: int, detail: str = "") -> None:
        with self._lock:
            if len(self._errors) >= ERROR_QUEUE_DEPTH:
                self._errors[-1] = -350
            else:
                self._errors.append((code, detail) if detail else code)

    def _pop_error(self) -> str:
        with self._lock:
            entry = self._errors.pop(0) if self._errors else 0
        code, detail = entry if isinstance(entry, tuple) else (entry, "")
        text = ERRORS[code] + (f";{detail}" if detail else "")
        text = "".join(c if 32 <= ord(c) < 127 and c != '"' else "'" for c in text)
        return f'{code},"{text}"'

    def _clear(self, m: re.Match[str], param: str | None) -> None:
        with self._lock:
            self._errors.clear()
        return None

    # -- commands ----------------------------------------------------------------------------

    def _fan(self, m: re.Match[str]) -> int:
        n = int(m.group(1))
        if not 1 <= n <= self.chassis.chassis_fans():
            raise _ScpiError(-114)
        return n - 1

    def _probe(self, m: re.Match[str]) -> int:
        """``TEMP:`` is probe pair 1; ``TEMP<n>:`` probe pair n."""
        n = int(m.group(1) or 1)
        if not 1 <= n <= self.chassis.probes():
            raise _ScpiError(-114)
        return n - 1

    def _relay(self, m: re.Match[str]) -> int:
        n = int(m.group(1))
        if not 1 <= n <= self.chassis.relays():
            raise _ScpiError(-114)
        return n - 1

    def _powered(self, m: re.Match[str]) -> bool:
        return self.chassis.relay_closed(self._relay(m))

    def _reset(self, m: re.Match[str], param: str | None) -> None:
        for ch in range(self.chassis.chassis_fans()):
            self.chassis.set_chassis_duty(ch, self.reset_duty_pct)
        self._clear(m, param)
        return None

    def _set_duty(self, m: re.Match[str], param: str | None) -> None:
        ch = self._fan(m)
        pct = _number(param or "")
        if not 0.0 <= pct <= 100.0:
            raise _ScpiError(-222)
        self.chassis.set_chassis_duty(ch, pct)
        return None

    def _tach(self, m: re.Match[str], param: str | None) -> str:
        n = int(m.group(1))
        if not 1 <= n <= self.chassis.tach_heads():
            raise _ScpiError(-114)
        rpm = self.chassis.tach_rpm(n - 1)
        return SCPI_NAN if rpm is None else _fmt(rpm, 1)

    def _set_power(self, m: re.Match[str], param: str | None) -> None:
        self.chassis.set_relay(self._relay(m), _boolean(param or ""))
        return None


__all__ = ["ERRORS", "SCPI_NAN", "BenchSimulator", "SimFaults"]
