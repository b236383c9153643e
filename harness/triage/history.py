"""A triage in the card's history: stored by serial (``burnin triage --db``), shown by ``burnin
history`` between the card's runs, and said again by the card's next bench run as an info finding
(``field.report``) so the technician at the bench sees what the field reported."""

from __future__ import annotations

from typing import Any

from harness.store import Store
from stress.model import Finding


def store_triage(store: Store, doc: dict[str, Any]) -> tuple[int, list[str]]:
    """Store each card of a triage document that has a serial; returns (stored, ids of cards
    without a serial, which no card history can take)."""
    stored, nameless = 0, []
    for card in doc["cards"]:
        if not card.get("serial"):
            nameless.append(str(card["id"]))
            continue
        store.add_field_report(card["serial"], str(card["id"]), doc["at"], list(card["source"]), card["verdict"],
                               list(card["actions"]), card)
        stored += 1
    return stored, nameless


def _fail_codes(report: dict[str, Any]) -> list[str]:
    return sorted({f["code"] for f in (report.get("findings") or []) if f.get("severity") == "fail"})


def summary(rep: dict[str, Any]) -> str:
    """``retest (reset_and_retest): ecc.dbe, ecc.row_remap_pending; from dmesg.log``"""
    acts = f" ({', '.join(rep.get('actions') or [])})" if rep.get("actions") else ""
    codes = _fail_codes(rep.get("report") or {})
    files = ", ".join(str(f).rsplit("/", 1)[-1] for f in rep.get("files") or [])
    return f"{rep.get('verdict')}{acts}" + (f": {', '.join(codes)}" if codes else "") + (f"; from {files}" if files else "")


def field_entries(store: Store, serial: str) -> list[dict[str, Any]]:
    """The card's field reports as history entries (``kind: field``)."""
    out = []
    for rep in store.field_reports(serial):
        report = rep.get("report") or {}
        out.append({"kind": "field", "at": rep["at"], "started_at": rep["at"], "verdict": rep["verdict"],
                    "actions": rep.get("actions") or [], "files": rep.get("files") or [],
                    "card_id": rep.get("card_id"), "findings": report.get("findings") or [],
                    "first_stage": report.get("first_stage"), "summary": summary(rep)})
    return out


def interleave(entries: list[dict[str, Any]], fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``entries`` (runs and repairs in time order) with the field reports placed by their time."""
    out: list[dict[str, Any]] = []
    pending = sorted(fields, key=lambda e: str(e["at"]))
    for e in entries:
        when = str(e.get("at") if e.get("kind") == "repair" else e.get("started_at") or "")
        while pending and str(pending[0]["at"]) <= when:
            out.append(pending.pop(0))
        out.append(e)
    return out + pending


def field_report_findings(store: Store, serial: str, run_id: str) -> list[Finding]:
    """Info findings for a run: each field report of the card stored since its previous run."""
    run = store.run(run_id) or {}
    started = str(run.get("started_at") or "9999")
    seq = store.run_seq(run_id) or 0
    earlier = [str(h.get("run_started_at") or "") for h in store.card_history(serial) if h["run_seq"] < seq]
    since = max(earlier, default="")
    out = []
    for rep in store.field_reports(serial):
        if not since <= str(rep["at"]) <= started:
            continue
        report = rep.get("report") or {}
        out.append(Finding(
            code="field.report", severity="info", action="none", test="triage",
            message=f"field report {rep['at']}: {summary(rep)}",
            evidence={"at": rep["at"], "verdict": rep["verdict"], "actions": rep.get("actions") or [],
                      "codes": _fail_codes(report), "files": rep.get("files") or [],
                      "first_stage": report.get("first_stage")}))
    return out
