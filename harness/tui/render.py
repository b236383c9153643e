"""Rich renderables for the bench screen: table cells and the detail pane's tables.

Every string from a device or a stage goes in as ``Text`` (never markup), so a message that
happens to contain ``[...]`` is shown as written.

Pure functions of a CardState, so what the technician reads is decided in one place and can
be checked without running the app.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from harness.tui.state import CardState
from harness.views.hosts import host_line
from harness.views.table import VERDICT_STYLE, cannot_run_text, coverage_text
from stress.model import measurement_text

SEVERITY_STYLE = {"fail": "bold red", "warn": "yellow", "info": "dim"}
STATUS_STYLE = {"pass": "green", "fail": "bold red", "error": "bold magenta", "skipped": "dim"}
STATE_STYLE = {"lost": "bold red", "hung": "bold red", "failed": "bold magenta", "timed_out": "bold magenta",
               "cancelled": "yellow", "running": "cyan", "waiting": "dim"}
BAR_WIDTH = 12
METRICS_SHOWN = 5


def progress_cell(card: CardState) -> Text:
    """A bar plus where the card is: '███████░░░░░ 2/3' while running, the outcome after."""
    filled = round(card.done_fraction * BAR_WIDTH)
    if card.state == "pending":
        return Text("·" * BAR_WIDTH + " waiting", style="dim")
    style = STATE_STYLE.get(card.state, "green" if card.finished else "cyan")
    bar = Text("█" * filled, style=style) + Text("░" * (BAR_WIDTH - filled), style="dim")
    if card.finished:
        tail = "done" if card.state == "done" else card.state.replace("_", " ")
    else:
        tail = f"{min(card.stage_index + 1, card.n_stages)}/{card.n_stages}"
    return bar + Text(f" {tail}", style=STATE_STYLE.get(card.state, ""))


def stage_cell(card: CardState) -> Text:
    """The stage a card is in, with the stage's own progress note when it gives one."""
    if card.state == "pending":
        return Text("-", style="dim")
    if card.finished:
        if card.state == "done":
            return Text("finished", style="dim")
        return Text(f"in {card.stage or 'setup'}", style=STATE_STYLE.get(card.state, ""))
    stage = card.stage or "starting"
    msg = card.message.strip()
    if not msg or msg == stage:
        return Text(stage)
    if msg.startswith(stage):
        return Text(msg)
    return Text(stage) + Text(f" {msg}", style="dim")


def number_cell(value: float | None, fmt: str = "{:.0f}") -> Text:
    return Text("-", style="dim") if value is None else Text(fmt.format(value), justify="right")


def verdict_cell(card: CardState) -> Text:
    """The verdict engine's word once known; before that, what the findings so far suggest."""
    if card.verdict is not None:
        return Text(card.verdict.upper(), style=VERDICT_STYLE.get(card.verdict, "bold"))
    if card.finished and card.state != "done":
        return Text(card.state.replace("_", " "), style=STATE_STYLE.get(card.state, "dim"))
    if card.fail_findings():
        guess = card.provisional_verdict() or "fail"
        return Text(f"{guess}?", style=VERDICT_STYLE.get(guess, "red").replace("bold ", "") + " italic")
    return Text("…" if card.state == "running" else "", style="dim")


def actions_cell(card: CardState) -> Text:
    acts = card.live_actions()
    return Text(", ".join(acts) if acts else "-", style="" if acts else "dim")


def _location(loc: Any) -> str:
    if not isinstance(loc, dict) or not loc:
        return "-"
    out = []
    for k, v in loc.items():
        out.append(f"{k}=0x{v:X}" if k == "address" and isinstance(v, int) else f"{k}={v}")
    return " ".join(out)


def _metric(v: Any) -> str | None:
    if isinstance(v, bool) or v is None:
        return None if v is None else str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int | str):
        s = str(v)
        return s if len(s) <= 24 else s[:23] + "…"
    return None  # lists and tables are for the JSON/HTML reports


def metrics_text(metrics: dict[str, Any], limit: int = METRICS_SHOWN) -> str:
    parts = [f"{k}={m}" for k, v in metrics.items() if k != "traceback" and (m := _metric(v)) is not None]
    more = f" (+{len(parts) - limit})" if len(parts) > limit else ""
    return "  ".join(parts[:limit]) + more


def card_heading(card: CardState) -> Text:
    t = Text()
    t.append(f"{card.key}  ", style="bold")
    t.append(f"{card.serial or '?'}  ", style="bold cyan")
    t.append(card.model or "?", style="")
    t.append("   ")
    t.append_text(verdict_cell(card))
    acts = card.live_actions()
    if acts:
        t.append("   actions: ", style="dim")
        t.append(", ".join(acts), style="bold")
    return t


def findings_table(card: CardState) -> RenderableType:
    """One entry per finding, worst first: severity, code, action and where; the message below.

    Stacked rather than one wide row, so the message stays readable in a narrow pane.
    """
    if not card.findings:
        return Text("no findings" + ("" if card.finished else " so far"), style="dim")
    order = {"fail": 0, "warn": 1, "info": 2}
    table = Table(box=None, padding=(0, 1), expand=True, show_edge=False, show_header=False)
    table.add_column("sev", no_wrap=True, width=4)
    table.add_column("finding", ratio=1, overflow="fold")
    for f in sorted(card.findings, key=lambda f: order.get(f.get("severity", ""), 3)):
        sev = str(f.get("severity", "?"))
        head = Text(str(f.get("code")), style="bold")
        action = str(f.get("action", "none"))
        if action != "none":
            head.append(" → ", style="dim")
            head.append(action, style="bold yellow" if sev == "fail" else "")
        where = _location(f.get("location"))
        if where != "-":
            head.append(f"  {where}", style="cyan")
        head.append(f"  ({f.get('test')})", style="dim")
        table.add_row(Text(sev.upper(), style=SEVERITY_STYLE.get(sev, "")),
                      Text.assemble(head, "\n", Text(str(f.get("message", "")))))
    return table


def tests_table(card: CardState) -> RenderableType:
    if not card.tests:
        return Text("no tests finished yet", style="dim")
    table = Table(box=None, padding=(0, 1), expand=True, show_edge=False, header_style="bold dim")
    table.add_column("test", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", no_wrap=True, justify="right")
    table.add_column("key metrics", ratio=1, overflow="fold")
    for t in card.tests:
        st = str(t.get("status", "?"))
        measured = "  ".join(measurement_text(m) for m in t.get("measurements") or [])
        extra = "  ".join(x for x in (measured, metrics_text(t.get("metrics") or {}, METRICS_SHOWN - 2)) if x)
        if t.get("error") and st != "pass":
            extra = f"{t['error']}  {extra}".strip()
        table.add_row(Text(str(t.get("name"))), Text(st, style=STATUS_STYLE.get(st, "")),
                      Text(f"{float(t.get('duration_s') or 0):.1f}s"), Text(extra))
    return table


def readiness_lines(card: CardState) -> list[Text]:
    """Said up front (from preflight, the first stage): the stages this card will not be able to
    run and why; then, once scanned, how much of its memory the scan covered."""
    out: list[Text] = []
    pre = next((t for t in card.tests if t.get("name") == "preflight"), None)
    if pre is not None:
        m = pre.get("metrics") or {}
        if m.get("ready") is False:
            out.append(Text("not ready: stress stages skipped (see findings)", style="bold red"))
        elif m.get("forced"):
            out.append(Text("not ready, forced: every finding is measured under the conditions found", style="yellow"))
        if m.get("cannot_run"):
            out.append(Text.assemble(("cannot run: ", "bold magenta"), cannot_run_text(m["cannot_run"])))
    cov = coverage_text({"tests": card.tests})
    if cov != "-":
        out.append(Text.assemble(("memory coverage: ", "bold"),
                                 (cov, "yellow" if "<" in cov else "green")))
    return out


def detail_body(card: CardState, after_findings: RenderableType | None = None) -> RenderableType:
    """Heading, what the card cannot run, findings (then ``after_findings``, e.g. the chip map), tests."""
    parts: list[RenderableType] = [card_heading(card), *readiness_lines(card)]
    if card.finished and card.state != "done":
        parts.append(Text(f"{card.state.replace('_', ' ')}: {card.detail or ''}".rstrip(": "),
                          style=STATE_STYLE.get(card.state, "")))
    parts += [Text(""), Text("Findings", style="bold underline"), findings_table(card)]
    if after_findings is not None:
        parts += [Text(""), after_findings]
    parts += [Text(""), Text("Tests", style="bold underline"), tests_table(card)]
    return Group(*parts)


def summary_text(counts: dict[str, int], total: int, finished: bool) -> Text:
    t = Text()
    order = ["pass", "repair", "rma", "retest"]
    keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    unfinished = counts.get("running", 0) + counts.get("waiting", 0)
    t.append(f"{total} cards: " if finished else f"{total - unfinished}/{total} finished: ", style="bold")
    for i, k in enumerate(keys):
        if i:
            t.append(" · ", style="dim")
        t.append(f"{counts[k]} {k}", style=VERDICT_STYLE.get(k, STATE_STYLE.get(k, "")))
    return t


def host_text(name: str, findings: list[dict[str, Any]]) -> str:
    """One line for a host's own findings (a host gate, a baseboard slot), as the table shows it."""
    return host_line({"name": name, "findings": findings})
