"""What ``burnin triage`` shows: the ``burnin.triage/1`` document (``--json``) and the same as a table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.triage.triage import Triage
from harness.views.table import VERDICT_STYLE, report_console

SCHEMA = "burnin.triage/1"
SHOWN_LINES = 3  # evidence lines under each finding in the table (the JSON has them all)


def document(t: Triage, at: str | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "at": at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": [f.to_dict() for f in t.files],
        "cards": [c.to_dict() for c in t.cards],
    }


def card_label(c: dict[str, Any]) -> str:
    return str(c.get("id") or "?")


def why(card: dict[str, Any]) -> Text:
    """The fail and warn findings, each with the first lines it rests on."""
    out = Text()
    shown = [f for f in card["findings"] if f["severity"] != "info"]
    for f in shown:
        if out:
            out.append("\n")
        sev = f["severity"]
        out.append(f"{sev.upper()} ", style="bold red" if sev == "fail" else "yellow")
        out.append(f"{f['code']}: ", style="bold")
        out.append(f["message"])
        for line in f["evidence"][:SHOWN_LINES]:
            out.append(f"\n  {line}", style="dim")
        if len(f["evidence"]) > SHOWN_LINES:
            out.append(f"\n  (+{len(f['evidence']) - SHOWN_LINES} more lines in --json)", style="dim")
    infos = len(card["findings"]) - len(shown)
    if infos:
        out.append(("\n" if out else "") + f"{infos} informational finding(s) in --json", style="dim")
    return out


def print_triage(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or report_console()
    for f in doc["files"]:
        if f["error"]:
            continue
        said = f"{f['path']}: {', '.join(f['kinds'])}, {f['cards']} card evidence"
        console.print(Text(said, style="dim"))
        for n in f["notes"]:
            console.print(Text(f"  {n}", style="dim"))
    table = Table(title="burnin triage: what the files say about each card", title_justify="left")
    table.add_column("card", no_wrap=True)
    table.add_column("model / serial", overflow="fold", max_width=24)
    table.add_column("verdict", no_wrap=True)
    table.add_column("actions", overflow="fold")
    table.add_column("first", no_wrap=True)
    table.add_column("why (the lines it rests on)", overflow="fold", min_width=30)
    for c in doc["cards"]:
        v = c["verdict"]
        who = "\n".join(x for x in (c.get("model"), f"s/n {c['serial']}" if c.get("serial") else None) if x) or "?"
        table.add_row(card_label(c), who, Text(v.upper(), style=VERDICT_STYLE.get(v, "")),
                      ", ".join(c["actions"]) or "-", c.get("first_stage") or "-", why(c))
    if doc["cards"]:
        console.print(table)
    counts: dict[str, int] = {}
    for c in doc["cards"]:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no card named in the files"
    console.print(f"{len(doc['cards'])} card(s): {summary}")
