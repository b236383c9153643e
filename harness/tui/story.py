"""The card's story on the bench screen: its history (runs and repairs, dated) and the chip map
of its memory findings. Pure functions returning rich renderables, like render.py."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from harness.tui.state import CardState
from harness.views.chipmap import ChipMap, chip_map, profile_of
from harness.views.history import repair_text, run_verdict
from harness.views.table import VERDICT_STYLE

MAP_PER_ROW = 8  # 80 columns: fits the card screen next to the history


def history_view(serial: str, entries: list[dict[str, Any]], current_run: str = "") -> RenderableType:
    """Every run and repair of the card, oldest first, each with its date."""
    if not entries:
        return Text(f"no earlier runs or repairs of {serial or 'this card'}", style="dim")
    table = Table(box=None, padding=(0, 1), expand=True, show_edge=False, header_style="bold dim")
    table.add_column("when", no_wrap=True)
    table.add_column("what", ratio=1, overflow="fold")
    for e in entries:
        when = str(e.get("at") if e.get("kind") == "repair" else e.get("started_at") or "")
        when = when.replace("T", " ").rstrip("Z")[:16]
        if e.get("kind") == "repair":
            table.add_row(Text(when, style="cyan"), Text("repair ", style="bold cyan") + repair_text(e))
            continue
        if e.get("kind") == "field":  # a triage of the files the card arrived with
            table.add_row(Text(when, style="blue"), Text("field report ", style="bold blue") + Text(str(e["summary"])))
            continue
        v = run_verdict(e)
        line = Text(v.upper(), style=VERDICT_STYLE.get(v, "dim"))
        fails = sorted({f["code"] for f in e.get("findings") or [] if f.get("severity") == "fail"})
        line.append(f"  {e.get('plan')} at {e.get('host')}/{e.get('slot')}", style="dim")
        if e.get("run_id") == current_run:
            line.append("  (this run)", style="bold")
        if fails:
            line.append("\n" + ", ".join(fails))
        table.add_row(Text(when), line)
    return table


def chip_map_view(cm: ChipMap) -> RenderableType:
    """The board's chip/stack positions, failed ones in red with their failing-cell count."""
    rows: list[Text] = []
    line = Text()
    for pos in range(cm.count):
        if pos and pos % MAP_PER_ROW == 0:
            rows.append(line)
            line = Text()
        if pos in cm.cells:
            line.append(f"[{pos:>2}:{cm.label(pos):>3}]", style="bold white on red")
        else:
            line.append(f"[{pos:>2}:  ·]", style="dim")
        line.append(" ")
    rows.append(line)
    failed = ", ".join(f"{cm.where} {p}: {cm.label(p)} cells" for p in sorted(cm.cells))
    head = Text(f"{cm.memory_type} {cm.where} map ({cm.count} {cm.where}s) · failing: {failed}", style="bold")
    return Group(head, *rows)


def card_chip_map(card: CardState, profile_name: str | None) -> RenderableType | None:
    cm = chip_map(card.findings, profile_of({"profile": profile_name, "model": card.model}))
    return chip_map_view(cm) if cm else None
