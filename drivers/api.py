"""The device API: the one interface every backend implements and every stage uses.

Stages (``stress/``) and the harness talk only to these types, never to a vendor library.
"Not available" is a value, not an exception: a field the device cannot report is ``None``
(a card without fans reports ``fans_rpm == []``), so the verdict engine can tell "no fan" from
"fan at 0 RPM" (the lesson of nvitop's NVML layer).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from drivers.text import bounded


class DeviceError(Exception):
    """A device call failed in a way that is the device's fault, not the harness's."""


class DeviceLost(DeviceError):
    """The device no longer answers: it fell off the bus (XID 79) or vanished."""


class KernelTimeout(DeviceError):
    """A kernel did not complete within its deadline (a hung kernel)."""


class MemoryFault(DeviceError):
    """The device reported an uncorrectable memory error (ECC) while it touched
    ``[offset, offset + nbytes)`` of the tested region (both None when no range is known).

    On HBM, with ECC always on, this is how a failing cell shows during a scan: the memory stage
    turns it into a memory finding for that range instead of a stage error.
    """

    def __init__(self, message: str, offset: int | None = None, nbytes: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.nbytes = nbytes


class KernelFault(DeviceError):
    """A kernel faulted on the device (illegal address, launch failure, illegal instruction, ...):
    the card is still on the bus but its context in this process is unusable until a reset. The
    session reports ``compute.fault`` (reset and retest); the health stage's XIDs say more."""


class Unsupported(DeviceError):
    """The device does not offer this control at all (e.g. fan control on a passive card)."""


class BackendUnavailable(Exception):
    """The backend cannot run on this host (library missing, no driver): harness exit code 3."""


class HostUnfit(Exception):
    """The host (or the harness itself) cannot drive a card that is there: CUDA libraries missing,
    a driver too old to load the harness's kernels, the card hidden from CUDA by
    ``CUDA_VISIBLE_DEVICES``, a harness kernel that does not compile. Fix the host, not the card:
    the session reports it as a ``fix_host`` finding on the card, with ``code`` (a ``harness.*``
    or ``host.*`` finding code) saying whose failure it is."""

    def __init__(self, message: str, code: str = "harness.handle_unavailable") -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> Any:  # keeps the code across a process boundary
        return (type(self), (str(self), self.code))


# Throttle reasons, vendor-neutral (NVML's clocks-event reasons map onto these).
THROTTLE_IDLE = "idle"
THROTTLE_SW_POWER_CAP = "sw_power_cap"
THROTTLE_HW_SLOWDOWN = "hw_slowdown"
THROTTLE_HW_THERMAL = "hw_thermal"
THROTTLE_SW_THERMAL = "sw_thermal"
THROTTLE_HW_POWER_BRAKE = "hw_power_brake"
THROTTLE_SYNC_BOOST = "sync_boost"
THROTTLE_APP_CLOCKS = "applications_clocks"
THERMAL_THROTTLES = frozenset({THROTTLE_HW_THERMAL, THROTTLE_SW_THERMAL})
POWER_THROTTLES = frozenset({THROTTLE_SW_POWER_CAP, THROTTLE_HW_POWER_BRAKE})


PROCESS_NAME_MAX = 256  # a driver reports an executable's path: a 100 kB one is cut here
IDENTITY_TEXT_MAX = 256  # model, serial, UUID, bus id, firmware versions as a card reports them


def _reported(obj: Any, name: str, limit: int) -> None:
    """Clean a string field of a frozen dataclass in place: what a device reports is bounded and
    its control characters made visible where it enters (drivers.text), for every backend."""
    value = getattr(obj, name)
    if isinstance(value, str):
        cleaned = bounded(value, limit)
        if cleaned is not value:
            object.__setattr__(obj, name, cleaned)


@dataclass(frozen=True)
class Identity:
    vendor: str  # "nvidia", "huawei", "mock"
    model: str  # the device's own product name
    serial: str | None
    uuid: str | None = None
    pci_bus_id: str | None = None
    firmware: dict[str, str] = field(default_factory=dict)
    profile: str | None = None  # the profile that judges the card (a file's name, or a derived one's)
    memory_total_mib: int | None = None
    profile_source: str | None = None  # "matched" (by name), "derived" (from facts), "config" (mock)
    facts: dict[str, Any] = field(default_factory=dict)  # what a derived profile is built from

    def __post_init__(self) -> None:
        for name in ("vendor", "model", "serial", "uuid", "pci_bus_id", "profile"):
            _reported(self, name, IDENTITY_TEXT_MAX)
        fw = {bounded(k, 64): bounded(v, IDENTITY_TEXT_MAX) if isinstance(v, str) else v
              for k, v in self.firmware.items()}
        if fw != self.firmware:
            object.__setattr__(self, "firmware", fw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PcieLink:
    gen: int | None
    width: int | None
    max_gen: int | None
    max_width: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Telemetry:
    """One snapshot. ``time_s`` is on the device's clock (simulated on mock cards)."""

    time_s: float
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None  # the enforced limit
    clock_mhz: float | None
    clock_max_mhz: float | None
    utilization_pct: float | None
    memory_total_mib: int | None
    memory_used_mib: int | None
    fans_rpm: list[int | None] = field(default_factory=list)  # [] = the card has no fans
    fans_duty_pct: list[float | None] = field(default_factory=list)
    throttle: frozenset[str] = frozenset()
    pcie: PcieLink | None = None
    memory_temperature_c: float | None = None
    inlet_c: float | None = None  # only where the device or bench reports one

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["throttle"] = sorted(self.throttle)
        return d


@dataclass(frozen=True)
class ErrorCounters:
    """Error counters and flags. ``None`` = the device does not report it (e.g. no ECC)."""

    ecc_enabled: bool | None = None
    sbe_volatile: int | None = None
    dbe_volatile: int | None = None
    sbe_aggregate: int | None = None
    dbe_aggregate: int | None = None
    sram_uncorrectable: int | None = None
    row_remap_pending: bool | None = None
    row_remap_failure: bool | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    retired_pages_sbe: int | None = None
    retired_pages_dbe: int | None = None
    retired_pages_pending: bool | None = None
    pcie_replays: int | None = None
    inforom_valid: bool | None = None
    aux_power_ok: bool | None = None  # False when the card reports aux power missing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeviceEvent:
    """An asynchronous event: an XID on NVIDIA, a health error code on Ascend."""

    time_s: float
    kind: str  # "xid" | "health"
    code: int | str
    message: str = ""


@dataclass(frozen=True)
class DeviceProcess:
    """A process holding the device (NVML's compute/graphics process lists, npu-smi's table)."""

    pid: int
    name: str | None = None  # None where the tool cannot name it (another container)
    used_mib: int | None = None  # None where the driver cannot tell
    kind: str = "compute"  # "compute" | "graphics"

    def __post_init__(self) -> None:
        _reported(self, "name", PROCESS_NAME_MAX)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Conditions:
    """What the host has done to the card that would make a test measure the wrong thing.

    Read before a plan runs (the preflight stage). Every field is ``None`` where the device cannot
    tell; ``processes`` is ``None`` when the process list cannot be read at all (``[]``: none).
    Clock fields are MHz, power fields watts, versions "major.minor".
    """

    processes: list[DeviceProcess] | None = None
    mig_enabled: bool | None = None
    mig_pending: bool | None = None  # the mode after the next reset, when it differs
    display_active: bool | None = None
    compute_mode: str | None = None  # "default" | "exclusive_process" | "prohibited"
    app_clock_mhz: float | None = None  # applications clock target (SM)
    default_app_clock_mhz: float | None = None
    app_mem_clock_mhz: float | None = None
    default_app_mem_clock_mhz: float | None = None
    clocks_locked: bool | None = None  # an applications- or locked-clocks setting holds clocks down
    power_limit_w: float | None = None  # the limit set now
    default_power_limit_w: float | None = None
    ecc_pending: bool | None = None  # an ECC mode change waits for a reset
    reset_required: str | None = None  # what the driver asks for ("gpu_reset", "node_reboot", ...)
    driver_version: str | None = None
    driver_api_version: str | None = None  # newest runtime API the driver supports ("12.4")
    runtime_version: str | None = None  # the runtime burnin's compute path uses ("12.8"), if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Clock(ABC):
    """Time as the device sees it. Mock cards run on simulated time; nothing in them sleeps."""

    @abstractmethod
    def now(self) -> float: ...

    @abstractmethod
    def sleep(self, seconds: float) -> None: ...


class WallClock(Clock):
    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ManualClock(Clock):
    """Time that moves only when someone sleeps: for a component tested on its own."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


class FanControl(ABC):
    """Card fans the host may command. Absent (``Device.fans is None``) on passive cards."""

    @property
    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def set_duty(self, fan: int, duty_pct: float) -> None: ...

    @abstractmethod
    def duty(self, fan: int) -> float | None: ...

    @abstractmethod
    def restore(self) -> None:
        """Return every fan to the policy the card had before we touched it."""


@dataclass(frozen=True)
class Pattern:
    """What a memory primitive writes or expects at each byte, so real cards can generate it in a
    kernel instead of shipping it: a repeating byte pattern (length divides 4 KiB), or each 8-byte
    little-endian word holding its own byte offset (address-in-address); ``invert`` complements."""

    repeat: bytes = b"\x00"
    address: bool = False
    invert: bool = False

    def __post_init__(self) -> None:
        if not self.address and (not self.repeat or 4096 % len(self.repeat)):
            raise ValueError(f"pattern length {len(self.repeat)} does not divide 4096")

    def expand(self, offset: int, nbytes: int) -> np.ndarray:
        """The pattern's bytes for ``[offset, offset + nbytes)`` (uint8)."""
        if self.address:
            w0 = offset // 8
            words = np.arange(w0 * 8, (-(-(offset + nbytes) // 8)) * 8, 8, dtype="<u8")
            out = words.view(np.uint8)[offset - w0 * 8 : offset - w0 * 8 + nbytes]
        else:
            n, phase = len(self.repeat), offset % len(self.repeat)
            out = np.frombuffer(self.repeat * (-(-(nbytes + phase) // n)), np.uint8)[phase : phase + nbytes]
        return np.invert(out) if self.invert else out.copy()


@dataclass
class Mismatches:
    """What a verify found, bounded: the first ``limit`` failing bytes (ascending) with what was
    expected and read, plus counts over every failing byte-read (per bit, per chip) however many."""

    address: np.ndarray  # int64 byte offsets
    expected: np.ndarray  # uint8
    got: np.ndarray  # uint8: the (first) wrong value read
    hits: np.ndarray  # int64: how many of the reads of that byte were wrong
    total: int  # failing byte-reads, all of them
    bit_counts: np.ndarray  # int64[8]: failing byte-reads per bit
    chip_counts: np.ndarray  # int64[chips], chip = (offset // 256) % chips
    reads: int = 1

    @classmethod
    def empty(cls, chips: int = 1, reads: int = 1) -> Mismatches:
        z = np.zeros(0, np.int64)
        return cls(z, z.astype(np.uint8), z.astype(np.uint8), z, 0, np.zeros(8, np.int64),
                   np.zeros(max(1, chips), np.int64), reads)

    @classmethod
    def of(cls, offset: int, want: np.ndarray, got: np.ndarray, limit: int, chips: int = 1) -> Mismatches:
        """Compare one read of ``[offset, offset + len(got))`` against ``want``."""
        idx = np.flatnonzero(got != want)
        m = cls.empty(chips)
        if idx.size:
            diff = np.bitwise_xor(got[idx], want[idx])
            m.total = int(idx.size)
            m.bit_counts = np.unpackbits(diff[:, None], axis=1, bitorder="little").sum(0).astype(np.int64)
            m.chip_counts = np.bincount(((idx + offset) // 256) % max(1, chips), minlength=max(1, chips))
            keep = idx[:limit]
            m.address, m.expected, m.got = keep + offset, want[keep].copy(), got[keep].copy()
            m.hits = np.ones(keep.size, np.int64)
        return m

    def merge(self, other: Mismatches, limit: int) -> Mismatches:
        """Fold in another verify (of a different range, or another read of the same one)."""
        addr = np.concatenate([self.address, other.address])
        order = np.argsort(addr, kind="stable")
        uniq, first, counts = np.unique(addr[order], return_index=True, return_counts=True)
        hits = np.add.reduceat(np.concatenate([self.hits, other.hits])[order], first) if uniq.size else self.hits
        sel = order[first][:limit]
        exp, got = np.concatenate([self.expected, other.expected]), np.concatenate([self.got, other.got])
        return Mismatches(uniq[:limit], exp[sel], got[sel], hits[:limit], self.total + other.total,
                          self.bit_counts + other.bit_counts, self.chip_counts + other.chip_counts,
                          max(self.reads, other.reads))


_SCAN_CHUNK = 1 << 24


class MemoryHandle(ABC):
    """Byte-addressable device memory under test, ``size`` bytes from offset 0.

    Offsets are byte offsets into the tested region; on mock cards they are the fault
    addresses of the config. Bulk operations state their address order, because coupling
    faults depend on it (a victim written later in the same operation is overwritten).
    """

    @property
    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def write(self, offset: int, data: np.ndarray, descending: bool = False) -> None:
        """Write ``data`` (uint8) at ``offset``."""

    @abstractmethod
    def read(self, offset: int, nbytes: int) -> np.ndarray:
        """Read ``nbytes`` bytes as a uint8 array."""

    def fill(self, offset: int, nbytes: int, pattern: bytes, descending: bool = False) -> None:
        """Fill a range with a repeating byte pattern (length divides 4 KiB)."""
        reps = -(-nbytes // len(pattern))
        data = np.frombuffer(bytes(pattern) * reps, dtype=np.uint8)[:nbytes]
        self.write(offset, data, descending=descending)

    def compare(self, offset: int, nbytes: int, pattern: bytes) -> np.ndarray:
        """Absolute offsets of bytes that differ from the repeating ``pattern``."""
        got = self.read(offset, nbytes)
        reps = -(-nbytes // len(pattern))
        want = np.frombuffer(bytes(pattern) * reps, dtype=np.uint8)[:nbytes]
        return np.flatnonzero(got != want) + offset

    # Scan primitives (stress/memory). Defaults work through read/write in 16 MiB chunks; real
    # backends run them as kernels, the mock resolves them per address exactly.
    def _chunks(self, offset: int, nbytes: int, descending: bool) -> list[tuple[int, int]]:
        out = [(o, min(_SCAN_CHUNK, offset + nbytes - o)) for o in range(offset, offset + nbytes, _SCAN_CHUNK)]
        return out[::-1] if descending else out

    def write_pattern(self, offset: int, nbytes: int, pattern: Pattern, descending: bool = False) -> None:
        """Write ``pattern`` over a range."""
        for lo, n in self._chunks(offset, nbytes, descending):
            self.write(lo, pattern.expand(lo, n), descending=descending)

    def march_element(self, offset: int, nbytes: int, expect: Pattern | None, write: Pattern | None,
                      descending: bool = False, limit: int = 4096, chips: int = 1) -> Mismatches:
        """One March element: for each address in order, read-verify against ``expect`` (if any),
        then write ``write`` (if any). Returns the mismatches of the reads."""
        acc = Mismatches.empty(chips)
        for lo, n in self._chunks(offset, nbytes, descending):
            if expect is not None:
                acc = acc.merge(Mismatches.of(lo, expect.expand(lo, n), self.read(lo, n), limit, chips), limit)
            if write is not None:
                self.write(lo, write.expand(lo, n), descending=descending)
        return acc

    def verify_repeat(self, offset: int, nbytes: int, expect: Pattern, repeats: int = 1,
                      limit: int = 4096, chips: int = 1) -> Mismatches:
        """Read a range ``repeats`` times with no write in between; ``hits`` < ``repeats`` at a
        byte means its reads disagreed (a transient read error, not a bad stored value)."""
        acc = Mismatches.empty(chips, repeats)
        for _ in range(repeats):
            for lo, n in self._chunks(offset, nbytes, False):
                acc = acc.merge(Mismatches.of(lo, expect.expand(lo, n), self.read(lo, n), limit, chips), limit)
        acc.reads = repeats
        return acc


@dataclass(frozen=True)
class LoadReport:
    """What a sustained load achieved."""

    seconds: float
    flops: float
    mean_power_w: float | None = None
    throttle: frozenset[str] = frozenset()


class ComputeHandle(ABC):
    """Matrix products on the device."""

    @property
    @abstractmethod
    def dtypes(self) -> tuple[str, ...]: ...

    @abstractmethod
    def matmul(
        self, a: np.ndarray, b: np.ndarray, timeout_s: float = 60.0, dtype: str | None = None
    ) -> np.ndarray:
        """One product ``a @ b``; raises KernelTimeout if it does not finish in ``timeout_s``.

        ``dtype`` names the datatype the device computes in (a profile name: fp16, bf16, fp32,
        fp64; None = from the arrays; bf16, which numpy lacks, comes as float32 arrays).
        fp16/bf16 products accumulate and return in float32, as tensor-core GEMMs do.
        """

    @abstractmethod
    def load(self, seconds: float, intensity: float = 1.0) -> LoadReport:
        """Hold the device at ``intensity`` (0-1) of full load for ``seconds``."""


class TransferHandle(ABC):
    """Host<->device copies over PCIe, timed on the device's clock (for PCIe-under-load)."""

    @abstractmethod
    def host_to_device(self, nbytes: int) -> float:
        """Copy ``nbytes`` from pinned host memory to the device; returns seconds taken."""

    @abstractmethod
    def device_to_host(self, nbytes: int) -> float:
        """Copy ``nbytes`` from the device to pinned host memory; returns seconds taken."""


# A vendor diagnostic's word per item (ascend-dmi's; DCGM's pass/warn/fail map onto the same
# ladder): rerun, reset the chip, replace the part. Stages map them to verdicts and actions.
DIAG_PASS = "PASS"
DIAG_GENERAL_WARN = "GENERAL_WARN"  # rerun
DIAG_IMPORTANT_WARN = "IMPORTANT_WARN"  # reset the chip, then rerun
DIAG_EMERGENCY_WARN = "EMERGENCY_WARN"  # replace the part
DIAG_WORDS = (DIAG_PASS, DIAG_GENERAL_WARN, DIAG_IMPORTANT_WARN, DIAG_EMERGENCY_WARN)


@dataclass(frozen=True)
class DiagnosisItem:
    """One item of a vendor diagnosis: its name as the tool prints it ("HBM", "AI Core"), a
    canonical ``kind`` ("hbm", "aicore", ... or the name lower-cased), the word, and its details."""

    name: str
    kind: str
    result: str  # one of DIAG_WORDS
    details: str = ""
    codes: tuple[str, ...] = ()  # vendor fault codes the item cites, if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Diagnosis:
    items: tuple[DiagnosisItem, ...]
    stressed: bool  # run with stress (load), not a quick read of the chip's state
    command: str = ""


@dataclass(frozen=True)
class BandwidthReading:
    """One vendor bandwidth test: ``kind`` is h2d, d2h, d2d (on-card memory) or p2p (to a peer)."""

    kind: str
    gbps: float
    size_bytes: int | None = None
    peer: str | None = None
    command: str = ""


@dataclass(frozen=True)
class FlopsReading:
    """One vendor FLOPS test of a datatype, with the power the card drew while it ran."""

    dtype: str
    tflops: float
    power_w: float | None = None
    command: str = ""


@dataclass(frozen=True)
class PowerStressReading:
    """A vendor power stress of ``seconds``: what the card drew and how hot and fast it ran."""

    seconds: float
    mean_power_w: float | None
    max_power_w: float | None
    max_temperature_c: float | None = None
    min_clock_mhz: float | None = None
    command: str = ""


class DiagnosticsHandle(ABC):
    """The vendor's own diagnostic with stress (ascend-dmi on Ascend; DCGM's diag could serve
    NVIDIA): per-item diagnosis words, bandwidth per kind, FLOPS per datatype, a power stress.

    Every call may raise DeviceLost (the card dropped during the stress), DeviceError (the tool
    failed or printed something unreadable: one line) or Unsupported (the tool lacks the test).
    """

    tool: str = "vendor diagnostic"

    @property
    @abstractmethod
    def items(self) -> tuple[str, ...]:
        """Diagnosis items the tool offers ("hbm", "aicore", ...)."""

    @property
    @abstractmethod
    def bandwidth_kinds(self) -> tuple[str, ...]: ...

    @property
    @abstractmethod
    def flops_dtypes(self) -> tuple[str, ...]: ...

    @abstractmethod
    def diagnose(self, items: Sequence[str], stress: bool, timeout_s: float) -> Diagnosis: ...

    @abstractmethod
    def bandwidth(self, kind: str, timeout_s: float) -> BandwidthReading: ...

    @abstractmethod
    def flops(self, dtype: str, timeout_s: float) -> FlopsReading: ...

    @abstractmethod
    def power_stress(self, seconds: float, timeout_s: float) -> PowerStressReading: ...


# -- interconnect: the links between the chips of one host (NVLink, HCCS) --------------------------

@dataclass(frozen=True)
class LinkState:
    """One link of a card as read now: an NVLink port (to an NVSwitch or a peer GPU) or an HCCS
    link (to one peer NPU). A counter the card cannot report is ``None`` with its reason in
    ``unreadable`` ("not_supported", "no_permission", ...): "not supported" is never 0."""

    index: int
    up: bool | None  # None: the card cannot tell
    speed_gbps: float | None = None  # as trained, per direction
    version: int | None = None
    remote: str | None = None  # the far end: a PCI bus id (peer GPU, NVSwitch) or an NPU id
    remote_kind: str | None = None  # "gpu", "switch", "npu", "cpu"; None where unknown
    counters: dict[str, int | None] = field(default_factory=dict)  # replay, recovery, crc_flit, crc_data, ...
    unreadable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FabricState:
    """The card's registration in the host's link fabric (the NVSwitch fabric manager's view).

    ``state``: "not_supported" (no fabric to join, or a part that cannot say), "not_started",
    "in_progress", "completed". ``status`` is meaningful only when completed ("success" or an
    error name); ``degraded`` is the fabric's own "bandwidth degraded" flag (None: not said)."""

    state: str
    status: str | None = None
    degraded: bool | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NetPort:
    """A network port the card carries for the fabric between hosts (Ascend's RoCE NIC per NPU,
    read with ``hccn_tool``): link, health toward its peer, optical module. None: not said."""

    name: str
    up: bool | None
    health: str | None = None  # the tool's word: "Success", "Fault", "Init"
    rx_power_mw: float | None = None
    tx_power_mw: float | None = None
    rx_los: bool | None = None  # loss of signal on receive
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LinkReport:
    """A card's links, read without traffic (the interconnect stage reads it before and after
    its load and compares the counters). ``kind`` "nvlink" or "hccs"; ``counter_family`` says
    which counters were read (NVML: "dl" replay/recovery/CRC before Blackwell, "link_recovery"
    on Blackwell; "hccs"), so a report says what its zeros mean."""

    kind: str
    links: tuple[LinkState, ...]
    counter_family: str = ""
    fabric: FabricState | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # vendor detail kept as evidence
    ports: tuple[NetPort, ...] = ()  # the card's network ports toward other hosts (RoCE), where read

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "links": [x.to_dict() for x in self.links], "counter_family": self.counter_family,
                "fabric": self.fabric.to_dict() if self.fabric else None, "extra": dict(self.extra),
                "ports": [p.to_dict() for p in self.ports]}


@dataclass(frozen=True)
class PeerCopy:
    """One verified peer copy ``src -> dst``: the median time of its timed repeats, and the
    8-byte words that arrived wrong over all of them (0: exact). ``path`` is "p2p" (direct) or
    "host" (staged through host memory because peer access was refused)."""

    seconds: float
    nbytes: int
    bad_words: int = 0
    first_bad: int | None = None  # byte offset of the first bad word
    path: str = "p2p"

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Collective:
    """One all-reduce over the group: ``nbytes`` per rank, median time over its repeats,
    elements that came back wrong. Bus bandwidth as nccl-tests defines it: algbw x 2(n-1)/n."""

    seconds: float
    nbytes: int
    ranks: int
    wrong: int = 0
    library: str = ""  # "nccl", "hccl", "mock"

    @property
    def algbw_gbps(self) -> float:
        return self.nbytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def busbw_gbps(self) -> float:
        return self.algbw_gbps * 2 * (self.ranks - 1) / self.ranks if self.ranks > 1 else 0.0


class PeerGroup(ABC):
    """The cards of one host opened together: peer access, verified peer copies, a sustained
    load over every link, collectives. Cards are named by their position in the list the group
    was opened with (``Device.peer_group``)."""

    @property
    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def access(self, src: int, dst: int) -> bool | None:
        """May ``src`` reach ``dst``'s memory directly (P2P)? None: cannot tell."""

    @abstractmethod
    def copy(self, src: int, dst: int, nbytes: int, repeats: int = 3) -> PeerCopy:
        """Copy ``nbytes`` of a pattern that encodes (src, dst, offset) from ``src`` to ``dst``
        ``repeats`` times (after one warm-up), time each, and verify every word on arrival."""

    @abstractmethod
    def load(self, seconds: float) -> int:
        """Keep every card's links busy for ``seconds`` (each card copying to the next and from
        the previous at once); returns the bytes moved. Error counters are read around it."""

    def all_reduce(self, nbytes: int, repeats: int = 3, timeout_s: float = 120.0) -> Collective:
        """A sum all-reduce of ``nbytes`` per card, checked; Unsupported where the host has no
        collective library (NCCL, HCCL) for these cards."""
        raise Unsupported("no collective library for these cards")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the group holds (buffers, streams, communicators)."""


class Device(ABC):
    """One accelerator. Every call may raise DeviceLost once the card has left the bus."""

    backend: str = "abstract"
    clock: Clock

    @abstractmethod
    def identity(self) -> Identity: ...

    @abstractmethod
    def telemetry(self) -> Telemetry: ...

    @abstractmethod
    def counters(self) -> ErrorCounters: ...

    @abstractmethod
    def events(self) -> list[DeviceEvent]:
        """Events raised since the last call (drains)."""

    @property
    def fans(self) -> FanControl | None:
        return None

    @property
    def memory(self) -> MemoryHandle | None:
        return None

    @property
    def compute(self) -> ComputeHandle | None:
        return None

    @property
    def transfer(self) -> TransferHandle | None:
        return None

    @property
    def diagnostics(self) -> DiagnosticsHandle | None:
        return None

    def conditions(self) -> Conditions:
        """What preflight reads (processes, MIG, display, clocks, power, pending settings).
        Default: nothing known."""
        return Conditions()

    def unavailable(self, handle: str) -> str | None:
        """Why the ``handle`` ("memory", "compute", "transfer", "fans", "diagnostics") is missing and what would
        provide it; None when it is there (or cannot be known without building it). Cheap: it
        must not allocate what the handle would (a memory handle takes nearly all the memory)."""
        if handle != "peer" and getattr(self, handle, None) is not None:
            return None
        return f"the {self.backend} backend offers no {handle} handle"

    def links(self) -> LinkReport | None:
        """The card's inter-chip links read now (state, speed, far end, error counters, fabric
        registration); None when this backend cannot read links (the interconnect stage then
        says "not tested"). Whether a card should have links is its profile's word."""
        return None

    def peer_group(self, devices: list[Device]) -> PeerGroup | None:
        """The cards ``devices`` (this one first) opened together for peer copies and
        collectives; None when this backend has no peer path (``unavailable("peer")`` says why)."""
        return None

    def release_handles(self) -> None:  # noqa: B027 - optional hook
        """Free what a stage's handles hold (e.g. all of a GPU's memory taken by the memory
        scan) so the next stage can allocate; handles are rebuilt when next asked for."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything the session took (memory, fan control)."""
