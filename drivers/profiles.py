"""Device profiles: what a healthy card of one SKU looks like, with every figure in units.

Profiles live as TOML in ``fixtures/profiles/``; each figure is a string with its unit
(``tdp = "700 W"``) and is validated when the profile loads. Thresholds that the verdict
engine and the stages use live here, per profile, never as literals in code.
"""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.units import (
    RPM,
    TFLOPS,
    Celsius,
    Count,
    CPerW,
    GBps,
    MHz,
    MiB,
    Percent,
    PerMinute,
    Seconds,
    Watts,
)

PROFILE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "profiles"
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemorySpec(_Strict):
    type: str  # "HBM3", "GDDR6X"
    kind: Literal["hbm", "gddr"]
    chips: int = Field(gt=0)  # HBM stacks or GDDR chips; address -> (address // 256) % chips
    total: MiB
    bandwidth: GBps


class FanPoint(_Strict):
    duty: Percent
    rpm: RPM


class CoolingSpec(_Strict):
    kind: Literal["passive", "fan"]
    fans: int = Field(ge=0)
    fan_curve: list[FanPoint] = []  # card fans: RPM at commanded duty (healthy)
    rpm_tolerance: Percent = 15.0  # healthy band around the curve, +-
    default_duty: Percent = 40.0
    chassis_fans: int = Field(default=0, ge=0)  # bench/chassis fans that cool a passive card
    chassis_fan_curve: list[FanPoint] = []  # bench/chassis fans (passive cards)
    chassis_default_duty: Percent = 60.0

    @model_validator(mode="after")
    def _fans_have_a_curve(self) -> CoolingSpec:
        if self.kind == "fan" and (self.fans < 1 or len(self.fan_curve) < 2):
            raise ValueError("a fan-cooled profile needs fans >= 1 and a fan_curve of 2+ points")
        if self.kind == "passive" and (self.fans != 0 or self.chassis_fans < 1 or len(self.chassis_fan_curve) < 2):
            raise ValueError("a passive profile has fans = 0, chassis_fans >= 1 and a chassis_fan_curve")
        return self

    @property
    def fault_fans(self) -> int:
        """How many fans a fan fault may name: the card's own, else the chassis fans."""
        return self.fans if self.kind == "fan" else self.chassis_fans

    def curve(self, chassis: bool = False) -> list[FanPoint]:
        """The healthy curve of the card's own fans, or of the chassis fans of a passive card."""
        return self.chassis_fan_curve if chassis else self.fan_curve

    def default_duty_of(self, chassis: bool = False) -> float:
        """The duty the card's fans (or the chassis fans) run at when nobody commands them."""
        return self.chassis_default_duty if chassis else self.default_duty

    def rpm_band(self, expected_rpm: float) -> tuple[float, float]:
        """Healthy RPM range around a curve reading: below it a fan is weak, above it fast."""
        tol = self.rpm_tolerance / 100.0
        return expected_rpm * (1.0 - tol), expected_rpm * (1.0 + tol)

    def rpm_at(self, duty_pct: float, chassis: bool = False) -> float:
        """Healthy RPM at a duty, linear between curve points."""
        curve = self.curve(chassis)
        if not curve:
            return 0.0
        pts = sorted((p.duty, p.rpm) for p in curve)
        if duty_pct <= pts[0][0]:
            return pts[0][1]
        for (d0, r0), (d1, r1) in zip(pts, pts[1:], strict=False):
            if duty_pct <= d1:
                return r0 + (r1 - r0) * (duty_pct - d0) / (d1 - d0)
        return pts[-1][1]


class PcieSpec(_Strict):
    gen: int = Field(ge=1, le=6)
    width: int = Field(ge=1, le=32)
    floor_gen: int = Field(ge=1, le=6)  # below this the link is a fail (DCGM floor), else warn
    floor_width: int = Field(ge=1, le=32)
    replays_per_min_max: PerMinute  # DCGM: ceil(lanes x per-lane rate)/min
    replays_per_test_max: Count = 80.0
    h2d_bandwidth: GBps = 0.0  # what the trained link should carry, for PCIe-under-load


class PowerSpec(_Strict):
    tdp: Watts  # default power limit
    min_limit: Watts  # lowest limit the driver allows
    idle: Watts
    slot: Watts  # what the card can draw from the slot alone (aux unplugged)
    target_fraction_min: Percent = 75.0  # DCGM targeted_power: below this of the target fails

    @property
    def floor_w(self) -> float:
        """Full-load draw below which a card missed its target (``target_fraction_min`` of TDP)."""
        return self.target_fraction_min / 100.0 * self.tdp


class ThermalSpec(_Strict):
    inlet: Celsius  # typical inlet air at the bench
    theta_min: CPerW  # healthy band of steady-state rise per watt at default airflow
    theta_max: CPerW
    theta_fail: CPerW  # above this: thermal.high_resistance
    tau: Seconds  # first-order time constant
    slowdown: Celsius
    shutdown: Celsius
    max_operating: Celsius

    @model_validator(mode="after")
    def _ordered(self) -> ThermalSpec:
        if not (self.theta_min < self.theta_max <= self.theta_fail):
            raise ValueError("need theta_min < theta_max <= theta_fail")
        if not (self.max_operating <= self.slowdown < self.shutdown):
            raise ValueError("need max_operating <= slowdown < shutdown")
        return self


class ClockSpec(_Strict):
    max: MHz
    base: MHz
    min: MHz  # floor under thermal/power throttling


class ComputeSpec(_Strict):
    dtypes: list[str]
    target: dict[str, TFLOPS]  # sustained dense matmul rate a healthy card reaches, per dtype
    slow_fraction: Percent = 95.0  # DCGM targeted_stress: below this of target is slow
    peer_gap: Percent = 10.0  # more than this behind the best identical card is slow


class EccSpec(_Strict):
    supported: bool
    sbe_warn_total: Count = 20e6  # fleet checkers' DRAM correctable total
    sbe_rate_warn: PerMinute = 10.0  # rising during a run
    retired_pages_max: Count = 63.0  # pre-Ampere page retirement (SBE+DBE)
    retired_pages_dbe_max: Count = 15.0
    remapped_uncorrectable_max: Count = 512.0


class LinksSpec(_Strict):
    """The card's links to the other chips of its board (NVLink through NVSwitch on HGX, HCCS
    full mesh on an Atlas 800T A2). Absent on a card that has none (PCIe cards, GeForce): the
    interconnect stage is then not applicable to it. Floors are fractions of the nominal."""

    kind: Literal["nvlink", "hccs"]
    count: int = Field(ge=1, le=64)  # links a healthy card has active
    speed: GBps  # per link, per direction, nominal
    version: int | None = None  # NVLink generation (4 on Hopper, 3 on Ampere)
    fabric: Literal["nvswitch", "mesh"] = "nvswitch"  # nvswitch: every link to a switch; mesh: one link per peer
    slow_fraction: Percent = 70.0  # a pair below this of the nominal is slow
    fallback_fraction: Percent = 40.0  # below this the pair fell back to PCIe or lost most links
    peer_gap: Percent = 15.0  # a pair this far below the board's median is slow (relative check)
    allreduce_floor: Percent = 70.0  # all-reduce bus bandwidth below this of a card's nominal
    errors_fail: Count = 100.0  # error counter growth on one link during the stage that fails it
    sim_fraction_min: Percent = 80.0  # mock: a healthy pair moves this much of nominal ...
    sim_fraction_max: Percent = 88.0  # ... up to this (seeded per pair and direction)
    sources: list[str] = []

    @property
    def per_card_gbps(self) -> float:
        """What one card can move per direction over all its links."""
        return self.count * self.speed

    @property
    def board_key(self) -> tuple[str, int | None, int, float, str]:
        """Cards with equal keys can form one board (same kind, generation, count and speed)."""
        return (self.kind, self.version, self.count, self.speed, self.fabric)

    @property
    def pair_gbps(self) -> float:
        """Nominal per direction between two cards: all links through the switches, or the one
        link that joins them in a mesh."""
        return self.speed if self.fabric == "mesh" else self.per_card_gbps


class SimSpec(_Strict):
    """Physics of the mock card only; real backends ignore it."""

    theta_noise: Percent = 8.0  # card-to-card spread of theta inside the healthy band (1 sigma)
    airflow_theta_gain: float = 0.6  # theta x (1 + gain x (1 - airflow)) as airflow drops to 0
    stalled_fan_airflow: float = 0.15  # airflow fraction left through a dead fan (convection)
    rpm_noise: Percent = 2.0
    power_noise: Percent = 1.5
    temp_noise: Celsius = 0.3


class Profile(_Strict):
    name: str
    vendor: Literal["nvidia", "huawei"]
    model: str  # the product name the device reports
    match: list[str] = []  # substrings of real device names that select this profile
    memory: MemorySpec
    cooling: CoolingSpec
    pcie: PcieSpec
    power: PowerSpec
    thermal: ThermalSpec
    clocks: ClockSpec
    compute: ComputeSpec
    ecc: EccSpec
    sim: SimSpec = SimSpec()
    links: LinksSpec | None = None  # inter-chip links (NVLink, HCCS); None: the card has none
    sources: list[str] = []  # where the figures come from
    derived: bool = False  # built from what the card reported (drivers.derived), not from a file
    assumed: list[str] = []  # figures of a derived profile the card could not give (e.g. "thermal.theta")


class ProfileError(ValueError):
    """A profile is missing or invalid; the message names the file and the field."""


def _format_validation(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top)"
    return f"{path}: {loc}: {first['msg']}"


def load_profile_file(path: Path) -> Profile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: invalid TOML: {e}") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(_format_validation(path, e)) from None


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


@functools.cache
def load_profile(name: str) -> Profile:
    """Load a profile by name from ``fixtures/profiles/``; a name, never a path."""
    if not _PROFILE_NAME.fullmatch(name or "") or ".." in name:
        raise ProfileError(f"unknown profile {name[:80]!r}: a profile is a name like 'h100-sxm5-80gb', not a path "
                           f"(have: {', '.join(available_profiles())})")
    path = PROFILE_DIR / f"{name}.toml"
    if not path.is_file():
        raise ProfileError(f"unknown profile {name!r} (have: {', '.join(available_profiles())})")
    prof = load_profile_file(path)
    if prof.name != name:
        raise ProfileError(f"{path}: name: {prof.name!r} does not match the file name")
    return prof


MEMORY_MATCH_TOLERANCE = 0.10  # a reported memory size this far from the profile's is another board


def normalize_name(name: str) -> str:
    """Device names compare without case, spaces or punctuation ("NVIDIA A100-SXM4-80GB")."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def profile_for_model(model_name: str, memory_mib: float | None = None, fans: int | None = None) -> Profile | None:
    """The profile whose ``match`` names the device's product name exactly (as ``nvmlDeviceGetName``
    or ``npu-smi`` print it), if any.

    Where one name covers several boards (a GeForce RTX 4090 with 24 GB, or reworked to 48 GB on a
    blower), the reported memory size picks the board and the fan count breaks a tie. A card whose
    memory is more than 10 % off every candidate is another board: no match (the caller derives).
    """
    key = normalize_name(model_name)
    cands = [load_profile(n) for n in available_profiles()]
    cands = [p for p in cands if key in {normalize_name(m) for m in p.match}]
    if memory_mib:
        cands = [p for p in cands if abs(memory_mib - p.memory.total) <= MEMORY_MATCH_TOLERANCE * p.memory.total]
    if not cands:
        return None

    def rank(p: Profile) -> tuple[float, int, str]:
        mem_off = abs((memory_mib or p.memory.total) - p.memory.total) / p.memory.total
        return mem_off, 0 if fans is None or fans == p.cooling.fans else 1, p.name

    return min(cands, key=rank)
