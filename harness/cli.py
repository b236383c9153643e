"""The ``burnin`` command line (docs/contract.md section 1) and its exit codes.

0 every card passes; 1 the run finished and some card did not; 2 bad usage or input (one line
naming file and field); 3 the harness could not run at all; 70 burnin itself crashed (a bug, not a
card verdict: sysexits' EX_SOFTWARE; the traceback is saved to a file, see harness/crash.py);
130/143/129 the run was stopped by Ctrl-C/SIGTERM/SIGHUP. No traceback reaches the user.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from harness.crash import EXIT_CRASH, crash_line, save_traceback
from harness.db.sql import DB_ERRORS
from harness.errors import HarnessUnavailable, UsageError
from harness.views.safe import line

T = TypeVar("T")
EXIT_PASS, EXIT_NOT_PASS, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # Ctrl-C: the conventional 128 + SIGINT
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


class Interrupted(Exception):
    """The user stopped the run; what was measured is stored and the run can be resumed."""

    def __init__(self, message: str, exit_code: int = EXIT_INTERRUPTED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived: stop like Ctrl-C (a BaseException, so no ``except Exception`` eats it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal, a CI timeout, systemd) end a run the way Ctrl-C does."""
    def handler(signum: int, frame: Any) -> None:
        for s in STOP_SIGNALS:  # a second signal must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    try:
        old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread (an embedding application): leave its signals alone
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _fail(exc: Exception) -> None:
    code = getattr(exc, "exit_code", EXIT_UNAVAILABLE)
    click.echo(f"burnin: {line(exc)}", err=True)
    sys.exit(code)


def _load(config: str, plan: str | None) -> tuple[Any, Any]:
    """The rack config and its plan: ``--plan`` is relative to the working directory, the config's
    ``plan`` to the config's folder (like every path in a config)."""
    from harness.config import load_rack
    from harness.plans import load_plan

    cfg = load_rack(config)
    if plan:
        return cfg, load_plan(plan)
    if not cfg.rack.plan:
        return cfg, load_plan("quick")
    try:
        return cfg, load_plan(cfg.rack.plan, base_dir=cfg.base_dir)
    except UsageError as e:
        raise UsageError(f"{cfg.path}: rack.plan: {e}") from None


def _check_outputs(*paths: str | None) -> None:
    """Report paths are checked before the run starts, not discovered after eight hours."""
    for p in paths:
        if not p:
            continue
        path = Path(p).expanduser()
        folder = path.parent
        if path.is_dir():
            raise UsageError(f"{p}: report path is a folder")
        if not folder.is_dir():
            raise UsageError(f"{p}: the folder {folder} does not exist (report)")
        if path.exists() and not os.access(path, os.W_OK) or not path.exists() and not os.access(folder, os.W_OK):
            raise UsageError(f"{p}: cannot write the report here (permission denied)")


class _Burnin(click.Group):
    """The command group; an exception no command handled is a crash (exit 70), not a failed card."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - the one place every unexpected error ends
            click.echo(crash_line(e, save_traceback(e)), err=True)
            sys.exit(EXIT_CRASH)


@click.group(cls=_Burnin, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="burnin", prog_name="burnin")
def main() -> None:
    """burnin: diagnose accelerators on a bench or a rack, and say what to repair.

    Exit codes: 0 every card passed; 1 some card did not; 2 bad usage or input; 3 the harness
    could not run; 70 burnin crashed (a bug: the traceback is saved to a file); 130/143/129
    stopped by Ctrl-C/SIGTERM/SIGHUP."""


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--plan", "plan", default=None, help="Plan name (rack_configs/plans/) or path; default: the config's, else quick.")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="Write the result document (JSON) here.")
@click.option("--junit", "junit_path", default=None, type=click.Path(dir_okay=False), help="Write a JUnit XML report here.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False), help="Write an HTML report here.")
@click.option("--db", "db", default=None, type=click.Path(dir_okay=False), help="Results database: a SQLite file or a postgresql:// URL (default: the config's db, relative to the config; else $BURNIN_DB, else ./burnin.db).")
@click.option("--quiet", "-q", is_flag=True, help="No live progress on stderr.")
@click.option("--only", "only", multiple=True, metavar="SERIAL|HOST/SLOT",
              help="Run only this card (repeatable): retest one card of the rack.")
@click.option("--force", is_flag=True,
              help="Run the stress stages on cards preflight found not ready; every finding says so.")
@click.option("--metrics", "metrics", default=None, metavar="ADDR",
              help="Serve Prometheus metrics during the run on PORT (loopback) or HOST:PORT; pip install '.[metrics]'.")
@click.option("--events", "events", default=None, type=click.Path(dir_okay=False),
              help="Write the run's event stream here as JSON lines, one event a line, as it happens.")
def run(config: str, plan: str | None, json_path: str | None, junit_path: str | None,
        html_path: str | None, db: str | None, quiet: bool, only: tuple[str, ...], force: bool,
        metrics: str | None, events: str | None) -> None:
    """Run the plan on every device CONFIG names; verdict table on stdout."""
    _run_and_report(config, plan, db, quiet, None, json_path, junit_path, html_path, only, force=force,
                    metrics=metrics, events=events)


def _run_and_report(config: str, plan: str | None, db: str | None, quiet: bool, resume_id: str | None,
                    json_path: str | None, junit_path: str | None, html_path: str | None,
                    only: tuple[str, ...] = (), force: bool = False, metrics: str | None = None,
                    events: str | None = None) -> None:
    """Run (or resume) a plan, write the reports, print the verdict table, exit as the contract says."""
    try:
        cfg, pl = _load(config, plan)
        if force:
            from harness.plans import forced

            pl = forced(pl)
        _check_outputs(json_path, junit_path, html_path, events)
        doc, db_path = _execute(cfg, pl, db, quiet, resume_id=resume_id, only=only, metrics=metrics, events=events)
    except (UsageError, HarnessUnavailable) as e:
        _fail(e)
        return
    except DB_ERRORS as e:
        _fail(HarnessUnavailable(f"results database: {e}"))
        return
    except Interrupted as e:
        click.echo(f"burnin: {line(e)}", err=True)
        sys.exit(e.exit_code)
    _write_outputs(doc, json_path, junit_path, html_path)
    from harness.views.table import print_verdicts

    print_verdicts(doc)
    click.echo(line(f"burnin: run {doc['run_id']}: results are in {db_path}"), err=True)
    sys.exit(EXIT_PASS if all(c["verdict"] == "pass" for c in doc["cards"]) else EXIT_NOT_PASS)


def _execute(cfg: Any, pl: Any, db: str | None, quiet: bool, resume_id: str | None = None,
             only: tuple[str, ...] = (), metrics: str | None = None,
             events: str | None = None) -> tuple[dict[str, Any], Any]:
    """Open and check the database, pick and lock the cards, run; a signal stops it like Ctrl-C."""
    from harness.launch import RunRequest, open_store, select_cards, start_run
    from harness.stream import EventLog
    from harness.views.progress import LiveProgress

    store = open_store(db, cfg)
    log: EventLog | None = None
    try:
        req = RunRequest(cfg, pl, db, only, resume_id)
        cards = select_cards(req, store)
        exporter = _serve_metrics(metrics, cards, pl)
        run_id = ""
        with _stop_on_signals(), LiveProgress(cards, pl, enabled=not quiet) as progress, \
                exporter as metric_state:
            req.listeners = [progress] if metric_state is None else [progress, metric_state]
            if events is not None:
                log = _open_event_log(events, append=resume_id is not None)
                req.listeners.append(log)

            def started(run: Any) -> None:
                nonlocal run_id
                run_id = run.run_id
                progress.set_run(run.run_id, store.path)

            try:
                doc = start_run(req, store, cards, started=started)
                if metric_state is not None:
                    metric_state.set_document(doc)
                return doc, store.path
            except (KeyboardInterrupt, Stopped) as e:
                signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
                name = signal.Signals(signum).name
                raise Interrupted(
                    f"{'interrupted' if name == 'SIGINT' else 'stopped by ' + name}; run {run_id or '(not started)'} "
                    f"keeps what it measured in {store.path}; continue with "
                    f"`burnin resume {run_id} --db {store.path}`", 128 + int(signum)
                ) from None
    finally:
        if log is not None:
            log.close()
        store.close()


def _open_event_log(path: str, append: bool) -> Any:
    """``--events FILE``: the run's event stream as JSON lines (checked before the run starts)."""
    from harness.stream import EventLog

    try:
        return EventLog(path, append=append)
    except OSError as e:
        raise UsageError(f"{path}: cannot write the events file: {e.strerror or e}") from None


@contextmanager
def _serve_metrics(addr: str | None, cards: list[Any], pl: Any) -> Iterator[Any]:
    """``--metrics``: the run's metrics state, served over HTTP while the run goes on (or None)."""
    if addr is None:
        yield None
        return
    from harness.views.metrics import MetricsServer, RunMetrics, exposure_warning

    state = RunMetrics(cards, len(pl.stages))
    server = MetricsServer(state, addr)
    click.echo(f"burnin: metrics on {server.url}", err=True)
    warning = exposure_warning(server.host, server.port)
    if warning:
        click.echo(f"burnin: warning: {warning}", err=True)
    try:
        yield state
    finally:
        server.close()


def _write_outputs(doc: dict[str, Any], json_path: str | None, junit_path: str | None,
                   html_path: str | None, saved: str = "results are in the database") -> None:
    """Every report the user asked for, each written by its view from the result document alone."""
    from harness.views import write_reports

    try:
        write_reports(doc, json_path=json_path, junit_path=junit_path, html_path=html_path)
    except OSError as e:
        click.echo(line(f"burnin: cannot write report: {e.filename}: {e.strerror} ({saved})"), err=True)
        sys.exit(EXIT_USAGE)


@main.command()
@click.argument("result", required=False, type=click.Path(dir_okay=False))
@click.option("--events", "events", default=None, type=click.Path(dir_okay=False),
              help="Rebuild the result document from a run's events file (run --events) instead.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False), help="Write an HTML report here.")
@click.option("--junit", "junit_path", default=None, type=click.Path(dir_okay=False), help="Write a JUnit XML report here.")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="Write the document (again) here.")
def report(result: str | None, events: str | None, html_path: str | None, junit_path: str | None,
           json_path: str | None) -> None:
    """Render reports from a saved result document (--json of a run), or from a run's events file
    (--events); no database needed.

    With no option, prints the verdict table."""
    from harness.views import load_result_document

    try:
        if (result is None) == (events is None):
            raise UsageError("report: give a result document (RESULT.json) or --events FILE, one of the two")
        if events is not None:
            from harness.stream import rebuild_document

            doc = rebuild_document(events)
        else:
            assert result is not None
            doc = load_result_document(result)
    except UsageError as e:
        _fail(e)
        return
    _write_outputs(doc, json_path, junit_path, html_path, saved="nothing else was changed")
    if not (html_path or junit_path or json_path):
        from harness.views.table import print_verdicts

        print_verdicts(doc)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--plan", "plan", default=None, help="Plan name or path; default: the config's, else quick.")
def validate(config: str, plan: str | None) -> None:
    """Check a rack config and its plan without touching a device (for CI of rack plans)."""
    try:
        cfg, pl = _load(config, plan)
    except (UsageError, HarnessUnavailable) as e:
        _fail(e)
        return
    backends = sorted({d.config.backend for d in cfg.devices})
    click.echo(line(f"{cfg.path}: ok: rack {cfg.name!r}, {len(cfg.hosts)} host(s), {len(cfg.devices)} device entr"
                    f"{'y' if len(cfg.devices) == 1 else 'ies'} ({', '.join(backends)})"))
    click.echo(line(f"{pl.path}: ok: plan {pl.name!r}, {len(pl.stages)} stages: "
                    f"{', '.join(s.stage for s in pl.stages)}"))


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--plan", "plan", default=None)
@click.option("--db", "db", default=None, type=click.Path(dir_okay=False))
def tui(config: str, plan: str | None, db: str | None) -> None:
    """The same run, shown in the bench TUI."""
    try:
        cfg, pl = _load(config, plan)
    except (UsageError, HarnessUnavailable) as e:
        _fail(e)
        return
    try:
        from harness.tui.app import run_tui
    except ImportError:
        click.echo("burnin: the TUI cannot start here (textual is missing); use `burnin run`", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    sys.exit(run_tui(cfg, pl, db))


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the burnin.devices/1 document.")
@click.option("--toml", "as_toml", is_flag=True, help="Print a rack config naming each card found, ready to edit.")
@click.option("--plan", "plan", default=None, help="The plan whose stages each card is checked against.")
def devices(config: str, as_json: bool, as_toml: bool, plan: str | None) -> None:
    """Enumerate devices: identity, a telemetry snapshot, preflight, what each cannot run; no stress."""
    from harness.devices import list_devices
    from harness.discovery import discover_cards

    try:
        cfg, pl = _load(config, plan)
        cards = discover_cards(cfg, engine="local")
        doc = list_devices(cards, [(s.stage, s.params) for s in pl.stages])
    except (UsageError, HarnessUnavailable) as e:
        _fail(e)
        return
    if as_toml:
        from harness.cli_loop import rack_toml

        click.echo(rack_toml(cfg, cards, doc["devices"]), nl=False)
    elif as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        from harness.views.table import print_devices

        print_devices(doc)


def _db_for(db: str | None, config: str | None) -> Any:
    """history and resume read the database a run wrote: ``--db``, the config's, else the default."""
    from harness.launch import resolve_db

    cfg = None
    if config:
        from harness.config import load_rack

        cfg = load_rack(config)
    return resolve_db(db, cfg)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the burnin.profiles/1 document.")
def profiles(as_json: bool) -> None:
    """The device profiles: name, vendor, the device names each matches, memory and power."""
    from drivers.profiles import ProfileError
    from harness.views.profiles import print_profiles, profiles_document

    try:
        doc = profiles_document()
    except ProfileError as e:
        _fail(UsageError(str(e)))
        return
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        print_profiles(doc)


def _read_store(db: str | None, config: str | None, read: Callable[[Any], T]) -> tuple[Any, T]:
    """Open the results database read-only, read from it, close it; a database SQLite cannot use
    is a one-line UsageError naming it."""
    from harness.store import Store

    path = _db_for(db, config)
    try:
        store = Store(path, readonly=True)
        try:
            return path, read(store)
        finally:
            store.close()
    except DB_ERRORS as e:
        raise UsageError(f"{path}: not a usable burnin results database: {e}") from None


@main.command()
@click.argument("serial")
@click.option("--db", "db", default=None, type=click.Path(dir_okay=False),
              help="Results database (default: the config's db with --config, else $BURNIN_DB, else ./burnin.db).")
@click.option("--config", "-c", "config", default=None, type=click.Path(dir_okay=False),
              help="Read the database this rack config names.")
@click.option("--json", "as_json", is_flag=True, help="Print every run of this card as JSON (card shape).")
def history(serial: str, db: str | None, config: str | None, as_json: bool) -> None:
    """Every run and verdict for one card and the repairs between them, oldest first (the
    database is opened read-only)."""
    from harness.views.history import history_timeline, print_history

    serial = serial.strip()
    try:
        path, entries = _read_store(db, config, lambda store: history_timeline(store, serial))
    except (UsageError, HarnessUnavailable) as e:
        _fail(e)
        return
    if not entries:
        _fail(UsageError(f"{path}: no card with serial {serial!r} (no runs or repairs recorded)"))
    if as_json:
        click.echo(json.dumps(entries, indent=2, default=str))
    else:
        print_history(serial, entries)


@main.command()
@click.argument("run_id")
@click.option("--db", "db", default=None, type=click.Path(dir_okay=False),
              help="Results database (default: $BURNIN_DB, else ./burnin.db).")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False))
@click.option("--quiet", "-q", is_flag=True)
@click.option("--events", "events", default=None, type=click.Path(dir_okay=False),
              help="Append the resumed run's events to this JSON-lines file (the first session's --events).")
def resume(run_id: str, db: str | None, json_path: str | None, quiet: bool, events: str | None) -> None:
    """Continue an interrupted run; devices already finished keep their results. A finished run
    is left as it is."""

    try:
        path, run_row = _read_store(db, None, lambda store: store.run(run_id))
    except (UsageError, HarnessUnavailable) as e:
        _fail(e)
        return
    if run_row is None:
        _fail(UsageError(f"{path}: no run {run_id!r}"))
        return
    if run_row["status"] == "finished":
        click.echo(line(f"burnin: run {run_id} finished at {run_row['finished_at']}; nothing to resume, its results "
                        f"are unchanged (burnin history SERIAL --db {path})"), err=True)
        sys.exit(EXIT_PASS)
    _run_and_report(run_row["config_path"], run_row["plan_path"], getattr(path, "url", str(path)), quiet, run_id,
                    json_path, None, None, events=events)


def _add_loop_verbs() -> None:
    """The bench loop's verbs (repair, evidence, plans, stages) live in cli_loop.py."""
    from harness.cli_loop import COMMANDS
    from harness.cli_room import COMMANDS as ROOM_COMMANDS

    for cmd in (*COMMANDS, *ROOM_COMMANDS):
        main.add_command(cmd)


_add_loop_verbs()


if __name__ == "__main__":
    main()
