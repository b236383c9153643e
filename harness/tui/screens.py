"""The stop-and-quit question, asked only while a run is still going."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


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
