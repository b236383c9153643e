"""The bench loop's verbs: ``repair``, ``evidence``, ``plans``, ``stages`` (and the TOML writer of
``devices --toml``). Kept apart from cli.py so each verb is one small function; cli.py adds them."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import click

from harness.errors import UsageError
from harness.triage.cli import triage

# the timed waits of a plan's stages on a real card: (stage, parameter) -> whether the stage may
# end the wait once its physics has settled (``stop_early``; the parameter is then an upper bound)
# or always waits it out. A burn's cool retest runs only after wrong results: not counted.
TIMED_WAITS = {("health", "observe_s"): True, ("thermal", "cooldown_s"): True, ("thermal", "soak_s"): True,
               ("burn", "settle_max_s"): True, ("burn", "duration_s"): True, ("pcie", "duration_s"): False,
               ("power", "hold_s"): False, ("memory", "fade_wait_s"): False, ("memory", "bandwidth_s"): False}


def _fail(exc: Exception) -> None:
    from harness.views.safe import line

    click.echo(f"burnin: {line(exc)}", err=True)
    sys.exit(int(getattr(exc, "exit_code", 3)))


def _open_db(db: str | None) -> Any:
    """The database ``repair`` and ``evidence`` use (``--db``, else ``$BURNIN_DB``, else ./burnin.db)."""
    from harness.db.target import DbUrl, as_target
    from harness.errors import HarnessUnavailable
    from harness.store import Store, default_db_path

    try:
        path = as_target(db) if db else default_db_path()
    except UsageError as e:
        _fail(e)
        return None
    if not isinstance(path, DbUrl) and not path.is_file():
        _fail(UsageError(f"{path}: no such results database (--db)"))
    try:
        return Store(path)
    except (UsageError, HarnessUnavailable) as e:
        _fail(e)


@click.command()
@click.argument("serial")
@click.option("--action", "action", required=True, help="What was done: a repair action of the contract "
              "(replace_fan, repaste, reseat, check_power, reflash_firmware, replace_memory, reset_and_retest, "
              "fix_host, rma).")
@click.option("--note", default=None, help="Free text: what you saw, what you did.")
@click.option("--part", default=None, help="The part replaced or reworked, e.g. \"fan 0\" or \"GDDR chip 12\".")
@click.option("--db", "db", default=None, type=click.Path(dir_okay=False),
              help="Results database (default: $BURNIN_DB, else ./burnin.db).")
def repair(serial: str, action: str, note: str | None, part: str | None, db: str | None) -> None:
    """Record a repair done at the bench; the card's next run tells whether it fixed the fault."""
    from harness.repairs import record_repair

    store = _open_db(db)
    try:
        rep = record_repair(store, serial, action, note, part)
    except UsageError as e:
        _fail(e)
        return
    finally:
        store.close()
    target = ", ".join(rep["targets"]) or "nothing (no fail finding in its last run)"
    from harness.views.safe import line

    click.echo(line(f"recorded: {serial} {action}{' (' + part + ')' if part else ''} by {rep['who']} at {rep['at']}; "
                    f"targets {target}. Retest it: burnin run CONFIG --only {serial} --db {store.path}"))


@click.command()
@click.argument("serial")
@click.option("--run", "run_id", default=None, help="The run to document (default: the card's latest).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--db", "db", default=None, type=click.Path(dir_okay=False),
              help="Results database (default: $BURNIN_DB, else ./burnin.db).")
def evidence(serial: str, run_id: str | None, out: str, db: str | None) -> None:
    """Write the RMA evidence pack of one card into a folder (README.md says what each file is)."""
    from harness.evidence import write_pack

    store = _open_db(db)
    try:
        files = write_pack(store, serial, Path(out), run_id)
    except UsageError as e:
        _fail(e)
        return
    except OSError as e:
        _fail(UsageError(f"--out {out}: {e.strerror or e}"))
        return
    finally:
        store.close()
    from harness.views.safe import line

    click.echo(line(f"{out}: {len(files)} files: {', '.join(files)}"))


def timed_seconds(plan: Any) -> tuple[float, float]:
    """The timed waits a plan asks of one real card (soaks, burns, watches): (those always waited
    out, those too that stop once settled, at their limits). Scans and copies add to both."""
    fixed = settling = 0.0
    for st in plan.stages:
        algos = st.params.get("algorithms") or []
        for (stage, k), may_stop in TIMED_WAITS.items():
            if st.stage != stage or (k == "fade_wait_s" and "bit_fade" not in algos) or (
                    k == "bandwidth_s" and "bandwidth" not in algos):
                continue  # another stage's parameter, or one of an algorithm the plan does not run
            seconds = float(st.params.get(k) or 0)
            if may_stop and st.params.get("stop_early", True):
                settling += seconds
            else:
                fixed += seconds
    return fixed, fixed + settling


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _period(names: list[str]) -> int:
    """How many times the plan's stage list repeats (``repeat = N``)."""
    for n in range(1, len(names) + 1):
        if len(names) % n == 0 and names == names[:n] * (len(names) // n):
            return len(names) // n
    return 1


@click.command()
def plans() -> None:
    """The plans in rack_configs/plans/: name, stages, timed waits per real card (those always
    waited out, to every wait at its limit: a watch, soak or burn stops once settled), description."""
    from rich.table import Table

    from harness.plans import PLAN_DIR, available_plans, load_plan
    from harness.views.safe import cells
    from harness.views.table import report_console

    table = Table(title=cells(f"plans in {PLAN_DIR}")[0], title_justify="left")
    for col in ("plan", "stages", "timed waits per card", "description"):
        table.add_column(col, no_wrap=col in ("plan", "timed waits per card"))
    for name in available_plans():
        try:
            pl = load_plan(name)
        except UsageError as e:
            table.add_row(*cells(name, "", "", f"invalid: {e}"))
            continue
        names = [s.stage for s in pl.stages]
        rep = _period(names)
        stages = ", ".join(names[: len(names) // rep]) + (f" (×{rep})" if rep > 1 else "")
        low, high = timed_seconds(pl)
        waits = _minutes(high) if low == high else f"{_minutes(low)} to {_minutes(high)}"
        table.add_row(*cells(name, stages, waits, pl.description))
    report_console().print(table)


def _describe(cls: Any) -> str:
    """The first paragraph of the stage's docstring, else of its module's."""
    doc = (cls.__doc__ or "").strip()
    if not doc or "see the module" in doc:
        doc = (sys.modules[cls.__module__].__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def _range(metadata: list[Any]) -> dict[str, Any]:
    """A parameter's bounds as the plan must respect them: ``min``/``max`` (inclusive) or
    ``above``/``below`` (exclusive), from its pydantic constraints."""
    out: dict[str, Any] = {}
    for m in metadata:
        for attr, key in (("ge", "min"), ("gt", "above"), ("le", "max"), ("lt", "below")):
            if getattr(m, attr, None) is not None:
                out[key] = getattr(m, attr)
    return out


def _num(v: Any) -> str:
    return str(int(v)) if isinstance(v, int) or float(v).is_integer() else f"{v:g}"


def _range_text(p: dict[str, Any]) -> str:
    lo = f"≥ {_num(p['min'])}" if "min" in p else (f"> {_num(p['above'])}" if "above" in p else "")
    hi = f"≤ {_num(p['max'])}" if "max" in p else (f"< {_num(p['below'])}" if "below" in p else "")
    return ", ".join(x for x in (lo, hi) if x) or "-"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the stages and parameters as JSON.")
def stages(as_json: bool) -> None:
    """Every stage a plan can name, with each parameter, its type and its default, and the finding
    codes it can emit (then the codes the harness itself raises)."""
    from harness.codes import HARNESS_CODES
    from stress.base import stages as all_stages

    doc: list[dict[str, Any]] = []
    for name, cls in sorted(all_stages().items()):
        params = [{"name": k, "type": getattr(f.annotation, "__name__", str(f.annotation)).replace("typing.", ""),
                   "default": None if f.is_required() else f.get_default(call_default_factory=True),
                   "required": f.is_required(), "description": f.description, **_range(f.metadata)}
                  for k, f in cls.Params.model_fields.items()]
        doc.append({"stage": name, "description": _describe(cls),
                    "requires": sorted(cls.requires), "params": params, "codes": sorted(cls.codes)})
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    from rich.table import Table

    from harness.views.safe import cell, cells
    from harness.views.table import report_console

    console = report_console()
    for st in doc:
        table = Table(title=cell(f"{st['stage']}: {st['description']}"), title_justify="left", show_edge=False)
        for col in ("parameter", "type", "default", "range"):
            table.add_column(col)
        for p in st["params"]:
            table.add_row(*cells(p["name"], p["type"],
                                 "(required)" if p["required"] else json.dumps(p["default"], default=str),
                                 _range_text(p)))
        console.print(table)
        console.print(f"  finding codes: {', '.join(st['codes']) or '(none declared)'}", highlight=False)
        console.print()
    console.print(f"the harness itself raises: {', '.join(sorted(HARNESS_CODES))}", highlight=False)


# devices --toml ------------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def rack_toml(cfg: Any, cards: list[Any], described: list[dict[str, Any]]) -> str:
    """A rack config naming each card found on its own (serial, slot), ready to edit."""
    from drivers.registry import get_backend

    entries = {d.label: d for d in cfg.devices}
    lines = ["# written by `burnin devices --toml`: one entry per card found; edit and run it with",
             f"# burnin run THIS.toml (relative paths are as in {cfg.path}: keep this file in its folder)", "[rack]", f"name = {_toml_value(socket.gethostname().split('.')[0] + '-bench')}",
             'plan = "quick"']
    hosts: dict[str, list[str]] = {}
    for card, info in zip(cards, described, strict=True):
        entry = entries.get(card.label)
        raw = entry.config.model_dump(mode="json", exclude_none=True, exclude_defaults=True) if entry else {}
        raw["backend"] = card.backend
        fields = get_backend(card.backend).Config.model_fields
        for k, v in (card.locator or {}).items():
            if (k in fields and k != "backend" and v is not None and not isinstance(v, dict | list)
                    and v != fields[k].default):
                raw[k] = v
        raw["slot"] = card.slot
        if info.get("serial") and "serial" in fields:
            raw["serial"] = info["serial"]
        fw = ", ".join(f"{k} {v}" for k, v in (info.get("firmware") or {}).items())
        block = ["", "[[hosts.devices]]",
                 f"# {info.get('model')} · {info.get('pci_bus_id') or 'no PCI id'}" + (f" · {fw}" if fw else "")]
        order = ["backend", "slot", "serial"] + [k for k in raw if k not in ("backend", "slot", "serial")]
        block += [f"{k} = {_toml_value(raw[k])}" for k in order if k in raw]
        hosts.setdefault(card.host, []).extend(block)
    for host, block in hosts.items():
        lines += ["", "[[hosts]]", f"name = {_toml_value(host)}"] + block
    return "\n".join(lines) + "\n"


COMMANDS = (repair, evidence, plans, stages, triage)
