"""``burnin history SERIAL``: a card's runs and the repairs between them, oldest first."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.repairs import FIXED, NOT_FIXED, timeline
from harness.store import Store
from harness.triage.history import field_entries, interleave
from harness.views.safe import cell, cells, visible
from harness.views.table import VERDICT_STYLE, profile_label, report_console

OUTCOME_STYLE = {FIXED: "bold green", NOT_FIXED: "bold red"}


def history_entries(store: Store, serial: str) -> list[dict[str, Any]]:
    """One contract card object per run, with the run's id, rack, plan and times."""
    out = []
    for row in store.card_history(serial):
        card = store.record(row["run_id"], row, samples=False).card_document()
        out.append({"run_id": row["run_id"], "rack": row["rack"], "plan": row["plan"],
                    "started_at": row["run_started_at"], "finished_at": row["run_finished_at"], **card})
    return out


def history_timeline(store: Store, serial: str) -> list[dict[str, Any]]:
    """Runs (card shape, ``kind: run``), repairs (``kind: repair``, with what each targeted and
    whether the next run shows it fixed) and field reports (``kind: field``, ``burnin triage
    --db``), interleaved in time order."""
    return interleave(timeline(history_entries(store, serial), store.repairs(serial)), field_entries(store, serial))


def _fail_codes(e: dict[str, Any]) -> str:
    return ", ".join(sorted({f["code"] for f in e.get("findings") or [] if f["severity"] == "fail"})) or "-"


def repair_text(e: dict[str, Any]) -> Text:
    """One repair as a line: action, part, note, who, and whether it held."""
    t = cell(e["action"], style="bold")
    if e.get("part"):
        t.append(visible(f" ({e['part']})"))
    if e.get("note"):
        t.append(visible(f" · {e['note']}"), style="italic")
    t.append(visible(f" · by {e.get('who')}"), style="dim")
    if e.get("targets"):
        t.append(visible(f" · for {', '.join(map(str, e['targets']))}"), style="dim")
    t.append(" → ")
    t.append(visible(e.get("outcome")), style=OUTCOME_STYLE.get(str(e.get("outcome")), "dim"))
    return t


def run_verdict(e: dict[str, Any]) -> str:
    return e["verdict"] if e.get("state") not in (None, "pending", "running") else f"({e.get('state')})"


def print_history(serial: str, entries: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or report_console()
    table = Table(title=cell(f"history of {serial}"), title_justify="left")
    for col in ("when", "what", "rack", "plan", "slot", "profile", "verdict", "actions", "fail findings / repair"):
        table.add_column(col, no_wrap=col not in ("fail findings / repair",))
    for e in entries:
        if e.get("kind") == "repair":
            table.add_row(cell(e["at"]), Text("repair", style="bold cyan"), "", "", "", "", "", "", repair_text(e))
            continue
        if e.get("kind") == "field":
            v = str(e.get("verdict"))
            table.add_row(cell(e["at"]), Text("field report", style="bold blue"), "", "", "", "",
                          Text(v.upper(), style=VERDICT_STYLE.get(v, "")), ", ".join(e["actions"]) or "-",
                          _fail_codes(e) + f" (from {', '.join(str(f).rsplit('/', 1)[-1] for f in e['files'])})")
            continue
        v = run_verdict(e)
        table.add_row(*cells(e["started_at"], f"run {e['run_id']}", e["rack"], e["plan"],
                             f"{e['host']}/{e['slot']}", profile_label(e) or "-"),
                      cell(v.upper(), style=VERDICT_STYLE.get(v, "")),
                      *cells(", ".join(map(str, e["actions"])) or "-", _fail_codes(e)))
    console.print(table)
