"""The bench controller: its vocabulary (PROTOCOL.md) and the typed driver stages call.

One instrument, three functions, addressed by channel: a chassis fan controller (FAN), an
optical tachometer aimed at the card's own fans (TACH), air probes at inlet and outlet (TEMP),
and the relay that powers the slot (SLOT). Real benches that split these across boxes can
implement each as the same protocol on separate ports.

Python channels are 0-based like the rest of burnin (fan 0 is ``FAN1`` on the wire). Arguments
are validated before anything is sent (``ValueError``: a caller bug); replies are validated
after (a number where a number is expected, inside a physical range), else the transport
retries and finally raises ``InstrumentGarbled``. Set commands are checked with ``SYST:ERR?``
in the same exchange, so a rejected command raises ``InstrumentRefused`` at the call that
caused it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from drivers.instruments.plant import BenchPlant, StaticPlant
from drivers.instruments.simulator import BenchSimulator, SimFaults
from drivers.instruments.transport import InstrumentRefused, SerialTransport, Transport

# -- the vocabulary: every line this driver sends ---------------------------------------------
IDN = "*IDN?"
RST = "*RST"
CLS = "*CLS"
ERR = "SYST:ERR?"
FAN_COUNT = "FAN:COUNT?"
TACH_COUNT = "TACH:COUNT?"
SLOT_COUNT = "SLOT:COUNT?"
TEMP_COUNT = "TEMP:COUNT?"
FAN_DUTY = "FAN{n}:DUTY {pct:.2f}"
FAN_DUTY_Q = "FAN{n}:DUTY?"
FAN_RPM_Q = "FAN{n}:RPM?"
TACH_RPM_Q = "TACH{n}:RPM?"
INLET_Q = "TEMP:INLET?"
OUTLET_Q = "TEMP:OUTLET?"
PROBE_INLET_Q = "TEMP{n}:INLET?"
PROBE_OUTLET_Q = "TEMP{n}:OUTLET?"
SLOT_POWER = "SLOT{n}:POWER {state}"
SLOT_POWER_Q = "SLOT{n}:POWER?"

# Physical ranges a valid reply falls in (protocol validity, not test limits: those live in
# profiles). A reply outside them is line noise that happened to parse.
RPM_RANGE = (0.0, 100_000.0)
DUTY_RANGE = (0.0, 100.0)
TEMP_RANGE_C = (-40.0, 150.0)
MAX_ERRORS_DRAINED = 32

_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_COUNT = re.compile(r"^\+?\d{1,3}$")
_ERROR = re.compile(r'^([+-]?\d{1,4}),"([^"]*)"$')
_SCPI_NAN = 9.91e37


# -- reply validators: text -> value, or ValueError (garbled, retried) -------------------------
def _float(text: str) -> float:
    if not _NUMBER.match(text):
        raise ValueError("not a number")
    return float(text)


def _in_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _float(text)
        if not lo <= value <= hi:
            raise ValueError(f"outside {lo:g}..{hi:g}")
        return value

    return parse


def _rpm_or_none(text: str) -> float | None:
    """The tach answers SCPI not-a-number when it sees no fan: that is ``None``, not 0 RPM."""
    value = _float(text)
    if math.isclose(value, _SCPI_NAN, rel_tol=1e-6):
        return None
    return _in_range(*RPM_RANGE)(text)


def _count(text: str) -> int:
    if not _COUNT.match(text):
        raise ValueError("not a channel count")
    return int(text)


def _boolean(text: str) -> bool:
    states = {"1": True, "ON": True, "0": False, "OFF": False}
    if text.upper() not in states:
        raise ValueError("not 0/1")
    return states[text.upper()]


def _error_entry(text: str) -> tuple[int, str]:
    m = _ERROR.match(text)
    if not m:
        raise ValueError('not <code>,"<message>"')
    return int(m.group(1)), m.group(2)


def _identity(text: str) -> BenchIdentity:
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != 4 or not fields[0] or not fields[1]:
        raise ValueError("not <maker>,<model>,<serial>,<firmware>")
    return BenchIdentity(*fields)


@dataclass(frozen=True)
class BenchIdentity:
    """The ``*IDN?`` answer."""

    manufacturer: str
    model: str
    serial: str
    firmware: str


class BenchController:
    """Typed driver for the bench controller over any :class:`Transport`.

    Build it with :func:`open_instrument`. Channel counts are asked once and cached; channel
    arguments are 0-based. Every method may raise ``InstrumentTimeout``, ``InstrumentGarbled``
    or ``InstrumentDisconnected``; set methods also ``InstrumentRefused``. After a disconnect
    the next call reopens the port by itself, so a soak loop can keep the readings it has and
    carry on (or stop) as it sees fit.
    """

    def __init__(self, transport: Transport, *, simulator: BenchSimulator | None = None) -> None:
        self.transport = transport
        self.simulator = simulator  # owned: stopped by close(); None for a real port
        self.identity: BenchIdentity | None = None
        self._counts: dict[str, int] = {}

    @property
    def port(self) -> str:
        return self.transport.port

    def connect(self) -> BenchController:
        """Clear stale errors, identify the instrument and learn its channel counts."""
        self._checked(CLS)
        self.identify()
        for kind in ("fan", "tach", "slot"):
            self._count_of(kind)
        return self

    # -- housekeeping ------------------------------------------------------------------------

    def identify(self) -> BenchIdentity:
        """``*IDN?``: maker, model, serial, firmware (kept in ``self.identity``)."""
        self.identity = self.transport.query(IDN, _identity)
        return self.identity

    def reset(self) -> None:
        """``*RST``: every chassis fan to the controller's default (full) duty, errors cleared.
        Never switches slot power."""
        self._checked(RST)

    def errors(self) -> list[tuple[int, str]]:
        """Drain the instrument's error queue, oldest first (``[]`` = no error)."""
        found: list[tuple[int, str]] = []
        for _ in range(MAX_ERRORS_DRAINED):
            code, message = self.transport.query(ERR, _error_entry)
            if code == 0:
                break
            found.append((code, message))
        return found

    @property
    def fans(self) -> int:
        """Chassis fan channels (``FAN:COUNT?``)."""
        return self._count_of("fan")

    @property
    def tachs(self) -> int:
        """Optical tachometer heads, head ``i`` aimed at card fan ``i`` (``TACH:COUNT?``)."""
        return self._count_of("tach")

    @property
    def slots(self) -> int:
        """Slot power relays (``SLOT:COUNT?``)."""
        return self._count_of("slot")

    @property
    def probes(self) -> int:
        """Inlet/outlet probe pairs, one per slot of a chassis (``TEMP:COUNT?``, asked on first use)."""
        return self._count_of("temp")

    # -- chassis fans ------------------------------------------------------------------------

    def set_fan_duty(self, ch: int, pct: float) -> None:
        """Command chassis fan ``ch`` to ``pct`` percent duty (0-100)."""
        n = self._suffix("fan", ch)
        if (
            isinstance(pct, bool)
            or not isinstance(pct, int | float)
            or not (math.isfinite(pct) and DUTY_RANGE[0] <= pct <= DUTY_RANGE[1])
        ):
            raise ValueError(f"bench instrument {self.port}: fan duty {pct!r} is not a percentage 0-100")
        self._checked(FAN_DUTY.format(n=n, pct=float(pct)))

    def fan_duty(self, ch: int) -> float:
        """The duty chassis fan ``ch`` is commanded to, in percent."""
        return self.transport.query(FAN_DUTY_Q.format(n=self._suffix("fan", ch)), _in_range(*DUTY_RANGE))

    def fan_rpm(self, ch: int) -> float:
        """Chassis fan ``ch`` speed from its own tach wire, in RPM."""
        return self.transport.query(FAN_RPM_Q.format(n=self._suffix("fan", ch)), _in_range(*RPM_RANGE))

    # -- tachometer, probes, relay -------------------------------------------------------------

    def tach_rpm(self, fan: int) -> float | None:
        """Card fan ``fan`` speed as the optical tachometer sees it, in RPM; ``None`` when the
        head sees no fan (passive card). Independent of what the card itself reports."""
        return self.transport.query(TACH_RPM_Q.format(n=self._suffix("tach", fan)), _rpm_or_none)

    def inlet_c(self, probe: int | None = None) -> float:
        """Inlet air temperature, degrees C: probe pair ``probe`` (0-based), or the first."""
        q = INLET_Q if probe is None else PROBE_INLET_Q.format(n=self._suffix("temp", probe))
        return self.transport.query(q, _in_range(*TEMP_RANGE_C))

    def outlet_c(self, probe: int | None = None) -> float:
        """Outlet (exhaust) air temperature, degrees C: probe pair ``probe``, or the first."""
        q = OUTLET_Q if probe is None else PROBE_OUTLET_Q.format(n=self._suffix("temp", probe))
        return self.transport.query(q, _in_range(*TEMP_RANGE_C))

    def slot_power(self, slot: int, on: bool) -> None:
        """Close (``on=True``) or open the power relay of relay channel ``slot``."""
        if not isinstance(on, bool):
            raise ValueError(f"bench instrument {self.port}: slot power must be True or False, got {on!r}")
        self._checked(SLOT_POWER.format(n=self._suffix("slot", slot), state="ON" if on else "OFF"))

    def slot_powered(self, slot: int) -> bool:
        """Whether relay channel ``slot`` is closed."""
        return self.transport.query(SLOT_POWER_Q.format(n=self._suffix("slot", slot)), _boolean)

    def power_cycle(self, slot: int, off_s: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Power ``slot`` off for ``off_s`` seconds, then on again (on is attempted even if the
        wait is interrupted). ``sleep`` is injectable so mock runs spend simulated time."""
        self.slot_power(slot, False)
        try:
            sleep(off_s)
        finally:
            self.slot_power(slot, True)

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the port and stop an owned simulator. Idempotent; never raises for a lost port."""
        self.transport.close()
        if self.simulator is not None:
            self.simulator.stop()

    def __enter__(self) -> BenchController:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _checked(self, command: str) -> None:
        """Send a set command and read ``SYST:ERR?`` in the same exchange."""
        code, message = self.transport.query(ERR, _error_entry, after=command)
        if code != 0:
            raise InstrumentRefused(self.port, command, code, message)

    def _count_of(self, kind: str) -> int:
        if kind not in self._counts:
            query = {"fan": FAN_COUNT, "tach": TACH_COUNT, "slot": SLOT_COUNT, "temp": TEMP_COUNT}[kind]
            self._counts[kind] = self.transport.query(query, _count)
        return self._counts[kind]

    def _suffix(self, kind: str, ch: int) -> int:
        """0-based channel -> the wire's 1-based SCPI suffix, after a range check."""
        count = self._count_of(kind)
        if isinstance(ch, bool) or not isinstance(ch, int) or not 0 <= ch < count:
            have = f"0-{count - 1}" if count else "none"
            raise ValueError(f"bench instrument {self.port}: no {kind} channel {ch!r} (channels: {have})")
        return ch + 1


def open_instrument(
    port: str,
    *,
    plant: BenchPlant | None = None,
    faults: SimFaults | None = None,
    timeout_s: float = 0.5,
    retries: int = 2,
    baudrate: int = 115200,
) -> BenchController:
    """Open a bench controller by port path or pyserial URL, connected and identified.

    ``port="sim"`` starts a :class:`BenchSimulator` in-process on a fresh pseudo-terminal,
    serving ``plant`` (default :class:`StaticPlant`) with ``faults``, and connects the real
    pyserial path to it; ``close()`` stops it. ``plant``/``faults`` only apply to ``"sim"``;
    faults count from the first line, so the handshake (``*CLS``, ``SYST:ERR?``, ``*IDN?`` and
    three ``:COUNT?``) sees them too. Tests usually open clean and ``simulator.inject()`` later.
    """
    simulator: BenchSimulator | None = None
    if port == "sim":
        simulator = BenchSimulator(plant if plant is not None else StaticPlant(), faults=faults).start()
        url = simulator.path
    elif plant is not None or faults is not None:
        raise ValueError(f"bench port {port!r}: plant= and faults= apply only to port='sim'")
    else:
        url = port
    transport = SerialTransport(url, baudrate=baudrate, timeout_s=timeout_s, retries=retries)
    controller = BenchController(transport, simulator=simulator)
    try:
        transport.open()
        return controller.connect()
    except BaseException:
        controller.close()
        raise
