"""``burnin tui``: the bench screen. One row per card, the selected card's detail below.

The app is a client of the event stream: the run executes in a worker thread (see bridge.py),
events are folded into a BenchState as they arrive and the screen is redrawn at a steady rate,
so a card streaming hundreds of samples a second cannot starve the keyboard.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Sparkline, Static
from textual.widgets.data_table import CellDoesNotExist

from harness.cards import CardSlot
from harness.errors import HarnessUnavailable, UsageError
from harness.records import RunRecords
from harness.tui import render
from harness.tui.bridge import (
    EngineUpdate,
    RunFailed,
    RunFinished,
    RunStarted,
    RunStopped,
    execute_run,
    prepare_engine,
)
from harness.tui.screens import CardScreen, QuitScreen, RepairScreen
from harness.tui.state import BenchState, CardState
from harness.views.safe import line

REDRAW_S = 0.1
SPARK_MAX = 34  # cells, until the pane has been laid out: one bar per sample up to its width
# (key, label, width): live columns get fixed widths so the table does not jump as values change
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("slot", "slot", None), ("serial", "serial", None), ("verdict", "verdict", 8), ("actions", "actions", None),
    ("progress", "progress", render.BAR_WIDTH + 10), ("temp", "°C", 4), ("power", "W", 5),
    ("stage", "stage", 26), ("model", "model", None), ("profile", "profile", None),
)


class CardTable(DataTable[Any]):
    """The card table; enter opens the selected card's view (findings, chip map, tests, history)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Card view"),
        Binding("j", "cursor_down", "Move", key_display="j/k ↑↓"),
        Binding("k", "cursor_up", "Up", show=False),
    ]


def _cells(card: CardState) -> dict[str, Text | str]:
    return {
        "slot": Text(card.key), "serial": Text(card.serial or "?", style="bold"), "model": Text(card.model),
        "profile": Text(card.profile, style="italic" if card.profile.endswith("(derived)") else ""),
        "stage": render.stage_cell(card), "progress": render.progress_cell(card),
        "temp": render.number_cell(card.temperature_c), "power": render.number_cell(card.power_w),
        "verdict": render.verdict_cell(card), "actions": render.actions_cell(card),
    }


class BenchApp(App[int]):
    """The bench TUI for one run of a plan over a rack."""

    TITLE = "burnin"
    CSS = """
    #cards { height: auto; max-height: 55%; }
    #summary { height: auto; max-height: 5; padding: 0 1; background: $boost; }
    #detail { height: 1fr; border-top: solid $primary-darken-2; }
    #detail-scroll { width: 1fr; padding: 0 1; }
    #detail-scroll:focus { background: $boost; }
    #telemetry { width: 30%; min-width: 26; max-width: 40; padding: 0 1; border-left: solid $primary-darken-2; }
    #telemetry Static { height: 1; }
    #telemetry Sparkline { height: 3; margin-bottom: 1; }
    #temp-spark > .sparkline--max-color { color: $error; }
    #temp-spark > .sparkline--min-color { color: $warning 50%; }
    #power-spark > .sparkline--max-color { color: $accent; }
    #power-spark > .sparkline--min-color { color: $accent 30%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "request_quit", "Quit"),
        Binding("ctrl+c", "request_quit", "Quit", show=False, priority=True),
        Binding("j", "down", "Scroll", show=False),
        Binding("k", "up", "Scroll", show=False),
        Binding("escape", "show_cards", "Back to cards"),
        Binding("f", "filter", "Non-pass only"),
        Binding("h", "history", "History"),
        Binding("r", "retest", "Retest card"),
        Binding("p", "repair", "Record repair"),
    ]

    def __init__(self, cfg: Any, plan: Any, db_path: Any, cards: list[CardSlot]) -> None:
        super().__init__()
        self.cfg, self.plan, self.db_path, self.slots = cfg, plan, db_path, cards
        self.bench = BenchState(cards, len(plan.stages))
        self.stop_flag = threading.Event()
        self.engine = prepare_engine(self.stop_flag, cfg, cards)
        self.phase = "running"  # running | stopping | finished | stopped | failed
        self.error: str | None = None
        self.exit_status = 1
        self.only_attention = False
        self.selected: str | None = cards[0].key if cards else None
        self.records: RunRecords | None = None  # the run's own records, from RunStarted (read-only here)
        self.retesting: str | None = None  # the card a retest (``r``) runs, while it runs
        self.last_retest: str | None = None  # the card the latest retest was started on
        self._run_slots = list(cards)
        self._dirty: set[str] = set()
        self._visible: list[str] = []
        self._last_summary: Text | None = None
        self.title = f"burnin · {cfg.name}"
        self.sub_title = f"plan {plan.name} · starting"

    # layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield CardTable(id="cards", cursor_type="row", zebra_stripes=True)
        yield Static(id="summary")
        with Horizontal(id="detail"):
            yield VerticalScroll(Static(id="detail-body"), id="detail-scroll", can_focus=True)
            with Vertical(id="telemetry"):
                yield Static(id="temp-label")
                yield Sparkline([], id="temp-spark", summary_function=max)
                yield Static(id="power-label")
                yield Sparkline([], id="power-spark", summary_function=max)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#cards", DataTable)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)
        self._rebuild_table()
        self._redraw_detail()
        self._redraw_summary()
        table.focus()
        self.set_interval(REDRAW_S, self._tick)
        self._run_worker()

    @work(thread=True, exclusive=True, name="burnin-run", exit_on_error=False)
    def _run_worker(self) -> None:
        execute_run(self.cfg, self.plan, self.db_path, self._run_slots, self.engine, self.post_message)

    # events from the run --------------------------------------------------------------------
    def on_run_started(self, msg: RunStarted) -> None:
        self.bench.run_id = msg.run_id
        self.records = msg.records
        self.sub_title = f"plan {self.plan.name} · run {msg.run_id}"

    def on_engine_update(self, msg: EngineUpdate) -> None:
        card = self.bench.apply(msg.key, msg.event)
        if card is not None:
            self._dirty.add(card.key)

    def provisional_why(self, key: str) -> str:
        """Why a card's verdict is not given yet ('' once it is), as the run's judge sees it."""
        card = self.bench.cards.get(key)
        if card is None or card.verdict is not None:
            return ""
        if not card.finished:
            return f"running ({min(card.stage_index + 1, card.n_stages)}/{card.n_stages}: {card.stage or 'starting'})"
        return "being judged"

    def on_run_finished(self, msg: RunFinished) -> None:
        before = self.bench.doc
        self.bench.finish(msg.doc)
        if self.retesting is not None and before is not None:
            self.bench.doc = merge_retest(before, msg.doc)
            self.retesting = None
        self.phase = "finished"
        self.exit_status = self.bench.exit_code()
        self._dirty.update(self.bench.cards)
        self._tick()

    def on_run_stopped(self, msg: RunStopped) -> None:
        self.phase = "stopped"
        self.exit_status = 1
        self.exit(self.exit_status, return_code=self.exit_status)

    def on_run_failed(self, msg: RunFailed) -> None:
        self.phase, self.error, self.exit_status = "failed", msg.error, msg.exit_code
        self._redraw_summary()

    # redraw ---------------------------------------------------------------------------------
    def _tick(self) -> None:
        """Apply what changed since the last tick: rows, the selected card's detail, the summary."""
        dirty, self._dirty = self._dirty, set()
        if self.only_attention and self._wanted() != self._visible:
            self._rebuild_table()
        else:
            table = self.query_one("#cards", DataTable)
            for key in dirty:
                if key in self._visible:
                    for col, value in _cells(self.bench.cards[key]).items():
                        try:
                            table.update_cell(key, col, value, update_width=col in ("actions", "serial", "model", "profile"))
                        except CellDoesNotExist:
                            pass
        if self.selected in dirty:
            self._redraw_detail()
        self._redraw_summary()

    def _wanted(self) -> list[str]:
        return [k for k, c in self.bench.cards.items() if not self.only_attention or c.needs_attention()]

    def _rebuild_table(self) -> None:
        table = self.query_one("#cards", DataTable)
        keep = self.selected
        table.clear()
        self._visible = self._wanted()
        for key in self._visible:
            cells = _cells(self.bench.cards[key])
            table.add_row(*(cells[c] for c, _, _ in COLUMNS), key=key)
        if keep in self._visible:
            table.move_cursor(row=self._visible.index(keep))
        elif self._visible:
            self.selected = self._visible[0]
            table.move_cursor(row=0)
        self._redraw_detail()

    def _redraw_detail(self) -> None:
        body = self.query_one("#detail-body", Static)
        card = self.bench.cards.get(self.selected or "")
        if card is None or (self.only_attention and self.selected not in self._visible):
            body.update(Text("no card needs attention" if self.only_attention else "no cards", style="dim"))
            self._spark(None)
            return
        why = self.provisional_why(card.key)
        if why:
            from rich.console import Group

            body.update(Group(render.detail_body(card), Text(f"verdict provisional: {why}", style="italic dim")))
        else:
            body.update(render.detail_body(card))
        self._spark(card)

    def _spark(self, card: CardState | None) -> None:
        temps = list(card.temps) if card else []
        powers = list(card.powers) if card else []
        self.query_one("#temp-label", Static).update(_spark_label("temp", "°C", temps))
        self.query_one("#power-label", Static).update(_spark_label("power", "W", powers))
        room = self.query_one("#telemetry").content_size.width or SPARK_MAX
        for wid, values in (("#temp-spark", temps), ("#power-spark", powers)):
            spark = self.query_one(wid, Sparkline)
            spark.styles.width = max(1, len(values)) if len(values) < room else "100%"
            spark.data = values

    def _redraw_summary(self) -> None:
        bar = self.query_one("#summary", Static)
        counts, total = self.bench.counts(), len(self.bench.cards)
        t = Text("[non-pass only] ", style="bold cyan") if self.only_attention else Text()
        t.append_text(render.summary_text(counts, total, self.phase == "finished"))
        if self.phase == "finished":
            t.append(f"   finished · results in {self.db_path} · q quits", style="dim")
        elif self.phase == "stopping":
            t.append("   stopping: closing the card workers…", style="bold yellow")
        elif self.phase == "failed":
            t = Text(f"run failed: {self.error}   q quits", style="bold red")
        for name, found in sorted(self.bench.hosts.items()):  # a line per host with findings of its own
            t.append("\n" + render.host_text(name, found), style="bold cyan")
        if t != self._last_summary:
            self._last_summary = t
            bar.update(t)

    def on_resize(self) -> None:
        self.call_after_refresh(self._redraw_detail)  # the sparklines follow the pane's new width

    # keys -----------------------------------------------------------------------------------
    def on_data_table_row_highlighted(self, msg: DataTable.RowHighlighted) -> None:
        if msg.row_key is not None and msg.row_key.value is not None:
            self.selected = msg.row_key.value
            self._redraw_detail()

    def on_data_table_row_selected(self, msg: DataTable.RowSelected) -> None:
        self.action_details()

    def action_details(self, history: bool = False) -> None:
        """Open the selected card's own screen (h: with its history next to the findings)."""
        if self.selected is None or self.selected not in self.bench.cards:
            return
        if isinstance(self.screen, CardScreen):
            if history and not self.screen.show_history:
                self.screen.action_toggle_history()
            return
        self.push_screen(CardScreen(self.selected, self._card_view, self._card_history, show_history=history))

    def action_history(self) -> None:
        self.action_details(history=True)

    def _card_view(self, key: str) -> Any:
        from rich.console import Group

        from harness.tui.story import card_chip_map

        card = self.bench.cards[key]
        slot = next((c for c in self.slots if c.key == key), None)
        cmap = card_chip_map(card, (slot.locator or {}).get("profile") if slot else None)
        parts: list[Any] = [render.detail_body(card, cmap)]
        if self.retesting == key:
            parts.insert(0, Text("retesting this card…", style="bold cyan"))
        why = self.provisional_why(key)
        if why:
            parts.insert(1, Text(f"verdict provisional: {why}", style="italic dim"))
        return Group(*parts)

    def _card_history(self, key: str) -> Any:
        from harness.store import Store
        from harness.tui.story import history_view
        from harness.views.history import history_timeline

        serial = self.bench.cards[key].serial
        if not serial or isinstance(self.db_path, Path) and not self.db_path.is_file():
            return history_view(serial, [])
        store = Store(self.db_path)
        try:
            entries = history_timeline(store, serial)
        finally:
            store.close()
        return history_view(serial, entries, self.bench.run_id)

    def action_retest(self) -> None:
        """Run the plan again on the selected card only; the other cards keep their results."""
        key = self.selected
        if key is None or key not in self.bench.cards:
            return
        if self.phase not in ("finished", "failed"):
            self.notify("the run is still going: retest once it has finished", severity="warning")
            return
        slot = next(c for c in self.slots if c.key == key)
        old = self.bench.cards[key]
        fresh = BenchState([slot], len(self.plan.stages)).cards[key]
        fresh.serial, fresh.model = old.serial or fresh.serial, old.model or fresh.model
        self.bench.cards[key] = fresh
        self.retesting, self.phase, self.error = key, "running", None
        self.last_retest = key
        self.bench.run_id = ""  # the retest's own run id arrives with RunStarted
        self.stop_flag.clear()
        self.engine = prepare_engine(self.stop_flag, self.cfg, [slot])
        self._run_slots = [slot]
        self._dirty.add(key)
        self._tick()
        self._redraw_detail()
        self.notify(f"retesting {old.serial or key}")
        self._run_worker()

    def action_repair(self) -> None:
        """Record what was done to the selected card (stored like ``burnin repair``)."""
        from harness.repairs import REPAIR_ACTIONS

        card = self.bench.cards.get(self.selected or "")
        if card is None or not card.serial:
            return
        proposed = next((a for a in card.live_actions() if a in REPAIR_ACTIONS), None)
        self.push_screen(RepairScreen(card.serial, list(REPAIR_ACTIONS), proposed),
                         lambda ans: self._save_repair(card.serial, ans))

    def _save_repair(self, serial: str, answer: dict[str, str] | None) -> None:
        if not answer:
            return
        from harness.repairs import record_repair
        from harness.store import Store

        store = Store(self.db_path)
        try:
            rep = record_repair(store, serial, answer["action"], answer.get("note"), answer.get("part"))
        except UsageError as e:
            self.notify(str(e), severity="error")
            return
        finally:
            store.close()
        self.notify(f"repair recorded: {serial} {rep['action']}; press r to retest it")
        if isinstance(self.screen, CardScreen) and self.screen.show_history:
            self.screen.load_history()

    def action_show_cards(self) -> None:
        self.query_one("#cards", DataTable).focus()

    def action_down(self) -> None:
        self._move(+1)

    def action_up(self) -> None:
        self._move(-1)

    def _move(self, step: int) -> None:
        table = self.query_one("#cards", DataTable)
        if self.focused is table or self.focused is None:
            table.action_cursor_down() if step > 0 else table.action_cursor_up()
        else:
            scroll = self.query_one("#detail-scroll", VerticalScroll)
            scroll.scroll_relative(y=step, animate=False)

    def action_filter(self) -> None:
        self.only_attention = not self.only_attention
        self._rebuild_table()
        self._redraw_summary()

    def action_request_quit(self) -> None:
        """Finished: quit. Running: ask first, then stop the workers cleanly (results stay)."""
        if self.phase in ("finished", "failed", "stopped"):
            self.exit(self.exit_status, return_code=self.exit_status)
        elif not isinstance(self.screen, QuitScreen | RepairScreen):
            self.push_screen(QuitScreen(self.bench.run_id, self.db_path), self._quit_answer)

    async def action_quit(self) -> None:
        self.action_request_quit()

    def _quit_answer(self, stop: bool | None) -> None:
        """Yes quits whatever happened meanwhile: the run may have ended while the question was up."""
        if not stop:
            return
        if self.phase in ("running", "stopping"):
            self.phase = "stopping"
            self.stop_flag.set()
            self._redraw_summary()
        else:
            self.exit(self.exit_status, return_code=self.exit_status)

    def card_row_keys(self) -> list[str]:
        """The card keys the table shows, top to bottom (for tests and scripting)."""
        return list(self._visible)


def merge_retest(before: dict[str, Any], retest: dict[str, Any]) -> dict[str, Any]:
    """The run's document with the retested card's entry replaced by the retest's (same host/slot)."""
    new = {c.get("key") or f"{c.get('host')}/{c.get('slot')}": c for c in retest.get("cards", [])}
    cards = [new.pop(c.get("key") or f"{c.get('host')}/{c.get('slot')}", c) for c in before.get("cards", [])]
    return {**before, "cards": cards + list(new.values()), "retest_run_ids":
            [*before.get("retest_run_ids", []), retest.get("run_id")]}


def _spark_label(name: str, unit: str, values: list[float]) -> Text:
    t = Text(f"{name} ", style="bold")
    if not values:
        return t + Text("no samples yet", style="dim")
    t.append(f"{values[-1]:.0f} {unit}", style="bold")
    t.append(f"  ({min(values):.0f}–{max(values):.0f})", style="dim")
    return t


def run_tui(cfg: Any, plan: Any, db: str | None) -> int:
    """Entry point of ``burnin tui``; exit code as ``burnin run`` (0 all pass, 1 otherwise)."""
    from harness.discovery import discover_cards
    from harness.launch import open_store
    from harness.locks import lock_cards

    try:
        store = open_store(db, cfg)  # checked before any card starts, as `burnin run` does
        db_path = store.path
        store.close()
        cards = discover_cards(cfg)
        locks = lock_cards(cards, db_path)
    except (UsageError, HarnessUnavailable) as e:
        print(f"burnin: {line(e)}", file=sys.stderr)
        return int(getattr(e, "exit_code", 3))
    try:
        app = BenchApp(cfg, plan, db_path, cards)
        code = app.run()
        code = app.exit_status if code is None else code
        _after(app, db_path)
    finally:
        locks.release()
    return int(code)


def _after(app: BenchApp, db_path: Any) -> None:
    """Leave the verdicts in the terminal's scrollback once the screen is gone."""
    rid = app.bench.run_id
    if app.phase == "finished" and app.bench.doc is not None:
        from harness.views.table import print_verdicts

        print_verdicts(app.bench.doc)
    elif app.phase in ("stopped", "stopping", "running") and rid:
        print(line(f"burnin: run {rid} stopped; results so far are in {db_path}; "
                   f"continue it with: burnin resume {rid} --db {db_path}"), file=sys.stderr)
    elif app.phase == "failed":
        print(f"burnin: {line(app.error)}", file=sys.stderr)
