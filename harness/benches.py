"""The host owns its bench: one controller per host, opened by the harness, shared by its cards.

Before any card starts, each ``[[hosts.instruments]]`` entry on a real port gets a broker
(``drivers.instruments.share``): the port is opened here once and served, with the chassis lease,
to every card worker of its slots. ``port = "sim"`` gets none: each mock card's worker runs a
simulator wired to the card itself, so each mock card is its own chassis and shares no air (a
simulated chassis shared by several cards is ``python -m drivers.instruments`` on a real pty).
A port that cannot be opened costs the run nothing but the bench: each card it serves reports
``instrument.unavailable`` (the broker still serves the lease: the chassis air is still shared).
A wiring that names a channel the controller does not have is bad input (exit 2).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from drivers.instruments import InstrumentError, open_instrument
from drivers.instruments.roles import LeaseRecord
from drivers.instruments.share import BenchAccess, BenchBroker
from harness.config import InstrumentConfig, RackConfig
from harness.errors import UsageError


def _check_channels(cfg: RackConfig, host: int, index: int, inst: InstrumentConfig, ctl: Any) -> None:
    """Every wired channel exists on the controller (its counts are known only once it is open)."""
    have = {"fans": ctl.fans, "tachs": ctl.tachs, "relay": ctl.slots}
    for wi, w in enumerate(inst.wiring):
        for name, chans in (("fans", w.fans or []), ("tachs", w.tachs or []),
                            ("relay", [] if w.relay is None else [w.relay])):
            for ch in chans:
                if ch >= have[name]:
                    raise UsageError(f"{cfg.path}: hosts[{host}].instruments[{index}].wiring[{wi}].{name}: channel {ch}"
                                     f" does not exist on the controller at {inst.port} (it has {have[name]}:"
                                     f" 0-{have[name] - 1})")
        if w.probe is not None and w.probe >= ctl.probes:
            raise UsageError(f"{cfg.path}: hosts[{host}].instruments[{index}].wiring[{wi}].probe: probe pair {w.probe}"
                             f" does not exist on the controller at {inst.port} (it has {ctl.probes})")


class HostBenches:
    """Every host's bench brokers for one run; a context manager that closes them all."""

    def __init__(self, cfg: RackConfig) -> None:
        self.cfg = cfg
        self._brokers: dict[tuple[str, int], BenchBroker] = {}
        self._errors: dict[tuple[str, int], str] = {}

    def open(self, hosts: set[str]) -> HostBenches:
        """Open the bench of every listed host that has one (UsageError for a miswired bench)."""
        try:
            for hi, h in enumerate(self.cfg.hosts):
                if h.name not in hosts:
                    continue
                for i, inst in enumerate(h.instruments):
                    if inst.port != "sim":  # "sim": each mock card's worker opens a simulator of its own
                        self._brokers[(h.name, i)] = BenchBroker(self._controller(hi, i, inst), inst.port).start()
        except BaseException:
            self.close()
            raise
        return self

    def _controller(self, hi: int, i: int, inst: InstrumentConfig) -> Any | None:
        """The connected controller, checked against its wiring; None (and the reason kept for
        the cards) when the port cannot be used."""
        key = (self.cfg.hosts[hi].name, i)
        try:
            ctl = open_instrument(inst.port, timeout_s=inst.timeout_s, retries=inst.retries, baudrate=inst.baudrate)
        except (InstrumentError, ValueError, OSError) as e:
            self._errors[key] = str(e)
            return None
        try:
            _check_channels(self.cfg, hi, i, inst, ctl)
        except InstrumentError as e:
            ctl.close()
            self._errors[key] = str(e)
            return None
        except BaseException:
            ctl.close()
            raise
        return ctl

    def access(self, host: str, slot: int) -> BenchAccess | None:
        """How the card in ``host``/``slot`` reaches its bench (None: no bench serves the slot)."""
        for h in self.cfg.hosts:
            if h.name != host:
                continue
            for i, inst in enumerate(h.instruments):
                if not inst.serves(slot) or (host, i) not in self._brokers:
                    continue
                return self._brokers[(host, i)].access(inst.slot_map(slot), power_cycle=inst.power_cycle,
                                                       error=self._errors.get((host, i)))
        return None

    def leases(self) -> dict[str, list[LeaseRecord]]:
        """Every lease granted so far, per host bench (``host[i]``), for reports and tests."""
        return {f"{h}[{i}]": b.log for (h, i), b in self._brokers.items()}

    def close(self) -> None:
        for b in self._brokers.values():
            b.close()

    def __enter__(self) -> HostBenches:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
