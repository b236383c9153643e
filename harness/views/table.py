"""The verdict table a technician reads at a glance, and the devices listing (rich, stdout).

Every cell and title goes in through ``harness.views.safe`` (literal text, never markup)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from harness.views.hosts import host_fails, host_why, hosts_with_findings
from harness.views.safe import cell, cells
from stress.model import measurement_text, out_of_limits

VERDICT_STYLE = {"pass": "bold green", "repair": "bold yellow", "rma": "bold red", "retest": "bold magenta"}


def report_console() -> Console:
    """Terminal width on a tty; wide when piped, so a log keeps one card per line."""
    probe = Console()
    return Console(soft_wrap=False, highlight=False, width=None if probe.is_terminal else 200)


def top_finding(card: dict[str, Any]) -> str:
    """The fail finding that explains the verdict best (first after sorting), plus a count."""
    fails = [f for f in card["findings"] if f["severity"] == "fail"]
    if not fails:
        warns = [f for f in card["findings"] if f["severity"] == "warn"]
        return f"(warn) {warns[0]['message']}" if warns else ""
    more = f"  (+{len(fails) - 1} more)" if len(fails) > 1 else ""
    test: dict[str, Any] = next(
        (t for t in card.get("tests") or [] if t.get("name") == fails[0].get("test")), {})
    off = [measurement_text(m) for m in test.get("measurements") or [] if out_of_limits(m)]
    measured = f"  [{'; '.join(off)}]" if off else ""
    return f"{fails[0]['code']}: {fails[0]['message']}{measured}{more}"


def profile_label(d: dict[str, Any]) -> str:
    """A card's profile as the views show it: the name, "(derived)" when built from its facts."""
    name = str(d.get("profile") or "")
    return f"{name} (derived)" if name and d.get("profile_source") == "derived" else name


def _actions(card: dict[str, Any]) -> str:
    return ", ".join(map(str, card.get("actions") or [])) or "-"


def print_verdicts(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or report_console()
    table = Table(title=cell(f"burnin {doc.get('plan')} on {doc.get('rack')}  (run {doc.get('run_id')})"),
                  title_justify="left", show_lines=False, expand=False)
    table.add_column("host/slot", no_wrap=True)
    # on a terminal a long serial wraps rather than squeeze the verdict out; a log keeps it on one line
    if console.is_terminal:
        table.add_column("serial", overflow="fold", min_width=13, max_width=40)
    else:
        table.add_column("serial", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("profile", no_wrap=True)
    table.add_column("verdict", no_wrap=True, min_width=7)
    table.add_column("actions")
    table.add_column("mem cov", no_wrap=True)
    table.add_column("why", overflow="fold", min_width=30, max_width=100)
    counts: dict[str, int] = {}
    host_rows = {str(h.get("name")): h for h in hosts_with_findings(doc)}
    for c in doc["cards"]:
        h = host_rows.pop(str(c["host"]), None)
        if h is not None:  # a line per host with findings of its own, above its cards
            table.add_row(*cells(c.get("host"), "", "", ""), cell("HOST", style="bold cyan"),
                          *cells(", ".join(sorted({str(f.get("action")) for f in host_fails(h)})) or "-", "",
                                 host_why(h)), style="cyan")
        v = str(c.get("verdict"))
        counts[v] = counts.get(v, 0) + 1
        table.add_row(
            *cells(f"{c.get('host')}/{c.get('slot')}", c.get("serial") or "?", c.get("model") or "?",
                   profile_label(c) or "?"),
            cell(v.upper(), style=VERDICT_STYLE.get(v, "")),
            *cells(_actions(c), coverage_text(c), top_finding(c)),
        )
    console.print(table)
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    console.print(cell(f"{len(doc['cards'])} cards: {summary}"))


def print_devices(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or report_console()
    table = Table(title="devices", title_justify="left")
    for col in ("host/slot", "backend", "model", "profile", "serial", "pci", "temp C", "power W", "limit W", "fans rpm",
                "pcie", "findings", "cannot run"):
        table.add_column(col, no_wrap=col not in ("findings", "cannot run"))
    for d in doc["devices"]:
        t = d.get("telemetry") or {}
        pcie = t.get("pcie") or {}
        link = f"gen{pcie.get('gen')} x{pcie.get('width')}" if pcie.get("gen") else "-"
        fans = ",".join(str(r) for r in t.get("fans_rpm") or []) or "-"
        fnd = "; ".join(f"{f['severity']}:{f['code']}" for f in d["findings"]) or "-"
        table.add_row(*cells(f"{d['host']}/{d['slot']}", d["backend"], d.get("model"), profile_label(d) or "-",
                             d.get("serial"), d.get("pci_bus_id"), _n(t.get("temperature_c")), _n(t.get("power_w")),
                             _n(t.get("power_limit_w")), fans, link, fnd, cannot_run_text(d.get("cannot_run") or {})))
    console.print(table)


def cannot_run_text(cannot: dict[str, Any]) -> str:
    """``memory, burn (no memory handle: CuPy is not installed ...)``; optional stages marked."""
    if not cannot:
        return "-"
    return "; ".join(f"{name}{' (optional)' if v.get('optional') else ''}: {v.get('reason')}"
                     for name, v in cannot.items())


def coverage_text(card: dict[str, Any]) -> str:
    """The memory scan's coverage of the card's memory ("98.1%", "37.5% < 90%"), or "-"."""
    covs = [t["metrics"]["coverage"] for t in card.get("tests", [])
            if t.get("name") == "memory" and isinstance((t.get("metrics") or {}).get("coverage"), dict)]
    if not covs or covs[-1].get("fraction") is None:
        return "-"
    c = covs[-1]
    low = c["fraction"] < (c.get("minimum") or 0)
    return f"{c['fraction']:.1%}" + (f" < {c['minimum']:.0%}" if low else "")


def _n(v: Any) -> str:
    return "-" if v is None else (f"{v:.0f}" if isinstance(v, float) else str(v))
