"""What every lab offers the main window."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget


class Lab(QWidget):
    """A lab: its views (this widget), its controls panel, and run control.

    Signals: ``status(dict)`` with keys among step, loss, running; ``message(str, bool)`` with
    (text, is_error); ``frame_drawn()`` after each GL frame.
    """

    key = "lab"
    title = "Lab"
    status = Signal(dict)
    message = Signal(str, bool)
    frame_drawn = Signal()

    def start(self) -> None:
        """Begin the lab's first computation; labs are created with start=False by the main window."""

    def controls(self) -> QWidget:
        raise NotImplementedError

    def help_html(self) -> str:
        raise NotImplementedError

    def toggle_run(self) -> None:
        """Space: start (from a default point if nothing runs yet) or pause/resume."""

    def single_step(self) -> None:
        """S: advance every run by one step (pausing them)."""

    def reset(self) -> None:
        """R: stop and clear every run."""

    def active_view(self) -> QWidget:
        return self

    def set_device(self, device: str) -> None:
        """New computations go to this torch device."""

    def save_state(self) -> None:
        """Persist the lab's settings (called on close and on change)."""

    def shutdown(self) -> None:
        """Stop every worker and wait for it: called before the window closes."""
