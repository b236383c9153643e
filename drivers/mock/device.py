"""A simulated card: identity from its profile, seeded physics, simulated memory and compute,
and the faults its config injects, all behind the same device API as a real card.

Deterministic: the same config and seed give the same readings on every run. Memory and compute
faults are injected inside the memory and compute handles, so the scans and the burn-in find
them through the calls they use on real cards.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from drivers.api import (
    ComputeHandle,
    Conditions,
    Device,
    DeviceEvent,
    DeviceLost,
    DeviceProcess,
    ErrorCounters,
    FanControl,
    Identity,
    LinkReport,
    MemoryHandle,
    PcieLink,
    PeerGroup,
    Telemetry,
    TransferHandle,
    Unsupported,
)
from drivers.mock import faults as F
from drivers.mock.physics import CardPhysics, SimClock
from drivers.profiles import Profile
from drivers.units import MIB

ECC_FAULTS = (F.EccSbeStorm, F.EccDbe, F.RowRemapPending, F.RowRemapFailure, F.RetiredPages)
HEALTHY_SBE_MAX = 3  # a used healthy card may carry a handful of lifetime correctable errors


def seed_from_serial(serial: str) -> int:
    """A stable seed per serial, so a card reads the same on every run without a configured seed."""
    return int.from_bytes(hashlib.sha256(serial.encode()).digest()[:8], "little")


def _fits(fault: F.Fault, size: int) -> bool:
    """Every address a memory fault names lies in the first ``size`` bytes."""
    addrs = [getattr(fault, k) for k in ("address", "alias", "aggressor", "victim") if hasattr(fault, k)]
    return all(a < size for a in addrs)


def _clamp_duty(pct: float) -> float:
    """Fans (card or chassis) take any commanded duty but run between 0 and 100 %."""
    return float(max(0.0, min(100.0, pct)))


class MockFans(FanControl):
    """Card fans on a fan-cooled profile; the duty the host commands moves air in the physics."""

    def __init__(self, device: MockDevice) -> None:
        self._dev = device
        self._initial = [fs.duty_pct for fs in device.physics.fan_states]

    @property
    def count(self) -> int:
        return len(self._dev.physics.fan_states)

    def _check(self, fan: int) -> None:
        self._dev.guard()
        if not 0 <= fan < self.count:
            raise Unsupported(f"{self._dev.serial}: no fan {fan} (card has {self.count})")

    def set_duty(self, fan: int, duty_pct: float) -> None:
        self._check(fan)
        self._dev.physics.fan_states[fan].duty_pct = _clamp_duty(duty_pct)

    def duty(self, fan: int) -> float | None:
        self._check(fan)
        return self._dev.physics.fan_states[fan].duty_pct

    def restore(self) -> None:
        for fs, d in zip(self._dev.physics.fan_states, self._initial, strict=True):
            fs.duty_pct = d


class MockDevice(Device):
    backend = "mock"

    def __init__(
        self,
        profile: Profile,
        serial: str,
        slot: int = 0,
        memory_mib: int = 64,
        seed: int | None = None,
        faults: list[F.Fault] | None = None,
        host: str = "local",
        host_faults: list[F.Fault] | None = None,
    ) -> None:
        self.profile = profile
        self.serial = serial
        self.slot = slot
        self.host = host
        self.faults = list(faults or [])
        self.host_faults = list(host_faults or [])  # the host's board faults (drivers.mock.board)
        self.link_traffic_s = 0.0  # seconds of peer traffic through its links (error counters grow with it)
        self.seed = seed if seed is not None else seed_from_serial(serial)
        ss = np.random.SeedSequence(self.seed)
        phys_seed, mem_seed, comp_seed, misc_seed = ss.spawn(4)
        self.physics = CardPhysics(profile, np.random.default_rng(phys_seed), self.faults)
        self.clock = SimClock(self.physics)
        misc = np.random.default_rng(misc_seed)
        self._base_sbe = int(misc.integers(0, HEALTHY_SBE_MAX + 1)) if profile.ecc.supported else 0
        # a bus.fall_off fault strikes this long after each power-on (inf: never)
        self._fall_off_after = min((f.at_s for f in self.faults if isinstance(f, F.BusFallOff)), default=math.inf)
        self._fall_off_at = self._fall_off_after
        self._lost = False
        self._event_cursor = 0.0
        self._delivered: set[int] = set()
        self._events = self._scheduled_events()
        self._fans = MockFans(self) if profile.cooling.kind == "fan" else None
        self._slot_powered = True
        self._memory: MemoryHandle | None = None
        self._compute: ComputeHandle | None = None
        self._transfer: TransferHandle | None = None
        self._memory_bytes = memory_mib * MIB
        self._mem_rng = np.random.default_rng(mem_seed)
        self._comp_rng = np.random.default_rng(comp_seed)

    # bus ----------------------------------------------------------------------------------------
    def guard(self) -> None:
        """Raise DeviceLost once the card has fallen off the bus (every call goes through here)."""
        if self._lost or self.physics.t >= self._fall_off_at or not self._slot_powered:
            self._lost = True
            raise DeviceLost(f"{self.serial}: fell off the bus (XID 79) at {self.physics.t:.1f} s")

    def _scheduled_events(self) -> list[DeviceEvent]:
        ev: list[DeviceEvent] = []
        for f in self.faults:
            if isinstance(f, F.Xid):
                ev.append(DeviceEvent(f.at_s, "xid", f.code, f"XID {f.code} (injected)"))
            elif isinstance(f, F.EccDbe):
                ev.append(DeviceEvent(f.at_s, "xid", 48, f"DBE (Double Bit ECC Error), {f.count} counted"))
            elif isinstance(f, F.RowRemapPending):
                ev.append(DeviceEvent(0.0, "xid", 63, "ECC page retirement or row remapping recording event"))
            elif isinstance(f, F.RowRemapFailure):
                ev.append(DeviceEvent(0.0, "xid", 64, "ECC page retirement or row remapper recording failure"))
            elif isinstance(f, F.PowerAuxUnplugged):
                ev.append(DeviceEvent(0.0, "xid", 54, "Auxiliary power is not connected to the GPU board"))
        return sorted(ev, key=lambda e: e.time_s)

    # identity and readings ---------------------------------------------------------------------
    def identity(self) -> Identity:
        self.guard()
        digest = hashlib.sha256(f"{self.serial}/{self.seed}".encode()).hexdigest()
        uuid = f"MOCK-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
        inforom = "corrupt" if self._has(F.InforomCorrupt) else "G520.0200.00.05"
        return Identity(
            vendor=self.profile.vendor,
            model=self.profile.name,
            serial=self.serial,
            uuid=uuid,
            pci_bus_id=f"0000:{0x18 + 0x10 * self.slot:02X}:00.0",
            firmware={"vbios": "96.00.99.00.01", "inforom": inforom, "driver": "mock-1.0"},
            profile=self.profile.name,
            memory_total_mib=self._memory_bytes // MIB,
            profile_source="config",
        )

    def _has(self, kind: type[F.Fault]) -> bool:
        return any(isinstance(f, kind) for f in self.faults)

    def pcie_link(self) -> PcieLink:
        p = self.profile.pcie
        gen, width = p.gen, p.width
        for f in self.faults:
            if isinstance(f, F.PcieDowntrained):
                gen, width = f.gen, f.width
        return PcieLink(gen=gen, width=width, max_gen=p.gen, max_width=p.width)

    def telemetry(self) -> Telemetry:
        self.guard()
        ph = self.physics
        fans: list[int | None] = (
            [] if ph.chassis else [round(ph.fan_reported_rpm(i)) for i in range(len(ph.fan_states))])
        duties: list[float | None] = [] if ph.chassis else [fs.duty_pct for fs in ph.fan_states]
        mem = self._memory_bytes // MIB
        return Telemetry(
            time_s=ph.t,
            temperature_c=ph.read_temperature(),
            power_w=ph.read_power(),
            power_limit_w=ph.power_limit,
            clock_mhz=ph.clock_mhz(),
            clock_max_mhz=self.profile.clocks.max,
            utilization_pct=round(ph.intensity * 100.0, 1),
            memory_total_mib=mem,
            memory_used_mib=self._busy_bytes() // MIB,
            fans_rpm=fans,
            fans_duty_pct=duties,
            throttle=ph.throttle,
            pcie=self.pcie_link(),
            memory_temperature_c=round(ph.temperature + 4.0, 1),
            inlet_c=None,
        )

    def counters(self) -> ErrorCounters:
        self.guard()
        t_min = self.physics.t / 60.0
        # an injected ECC fault means the counters exist (docs/mock-faults.md: "that many retired pages
        # are reported"), even on a profile whose real boards hide them (GeForce through NVML)
        ecc = self.profile.ecc.supported or any(isinstance(f, ECC_FAULTS) for f in self.faults)
        sbe = self._base_sbe
        dbe = 0
        replays = 0
        retired = 0
        for f in self.faults:
            if isinstance(f, F.EccSbeStorm):
                sbe += int(f.per_minute * t_min)
            elif isinstance(f, F.EccDbe) and self.physics.t >= f.at_s:
                dbe += f.count
            elif isinstance(f, F.PcieReplays):
                replays += int(f.per_minute * t_min)
            elif isinstance(f, F.RetiredPages):
                retired += f.count
        return ErrorCounters(
            ecc_enabled=ecc if ecc else None,
            sbe_volatile=sbe if ecc else None,
            dbe_volatile=dbe if ecc else None,
            sbe_aggregate=sbe if ecc else None,
            dbe_aggregate=dbe if ecc else None,
            sram_uncorrectable=0 if ecc else None,
            row_remap_pending=self._has(F.RowRemapPending) if ecc else None,
            row_remap_failure=self._has(F.RowRemapFailure) if ecc else None,
            remapped_rows_correctable=0 if ecc else None,
            remapped_rows_uncorrectable=(dbe if self._has(F.RowRemapPending) else 0) if ecc else None,
            retired_pages_sbe=retired if ecc else None,
            retired_pages_dbe=0 if ecc else None,
            retired_pages_pending=False if ecc else None,
            pcie_replays=replays,
            inforom_valid=not self._has(F.InforomCorrupt),
            aux_power_ok=not self._has(F.PowerAuxUnplugged),
        )

    def events(self) -> list[DeviceEvent]:
        self.guard()
        out = []
        for i, e in enumerate(self._events):
            if i not in self._delivered and e.time_s <= self.physics.t:
                self._delivered.add(i)
                out.append(e)
        return out

    # handles ------------------------------------------------------------------------------------
    @property
    def fans(self) -> FanControl | None:
        return self._fans

    def _busy_bytes(self) -> int:
        """Memory other processes hold (host.busy): what a scan on this card cannot have."""
        held = sum(f.memory_mib for f in self.faults if isinstance(f, F.HostBusy)) * MIB
        return min(self._memory_bytes, held)

    def conditions(self) -> Conditions:
        """The host conditions the config injects (host.* faults); defaults from the profile."""
        self.guard()
        clocks = self.profile.clocks
        locked = [f for f in self.faults if isinstance(f, F.HostClocksLocked)]
        mig = [f for f in self.faults if isinstance(f, F.HostMig)]
        procs = [DeviceProcess(pid=f.pid, name=f.name, used_mib=f.memory_mib,
                               kind="graphics" if f.graphics else "compute")
                 for f in self.faults if isinstance(f, F.HostBusy)]
        return Conditions(
            processes=procs,
            mig_enabled=any(not f.pending for f in mig),
            mig_pending=any(f.pending for f in mig) or None,
            display_active=self._has(F.HostDisplay),
            compute_mode="default",
            app_clock_mhz=min((f.mhz or clocks.base for f in locked), default=clocks.max),
            default_app_clock_mhz=clocks.max,
            clocks_locked=bool(locked),
            power_limit_w=self.physics.power_limit,
            default_power_limit_w=self.profile.power.tdp,
            ecc_pending=False if self.profile.ecc.supported else None,
            driver_version="mock-1.0",
        )

    @property
    def memory(self) -> MemoryHandle | None:
        """The simulated memory, less what other processes hold (host.busy): a scan covers only
        the rest, and faults beyond it go unseen, as on a busy real card."""
        if self._memory is None:
            from drivers.mock.memory import MockMemory

            size = (self._memory_bytes - self._busy_bytes()) // 4096 * 4096
            if size <= 0:
                return None
            mem_faults = [f for f in self.faults if isinstance(f, F.MEMORY_FAULTS) and _fits(f, size)]
            self._memory = MockMemory(
                size, mem_faults, self.clock, self._mem_rng, guard=self.guard,
                bandwidth_gbps=self.profile.memory.bandwidth,
            )
        return self._memory

    def unavailable(self, handle: str) -> str | None:
        if handle == "memory" and self._memory_bytes - self._busy_bytes() < 4096:
            return "other processes hold all of the card's memory (host.busy)"
        return super().unavailable(handle)

    @property
    def compute(self) -> ComputeHandle | None:
        if self._compute is None:
            from drivers.mock.compute import MockCompute

            comp_faults = [f for f in self.faults if isinstance(f, (F.ComputeSdc, F.ComputeHang, F.ComputeSlow))]
            self._compute = MockCompute(self.physics, comp_faults, self._comp_rng, guard=self.guard)
        return self._compute

    @property
    def transfer(self) -> TransferHandle | None:
        if self._transfer is None:
            from drivers.mock.transfer import MockTransfer

            self._transfer = MockTransfer(self)
        return self._transfer

    # links (drivers.mock.links) ------------------------------------------------------------------
    def links(self) -> LinkReport | None:
        from drivers.mock.links import link_report

        self.guard()
        return link_report(self)

    def peer_group(self, devices: list[Device]) -> PeerGroup | None:
        from drivers.mock.links import MockPeers

        self.guard()
        if not all(isinstance(d, MockDevice) for d in devices):
            return None
        return MockPeers([d for d in devices if isinstance(d, MockDevice)])

    # bench plant: what the simulated bench controller (port = "sim") is wired to --------------
    def chassis_fans(self) -> int:
        return len(self.physics.fan_states) if self.physics.chassis else 0

    def set_chassis_duty(self, ch: int, pct: float) -> None:
        if self.physics.chassis and 0 <= ch < len(self.physics.fan_states):
            self.physics.fan_states[ch].duty_pct = _clamp_duty(pct)

    def chassis_duty(self, ch: int) -> float:
        return self.physics.fan_states[ch].duty_pct if self.physics.chassis else 0.0

    def chassis_rpm(self, ch: int) -> float:
        # the fan's own tach wire: reads 0 under fan.tach_fault though the fan spins (BenchPlant)
        return self.physics.fan_reported_rpm(ch) if self.physics.chassis else 0.0

    def card_fan_true_rpm(self, fan: int) -> float | None:
        if self.physics.chassis or not 0 <= fan < len(self.physics.fan_states):
            return None
        return self.physics.fan_noisy_rpm(fan)

    def inlet_c(self) -> float:
        return round(self.physics.inlet, 1)

    def outlet_c(self) -> float:
        return round(self.physics.outlet_c(), 1)

    def slot_power(self, on: bool) -> None:
        """Cut or restore slot power. Power-on resets the card: it answers again, and an
        injected bus.fall_off fault strikes again ``at_s`` seconds after this power-on."""
        self._slot_powered = on
        if on and self._lost:
            self._lost = False
            self._fall_off_at = self.physics.t + self._fall_off_after

    def slot_powered(self) -> bool:
        return self._slot_powered

    def describe(self) -> dict[str, Any]:
        return {"serial": self.serial, "profile": self.profile.name, "seed": self.seed}
