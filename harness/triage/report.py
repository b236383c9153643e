"""What ``burnin triage`` shows: the ``burnin.triage/1`` document (``--json``) and the same as a table."""

from __future__ import annotations

import re
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
    """The fail and warn findings, each with the first lines it rests on (indented under it)."""
    out = Text()
    shown = [f for f in card["findings"] if f["severity"] != "info"]
    for f in shown:
        sev = f["severity"]
        out.append("\n  ")
        out.append(f"{sev.upper()} ", style="bold red" if sev == "fail" else "yellow")
        out.append(f"{f['code']}: ", style="bold")
        out.append(f["message"])
        for line in f["evidence"][:SHOWN_LINES]:
            out.append(f"\n      {_short(line, card['source'])}", style="dim")
        if len(f["evidence"]) > SHOWN_LINES:
            out.append(f"\n      (+{len(f['evidence']) - SHOWN_LINES} more lines in --json)", style="dim")
    infos = len(card["findings"]) - len(shown)
    if infos:
        out.append(f"\n  {infos} informational finding(s) in --json", style="dim")
    return out


def _short(line: str, sources: list[str]) -> str:
    """A quoted line with its file named by its base name (the JSON keeps the path as given)."""
    for src in sources:
        if line.startswith(src + ":") and "/" in src:
            line = src.rsplit("/", 1)[-1] + line[len(src):]
            break
    return re.sub(r"(\S)\s{3,}", r"\1  ", line)  # the tools' column padding, not their words


def print_triage(doc: dict[str, Any], console: Console | None = None) -> None:
    """Which file was read as what; a table of the cards; then each card's findings with the lines
    they rest on (below the table, so a narrow terminal wraps them instead of cutting them)."""
    console = console or report_console()
    for f in doc["files"]:
        if f["error"]:
            continue
        console.print(Text(f"{f['path']}: {', '.join(f['kinds'])}, {f['cards']} card evidence", style="dim"))
        for n in f["notes"]:
            console.print(Text(f"  {n}", style="dim"))
    table = Table(title="burnin triage: what the files say about each card", title_justify="left")
    table.add_column("card", overflow="fold")
    table.add_column("model", overflow="fold", max_width=22)
    table.add_column("verdict", no_wrap=True)
    table.add_column("actions", overflow="fold")
    table.add_column("first", no_wrap=True)
    for c in doc["cards"]:
        v = c["verdict"]
        table.add_row(card_label(c), str(c.get("model") or "?"), Text(v.upper(), style=VERDICT_STYLE.get(v, "")),
                      ", ".join(c["actions"]) or "-", c.get("first_stage") or "-")
    if doc["cards"]:
        console.print(table)
    for c in doc["cards"]:
        if not c["findings"] and not c.get("notes"):
            continue
        v = c["verdict"]
        head = Text(f"{card_label(c)}", style="bold")
        for part in (c.get("model"), f"s/n {c['serial']}" if c.get("serial") else None):
            if part:
                head.append(f" · {part}")
        head.append(" · ")
        head.append(v.upper(), style=VERDICT_STYLE.get(v, ""))
        body = why(c)
        for n in c.get("notes") or []:
            body.append(f"\n  note: {n}", style="dim")
        console.print(head + body)
    counts: dict[str, int] = {}
    for c in doc["cards"]:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no card named in the files"
    console.print(f"{len(doc['cards'])} card(s): {summary}")
