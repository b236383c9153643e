"""``burnin history SERIAL``: a card's runs and verdicts, oldest first."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.store import Store
from harness.views.table import VERDICT_STYLE, report_console


def history_entries(store: Store, serial: str) -> list[dict[str, Any]]:
    """One contract card object per run, with the run's id, rack, plan and times."""
    out = []
    for row in store.card_history(serial):
        card = store.record(row["run_id"], row, samples=False).card_document()
        out.append({"run_id": row["run_id"], "rack": row["rack"], "plan": row["plan"],
                    "started_at": row["run_started_at"], "finished_at": row["run_finished_at"], **card})
    return out


def print_history(serial: str, entries: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or report_console()
    table = Table(title=f"history of {serial}", title_justify="left")
    for col in ("started", "run", "rack", "plan", "slot", "verdict", "actions", "fail findings"):
        table.add_column(col, no_wrap=col not in ("fail findings",))
    for e in entries:
        fails = ", ".join(sorted({f["code"] for f in e["findings"] if f["severity"] == "fail"})) or "-"
        v = e["verdict"] if e.get("state") not in (None, "pending", "running") else f"({e.get('state')})"
        table.add_row(str(e["started_at"]), e["run_id"], str(e["rack"]), str(e["plan"]), f"{e['host']}/{e['slot']}",
                      Text(v.upper(), style=VERDICT_STYLE.get(v, "")), ", ".join(e["actions"]) or "-", fails)
    console.print(table)
