"""``burnin profiles``: the profiles a card can be judged by, and which device names select each.

A card whose name is in no profile gets a derived one (drivers.derived); this lists the files.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from drivers.profiles import available_profiles, load_profile
from harness.views.safe import cells
from harness.views.table import report_console

SCHEMA = "burnin.profiles/1"


def profiles_document() -> dict[str, Any]:
    rows = []
    for name in available_profiles():
        p = load_profile(name)
        rows.append({"name": p.name, "vendor": p.vendor, "model": p.model, "matches": list(p.match),
                     "memory_mib": p.memory.total, "memory_type": p.memory.type, "memory_kind": p.memory.kind,
                     "tdp_w": p.power.tdp, "cooling": p.cooling.kind, "fans": p.cooling.fans})
    return {"schema": SCHEMA, "profiles": rows}


def print_profiles(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or report_console()
    table = Table(title="profiles (a card matching none gets a derived profile)", title_justify="left")
    for col in ("name", "vendor", "matches (device name)", "memory", "power", "cooling"):
        table.add_column(col, no_wrap=col != "matches (device name)")
    for r in doc["profiles"]:
        gib = r["memory_mib"] / 1024
        cooling = f"{r['fans']} fan{'s' if r['fans'] != 1 else ''}" if r["cooling"] == "fan" else "passive"
        matches = cells(*r["matches"])  # one line each, each literal
        table.add_row(*cells(r["name"], r["vendor"]), Text("\n").join(matches),
                      *cells(f"{gib:.1f} GiB {r['memory_type']}", f"{r['tdp_w']:.0f} W", cooling))
    console.print(table)
