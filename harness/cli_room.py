"""The room's verbs: ``burnin serve`` (the live page and /metrics) and ``burnin db migrate`` (a
bench's SQLite history into the room store). cli.py adds them."""

from __future__ import annotations

import os
import sys

import click

from harness.errors import HarnessUnavailable, UsageError

TOKEN_ENV = "BURNIN_TOKEN"


def _fail(exc: Exception) -> None:
    from harness.db.target import mask

    click.echo(f"burnin: {mask(str(exc))}", err=True)
    sys.exit(int(getattr(exc, "exit_code", 3)))


@click.command()
@click.option("--db", "db", default=None, help="Results database: a postgresql:// URL (the room store) or a SQLite "
              "file (default: $BURNIN_DB, else ./burnin.db).")
@click.option("--listen", "listen", default=None, metavar="ADDR",
              help="HOST:PORT or PORT (default 127.0.0.1:8470, loopback); another address needs a token.")
@click.option("--token", "token", default=None, help=f"Required of every client (default: ${TOKEN_ENV}).")
def serve(db: str | None, listen: str | None, token: str | None) -> None:
    """The room's live web page (hosts x slots, the pick list, each card's page and evidence pack)
    and Prometheus /metrics, read from the store; read-only; runs until Ctrl-C."""
    from harness.db.sql import DB_ERRORS
    from harness.launch import resolve_db
    from harness.room.server import DEFAULT_LISTEN, start

    token = token or os.environ.get(TOKEN_ENV) or None
    try:
        target = resolve_db(db, None)
        server = start(target, listen or DEFAULT_LISTEN, token)
    except (UsageError, HarnessUnavailable) as e:
        _fail(e)
        return
    except DB_ERRORS as e:
        _fail(HarnessUnavailable(f"results database: {e}"))
        return
    host, port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"burnin: serving the room from {target} on http://{shown}:{port}/ (metrics: /metrics); "
               f"Ctrl-C stops", err=True)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.reader.close()


@click.group()
def db() -> None:
    """The results database itself."""


@db.command()
@click.option("--from", "source", required=True, help="The bench's database (a SQLite file).")
@click.option("--to", "dest", required=True, help="The room store (a postgresql:// URL) or another database.")
def migrate(source: str, dest: str) -> None:
    """Copy a bench's runs, cards and repairs into another store; running it again copies nothing twice."""
    from harness.db.sql import DB_ERRORS
    from harness.db.target import as_target
    from harness.migrate import migrate as move
    from harness.store import Store

    try:
        src_target, dst_target = as_target(source), as_target(dest)
        if src_target == dst_target:
            raise UsageError(f"--from and --to name the same database ({src_target})")
        src = Store(src_target, readonly=True)
        try:
            dst = Store(dst_target)
            try:
                moved = move(src, dst)
            finally:
                dst.close()
        finally:
            src.close()
    except (UsageError, HarnessUnavailable) as e:
        _fail(e)
        return
    except DB_ERRORS as e:
        _fail(HarnessUnavailable(f"migrate stopped (runs copied so far are whole; run it again): {e}"))
        return
    click.echo(f"burnin: {src_target} -> {dst_target}: {moved.line()}")


COMMANDS = (serve, db)
