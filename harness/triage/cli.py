"""``burnin triage FILE... [--json OUT] [--db DB]``: what the files a card arrived with say about it.

Exit 0 when every card the files name passes, 1 when some card needs work, 2 when a file cannot
be read (one line each, naming the file and why; the other files are still triaged) or an option
is wrong, 3 when the results database cannot be written.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import click

EXIT_PASS, EXIT_NOT_PASS, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def _writable(path: str, what: str) -> str | None:
    p = Path(path).expanduser()
    if p.is_dir():
        return f"{path}: {what} path is a folder"
    if not p.parent.is_dir():
        return f"{path}: the folder {p.parent} does not exist ({what})"
    if (p.exists() and not os.access(p, os.W_OK)) or (not p.exists() and not os.access(p.parent, os.W_OK)):
        return f"{path}: cannot write the {what} here (permission denied)"
    return None


def expand(args: tuple[str, ...]) -> list[str]:
    """The files to read: a folder (what a customer sent) stands for the files directly in it."""
    out: list[str] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            inside = sorted(str(c) for c in p.iterdir() if c.is_file() and not c.name.startswith("."))
            out += inside or [a]  # an empty folder is said to be unreadable, like any non-file
        else:
            out.append(a)
    return out


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False),
              help="Write the burnin.triage/1 document here.")
@click.option("--db", "db", default=None, type=click.Path(dir_okay=False),
              help="Store each card's triage in its history (by serial) in this results database.")
def triage(files: tuple[str, ...], json_path: str | None, db: str | None) -> None:
    """Triage the files a card arrived with (nvidia-smi -q text or XML, dmesg / journalctl -k /
    syslog, dcgmi diag / health / dmon, npu-smi info, NVML recordings; a folder: the files in it),
    recognised by content: each card's verdict, actions, the stage to run first, and the lines
    each finding rests on."""
    from harness.triage.report import document, print_triage
    from harness.triage.triage import triage as run_triage

    for path, what in ((json_path, "JSON report"),):
        problem = _writable(path, what) if path else None
        if problem:
            click.echo(f"burnin: {problem}", err=True)
            sys.exit(EXIT_USAGE)
    result = run_triage(expand(files))
    doc = document(result)
    for f in result.unreadable:
        click.echo(f"burnin: {f.path}: cannot read: {f.error}", err=True)
    print_triage(doc)
    code = EXIT_USAGE if result.unreadable else EXIT_NOT_PASS if result.needs_work else EXIT_PASS
    if json_path:
        try:
            Path(json_path).expanduser().write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
        except OSError as e:
            click.echo(f"burnin: cannot write {json_path}: {e.strerror or e}", err=True)
            code = EXIT_USAGE
    if db:
        code = _store(db, doc, code)
    sys.exit(code)


def _store(db: str, doc: dict[str, Any], code: int) -> int:
    from harness.errors import HarnessUnavailable, UsageError
    from harness.store import Store
    from harness.triage.history import store_triage

    try:
        store = Store(db)
    except (UsageError, HarnessUnavailable) as e:
        click.echo(f"burnin: {e} (the triage above was not stored)", err=True)
        return int(getattr(e, "exit_code", EXIT_UNAVAILABLE))
    try:
        stored, nameless = store_triage(store, doc)
    except sqlite3.Error as e:
        click.echo(f"burnin: {db}: cannot store the triage: {e}", err=True)
        return EXIT_UNAVAILABLE
    finally:
        store.close()
    said = f"burnin: stored {stored} field report(s) in {db}"
    if nameless:
        said += (f"; {len(nameless)} card(s) without a serial in the files were not stored "
                 f"(no history can take them: {', '.join(nameless)})")
    click.echo(said, err=True)
    return code
