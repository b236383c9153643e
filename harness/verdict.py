"""The verdict engine: from a card's findings (and its history) to its verdict and actions.

Stages propose each finding's action from what they measured; this engine de-duplicates what
several stages saw, applies the rules that need history (a fault that follows the card to
another slot, or that a reset does not fix, escalates to ``rma``) and derives the verdict as
docs/contract.md says. It never measures anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from harness import link_history
from stress.model import BENCH_ACTIONS, RETEST_ACTIONS, Finding, actions_of, verdict_of

SEVERITY_RANK = {"info": 0, "warn": 1, "fail": 2}

# A fault that recurs once escalates to rma (docs/verdict-rules.md: "rma if it recurs", "DBE again
# after remap"); any other reset-fixable fault escalates on its third run.
RECUR_ONCE_RMA = frozenset({"compute.hang", "ecc.dbe", "memory.ecc_uncorrectable", "xid.119", "xid.120", "xid.143"})
RESET_FIXABLE_RUNS_TO_RMA = 3
# Faults that, seen again in a different slot, follow the card rather than the slot.
FOLLOWS_CARD = frozenset({"bus.lost", "pcie.link_degraded", "pcie.replays"})


@dataclass
class CardVerdict:
    findings: list[Finding]
    verdict: str
    actions: list[str]
    notes: list[str] = field(default_factory=list)
    host_findings: list[Finding] = field(default_factory=list)  # what the history puts on the host (a baseboard slot)


# Location keys that tell two faults of one kind apart (two bad cells, two dead fans). A card has
# one PCIe link, so how stages label it ("pcie", "gen3x8") does not make two findings.
DISTINGUISHING_KEYS = ("address", "bit", "chip", "stack", "fan", "lane", "dtype", "row", "col")


def _loc_key(f: Finding) -> str:
    loc = {k: f.location[k] for k in DISTINGUISHING_KEYS if k in f.location}
    link = f.location.get("link")
    if isinstance(link, int) and not isinstance(link, bool):  # an NVLink/HCCS link index (PCIe's is a label)
        loc["link"] = link
    return json.dumps(loc, sort_keys=True, default=str)


def _rank(f: Finding) -> tuple[int, int]:
    """Severity first; among equals, the action that says more (a bench repair beats a retest)."""
    act = 3 if f.action == "rma" else 2 if f.action in BENCH_ACTIONS else 1 if f.action in RETEST_ACTIONS else 0
    return SEVERITY_RANK[f.severity], act


def dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per (code, distinguishing location): the most severe, first seen among equals."""
    best: dict[tuple[str, str], Finding] = {}
    order: list[tuple[str, str]] = []
    for f in findings:
        k = (f.code, _loc_key(f))
        if k not in best:
            best[k] = f
            order.append(k)
        elif _rank(f) > _rank(best[k]):
            best[k] = f
    return [best[k] for k in order]


# Location keys that name a part a technician can replace: a fault "of the same kind" is the same
# code family at the same part (a new failing cell on a reworked chip is that chip's fault again).
PART_KEYS = ("chip", "stack", "fan")


def fault_key(f: Finding | dict[str, Any]) -> str:
    """What a repair targets and what "the same fault back" means: code family plus the part.

    Memory codes collapse into ``memory`` (the scan may classify a reworked chip's new failure
    differently); the part is the chip/stack/fan location when the finding names one."""
    code = f.code if isinstance(f, Finding) else str(f.get("code"))
    loc = f.location if isinstance(f, Finding) else (f.get("location") or {})
    family = "memory" if code.startswith("memory.") else code
    part = next((f"{k}={loc[k]}" for k in PART_KEYS if k in loc), "")
    return f"{family}@{part}" if part else family


def _prior_codes(history: list[dict[str, Any]]) -> list[tuple[int | None, set[str]]]:
    """(slot, fail codes) of each earlier run of this serial."""
    out = []
    for h in history:
        codes = {f["code"] for f in (h.get("findings") or []) if f.get("severity") == "fail"}
        out.append((h.get("slot"), codes))
    return out


def _back_after_repair(f: Finding, repairs: list[dict[str, Any]]) -> str:
    """Why ``f`` escalates because a repair that targeted it did not fix it ('' if none did).

    The rule (docs/repair-loop.md): a repair recorded with ``burnin repair`` after a run targets
    that run's fail findings whose action it names. When the same fault (``fault_key``) fails
    again in a later run, the bench fix has been tried and did not hold: the card goes to ``rma``
    at once, where without a repair a bench fault never escalates and a reset-fixable one needs
    three runs. ``fix_host`` repairs are exempt (they fix the host, not the card).
    """
    key = fault_key(f)
    for r in repairs:
        if r.get("action") != "fix_host" and key in (r.get("targets") or []):
            when = str(r.get("at") or "")[:10]
            return f"back after {r.get('action')} ({when}{', ' + str(r['part']) if r.get('part') else ''})"
    return ""


def escalate(findings: list[Finding], history: list[dict[str, Any]], slot: int | None,
             slot_known_good: bool = False, repairs: list[dict[str, Any]] | None = None) -> list[str]:
    """Apply history rules in place; returns notes explaining each escalation.

    ``repairs`` are the card's earlier repairs with the fault keys each targeted (see
    harness/repairs.py); a fault back after its repair is the strongest history signal."""
    notes: list[str] = []
    prior = _prior_codes(history)
    for f in findings:
        if f.severity != "fail" or f.action == "rma" or "history_rule" in f.evidence:
            continue  # (a link fault's card-or-slot rule has decided it: harness/link_history.py)
        back = _back_after_repair(f, repairs or [])
        if back:
            _to_rma(f, back, notes)
            continue
        if f.code == "bus.lost" and f.evidence.get("lost_again") and slot_known_good:
            _to_rma(f, "fell off the bus again after a power-cycle, in a slot where other cards pass", notes)
            continue
        runs_with = [s for s, codes in prior if f.code in codes]
        if not runs_with:
            continue
        why = ""
        if f.code in FOLLOWS_CARD:
            other_slots = sorted({s for s in runs_with if s is not None and s != slot})
            if other_slots:
                why = f"also seen in slot(s) {other_slots}: the fault follows the card"
            else:
                f.message += " (seen before in this slot: try another slot)"
        elif f.code in RECUR_ONCE_RMA:
            why = f"recurs ({len(runs_with) + 1} runs of this card)"
        elif f.action == "reset_and_retest" and len(runs_with) + 1 >= RESET_FIXABLE_RUNS_TO_RMA:
            why = f"a reset has not fixed it in {len(runs_with) + 1} runs"
        if why:
            _to_rma(f, why, notes)
    return notes


def _to_rma(f: Finding, why: str, notes: list[str]) -> None:
    f.evidence = {**f.evidence, "escalated_from": f.action, "escalation": why}
    f.action = "rma"
    f.message += f"; {why}"
    notes.append(f"{f.code}: {why}")


def judge_card(findings: list[Finding], history: list[dict[str, Any]] | None = None, slot: int | None = None,
               slot_known_good: bool = False, repairs: list[dict[str, Any]] | None = None,
               host: str = "", serial: str | None = None,
               slot_history: list[dict[str, Any]] | None = None) -> CardVerdict:
    merged = dedupe(findings)
    link_notes, host_findings = link_history.apply(merged, host, slot, serial, history or [], repairs or [],
                                                   slot_history or [])
    notes = link_notes + escalate(merged, history or [], slot, slot_known_good, repairs)
    # what decides the verdict first (an rma before a bench repair before a retest), then by stage
    merged.sort(key=lambda f: (tuple(-r for r in _rank(f)), f.test, f.code))
    return CardVerdict(findings=merged, verdict=verdict_of(merged), actions=actions_of(merged), notes=notes,
                       host_findings=host_findings)
