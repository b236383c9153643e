"""What an ``nvidia-smi -q`` report says about one GPU, read the same way from its text and its
XML form: each parser only says where a value is (``Lookup``); this module turns values into the
device API's facts (identity, telemetry, counters) with the line each came from.

Driver versions rename fields (``Clocks Throttle Reasons`` became ``Clocks Event Reasons``,
``Power Readings`` became ``GPU Power Readings``, ECC counters moved from ``Double Bit/Total`` to
``DRAM Uncorrectable``), so each fact lists every spelling seen. ``N/A`` and ``[Not Supported]``
are unknown; an error printed instead of a value (``ERR!``, ``Unknown Error``, ``GPU is lost``)
is unknown too, and kept as evidence that the card did not answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from drivers.api import (
    THROTTLE_APP_CLOCKS,
    THROTTLE_HW_POWER_BRAKE,
    THROTTLE_HW_SLOWDOWN,
    THROTTLE_HW_THERMAL,
    THROTTLE_IDLE,
    THROTTLE_SW_POWER_CAP,
    THROTTLE_SW_THERMAL,
    THROTTLE_SYNC_BOOST,
    PcieLink,
)
from drivers.evidence import CardEvidence, Quote, Symptom

# (raw value, the line it was printed on) for a fact, or None when the report does not have it
Lookup = Callable[[str], "tuple[str, Quote] | None"]

NOT_KNOWN = {"n/a", "[n/a]", "not supported", "[not supported]", "unknown", "none", "", "-", "not available",
             "requested functionality has been deprecated"}
ERROR_WORDS = ("err!", "unknown error", "gpu is lost", "gpu requires reset", "insufficient permissions",
               "not found")
ACTIVE = {"active", "yes", "enabled", "true", "1"}
INACTIVE = {"not active", "no", "disabled", "false", "0"}

# the throttle (clocks event) reasons nvidia-smi prints, by the device API's names
THROTTLE_FACTS = {
    "throttle.idle": THROTTLE_IDLE,
    "throttle.app_clocks": THROTTLE_APP_CLOCKS,
    "throttle.sw_power_cap": THROTTLE_SW_POWER_CAP,
    "throttle.hw_slowdown": THROTTLE_HW_SLOWDOWN,
    "throttle.hw_thermal": THROTTLE_HW_THERMAL,
    "throttle.hw_power_brake": THROTTLE_HW_POWER_BRAKE,
    "throttle.sync_boost": THROTTLE_SYNC_BOOST,
    "throttle.sw_thermal": THROTTLE_SW_THERMAL,
}


_ERROR = re.compile(r"^\s*\[?\s*(?:" + "|".join(re.escape(w) for w in ERROR_WORDS) + ")", re.IGNORECASE)


def is_error(raw: str) -> bool:
    return _ERROR.match(raw) is not None


def number(raw: str | None) -> float | None:
    """``81559 MiB``, ``16x``, ``700.00 W``, ``32 C`` -> the number; anything else -> None."""
    if raw is None:
        return None
    m = re.match(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(?:[A-Za-z%°/]+)?\s*$", raw.strip().strip("[]"))
    return float(m.group(1)) if m else None


def flag(raw: str | None) -> bool | None:
    if raw is None:
        return None
    low = raw.strip().lower()
    return True if low in ACTIVE else False if low in INACTIVE else None


class Facts:
    """Reads facts through a parser's lookup, noting the line of each one used."""

    def __init__(self, card: CardEvidence, lookup: Lookup) -> None:
        self.card, self.lookup = card, lookup

    def raw(self, fact: str, key: str | None = None) -> str | None:
        hit = self.lookup(fact)
        if hit is None:
            return None
        value, quote = hit
        if is_error(value):
            self.card.unreadable.append(quote)
            self.card.quote(key or fact, quote)
            return None
        if value.strip().lower() in NOT_KNOWN:
            return None
        self.card.quote(key or fact, quote)
        return value.strip()

    def num(self, fact: str, key: str | None = None) -> float | None:
        return number(self.raw(fact, key))

    def int_(self, fact: str, key: str | None = None) -> int | None:
        v = self.num(fact, key)
        return int(v) if v is not None else None

    def flag(self, fact: str, key: str | None = None) -> bool | None:
        return flag(self.raw(fact, key))


def apply(card: CardEvidence, lookup: Lookup) -> None:
    """Fill ``card`` from one GPU's section of an nvidia-smi report."""
    f = Facts(card, lookup)
    card.vendor = "nvidia"
    card.model = f.raw("model") or card.model
    serial = f.raw("serial")
    card.serial = serial if serial and serial != "0" else card.serial
    card.uuid = f.raw("uuid") or card.uuid
    for fact, name in (("vbios", "vbios"), ("inforom_image", "inforom_image")):
        v = f.raw(fact)
        if v:
            card.firmware[name] = v
    mem = f.int_("memory_total", "memory_total_mib")
    card.memory_total_mib = mem
    t = card.telemetry
    c = card.counters

    t["temperature_c"] = f.num("temp", "temperature_c")
    t["memory_temperature_c"] = f.num("memory_temp")
    t["power_w"] = f.num("power_draw", "power_w")
    t["power_limit_w"] = f.num("power_limit", "power_limit_w")
    t["clock_mhz"] = f.num("clock_sm")
    t["clock_max_mhz"] = f.num("clock_sm_max")
    t["utilization_pct"] = f.num("util")
    t["memory_total_mib"] = mem
    t["memory_used_mib"] = f.int_("memory_used")

    fan_hit = lookup("fan")
    if fan_hit is not None:
        raw, quote = fan_hit
        card.quote("fans", quote)
        if is_error(raw):  # the fan did not answer: one fan whose state is unknown
            card.unreadable.append(quote)
            card.fans, t["fans_duty_pct"], t["fans_rpm"] = 1, [None], [None]
            t["fan_error"] = True
        elif number(raw) is not None:  # nvidia-smi prints the intended speed, not the RPM
            card.fans, t["fans_duty_pct"], t["fans_rpm"] = 1, [number(raw)], [None]
        else:  # N/A: a passive card cooled by the chassis
            card.fans, t["fans_duty_pct"], t["fans_rpm"] = 0, [], []

    reasons = set()
    for fact, name in THROTTLE_FACTS.items():
        hit = lookup(fact)
        if hit is not None and flag(hit[0]) is True:  # only an active reason is evidence
            reasons.add(name)
            card.quote("throttle", hit[1])
    t["throttle"] = frozenset(reasons)

    link = [f.int_(k, "pcie") for k in ("pcie_gen_cur", "pcie_width_cur", "pcie_gen_max", "pcie_width_max")]
    if any(v is not None for v in link):
        t["pcie"] = PcieLink(gen=link[0], width=link[1], max_gen=link[2], max_width=link[3])

    ecc_mode = f.flag("ecc_mode", "ecc_enabled")
    c["ecc_enabled"] = ecc_mode
    c["sbe_volatile"] = _first(f, "sbe_volatile", ("ecc_vol_sbe_total", "ecc_vol_dram_cor"))
    c["dbe_volatile"] = _first(f, "dbe_volatile", ("ecc_vol_dbe_total", "ecc_vol_dram_unc"))
    c["sbe_aggregate"] = _first(f, "sbe_aggregate", ("ecc_agg_sbe_total", "ecc_agg_dram_cor"))
    c["dbe_aggregate"] = _first(f, "dbe_aggregate", ("ecc_agg_dbe_total", "ecc_agg_dram_unc"))
    sram = [f.int_(k, "sram_uncorrectable") for k in ("ecc_agg_sram_unc", "ecc_agg_sram_unc_parity",
                                                       "ecc_agg_sram_unc_secded")]
    if all(v is None for v in sram):
        sram = [f.int_(k, "sram_uncorrectable") for k in ("ecc_vol_sram_unc", "ecc_vol_sram_unc_parity",
                                                           "ecc_vol_sram_unc_secded")]
    c["sram_uncorrectable"] = _sram_total(sram)
    c["retired_pages_sbe"] = f.int_("retired_sbe", "retired_pages_sbe")
    c["retired_pages_dbe"] = f.int_("retired_dbe", "retired_pages_dbe")
    c["retired_pages_pending"] = f.flag("retired_pending", "retired_pages_pending")
    c["remapped_rows_correctable"] = f.int_("rows_cor", "remapped_rows_correctable")
    c["remapped_rows_uncorrectable"] = f.int_("rows_unc", "remapped_rows_uncorrectable")
    c["row_remap_pending"] = f.flag("rows_pending", "row_remap_pending")
    c["row_remap_failure"] = f.flag("rows_failure", "row_remap_failure")
    c["pcie_replays"] = f.int_("replays", "pcie_replays")

    facts: dict[str, Any] = {
        "vendor": "nvidia", "model": card.model, "memory_total_mib": mem,
        "power_limit_w": t["power_limit_w"], "power_default_w": f.num("power_default"),
        "power_min_w": f.num("power_min"), "clock_max_mhz": t["clock_max_mhz"],
        "pcie_max_gen": link[2], "pcie_max_width": link[3], "fans": card.fans, "ecc": ecc_mode,
        "temp_shutdown_c": f.num("temp_shutdown"), "temp_slowdown_c": f.num("temp_slowdown"),
        "temp_max_operating_c": f.num("temp_max_op"),
    }
    card.facts = {k: v for k, v in facts.items() if v is not None}


def _first(f: Facts, key: str, facts: tuple[str, ...]) -> int | None:
    for fact in facts:
        v = f.int_(fact, key)
        if v is not None:
            return v
    return None


def _sram_total(values: list[int | None]) -> int | None:
    known = [v for v in values[1:] if v is not None]
    if known:  # the parity and SEC-DED split, where the driver prints it
        return sum(known)
    return values[0]


def extra_states(card: CardEvidence, lookup: Lookup) -> None:
    """States newer drivers print that ask for a step on their own (a recovery action, memory
    the driver can no longer repair): the bench confirms them."""
    f = Facts(card, lookup)
    action = f.raw("recovery_action")
    if action:
        card.symptoms.append(Symptom(
            code="field.recovery_action", stage="health", failed=True,
            message=f"the driver asked for a GPU recovery action ({action}): reset the card, then retest it",
            quotes=list(card.quotes.get("recovery_action", []))))
    if f.flag("unrepairable_memory") is True:
        card.symptoms.append(Symptom(
            code="ecc.unrepairable", stage="memory", failed=True,
            message="the driver reports memory it can no longer repair (no spare rows left)",
            quotes=list(card.quotes.get("unrepairable_memory", []))))
