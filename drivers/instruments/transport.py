"""The byte pipe to a bench instrument: one line out, one line back, over pyserial.

This layer knows framing (ASCII lines ending in ``\\n``), timeouts, retries and reconnects, and
nothing of what the lines mean: the caller passes a ``parse`` function that turns a reply into a
value or raises ``ValueError`` (the instrument vocabulary lives in ``bench.py``).

Failures are :class:`InstrumentError` subclasses with a one-line message naming the port and
the command. They are deliberately *not* ``drivers.api.DeviceError``: a bench instrument that
fails is the bench's fault, never the card's, so it must surface as an inconclusive run
(``retest``), not as a card finding such as ``device.lost``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

import serial

try:
    import termios

    _TTY_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, termios.error)
except ImportError:  # pragma: no cover - not a POSIX host
    _TTY_ERRORS = (serial.SerialException, OSError)

T = TypeVar("T")

MAX_REPLY = 256  # bytes; a longer "line" is noise, not a reply


class InstrumentError(Exception):
    """A bench instrument failed. ``port`` and ``command`` say which and doing what."""

    def __init__(self, port: str, command: str, detail: str) -> None:
        self.port = port
        self.command = command
        self.detail = " ".join(detail.split())  # one line, whatever the OS said
        super().__init__(f"bench instrument {port}: {command!r}: {self.detail}")

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        """Picklable, so an error raised in a card session survives the trip to the engine."""
        return (type(self), (self.port, self.command, self.detail))


class InstrumentTimeout(InstrumentError):
    """No complete reply within the timeout, on every attempt."""


class InstrumentGarbled(InstrumentError):
    """Replies came back but were not valid for the command, on every attempt."""


class InstrumentDisconnected(InstrumentError):
    """The port vanished (cable pulled, USB adapter gone) and could not be reopened."""


class InstrumentRefused(InstrumentError):
    """The instrument understood the line but rejected it (a non-zero ``SYST:ERR?`` entry)."""

    def __init__(self, port: str, command: str, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(port, command, f'refused: {code},"{message}"')

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.port, self.command, self.code, self.message))


class Transport(Protocol):
    """What the instrument vocabulary needs from a byte pipe (a fake one can replay a script)."""

    port: str

    def query(
        self,
        command: str,
        parse: Callable[[str], T],
        *,
        after: str | None = None,
        timeout_s: float | None = None,
    ) -> T: ...

    def write(self, command: str) -> None: ...

    def close(self) -> None: ...


def _why(e: BaseException) -> str:
    """The OS's reason, once (pyserial nests the path and errno into its own message)."""
    code = getattr(e, "errno", None)
    if code is None and len(e.args) == 2 and isinstance(e.args[0], int):
        code = e.args[0]  # termios.error carries (errno, text)
    return f"[Errno {code}] {os.strerror(code)}" if isinstance(code, int) else str(e)


def _check_line(command: str) -> bytes:
    if not command or "\n" in command or "\r" in command or not command.isascii():
        raise ValueError(f"a bench command is one non-empty ASCII line, got {command!r}")
    return command.encode("ascii") + b"\n"


class SerialTransport:
    """A line-oriented pyserial port with per-command timeout, retries and reconnect.

    ``url`` is a device path (``/dev/ttyUSB0``, a ``/dev/serial/by-id`` link) or any pyserial
    URL (``rfc2217://host:port``). Each :meth:`query` gets ``timeout_s`` per attempt and up to
    ``retries`` further attempts after a timeout or a garbled reply, so the worst case is
    ``(retries + 1) * timeout_s``. Commands must therefore be idempotent (every set command in
    PROTOCOL.md is). If the port fails mid-command it is closed and reopened once at once; if
    that fails the call raises :class:`InstrumentDisconnected` and every later call tries to
    reopen first, so the bench recovers by itself when the cable comes back.
    """

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 115200,
        timeout_s: float = 0.5,
        retries: int = 2,
    ) -> None:
        if timeout_s <= 0 or retries < 0:
            raise ValueError(f"bench port {url}: timeout_s must be > 0 and retries >= 0")
        self.port = url
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.retries = retries
        self._serial: serial.SerialBase | None = None
        self._lock = threading.Lock()  # one exchange at a time (a TUI worker and a stage may share us)

    # -- port lifetime -----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self, command: str = "open") -> None:
        """Open the port now; :class:`InstrumentDisconnected` if it is not there."""
        if self._serial is not None:
            return
        try:
            self._serial = serial.serial_for_url(
                self.port,
                baudrate=self.baudrate,
                timeout=self.timeout_s,
                write_timeout=self.timeout_s,
                exclusive=True,  # two harnesses on one bench controller would corrupt each other
            )
        except _TTY_ERRORS as e:
            raise InstrumentDisconnected(self.port, command, f"cannot open port ({_why(e)})") from e

    def close(self) -> None:
        """Close the port (idempotent). The next call reopens it."""
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except _TTY_ERRORS:
                pass  # closing a port whose device vanished: nothing left to release

    # -- exchanges ---------------------------------------------------------------------------

    def write(self, command: str) -> None:
        """Send one line and expect no reply (the instrument queues any error)."""
        data = _check_line(command)
        with self._lock:
            self._io(command, lambda port: port.write(data))

    def query(
        self,
        command: str,
        parse: Callable[[str], T],
        *,
        after: str | None = None,
        timeout_s: float | None = None,
    ) -> T:
        """Send ``command`` (preceded by the line ``after``, if given) and parse the reply line.

        ``after`` lets a set command be checked in one exchange: ``query("SYST:ERR?", parse,
        after="FAN1:DUTY 50")`` sends both lines and reads the error entry; errors then name
        ``after``, the command the caller meant. ``parse`` raises ValueError for a reply that is
        not valid for the command (that counts as garbled and is retried).
        """
        label = after or command
        data = (_check_line(after) if after else b"") + _check_line(command)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        attempts = self.retries + 1
        with self._lock:
            last: InstrumentError | None = None
            for _ in range(attempts):
                raw = self._io(label, lambda port: self._exchange(port, data, timeout))
                if not raw:
                    last = InstrumentTimeout(
                        self.port, label, f"no reply within {timeout:g} s ({attempts} attempts)"
                    )
                    continue
                try:
                    return parse(self._decode(raw))
                except ValueError as e:
                    last = InstrumentGarbled(
                        self.port, label, f"invalid reply {raw[:60]!r}: {e} ({attempts} attempts)"
                    )
            assert last is not None
            raise last

    def _exchange(self, port: serial.SerialBase, data: bytes, timeout: float) -> bytes:
        port.reset_input_buffer()  # drop a late reply to an earlier, abandoned attempt
        port.write(data)
        if port.timeout != timeout:
            port.timeout = timeout
        return bytes(port.read_until(b"\n", MAX_REPLY))

    @staticmethod
    def _decode(raw: bytes) -> str:
        if not raw.endswith(b"\n"):
            raise ValueError("no line terminator" if len(raw) < MAX_REPLY else "line too long")
        body = raw[:-1].rstrip(b"\r")
        if not all(32 <= b < 127 for b in body):
            raise ValueError("non-printable bytes")
        return body.decode("ascii").strip()

    def _io(self, label: str, op: Callable[[serial.SerialBase], T]) -> T:
        """Run ``op`` on the open port; on an OS-level failure reopen once and retry once."""
        for reopened in (False, True):
            self.open(label)
            assert self._serial is not None
            try:
                return op(self._serial)
            except _TTY_ERRORS as e:
                self.close()
                if reopened:
                    raise InstrumentDisconnected(
                        self.port, label, f"port lost again after reopening ({_why(e)})"
                    ) from e
                lost = e
                try:
                    self.open(label)
                except InstrumentDisconnected as gone:
                    raise InstrumentDisconnected(
                        self.port, label, f"port lost ({_why(lost)}); reopen failed: {gone.detail}"
                    ) from e
        raise AssertionError("unreachable")
