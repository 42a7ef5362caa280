"""Small widgets: a cached plotext figure, and modal screens for help and confirmation."""

from __future__ import annotations

from typing import Callable, Hashable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option


class PlotView(Widget):
    """Renders ``draw(width, height)`` (an ANSI string) and caches it per (size, ``stamp()``).

    The figure is kept as ready-made lines (strips), so a repaint of the screen that does not
    change the figure (a status line or log update nearby) costs nothing here.
    """

    def __init__(self, draw: Callable[[int, int], str], stamp: Callable[[], Hashable], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._draw, self._stamp = draw, stamp
        self._key: Hashable = None
        self._strips: list[Strip] = []
        self._text = Text("")
        self.render_count = 0

    def _current_strips(self) -> list[Strip]:
        width, height = self.content_size
        key = (width, height, self._stamp())
        if key != self._key and width > 0 and height > 0:
            text = Text.from_ansi(self._draw(width, height), no_wrap=True, overflow="crop")
            console = self.app.console
            lines = console.render_lines(text, console.options.update_dimensions(width, height), pad=True)
            base = self.rich_style
            self._strips = [Strip(line, width).apply_style(base) for line in lines]
            self._text = text
            self._key = key
            self.render_count += 1
        return self._strips

    def render(self) -> Text:
        """The current figure as text (Textual paints ``render_line``; this is for reading it)."""
        self._current_strips()
        return self._text

    def render_line(self, y: int) -> Strip:
        strips = self._current_strips()
        return strips[y] if y < len(strips) else Strip.blank(self.content_size.width, self.rich_style)

    def refresh_if_stale(self) -> None:
        width, height = self.content_size
        if (width, height, self._stamp()) != self._key:
            self.refresh()


class HelpScreen(ModalScreen[None]):
    """Every key of the screen underneath and of the app, generated from their bindings."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, rows: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("Keys\n\n", style="bold")
        width = max((len(k) for k, _ in self.rows), default=4)
        for key, description in self.rows:
            text.append(f"  {key:<{width}}  ", style="bold cyan")
            text.append(f"{description}\n")
        text.append("\nCtrl+P opens the command palette with the same actions. Esc closes this.", style="dim")
        with VerticalScroll(id="help-box"):
            yield Static(text, id="help-text")


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; dismisses with True for yes."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Grid(id="confirm-box"):
            yield Label(self.question, id="confirm-question")
            yield Button("Yes (y)", variant="error", id="yes")
            yield Button("No (n)", variant="primary", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ChoiceScreen(ModalScreen[str | None]):
    """Pick one of ``choices`` (id, shown text) from a list; dismisses with the id, None on escape."""

    BINDINGS = [Binding("escape", "dismiss_none", "Close")]

    def __init__(self, title: str, choices: list[tuple[str, str]], current: str | None = None) -> None:
        super().__init__()
        self.heading = title
        self.choices = choices
        self.current = current

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="choice-box"):
            yield Label(Text(self.heading), classes="section")
            yield OptionList(*(Option(Text(shown), id=str(i)) for i, (_, shown) in enumerate(self.choices)),
                             id="choices")

    def on_mount(self) -> None:
        options = self.query_one("#choices", OptionList)
        ids = [choice for choice, _ in self.choices]
        if self.current in ids:
            options.highlighted = ids.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[int(event.option.id or 0)][0])

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class AskScreen(ModalScreen[str | None]):
    """One line of text (e.g. axis ranges); dismisses with it on Enter, None on escape."""

    BINDINGS = [Binding("escape", "dismiss_none", "Close")]

    def __init__(self, question: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.question, self.value, self.placeholder = question, value, placeholder

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="ask-box"):
            yield Label(Text(self.question))
            yield Input(self.value, placeholder=self.placeholder, id="answer")

    def on_mount(self) -> None:
        self.query_one("#answer", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
