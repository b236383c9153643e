"""The ``burnin`` command line (contract.md section 1) and its exit codes.

0 every card passes; 1 the run finished and some card did not; 2 bad usage or input (one line
naming file and field); 3 the harness could not run at all. No traceback reaches the user.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from harness.errors import HarnessUnavailable, UsageError

EXIT_PASS, EXIT_NOT_PASS, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # Ctrl-C: the conventional 128 + SIGINT


class Interrupted(Exception):
    """The user stopped the run; what was measured is stored and the run can be resumed."""


def _fail(exc: Exception) -> None:
    code = getattr(exc, "exit_code", EXIT_UNAVAILABLE)
    click.echo(f"burnin: {exc}", err=True)
    sys.exit(code)


def _require_db(db: str) -> None:
    """history and resume read an existing database; never create an empty one by accident."""
    if not Path(db).is_file():
        _fail(UsageError(f"{db}: no such results database (--db)"))


def _load(config: str, plan: str | None) -> tuple[Any, Any]:
    from harness.config import load_rack
    from harness.plans import load_plan

    cfg = load_rack(config)
    plan_name = plan or cfg.rack.plan or "quick"
    return cfg, load_plan(plan_name, base_dir=cfg.path.parent)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="burnin", prog_name="burnin")
def main() -> None:
    """burnin: diagnose accelerators on a bench or a rack, and say what to repair."""


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--plan", "plan", default=None, help="Plan name (rack_configs/plans/) or path; default: the config's, else quick.")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="Write the result document (JSON) here.")
@click.option("--junit", "junit_path", default=None, type=click.Path(dir_okay=False), help="Write a JUnit XML report here.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False), help="Write an HTML report here.")
@click.option("--db", "db", default=None, type=click.Path(dir_okay=False), help="Results database (default: the config's, else ./burnin.db).")
@click.option("--quiet", "-q", is_flag=True, help="No live progress on stderr.")
@click.option("--only", "only", multiple=True, metavar="SERIAL|HOST/SLOT",
              help="Run only this card (repeatable): retest one card of the rack.")
@click.option("--force", is_flag=True,
              help="Run the stress stages on cards preflight found not ready; every finding says so.")
@click.option("--metrics", "metrics", default=None, metavar="ADDR",
              help="Serve Prometheus metrics during the run on PORT (loopback) or HOST:PORT; pip install '.[metrics]'.")
def run(config: str, plan: str | None, json_path: str | None, junit_path: str | None,
        html_path: str | None, db: str | None, quiet: bool, only: tuple[str, ...], force: bool,
        metrics: str | None) -> None:
    """Run the plan on every device CONFIG names; verdict table on stdout."""
    _run_and_report(config, plan, db, quiet, None, json_path, junit_path, html_path, only, force=force,
                    metrics=metrics)


def _run_and_report(config: str, plan: str | None, db: str | None, quiet: bool, resume_id: str | None,
                    json_path: str | None, junit_path: str | None, html_path: str | None,
                    only: tuple[str, ...] = (), force: bool = False, metrics: str | None = None) -> None:
    """Run (or resume) a plan, write the reports, print the verdict table, exit as the contract says."""
    try:
        cfg, pl = _load(config, plan)
        if force:
            from harness.plans import forced

            pl = forced(pl)
        doc = _execute(cfg, pl, db, quiet, resume_id=resume_id, only=only, metrics=metrics)
    except (UsageError, HarnessUnavailable) as e:
        _fail(e)
        return
    except Interrupted as e:
        click.echo(f"burnin: {e}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    _write_outputs(doc, json_path, junit_path, html_path)
    from harness.views.table import print_verdicts

    print_verdicts(doc)
    sys.exit(EXIT_PASS if all(c["verdict"] == "pass" for c in doc["cards"]) else EXIT_NOT_PASS)


def _execute(cfg: Any, pl: Any, db: str | None, quiet: bool, resume_id: str | None = None,
             only: tuple[str, ...] = (), metrics: str | None = None) -> dict[str, Any]:
    from harness.pick import pick_cards
    from harness.runner import Run, discover_cards, resolve_db
    from harness.store import Store
    from harness.views.progress import LiveProgress

    store = Store(resolve_db(db, cfg))
    try:
        cards = pick_cards(discover_cards(cfg), only, str(cfg.path))
        if resume_id is not None:
            done = {r["key"] for r in store.run_cards(resume_id) if r["state"] in ("done", "lost", "hung")}
            runner_cards = [c for c in cards if c.key not in done]
        else:
            runner_cards = cards
        exporter = _serve_metrics(metrics, runner_cards, pl)
        with LiveProgress(runner_cards, pl, enabled=not quiet) as progress, exporter as metric_state:
            listeners = [progress] if metric_state is None else [progress, metric_state]
            r = Run(cfg, pl, store, listeners=listeners)
            if resume_id is None:
                r.start(runner_cards)
            else:
                r.resume(resume_id, runner_cards)
            progress.set_run(r.run_id, store.path)
            try:
                doc = r.execute()
                if metric_state is not None:
                    metric_state.set_document(doc)
                return doc
            except KeyboardInterrupt:
                raise Interrupted(
                    f"interrupted; results measured so far are in {store.path}; continue with "
                    f"`burnin resume {r.run_id} --db {store.path}`"
                ) from None
    finally:
        store.close()


@contextmanager
def _serve_metrics(addr: str | None, cards: list[Any], pl: Any) -> Iterator[Any]:
    """``--metrics``: the run's metrics state, served over HTTP while the run goes on (or None)."""
    if addr is None:
        yield None
        return
    from harness.views.metrics import MetricsServer, RunMetrics

    state = RunMetrics(cards, len(pl.stages))
    server = MetricsServer(state, addr)
    click.echo(f"burnin: metrics on http://{server.host}:{server.port}/metrics", err=True)
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
        click.echo(f"burnin: cannot write report: {e.filename}: {e.strerror} ({saved})", err=True)
        sys.exit(EXIT_USAGE)


@main.command()
@click.argument("result", type=click.Path(dir_okay=False))
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False), help="Write an HTML report here.")
@click.option("--junit", "junit_path", default=None, type=click.Path(dir_okay=False), help="Write a JUnit XML report here.")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="Write the document again here.")
def report(result: str, html_path: str | None, junit_path: str | None, json_path: str | None) -> None:
    """Render reports from a saved result document (--json of a run); no database needed.

    With no option, prints the verdict table."""
    from harness.views import load_result_document

    try:
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
    click.echo(f"{cfg.path}: ok: rack {cfg.name!r}, {len(cfg.hosts)} host(s), {len(cfg.devices)} device entr"
               f"{'y' if len(cfg.devices) == 1 else 'ies'} ({', '.join(backends)})")
    click.echo(f"{pl.path}: ok: plan {pl.name!r}, {len(pl.stages)} stages: {', '.join(s.stage for s in pl.stages)}")


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
    from harness.runner import discover_cards

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


@main.command()
@click.argument("serial")
@click.option("--db", "db", default="burnin.db", type=click.Path(dir_okay=False), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print every run of this card as JSON (card shape).")
def history(serial: str, db: str, as_json: bool) -> None:
    """Every run and verdict for one card and the repairs between them, oldest first."""
    from harness.store import Store
    from harness.views.history import history_timeline, print_history

    _require_db(db)
    store = Store(db)
    try:
        entries = history_timeline(store, serial)
    finally:
        store.close()
    if not entries:
        _fail(UsageError(f"{db}: no card with serial {serial!r} (no runs or repairs recorded)"))
    if as_json:
        click.echo(json.dumps(entries, indent=2, default=str))
    else:
        print_history(serial, entries)


@main.command()
@click.argument("run_id")
@click.option("--db", "db", default="burnin.db", type=click.Path(dir_okay=False), show_default=True)
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False))
@click.option("--quiet", "-q", is_flag=True)
def resume(run_id: str, db: str, json_path: str | None, quiet: bool) -> None:
    """Continue an interrupted run; devices already finished keep their results."""
    from harness.store import Store

    _require_db(db)
    store = Store(db)
    run_row = store.run(run_id)
    store.close()
    if run_row is None:
        _fail(UsageError(f"{db}: no run {run_id!r}"))
        return
    _run_and_report(run_row["config_path"], run_row["plan_path"], db, quiet, run_id, json_path, None, None)


def _add_loop_verbs() -> None:
    """The bench loop's verbs (repair, evidence, plans, stages) live in cli_loop.py."""
    from harness.cli_loop import COMMANDS

    for cmd in COMMANDS:
        main.add_command(cmd)


_add_loop_verbs()

if __name__ == "__main__":
    main()
