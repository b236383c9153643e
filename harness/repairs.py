"""Repairs done at the bench: recording them, what each targeted, and whether it fixed it.

A repair is recorded after a run (``burnin repair SERIAL --action ...`` or the TUI's repair
dialog). It targets the fail findings of the card's latest run whose action it names; the next
run of the card tells whether it worked: ``fixed`` when none of those faults (``fault_key``:
code family and part) fails again, ``not fixed`` when one does. The verdict engine escalates a
fault that is back after its repair (harness/verdict.py).
"""

from __future__ import annotations

import getpass
import re
import socket
from typing import Any

from harness.clock import utcnow
from harness.errors import UsageError
from harness.store import Store
from harness.verdict import fault_key
from stress.model import ACTIONS

REPAIR_ACTIONS = tuple(a for a in ACTIONS if a != "none")
FIXED, NOT_FIXED, NOT_RETESTED, NOTHING_TARGETED = "fixed", "not fixed", "not retested yet", "nothing targeted"


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown"


def record_repair(store: Store, serial: str, action: str, note: str | None = None,
                  part: str | None = None, at: str | None = None) -> dict[str, Any]:
    """Store one repair of ``serial``; who/when/where come from this machine."""
    if action not in REPAIR_ACTIONS:
        raise UsageError(f"--action: {action!r} is not a repair action (one of: {', '.join(REPAIR_ACTIONS)})")
    runs = store.card_history(serial)
    if not runs and not store.repairs(serial):
        raise UsageError(f"{store.path}: no card with serial {serial!r} (run it once before recording a repair)")
    after = runs[-1]["run_id"] if runs else None
    at = at or utcnow()
    rid = store.add_repair(serial, at, _who(), socket.gethostname(), action, note or None, part or None, after)
    return next(r for r in annotate(store.repairs(serial), runs) if r["id"] == rid)


def _fails(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in (run.get("findings") or []) if f.get("severity") == "fail"]


def targets(repair: dict[str, Any], run: dict[str, Any] | None) -> list[str]:
    """The fault keys a repair targets: the run's fail findings with the repair's action;
    when none names it (the technician chose another fix), every fail finding of that run."""
    if run is None:
        return []
    fails = _fails(run)
    mine = [f for f in fails if f.get("action") == repair.get("action")
            or (f.get("evidence") or {}).get("escalated_from") == repair.get("action")]
    keys = sorted({fault_key(f) for f in (mine or fails)})
    named = _named_part(repair.get("part"))
    if not named or not any(k.endswith(f"@{named}") for k in keys):
        return keys
    # the named part, and what names no part (a slowdown the dead fan caused goes with it)
    return [k for k in keys if k.endswith(f"@{named}") or "@" not in k]


def _named_part(part: str | None) -> str:
    """'GDDR chip 12' -> 'chip=12', 'fan 0' -> 'fan=0': the part a repair names, if it names one."""
    m = re.search(r"\b(chip|stack|fan)\s*#?\s*(\d+)", part or "", re.IGNORECASE)
    return f"{m.group(1).lower()}={int(m.group(2))}" if m else ""


def _position(repair: dict[str, Any], runs: list[dict[str, Any]]) -> int:
    """Index of the first run after the repair (len(runs) when none yet)."""
    ids = [r["run_id"] for r in runs]
    start = ids.index(repair["after_run"]) + 1 if repair.get("after_run") in ids else 0
    for i in range(start, len(runs)):
        if str(runs[i].get("run_started_at") or runs[i].get("started_at") or "") >= str(repair["at"]):
            return i
    return len(runs)


def annotate(repairs: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each repair with ``targets``, ``next_run`` and ``outcome`` (fixed / not fixed / ...).

    ``runs`` are the card's runs oldest first (``Store.card_history`` rows or history entries)."""
    by_id = {r["run_id"]: r for r in runs}
    out = []
    for rep in repairs:
        tg = targets(rep, by_id.get(rep.get("after_run") or ""))
        pos = _position(rep, runs)
        nxt = next((r for r in runs[pos:] if r.get("findings") is not None), None)
        if not tg:
            outcome = NOTHING_TARGETED
        elif nxt is None:
            outcome = NOT_RETESTED
        else:
            back = {fault_key(f) for f in _fails(nxt)} & set(tg)
            outcome = NOT_FIXED if back else FIXED
        out.append({**rep, "targets": tg, "next_run": nxt["run_id"] if nxt else None, "outcome": outcome})
    return out


def repairs_before(store: Store, serial: str, run_id: str, started_at: str) -> list[dict[str, Any]]:
    """The card's repairs done before ``run_id`` started, with their targets (for the verdict)."""
    runs = [r for r in store.card_history(serial) if r["run_id"] != run_id]
    reps = [r for r in store.repairs(serial) if str(r["at"]) <= started_at and r.get("after_run") != run_id]
    return annotate(reps, runs)


def timeline(runs: list[dict[str, Any]], repairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs and annotated repairs interleaved in time order, each tagged ``kind``."""
    placed: dict[int, list[dict[str, Any]]] = {}
    for rep in annotate(repairs, runs):
        placed.setdefault(_position(rep, runs), []).append({"kind": "repair", **rep})
    out: list[dict[str, Any]] = []
    for i in range(len(runs) + 1):
        out += placed.get(i, [])
        if i < len(runs):
            out.append({"kind": "run", **runs[i]})
    return out
