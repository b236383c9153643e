"""A corpus of mock cards built from the spec tables (mock-faults.md, verdict-rules.md, contract.md).

Every fault kind with several parameter values, addresses and seeds, on every profile, each
with the outcome the *rules* give (not what the code happens to do): verdict, the fail codes
that must appear, the actions required and the only actions allowed, and the location that
must pin the fault down. ``cases(plan)`` returns the cards of one plan's rack; ``healthy(...)``
the seeded healthy cards. Expected values are derived from profile figures, never from the code
under test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from drivers.profiles import available_profiles, load_profile

MIB = 1 << 20
# the three profiles the whole fault matrix runs on; every other profile runs its signature faults
PROFILES = ("h100-sxm5-80gb", "rtx4090-blower-48gb", "ascend-910b")
OTHER_PROFILES = tuple(p for p in available_profiles() if p not in PROFILES)
SHORT = {"h100-sxm5-80gb": "H", "rtx4090-blower-48gb": "G", "ascend-910b": "A",
         **{p: f"P{i:02d}" for i, p in enumerate(OTHER_PROFILES)}}
BENCH_ACTIONS = {"replace_fan", "repaste", "reseat", "check_power", "reflash_firmware", "replace_memory"}
# simulated seconds at which each plan's stages run on a mock card (health, memory, pcie, fans,
# thermal, burn, power): used to put at_s faults mid-stage and past the end of the session. The
# watch, the soak and the burn stop once their physics has settled, so the later stages start at
# times that depend on the profile's time constant (and move by about a sample with the seed):
# those are given per profile, each inside its stage on every seed measured (12 per profile), and
# "power" late in the session (the power stage, or the end of the burn: its start moves more than
# it lasts) but before the session's end on every seed (a fault after the end is never seen).
H, G, A = PROFILES
STAGE_TIMES: dict[str, dict[str, int | dict[str, int]]] = {
    "quick": {"health": 6, "pcie": 25, "fans": 50, "thermal": 120, "burn": {H: 240, G: 195, A: 225},
              "power": {H: 275, G: 215, A: 235}, "end": 5000},
    "standard": {"health": 6, "memory": 300, "pcie": 625, "fans": 670, "thermal": 760,
                 "burn": {H: 880, G: 830, A: 860}, "power": {H: 940, G: 875, A: 905}, "end": 10000},
}


def stage_time(plan: str, stage: str, profile: str) -> int:
    """When ``stage`` of ``plan`` runs on a mock card of ``profile`` (simulated seconds)."""
    at = STAGE_TIMES[plan][stage]
    return at[profile] if isinstance(at, dict) else at


@dataclass
class Expect:
    verdict: str | set[str]
    codes: list[set[str]] = field(default_factory=list)  # each group: at least one fail code from it
    actions: set[str] = field(default_factory=set)  # must all be in the card's actions
    allowed: set[str] | None = None  # the card's actions must lie within these (default: ``actions``)
    location: tuple[set[str], dict[str, Any]] | None = None  # a fail finding with one of the codes has these
    warn: str | None = None  # a finding with this code, of severity warn or more


@dataclass
class Case:
    serial: str
    profile: str
    faults: list[dict[str, Any]]
    expect: Expect
    memory_mib: int = 1
    seed: int | None = None
    bench: bool = True  # slot served by the simulated bench controller
    note: str = ""

    def device(self, slot: int) -> dict[str, Any]:
        d: dict[str, Any] = {"backend": "mock", "profile": self.profile, "serial": self.serial, "slot": slot}
        if self.memory_mib != 64:  # 64 is the contract's default: leave it out, as a user would
            d["memory_mib"] = self.memory_mib
        if self.seed is not None:
            d["seed"] = self.seed
        if self.faults:
            d["faults"] = self.faults
        return d


def verdict_of(actions: set[str]) -> str:
    """contract.md: rma > bench action > reset/fix_host > pass."""
    if "rma" in actions:
        return "rma"
    if actions & BENCH_ACTIONS:
        return "repair"
    if actions & {"reset_and_retest", "fix_host"}:
        return "retest"
    return "pass"


def _e(codes: set[str] | str, actions: set[str], **kw: Any) -> Expect:
    groups = [{codes} if isinstance(codes, str) else set(codes)]
    return Expect(verdict=verdict_of(actions), codes=groups, actions=set(actions), **kw)


# -- memory ----------------------------------------------------------------------------------------
def _mem_expect(profile: str, code: str, address: int, bit: int | None) -> Expect:
    p = load_profile(profile)
    where = "stack" if p.memory.kind == "hbm" else "chip"
    action = "rma" if p.memory.kind == "hbm" else "replace_memory"
    loc: dict[str, Any] = {"address": address, where: (address // 256) % p.memory.chips}
    if bit is not None:
        loc["bit"] = bit
    return _e(code, {action}, location=({code}, loc))


def memory_cases(plan: str, rng: random.Random) -> list[Case]:
    out: list[Case] = []
    n = 0

    def add(profile: str, fault: dict[str, Any], code: str, where: int, bit: int | None, mib: int,
            note: str = "") -> None:
        nonlocal n
        n += 1
        exp = _mem_expect(profile, code, where, bit)
        if fault["kind"] == "memory.retention" and plan == "quick":
            assert isinstance(exp.verdict, str)  # _e gives one verdict
            exp.verdict = {exp.verdict, "pass"}  # contract.md 5: quick need not find retention
            exp.codes = []
            exp.actions = set()
            exp.allowed = set(_mem_expect(profile, code, where, bit).actions)
            exp.location = None
        out.append(Case(f"M{n:03d}-{SHORT[profile]}-{fault['kind'].split('.')[1]}", profile, [fault], exp,
                        memory_mib=mib, seed=rng.randrange(1 << 30), note=note))

    sizes = [1, 16, 64, 2, 128, 1, 3]
    for i, (profile, mib) in enumerate((p, sizes[k % len(sizes)]) for k, p in enumerate(PROFILES * 3)):
        last = mib * MIB - 1
        addrs = [0, last, rng.randrange(mib * MIB)]
        a = addrs[i % 3]
        bit = (i * 3 + 1) % 8
        value = i % 2
        add(profile, {"kind": "memory.stuck_bit", "address": a, "bit": bit, "value": value}, "memory.stuck_bit",
            a, bit, mib)
        direction = ("up", "down")[i % 2]
        a2 = addrs[(i + 1) % 3]
        b2 = (i * 5 + 2) % 8
        add(profile, {"kind": "memory.transition", "address": a2, "bit": b2, "direction": direction},
            "memory.transition", a2, b2, mib)
        a3 = addrs[(i + 2) % 3]
        p3 = (0.01, 0.05, 0.2, 0.5, 1.0)[i % 5]
        add(profile, {"kind": "memory.intermittent", "address": a3, "bit": (i + 6) % 8, "probability": p3},
            "memory.intermittent", a3, (i + 6) % 8, mib)
        secs = (1.0, 30.0, 100.0)[i % 3]
        add(profile, {"kind": "memory.retention", "address": a, "bit": (i + 4) % 8, "seconds": secs},
            "memory.retention", a, (i + 4) % 8, mib)
    # every bit of a stuck cell, both values, on the GDDR card (chip locations) and an HBM card
    for bit in range(8):
        profile = PROFILES[bit % 3]
        a = rng.randrange(MIB)
        add(profile, {"kind": "memory.stuck_bit", "address": a, "bit": bit, "value": (bit + 1) % 2},
            "memory.stuck_bit", a, bit, 1)
    # coupling: aggressor below / above the victim, same byte, every trigger and effect
    trig_eff = [(t, e) for t in ("up", "down", "any") for e in ("invert", "set", "reset")]
    for i, (trigger, effect) in enumerate(trig_eff):
        profile = PROFILES[i % 3]
        mib = (1, 2, 16)[i % 3]
        size = mib * MIB
        placement = ("below", "above", "same", "far")[i % 4]
        v = rng.randrange(1024, size - 1024)
        if placement == "below":
            agg = v - rng.randrange(1, 512)
        elif placement == "above":
            agg = v + rng.randrange(1, 512)
        elif placement == "same":
            agg = v
        else:
            agg = (v + size // 2) % size
        ab = rng.randrange(8)
        vb = rng.choice([b for b in range(8) if agg != v or b != ab])
        add(profile, {"kind": "memory.coupling", "aggressor": agg, "aggressor_bit": ab, "victim": v,
                      "victim_bit": vb, "trigger": trigger, "effect": effect}, "memory.coupling", v, vb, mib,
            note=placement)
    # address decoder: alias below / above, near and far, at the ends of memory
    for i in range(6):
        profile = PROFILES[i % 3]
        mib = (1, 4, 16)[i % 3]
        size = mib * MIB
        a = (0, size - 1, rng.randrange(size), rng.randrange(size), 4096, size - 4096)[i]
        alias = (size - 1, 0, (a + 256) % size, (a - 1) % size, a + size // 2, 1)[i]
        add(profile, {"kind": "memory.address_decoder", "address": a, "alias": alias},
            "memory.address_decoder", a, None, mib)
    return out


# -- everything else ------------------------------------------------------------------------------
def device_cases(plan: str, rng: random.Random) -> list[Case]:
    st = STAGE_TIMES[plan]
    out: list[Case] = []
    counter = {"n": 0}

    def at(stage: str, profile: str) -> int:
        return stage_time(plan, stage, profile)

    def add(tag: str, profile: str, faults: list[dict[str, Any]], exp: Expect, bench: bool = True,
            **kw: Any) -> None:
        counter["n"] += 1
        out.append(Case(f"D{counter['n']:03d}-{SHORT[profile]}-{tag}", profile, faults, exp, bench=bench,
                        seed=rng.randrange(1 << 30), **kw))

    wrong = {"compute.miscompare", "compute.nan"}
    # compute.sdc: every N (quick runs >= 400 products hot, standard >= 2000), probability
    everies = [1, 3, 17, 50, 150, 399] if plan == "quick" else [1, 50, 999, 1999]
    for i, every in enumerate(everies):
        add(f"sdcN{every}", PROFILES[i % 3], [{"kind": "compute.sdc", "every": every}], _e(wrong, {"rma"}))
    for i, pr in enumerate((0.01, 0.03, 0.1, 0.25, 0.5)):
        add(f"sdcP{pr}", PROFILES[i % 3], [{"kind": "compute.sdc", "probability": pr}], _e(wrong, {"rma"}))
    for profile in PROFILES:
        p = load_profile(profile)
        th = p.thermal
        healthy_hot = th.inlet + p.power.tdp * th.theta_max  # hottest a healthy card runs at full load
        # hot-only errors on a card with dried paste: repaste (and the paste itself); the threshold
        # lies above any healthy card's temperature and below the slowdown point that caps the die
        above = round(min(healthy_hot + 6, th.slowdown - 3))
        hot_sdc: tuple[tuple[float, int | None], ...] = ((1.8, 5), (2.5, None))
        for factor, hot_every in hot_sdc:
            sdc: dict[str, Any] = {"kind": "compute.sdc", "above_temp_c": above}
            sdc.update({"every": hot_every} if hot_every else {"probability": 0.2})
            add(f"hotsdc{factor}", profile, [{"kind": "thermal.resistance", "factor": factor}, sdc],
                Expect("repair", [wrong, {"thermal.high_resistance", "thermal.slowdown"}], {"repaste"}))
        # hot-only errors at normal temperature with healthy cooling: marginal silicon
        add("warmsdc", profile, [{"kind": "compute.sdc", "every": 4, "above_temp_c": round(th.inlet + 15)}],
            _e(wrong, {"rma"}))
        # a threshold the card never reaches: nothing happens
        add("coldsdc", profile, [{"kind": "compute.sdc", "every": 2, "above_temp_c": th.shutdown + 5}],
            Expect("pass"))
    # compute.hang at various times; past the end of the session it never fires
    for i, stage in enumerate(("", "health", "memory" if "memory" in st else "pcie", "thermal", "burn", "power")):
        t = at(stage, PROFILES[i % 3]) if stage else 0
        add(f"hang{t}", PROFILES[i % 3], [{"kind": "compute.hang", "at_s": t}],
            _e("compute.hang", {"reset_and_retest"}))
    add("hangnever", "ascend-910b", [{"kind": "compute.hang", "at_s": st["end"]}], Expect("pass"))
    add("hangdef", "rtx4090-blower-48gb", [{"kind": "compute.hang"}], _e("compute.hang", {"reset_and_retest"}))
    for i, factor in enumerate((0.5, 0.6, 0.7, 0.8, 0.9, 0.93)):
        add(f"slow{factor}", PROFILES[i % 3], [{"kind": "compute.slow", "factor": factor}],
            _e("compute.slow", {"rma"}))
    thermal_codes = {"thermal.high_resistance", "thermal.slowdown", "thermal.over_temp"}
    for i, factor in enumerate((1.5, 1.8, 2.2, 3.0, 1.6, 2.6)):
        add(f"paste{factor}", PROFILES[i % 3], [{"kind": "thermal.resistance", "factor": factor}],
            _e(thermal_codes, {"repaste"}))
    # fans: every fan of every profile; card fans on the blower, chassis fans through the bench
    fan_code = {"fan.stalled": "fan.stalled", "fan.weak": "fan.weak", "fan.tach_fault": "fan.tach_mismatch"}
    for profile in PROFILES:
        p = load_profile(profile)
        fans = p.cooling.fault_fans
        for k, kind in enumerate(fan_code):
            for fan in range(fans):
                extra = {"max_fraction": (0.3, 0.5, 0.65, 0.2)[(fan + k) % 4]} if kind == "fan.weak" else {}
                add(f"{kind.split('.')[1]}{fan}", profile, [{"kind": kind, "fan": fan, **extra}],
                    _e(fan_code[kind], {"replace_fan"}, location=({fan_code[kind]}, {"fan": fan})))
    # a one-fan card: fan = 1 names its only fan (1-based numbering of a single fan)
    add("stall1", "rtx4090-blower-48gb", [{"kind": "fan.stalled", "fan": 1}], _e("fan.stalled", {"replace_fan"}))
    # a blower just out of its band at full duty (the band is 12 %): weak, never a tach mismatch
    for k in range(3):
        add(f"weak0.85-{k}", "rtx4090-blower-48gb", [{"kind": "fan.weak", "fan": 0, "max_fraction": 0.85}],
            _e("fan.weak", {"replace_fan"}, location=({"fan.weak"}, {"fan": 0})))
    # passive cards without a bench controller: the chassis fans cannot be read or commanded
    for profile in ("h100-sxm5-80gb", "ascend-910b"):
        for fan in range(load_profile(profile).cooling.chassis_fans):
            add(f"nb-stall{fan}", profile, [{"kind": "fan.stalled", "fan": fan}],
                _e("fan.stalled", {"replace_fan"}, location=({"fan.stalled"}, {"fan": fan})), bench=False)
        add("nb-tach", profile, [{"kind": "fan.tach_fault", "fan": 0}], NO_BENCH_TACH, bench=False)
        add("nb-weak", profile, [{"kind": "fan.weak", "fan": 1, "max_fraction": 0.3}],
            _e("fan.weak", {"replace_fan"}, location=({"fan.weak"}, {"fan": 1})), bench=False)
        add("nb-paste", profile, [{"kind": "thermal.resistance", "factor": 2.0}], _e(thermal_codes, {"repaste"}),
            bench=False)
    # the blower without a bench: no optical tach, so the airflow probe tells a dead fan from a dead wire
    for kind, extra in (("fan.stalled", {}), ("fan.weak", {"max_fraction": 0.4}), ("fan.tach_fault", {})):
        add(f"nb-{kind.split('.')[1]}", "rtx4090-blower-48gb", [{"kind": kind, "fan": 0, **extra}],
            _e(fan_code[kind], {"replace_fan"}, location=({fan_code[kind]}, {"fan": 0})), bench=False)
    # PCIe: every lower gen at full width, every lower width at full gen, both low
    for profile in PROFILES:
        p = load_profile(profile)
        for gen in range(1, p.pcie.gen):
            add(f"gen{gen}", profile, [{"kind": "pcie.downtrained", "gen": gen, "width": p.pcie.width}],
                _e("pcie.link_degraded", {"reseat"}))
        for width in (1, 2, 4, 8):
            add(f"x{width}", profile, [{"kind": "pcie.downtrained", "gen": p.pcie.gen, "width": width}],
                _e("pcie.link_degraded", {"reseat"}))
        add("g2x4", profile, [{"kind": "pcie.downtrained", "gen": 2, "width": 4}], _e("pcie.link_degraded", {"reseat"}))
        add("atmax", profile, [{"kind": "pcie.downtrained", "gen": p.pcie.gen, "width": p.pcie.width}],
            Expect("pass"))
        lim = p.pcie.replays_per_min_max
        for rate in (lim + 1.5, lim * 1.3, lim * 3.0, lim * 40.0):
            add(f"replay{rate:g}", profile, [{"kind": "pcie.replays", "per_minute": round(rate, 1)}],
                _e("pcie.replays", {"reseat"}))
        for rate in (lim * 0.2, lim * 0.6, lim - 1, lim):  # at the limit is not over it
            add(f"replayok{rate:g}", profile, [{"kind": "pcie.replays", "per_minute": round(rate, 1)}],
                Expect("pass"))
    # links (profiles with [links] only: the kinds are a config error on a PCIe card); the
    # interconnect stage runs over every linked card of the rack's one host, a board
    for profile in PROFILES:
        lk = load_profile(profile).links
        if lk is None:
            continue
        add("linkdown", profile, [{"kind": "link.down", "link": lk.count - 1}], _e("link.down", {"reseat"}))
        add("linkdeg", profile, [{"kind": "link.degraded", "link": 1, "errors_per_s": 20}],
            _e("link.degraded", {"reseat"}))
        add("p2pcorrupt", profile, [{"kind": "p2p.corrupt"}], _e("p2p.corrupt", {"rma"}))
    # ECC counters and flags (on every profile: the fault says the counter is reported)
    for i, profile in enumerate(PROFILES):
        for per_min in ((50, 5000), (200, 2e5), (20, 1e6))[i]:
            add(f"sbe{per_min:g}", profile, [{"kind": "ecc.sbe_storm", "per_minute": per_min}],
                Expect("pass", warn="ecc.sbe_rate"))
        for count, t in ((1, 0), (7, at("fans", profile)), (40, at("burn", profile))):
            add(f"dbe{count}", profile, [{"kind": "ecc.dbe", "count": count, "at_s": t}],
                _e("ecc.dbe", {"reset_and_retest"}))
        add("dbedef", profile, [{"kind": "ecc.dbe"}], _e("ecc.dbe", {"reset_and_retest"}))
        add("dbenever", profile, [{"kind": "ecc.dbe", "count": 3, "at_s": st["end"]}], Expect("pass"))
        add("pend", profile, [{"kind": "ecc.row_remap_pending"}], _e("ecc.row_remap_pending", {"reset_and_retest"}))
        add("rfail", profile, [{"kind": "ecc.row_remap_failure"}], _e("ecc.row_remap_failure", {"rma"}))
        for count in (63, 64, 500):
            add(f"ret{count}", profile, [{"kind": "ecc.retired_pages", "count": count}],
                _e("ecc.retired_pages", {"rma"}))
        for count in (1, 20, 62):
            add(f"retok{count}", profile, [{"kind": "ecc.retired_pages", "count": count}],
                Expect("pass", warn="ecc.retired_pages"))
    # bus.fall_off: at open, during each stage, and never
    for i, stage in enumerate(["health", "pcie", "fans", "thermal", "burn", "power"]
                              + (["memory"] if "memory" in st else [])):
        add(f"off-{stage}", PROFILES[i % 3], [{"kind": "bus.fall_off", "at_s": at(stage, PROFILES[i % 3])}],
            _e("bus.lost", {"reseat"}))
    add("off0", "h100-sxm5-80gb", [{"kind": "bus.fall_off", "at_s": 0}], _e("bus.lost", {"reseat"}))
    add("offnever", "rtx4090-blower-48gb", [{"kind": "bus.fall_off", "at_s": st["end"]}], Expect("pass"))
    # XIDs: the whole catalogue plus unknown codes
    out += xid_cases(plan, rng, counter)
    # power
    for profile in PROFILES:
        p = load_profile(profile)
        tdp = p.power.tdp
        for w in (tdp - 1, tdp - 10, round(tdp * 0.9), round(tdp * 0.6), p.power.min_limit):
            add(f"cap{w:g}", profile, [{"kind": "power.capped", "watts": w}], _e("power.capped", {"fix_host"}))
        add("capabove", profile, [{"kind": "power.capped", "watts": tdp + 50}], Expect("pass"))
        add("capattdp", profile, [{"kind": "power.capped", "watts": tdp}], Expect("pass"))
        add("aux", profile, [{"kind": "power.aux_unplugged"}], _e("power.aux_unplugged", {"check_power"}))
        add("inforom", profile, [{"kind": "firmware.inforom_corrupt"}],
            _e("firmware.inforom_corrupt", {"reflash_firmware"}))
    # host conditions (preflight, docs/mock-faults.md): not the card's fault; retest, fix the host
    for i, profile in enumerate(PROFILES):
        p = load_profile(profile)
        add("busy", profile, [{"kind": "host.busy", "pid": 4242 + i, "name": "python3", "memory_mib": i % 2}],
            _e("host.busy", {"fix_host"}))
        add("busygfx", profile, [{"kind": "host.busy", "pid": 77, "name": "Xorg", "graphics": True}],
            _e("host.busy", {"fix_host"}))
        add("mig", profile, [{"kind": "host.mig"}], _e("host.mig", {"fix_host"}))
        add("migpend", profile, [{"kind": "host.mig", "pending": True}], _e("host.pending_reset", {"fix_host"}))
        add("display", profile, [{"kind": "host.display"}], _e("host.display", {"fix_host"}))
        add("locked", profile, [{"kind": "host.clocks_locked"}], _e("host.clocks_locked", {"fix_host"}))
        add("lockedat", profile, [{"kind": "host.clocks_locked", "mhz": round(p.clocks.max * 0.7)}],
            _e("host.clocks_locked", {"fix_host"}))
    out += combo_cases(plan, rng, counter)
    return out


# No bench on a passive card: the chassis runs its fans at a fixed duty and the host reads their
# own tach wires, so a dead tach wire reads like a dead fan (nothing can command the fan to tell
# them apart by airflow): either code, the same repair.
NO_BENCH_TACH = Expect("repair", [{"fan.stalled", "fan.tach_mismatch"}], {"replace_fan"},
                       location=({"fan.stalled", "fan.tach_mismatch"}, {"fan": 0}))


def xid_expectations() -> dict[int, dict[str, str]]:
    """The rule of every XID straight from the data (NVIDIA's catalogue joined with the bench's
    bucket mapping and overrides), read here on its own rather than through drivers.xid."""
    import csv
    import tomllib
    from pathlib import Path

    fx = Path(__file__).resolve().parent.parent / "fixtures"
    rules = tomllib.loads((fx / "xid_catalogue.toml").read_text())
    lines = [ln for ln in (fx / "xid" / "nvidia_catalog.csv").read_text().splitlines() if not ln.startswith("#")]
    out: dict[int, dict[str, str]] = {}
    for row in csv.DictReader(lines):
        code = int(row["code"])
        rule = {**rules["default"], **rules["bucket"].get(row["immediate"], {}), **rules["xid"].get(str(code), {})}
        out[code] = {"finding": rule.get("finding") or f"xid.{code}", "severity": rule["severity"],
                     "action": rule["action"]}
    return out


# one XID of each bucket and override, the ones the issue names, and unknown codes
XID_CORPUS = (13, 31, 43, 45, 46, 48, 54, 61, 62, 63, 64, 74, 78, 79, 92, 94, 95, 119, 120, 122, 136, 140, 143,
              145, 151, 154, 159, 163, 167, 172, 999, 31337)


def xid_cases(plan: str, rng: random.Random, counter: dict[str, int]) -> list[Case]:
    known = xid_expectations()
    default = {"finding": "", "severity": "fail", "action": "reset_and_retest"}
    out: list[Case] = []
    for i, code in enumerate(XID_CORPUS):
        rule = known.get(code, default)
        finding = rule["finding"] or f"xid.{code}"
        acts = {rule["action"]} - {"none"} if rule["severity"] == "fail" else set()
        exp = _e(finding, acts) if rule["severity"] == "fail" else Expect("pass", warn=finding)
        if rule["severity"] == "info":
            exp.warn = None
        profile = PROFILES[i % 3]
        at = (0, stage_time(plan, "thermal", profile), stage_time(plan, "burn", profile))[i % 3]
        counter["n"] += 1
        out.append(Case(f"D{counter['n']:03d}-{SHORT[profile]}-xid{code}", profile,
                        [{"kind": "xid", "code": code, "at_s": at}], exp, seed=rng.randrange(1 << 30)))
    return out


def combo_cases(plan: str, rng: random.Random, counter: dict[str, int]) -> list[Case]:
    """Two faults on one card: the verdict is the worst, the actions the union."""
    combos: list[tuple[str, list[dict[str, Any]], list[set[str]], set[str]]] = [
        ("rtx4090-blower-48gb", [{"kind": "memory.stuck_bit", "address": 0x1234, "bit": 2, "value": 1},
                                 {"kind": "fan.stalled", "fan": 0}],
         [{"memory.stuck_bit"}, {"fan.stalled"}], {"replace_memory", "replace_fan"}),
        ("h100-sxm5-80gb", [{"kind": "compute.sdc", "every": 20}, {"kind": "pcie.downtrained", "gen": 3, "width": 16}],
         [{"compute.miscompare", "compute.nan"}, {"pcie.link_degraded"}], {"rma", "reseat"}),
        ("ascend-910b", [{"kind": "ecc.dbe", "count": 2}, {"kind": "firmware.inforom_corrupt"}],
         [{"ecc.dbe"}, {"firmware.inforom_corrupt"}], {"reset_and_retest", "reflash_firmware"}),
        ("h100-sxm5-80gb", [{"kind": "pcie.replays", "per_minute": 300}, {"kind": "power.aux_unplugged"}],
         [{"pcie.replays"}, {"power.aux_unplugged"}], {"reseat", "check_power"}),
        ("rtx4090-blower-48gb", [{"kind": "thermal.resistance", "factor": 2.0}, {"kind": "ecc.row_remap_pending"}],
         [{"thermal.high_resistance", "thermal.slowdown"}, {"ecc.row_remap_pending"}], {"repaste", "reset_and_retest"}),
        ("ascend-910b", [{"kind": "memory.intermittent", "address": 777, "bit": 7, "probability": 0.3},
                         {"kind": "compute.slow", "factor": 0.7}],
         [{"memory.intermittent"}, {"compute.slow"}], {"rma"}),
        ("h100-sxm5-80gb", [{"kind": "power.capped", "watts": 500}, {"kind": "xid", "code": 119}],
         [{"power.capped"}, {"xid.119"}], {"fix_host", "reset_and_retest"}),
        ("ascend-910b", [{"kind": "fan.weak", "fan": 3, "max_fraction": 0.4},
                         {"kind": "pcie.downtrained", "gen": 4, "width": 8}],
         [{"fan.weak"}, {"pcie.link_degraded"}], {"replace_fan", "reseat"}),
        ("rtx4090-blower-48gb", [{"kind": "memory.transition", "address": 0, "bit": 0, "direction": "down"},
                                 {"kind": "ecc.row_remap_failure"}],
         [{"memory.transition"}, {"ecc.row_remap_failure"}], {"replace_memory", "rma"}),
        ("h100-sxm5-80gb", [{"kind": "compute.slow", "factor": 0.75}, {"kind": "compute.slow", "factor": 0.9}],
         [{"compute.slow"}], {"rma"}),
        ("rtx4090-blower-48gb", [{"kind": "memory.stuck_bit", "address": 0x300, "bit": 1, "value": 1},
                                 {"kind": "memory.stuck_bit", "address": 0xFFFFF, "bit": 6, "value": 0}],
         [{"memory.stuck_bit"}], {"replace_memory"}),
        ("ascend-910b", [{"kind": "memory.address_decoder", "address": 0x800, "alias": 0x40000},
                         {"kind": "memory.transition", "address": 0x9000, "bit": 3, "direction": "up"}],
         [{"memory.address_decoder"}, {"memory.transition"}], {"rma"}),
        ("h100-sxm5-80gb", [{"kind": "fan.stalled", "fan": 0}, {"kind": "fan.weak", "fan": 3, "max_fraction": 0.3}],
         [{"fan.stalled"}, {"fan.weak"}], {"replace_fan"}),
        ("ascend-910b", [{"kind": "bus.fall_off", "at_s": stage_time(plan, "burn", "ascend-910b")}, {"kind": "memory.stuck_bit", "address": 5, "bit": 5,
                                                                   "value": 1}],
         [{"bus.lost"}, {"memory.stuck_bit"}], {"reseat", "rma"}),
        ("rtx4090-blower-48gb", [{"kind": "compute.hang", "at_s": 0}, {"kind": "pcie.downtrained", "gen": 1,
                                                                       "width": 1}],
         [{"compute.hang"}, {"pcie.link_degraded"}], {"reset_and_retest", "reseat"}),
    ]
    out = []
    for profile, faults, groups, actions in combos:
        counter["n"] += 1
        out.append(Case(f"D{counter['n']:03d}-{SHORT[profile]}-combo", profile, faults,
                        Expect(verdict_of(actions), groups, actions), seed=rng.randrange(1 << 30)))
    return out


def edge_cases(plan: str, rng: random.Random, seeds: int = 5) -> list[Case]:
    """Faults near what the rules can see, each on several seeds (card-to-card spread): paste just
    past the band on a card at its low edge, a fan just out of its band, replays just over the
    limit, throughput just under the floor, a cap just under TDP."""
    out = []
    for profile in PROFILES:
        p = load_profile(profile)
        theta_edge = p.thermal.theta_fail / p.thermal.theta_min * 1.05  # fails even the coolest card
        weak = (1 - p.cooling.rpm_tolerance / 100) * 0.85  # well outside the band at full duty
        faults = [
            ("paste", {"kind": "thermal.resistance", "factor": round(theta_edge, 2)}, "thermal.high_resistance",
             "repaste"),
            ("weak", {"kind": "fan.weak", "fan": p.cooling.fault_fans - 1, "max_fraction": round(weak, 2)},
             "fan.weak", "replace_fan"),
            ("replay", {"kind": "pcie.replays", "per_minute": p.pcie.replays_per_min_max + 2}, "pcie.replays", "reseat"),
            ("slow", {"kind": "compute.slow", "factor": 0.92}, "compute.slow", "rma"),
            ("cap", {"kind": "power.capped", "watts": p.power.tdp - 2}, "power.capped", "fix_host"),
        ]
        for tag, fault, code, action in faults:
            for k in range(seeds):
                out.append(Case(f"E-{SHORT[profile]}-{tag}-{k}", profile, [fault],
                                _e({code, "thermal.slowdown"} if tag == "paste" else code, {action}),
                                seed=rng.randrange(1 << 30)))
    return out


def cases(plan: str) -> list[Case]:
    rng = random.Random(f"corpus/{plan}")
    return memory_cases(plan, rng) + device_cases(plan, rng) + edge_cases(plan, rng)


def signature_cases(plan: str, profiles: tuple[str, ...] = OTHER_PROFILES) -> dict[str, list[Case]]:
    """Per profile, the faults its kind of board is repaired for, with the outcome the rules give:
    its own fans (or the chassis fans of a passive card), its memory (a GDDR chip is replaced, an
    HBM stack is rma), paste, the PCIe link, ECC, a power cap, aux power and slow silicon."""
    rng = random.Random(f"signature/{plan}")
    out: dict[str, list[Case]] = {}
    for profile in profiles:
        p = load_profile(profile)
        short = SHORT.get(profile, profile)
        todo: list[tuple[str, list[dict[str, Any]], Expect, int]] = []
        last = p.cooling.fault_fans - 1
        todo.append(("stall", [{"kind": "fan.stalled", "fan": last}],
                     _e("fan.stalled", {"replace_fan"}, location=({"fan.stalled"}, {"fan": last})), 1))
        todo.append(("weak", [{"kind": "fan.weak", "fan": 0, "max_fraction": 0.3}],
                     _e("fan.weak", {"replace_fan"}, location=({"fan.weak"}, {"fan": 0})), 1))
        address = 0x12345
        todo.append(("stuck", [{"kind": "memory.stuck_bit", "address": address, "bit": 3, "value": 1}],
                     _mem_expect(profile, "memory.stuck_bit", address, 3), 16))
        todo.append(("paste", [{"kind": "thermal.resistance", "factor": 2.2}],
                     _e({"thermal.high_resistance", "thermal.slowdown", "thermal.over_temp"}, {"repaste"}), 1))
        todo.append(("gen1", [{"kind": "pcie.downtrained", "gen": 1, "width": p.pcie.width}],
                     _e("pcie.link_degraded", {"reseat"}), 1))
        todo.append(("dbe", [{"kind": "ecc.dbe", "count": 2}], _e("ecc.dbe", {"reset_and_retest"}), 1))
        todo.append(("cap", [{"kind": "power.capped", "watts": p.power.min_limit}], _e("power.capped", {"fix_host"}), 1))
        if p.power.slot < p.power.tdp:  # a slot-powered card has no aux connector to leave unplugged
            todo.append(("aux", [{"kind": "power.aux_unplugged"}], _e("power.aux_unplugged", {"check_power"}), 1))
        todo.append(("slow", [{"kind": "compute.slow", "factor": 0.7}], _e("compute.slow", {"rma"}), 1))
        out[profile] = [Case(f"S-{short}-{name}", profile, faults, exp, memory_mib=mib, seed=rng.randrange(1 << 30))
                        for name, faults, exp, mib in todo]
    return out


def healthy(plan: str, per_profile: int, start: int = 0, profiles: tuple[str, ...] = PROFILES) -> list[Case]:
    """Healthy cards of every profile, each with its own seed (odd memory sizes too); the first
    of each profile as a user writes it: no seed (derived from the serial), default memory size."""
    rng = random.Random(f"healthy/{plan}/{start}")
    out = []
    for profile in profiles:
        for k in range(start, start + per_profile):
            c = Case(f"OK-{SHORT[profile]}-{k:03d}", profile, [], Expect("pass"),
                     memory_mib=(1, 2, 3)[k % 3], seed=rng.randrange(1 << 31), bench=k % 4 != 3)
            if k == 0:
                c.memory_mib, c.seed = 64, None
            out.append(c)
    return out
