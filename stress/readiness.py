"""No pass for what was not tested: which stages a card cannot run, and the one finding that says so.

A card is ``pass`` only when every stage of its plan ran on it. A stage skipped for a missing
capability (no CUDA handle, no fan control, no bench) leaves the card ``retest`` with one
``host.stages_skipped`` finding naming the stages and what would let them run, unless the plan
marks the stage optional for that kind of card (``optional_for = ["passive"]`` on the fan sweep:
a passive card has no fans of its own). Stages skipped because the card was not ready (preflight)
or was lost are already explained by their own fail finding and do not count here.
"""

from __future__ import annotations

import re
from typing import Any

from drivers.api import Device
from drivers.instruments.roles import BenchRoles
from drivers.profiles import Profile
from stress.base import get_stage
from stress.model import Finding, TestResult

EXPLAINED_SKIPS = frozenset({"not_ready", "card", "not_applicable"})  # said by a finding of their own, or
# not applicable to the card at all (the interconnect stage on a card without links)


def card_kinds(device: Device, profile: Profile | None) -> set[str]:
    """The names a plan's ``optional_for`` may use for this card."""
    kinds = {"any", device.backend}
    if profile is not None:
        kinds |= {profile.name, profile.vendor, profile.cooling.kind, profile.memory.kind}
    return kinds


def is_optional(params: dict[str, Any], kinds: set[str]) -> bool:
    return bool(set(params.get("optional_for") or ()) & kinds)


def cannot_run(stages: list[tuple[str, dict[str, Any]]], device: Device, profile: Profile,
               instruments: BenchRoles) -> dict[str, dict[str, Any]]:
    """Stage name -> {"reason", "optional"} for each plan stage this card will not be able to run."""
    kinds = card_kinds(device, profile)
    out: dict[str, dict[str, Any]] = {}
    for name, params in stages:
        if name in out:
            continue
        try:
            why = get_stage(name).cannot_run(device, profile, instruments)
        except Exception as e:  # noqa: BLE001 - a check that fails is itself a reason
            why = f"{type(e).__name__}: {e}"
        if why:
            out[name] = {"reason": why, "optional": is_optional(params, kinds)}
    return out


def skip_info(res: TestResult) -> tuple[str, str]:
    """(kind, reason) of a skipped result; a stage's own skip without a kind is a capability."""
    info = res.metrics.get("skip")
    if not isinstance(info, dict):
        info = {}
    reason = info.get("reason") or res.error or res.metrics.get("reason") or "skipped"
    return str(info.get("kind") or "capability"), str(reason)


def stages_skipped_finding(results: list[tuple[TestResult, dict[str, Any]]], kinds: set[str]) -> Finding | None:
    """One finding for every stage of the plan skipped for a missing capability (not optional
    for this card); None when every stage that had to run ran. ``results`` pairs each stage's
    result with its plan parameters."""
    missing: dict[str, str] = {}
    optional: list[str] = []
    for res, params in results:
        if res.status != "skipped":
            continue
        kind, reason = skip_info(res)
        if kind in EXPLAINED_SKIPS:
            continue
        if is_optional(params, kinds):
            optional.append(res.name)
            continue
        missing.setdefault(res.name, reason)
    if not missing:
        return None
    names = list(missing)
    by_why: dict[str, list[str]] = {}
    for n, w in missing.items():
        by_why.setdefault(re.sub(r"^device has no \w+ handle: ", "", w), []).append(n)
    whys = next(iter(by_why)) if len(by_why) == 1 else "; ".join(f"{', '.join(ns)}: {w}" for w, ns in by_why.items())
    return Finding(
        code="host.stages_skipped", severity="fail", action="fix_host", test="session",
        message=f"not tested: {', '.join(names)} could not run on this card ({whys}); a card passes only "
                "when every stage of its plan ran",
        evidence={"stages": names, "reasons": missing, "optional_skipped": sorted(set(optional))},
    )


def mark_measured_under(res: TestResult, conditions: list[str]) -> None:
    """A forced run: every finding says it was measured with the card not ready (preflight's own
    findings are the conditions themselves)."""
    if not conditions or res.name == "preflight":
        return
    note = "; ".join(conditions)
    res.metrics["measured_under"] = conditions
    for f in res.findings:
        if "measured_under" in f.evidence or f.test == "preflight":
            continue
        f.evidence = {**f.evidence, "measured_under": conditions}
        f.message += f" [measured under: {note}]"
