"""A profile for a card burnin has no file for, built from what the card reports.

A repair shop sees models nobody wrote a profile for. Such a card is still tested and judged:
its profile takes every figure the card reports (NVML: memory, enforced/default/min power limit,
max SM clock, PCIe max gen and width, fan count, ECC mode, temperature thresholds; npu-smi: chip
name and memory) and a conservative default for the rest. The figures the card could not give
are listed in ``Profile.assumed``, so a finding that rests on one of them is a warning, not a
failure (the result vocabulary's ``soften``).

The facts travel in the card's identity (``Identity.facts``), so the orchestrator rebuilds the
very same profile from the stored identity: the derivation is a pure function of the facts.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from drivers.profiles import Profile, ProfileError, load_profile
from drivers.registry import is_simulated

# fleet rules by PCIe generation: replay limit (DCGM ceil(lanes x rate)/min at x16) and what a
# healthy host-to-device copy carries at x16
_REPLAYS_X16 = {1: 2, 2: 4, 3: 8, 4: 16, 5: 31, 6: 62}
_H2D_X16_GBPS = {1: 3.0, 2: 6.0, 3: 12.0, 4: 25.0, 5: 50.0, 6: 100.0}
# product-name words of boards with discrete DRAM chips (GDDR/LPDDR) rather than HBM stacks
_GDDR_WORDS = ("geforce", "rtx", "quadro", "titan", " l4", " l40", " l20", " a10", " a16", " a40", " t4", "310p")

DEFAULT_TDP_W = 300.0  # a card that reports no power limit: a mid-range figure, judged as assumed
DEFAULT_CLOCK_MHZ = 1500.0
HOT_AT_TDP_C = 80.0  # the theta band's upper edge puts a card at this temperature at its limit


def _num(facts: dict[str, Any], key: str) -> float | None:
    v = facts.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else None


def _slug(name: str) -> str:
    out = "".join(ch if ch.isalnum() else "-" for ch in name.lower())
    return "-".join(p for p in out.split("-") if p)


def derived_name(model: str) -> str:
    return f"derived-{_slug(model) or 'unknown'}"


@functools.cache
def _derive_cached(key: str) -> Profile:
    return _derive(json.loads(key))


def derive_profile(facts: dict[str, Any]) -> Profile:
    """The profile of a card from its reported facts (same facts, same profile)."""
    return _derive_cached(json.dumps(facts, sort_keys=True, default=str))


def _derive(f: dict[str, Any]) -> Profile:
    model = str(f.get("model") or "unknown device")
    vendor = "huawei" if f.get("vendor") == "huawei" else "nvidia"
    assumed: list[str] = []
    sources = [f"derived from what the card reported: {', '.join(sorted(k for k, v in f.items() if v is not None))}"]

    mem = _num(f, "memory_total_mib")
    if mem is None:
        mem = 1024.0
        assumed.append("memory.total")
    gddr = any(w in f" {model.lower()}" for w in _GDDR_WORDS) or f.get("ecc") is False
    assumed += ["memory.kind", "memory.chips", "memory.bandwidth"]

    fans = int(f.get("fans") or 0)
    if fans > 0:
        cooling: dict[str, Any] = {
            "kind": "fan", "fans": fans, "rpm_tolerance": "40 %", "default_duty": "45 %",
            "fan_curve": [{"duty": "30 %", "rpm": "1000 RPM"}, {"duty": "100 %", "rpm": "3000 RPM"}],
        }
        assumed.append("cooling.fan_curve")
    else:
        cooling = {
            "kind": "passive", "fans": 0, "chassis_fans": 4, "chassis_default_duty": "60 %", "rpm_tolerance": "15 %",
            "chassis_fan_curve": [{"duty": "20 %", "rpm": "3300 RPM"}, {"duty": "50 %", "rpm": "8200 RPM"},
                                  {"duty": "100 %", "rpm": "16500 RPM"}],
        }

    gen = _num(f, "pcie_max_gen")
    width = _num(f, "pcie_max_width")
    if gen is None or width is None:
        assumed.append("pcie.gen")
    g, w = int(gen or 3), int(width or 16)
    g = min(max(g, 1), 6)
    pcie = {"gen": g, "width": w, "floor_gen": min(3, g), "floor_width": w,
            "replays_per_min_max": f"{max(1, round(_REPLAYS_X16[g] * w / 16))} /min",
            "h2d_bandwidth": f"{_H2D_X16_GBPS[g] * w / 16:.1f} GB/s"}
    assumed.append("pcie.h2d_bandwidth")

    tdp = _num(f, "power_default_w") or _num(f, "power_limit_w")
    if tdp is None:
        tdp = DEFAULT_TDP_W
        assumed.append("power.tdp")
    elif _num(f, "power_default_w") is None:
        assumed.append("power.default_limit")  # the enforced limit stands in: a cap cannot be told
    min_limit = _num(f, "power_min_w") or round(0.3 * tdp)
    power = {"tdp": f"{tdp:g} W", "min_limit": f"{min(min_limit, tdp):g} W", "idle": f"{round(0.1 * tdp)} W",
             "slot": "75 W"}

    slowdown = _num(f, "temp_slowdown_c")
    shutdown = _num(f, "temp_shutdown_c")
    max_op = _num(f, "temp_max_operating_c")
    if slowdown is None or shutdown is None:
        assumed.append("thermal.limits")
    slowdown = slowdown or 87.0
    shutdown = max(shutdown or 92.0, slowdown + 1.0)
    max_op = min(max_op or min(slowdown - 2.0, 85.0), slowdown)
    theta_max = (HOT_AT_TDP_C - 25.0) / tdp
    thermal = {"inlet": "25 C", "theta_min": f"{0.5 * theta_max:.5f} C/W", "theta_max": f"{theta_max:.5f} C/W",
               "theta_fail": f"{1.15 * theta_max:.5f} C/W", "tau": "40 s", "slowdown": f"{slowdown:g} C",
               "shutdown": f"{shutdown:g} C", "max_operating": f"{max_op:g} C"}
    assumed.append("thermal.theta")

    cmax = _num(f, "clock_max_mhz")
    if cmax is None:
        cmax = DEFAULT_CLOCK_MHZ
        assumed.append("clocks.max")
    clocks = {"max": f"{cmax:g} MHz", "base": f"{round(0.7 * cmax)} MHz", "min": f"{round(0.2 * cmax)} MHz"}
    # no public throughput figure: a token target; compute.slow against it is a warning, and the
    # peer comparison among identical cards still holds
    compute = {"dtypes": ["fp16", "fp32"], "target": {"fp16": "1 TFLOPS", "fp32": "1 TFLOPS"}}
    assumed.append("compute.target")

    data = {
        "name": derived_name(model), "vendor": vendor, "model": model, "match": [model],
        "memory": {"type": "GDDR" if gddr else "HBM", "kind": "gddr" if gddr else "hbm", "chips": 1,
                   "total": f"{mem:g} MiB", "bandwidth": "100 GB/s"},
        "cooling": cooling, "pcie": pcie, "power": power, "thermal": thermal, "clocks": clocks,
        "compute": compute, "ecc": {"supported": bool(f.get("ecc"))},
        "sources": sources + [f"assumed (not reported): {', '.join(assumed)}"],
        "derived": True, "assumed": assumed,
    }
    return Profile.model_validate(data)


def resolve_profile(identity: dict[str, Any], locator: dict[str, Any] | None = None) -> tuple[Profile, str]:
    """The profile that judges a card and where it came from (``matched``, ``derived``, ``config``).

    Raises ``ProfileError`` only for a named profile that does not load (a bad config)."""
    source = identity.get("profile_source")
    if source == "derived" or (not identity.get("profile") and identity.get("facts")):
        return derive_profile(identity.get("facts") or {"model": identity.get("model")}), "derived"
    name = identity.get("profile") or (locator or {}).get("profile")
    if not name:
        facts = identity.get("facts") or {"model": identity.get("model"), "vendor": identity.get("vendor"),
                                          "memory_total_mib": identity.get("memory_total_mib")}
        return derive_profile(facts), "derived"
    if source not in ("matched", "config"):
        source = "config" if is_simulated(str((locator or {}).get("backend"))) else "matched"
    return load_profile(name), source


__all__ = ["ProfileError", "derive_profile", "derived_name", "resolve_profile"]
