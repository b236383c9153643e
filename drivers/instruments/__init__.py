"""Bench instruments burnin drives over serial: transport (byte pipe) + vocabulary (driver).

Layers, labgrid/PyMeasure style: ``transport.py`` moves lines over pyserial (timeouts, retries,
reconnect); ``bench.py`` is the instrument's vocabulary and typed driver; ``simulator.py`` serves
the same protocol (PROTOCOL.md) on a pseudo-terminal for one slot's :class:`BenchPlant`
(``plant.py``) or a whole chassis (``chassis.py``). Swapping the real bench for the simulator is
the port string ``"sim"``, not a code branch.

One controller serves a whole chassis: ``share.py`` lets the harness own the port and serve it to
every card worker of the host (with the chassis lease), and ``roles.py`` is what a card's stages
get of it: typed roles mapped onto that slot's channels.
"""

from drivers.instruments.bench import BenchController, BenchIdentity, open_instrument
from drivers.instruments.chassis import ChassisPlant, SimChassis
from drivers.instruments.plant import BenchPlant, StaticPlant
from drivers.instruments.roles import BenchRoles, SlotMap
from drivers.instruments.share import BenchAccess, BenchBroker, BenchClient
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
    "BenchAccess",
    "BenchBroker",
    "BenchClient",
    "BenchController",
    "BenchIdentity",
    "BenchPlant",
    "BenchRoles",
    "BenchSimulator",
    "ChassisPlant",
    "InstrumentDisconnected",
    "InstrumentError",
    "InstrumentGarbled",
    "InstrumentRefused",
    "InstrumentTimeout",
    "SerialTransport",
    "SimChassis",
    "SimFaults",
    "SlotMap",
    "StaticPlant",
    "Transport",
    "open_instrument",
]
