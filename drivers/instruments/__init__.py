"""Bench instruments burnin drives over serial: transport (byte pipe) + vocabulary (driver).

Layers, labgrid/PyMeasure style: ``transport.py`` moves lines over pyserial (timeouts, retries,
reconnect); ``bench.py`` is the instrument's vocabulary and typed driver; ``simulator.py`` serves
the same protocol (PROTOCOL.md) on a pseudo-terminal for a :class:`BenchPlant` (``plant.py``).
Swapping the real bench for the simulator is the port string ``"sim"``, not a code branch.
"""

from drivers.instruments.bench import BenchController, BenchIdentity, open_instrument
from drivers.instruments.plant import BenchPlant, StaticPlant
from drivers.instruments.simulator import BenchSimulator, SimFaults
from drivers.instruments.transport import (
    InstrumentDisconnected,
    InstrumentError,
    InstrumentGarbled,
    InstrumentRefused,
    InstrumentTimeout,
    SerialTransport,
    Transport,
)

__all__ = [
    "BenchController",
    "BenchIdentity",
    "BenchPlant",
    "BenchSimulator",
    "InstrumentDisconnected",
    "InstrumentError",
    "InstrumentGarbled",
    "InstrumentRefused",
    "InstrumentTimeout",
    "SerialTransport",
    "SimFaults",
    "StaticPlant",
    "Transport",
    "open_instrument",
]
