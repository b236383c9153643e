"""Whose is a link fault: the card's or its slot's. Only history tells (a swap is the one decisive
test, ../shared/reference/interconnect.md section 5), so these rules live with the verdict engine.

For a card's link fault (a link down or degraded, fewer links, a bad fabric registration, a slow
or refused row of the peer matrix, an NVLink XID) in slot S:

- another card showed the same fault (code and link) in slot S in an earlier run: the slot's
  baseboard is at fault. The host gets a ``repair_baseboard`` finding naming the slot and link;
  the card is not blamed (its finding becomes ``fix_host``: retest once the baseboard is fixed),
  and the card that showed it before, tested clean elsewhere, is cleared by its own clean run;
- the card showed the same fault in another slot before: it follows the card, ``rma``;
- it is back after a recorded ``reseat`` (or a ``swap_slot`` that left the card where it was):
  ``swap_slot``, move the card to another slot (or swap two cards) and run again;
- otherwise, a first sighting: ``reseat``, as the stage said.

A finding these rules decided carries ``evidence.history_rule``, and the generic escalation
(harness/verdict.py) leaves it alone.
"""

from __future__ import annotations

from typing import Any

from stress.model import Finding

LINK_FAULT_CODES = frozenset({
    "link.down", "link.degraded", "link.count_low", "link.fabric", "p2p.unavailable", "p2p.slow",
    "link.nvlink_error",
})
SLOT_OWNED = "slot"


def link_fault_key(f: Finding | dict[str, Any]) -> str:
    """The fault a swap compares: the code, and the link index where the finding names one."""
    code = f.code if isinstance(f, Finding) else str(f.get("code"))
    loc = f.location if isinstance(f, Finding) else (f.get("location") or {})
    link = loc.get("link")
    return f"{code}@link={link}" if isinstance(link, int) and not isinstance(link, bool) else code


def _fails(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in (row.get("findings") or []) if f.get("severity") == "fail" and f.get("code") in LINK_FAULT_CODES
            and (f.get("evidence") or {}).get("owner") != SLOT_OWNED]


def _shown(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [r for r in rows if any(link_fault_key(f) == key for f in _fails(r))]


def apply(findings: list[Finding], host: str, slot: int | None, serial: str | None, history: list[dict[str, Any]],
          repairs: list[dict[str, Any]], slot_history: list[dict[str, Any]]) -> tuple[list[str], list[Finding]]:
    """Apply the rules in place to the card's fail link findings; (notes, host findings)."""
    notes: list[str] = []
    host_findings: list[Finding] = []
    for f in findings:
        if f.severity != "fail" or f.code not in LINK_FAULT_CODES or f.action == "rma":
            continue
        key = link_fault_key(f)
        where = f"slot {slot}" + (f" link {f.location['link']}" if "link" in f.location else "")
        others = _shown([r for r in slot_history if r.get("serial") and r.get("slot") == slot], key)
        if others:
            prev = others[-1]
            why = (f"{prev.get('serial')} showed the same fault in this slot (run {prev.get('run_id')}): "
                   f"it stays with {where}, the baseboard's, not this card's")
            _decide(f, "fix_host", why, notes, owner=SLOT_OWNED)
            host_findings.append(Finding(
                code="link.baseboard", severity="fail", action="repair_baseboard", test=f.test,
                message=f"{where} of host {host}: {f.code} with two cards ({prev.get('serial')} before, "
                        f"now {serial}): repair the baseboard at {where}",
                location={k: v for k, v in f.location.items() if k in ("slot", "link", "far_end")} | {"slot": slot},
                evidence={"code": f.code, "cards": [prev.get("serial"), serial],
                          "runs": [prev.get("run_id")]}))
            continue
        elsewhere = [r for r in _shown(history, key) if r.get("slot") is not None and r.get("slot") != slot]
        if elsewhere:
            _decide(f, "rma", f"also seen in slot(s) {sorted({r['slot'] for r in elsewhere})}: the fault follows "
                              f"the card", notes, escalated_from=f.action)
            continue
        back = _back_after(f, key, repairs, history, slot)
        if back:
            _decide(f, "swap_slot", back, notes, escalated_from=f.action)
    return notes, host_findings


def _back_after(f: Finding, key: str, repairs: list[dict[str, Any]], history: list[dict[str, Any]],
                slot: int | None) -> str:
    """Why the fault, back after a reseat (or a swap that did not move the card) in this same
    slot, asks for a swap."""
    slot_of = {h.get("run_id"): h.get("slot") for h in history}
    for r in reversed(repairs):
        if r.get("action") not in ("reseat", "swap_slot") or slot_of.get(r.get("after_run")) != slot:
            continue
        targets = r.get("targets") or []
        if key not in targets and f.code not in {t.split("@")[0] for t in targets}:
            continue
        when = str(r.get("at") or "")[:10]
        if r.get("action") == "reseat":
            return (f"back after a reseat ({when}): swap the card into another slot (or with another card) "
                    f"to tell the card from the slot")
        return f"a swap_slot was recorded ({when}) but the card is in slot {slot} again: move it to another slot"
    return ""


def _decide(f: Finding, action: str, why: str, notes: list[str], owner: str | None = None,
            escalated_from: str | None = None) -> None:
    f.evidence = {**f.evidence, "history_rule": why, **({"owner": owner} if owner else {}),
                  **({"escalated_from": escalated_from} if escalated_from else {})}
    f.action = action
    f.message += f"; {why}"
    notes.append(f"{f.code}: {why}")
