"""The bench screen's other screens: the stop-and-quit question (asked only while a run is still
going), the card view (Enter, h: history) and the repair dialog."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Select, Static


class QuitScreen(ModalScreen[bool]):
    """Answers True (stop the run and quit) or False (keep running)."""

    DEFAULT_CSS = """
    QuitScreen { align: center middle; }
    QuitScreen > Vertical {
        width: 72; height: auto; padding: 1 2; border: thick $warning; background: $surface;
    }
    QuitScreen #question { margin-bottom: 1; }
    QuitScreen Horizontal { height: auto; align-horizontal: center; }
    QuitScreen Button { margin: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Stop and quit"),
        Binding("n,escape", "answer(False)", "Keep running"),
        Binding("q", "answer(False)", show=False),
    ]

    def __init__(self, run_id: str, db_path: Path) -> None:
        super().__init__()
        self.run_id, self.db_path = run_id, db_path

    def compose(self) -> ComposeResult:
        rid = self.run_id or "(not started)"
        text = Text.assemble(
            ("The run is still going.", "bold"), "\n\nStop it and quit? Card workers are stopped; results "
            f"measured so far stay in {self.db_path}.\nContinue later with: ",
            (f"burnin resume {rid} --db {self.db_path}", "bold"),
        )
        with Vertical():
            yield Static(text, id="question")
            with Horizontal():
                yield Button("Stop and quit (y)", variant="error", id="yes")
                yield Button("Keep running (n)", variant="primary", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, stop: bool) -> None:
        self.dismiss(stop)


class CardScreen(Screen[None]):
    """One card, full screen: its findings (with the chip map) and tests, and with ``h`` its
    history next to them. Redrawn from the app's state while the card is still running."""

    DEFAULT_CSS = """
    CardScreen #card-cols { height: 1fr; }
    CardScreen #card-now { width: 1fr; padding: 0 1; }
    CardScreen #card-history { width: 45%; padding: 0 1; border-left: solid $primary-darken-2; }
    CardScreen #card-history.hidden { display: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter", "close", "Back to cards"),
        Binding("h", "toggle_history", "History"),
        Binding("r", "app.retest", "Retest"),
        Binding("p", "app.repair", "Record repair"),
    ]
    REFRESH_S = 0.3

    def __init__(self, key: str, render: Callable[[str], RenderableType],
                 history: Callable[[str], RenderableType], show_history: bool = False) -> None:
        super().__init__()
        self.key, self._view_of, self._history_of, self.show_history = key, render, history, show_history

    def compose(self) -> ComposeResult:
        with Horizontal(id="card-cols"):
            yield VerticalScroll(Static(id="card-body"), id="card-now")
            yield VerticalScroll(Static(id="card-history-body"), id="card-history",
                                 classes="" if self.show_history else "hidden")
        yield Footer()

    def on_mount(self) -> None:
        self.redraw()
        if self.show_history:
            self.load_history()
        self.set_interval(self.REFRESH_S, self.redraw)

    def redraw(self) -> None:
        self.query_one("#card-body", Static).update(self._view_of(self.key))

    def load_history(self) -> None:
        self.query_one("#card-history-body", Static).update(self._history_of(self.key))

    def action_toggle_history(self) -> None:
        self.show_history = not self.show_history
        self.query_one("#card-history").set_class(not self.show_history, "hidden")
        if self.show_history:
            self.load_history()

    def action_close(self) -> None:
        self.dismiss(None)


class RepairScreen(ModalScreen[dict[str, str] | None]):
    """What was done to the card: an action of the contract's vocabulary, the part, a note."""

    DEFAULT_CSS = """
    RepairScreen { align: center middle; }
    RepairScreen > Vertical { width: 76; height: auto; padding: 1 2; border: thick $accent; background: $surface; }
    RepairScreen Input, RepairScreen Select { margin-bottom: 1; }
    RepairScreen Horizontal { height: auto; align-horizontal: center; }
    RepairScreen Button { margin: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, serial: str, actions: list[str], proposed: str | None) -> None:
        super().__init__()
        self.serial, self.actions, self.proposed = serial, actions, proposed

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text.assemble(("Record a repair of ", ""), (self.serial, "bold cyan")), id="repair-title")
            yield Select([(a, a) for a in self.actions], value=self.proposed or Select.BLANK, prompt="action",
                         id="repair-action")
            yield Input(placeholder="part replaced, e.g. fan 0 or GDDR chip 12", id="repair-part")
            yield Input(placeholder="note: what you saw, what you did", id="repair-note")
            with Horizontal():
                yield Button("Save (enter)", variant="primary", id="save")
                yield Button("Cancel (esc)", id="cancel")

    def _answer(self) -> None:
        action = self.query_one("#repair-action", Select).value
        if not isinstance(action, str):
            self.notify("choose the action that was done", severity="warning")
            return
        self.dismiss({"action": action, "part": self.query_one("#repair-part", Input).value.strip(),
                      "note": self.query_one("#repair-note", Input).value.strip()})

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "repair-part":  # a form: enter moves on to the note, then saves
            self.query_one("#repair-note", Input).focus()
        else:
            self._answer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self._answer()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
