"""Stand-ins for the GUI tests."""

from PySide6.QtCore import QObject, Signal


class FakeRunner(QObject):
    """The runner interface (ProcessRunner's signals and controls), driven by the test: it records what it was
    asked to run (``target``, ``kwargs``) and runs nothing."""

    batch = Signal(object)
    done = Signal(object)
    failed = Signal(str)

    def __init__(self, target, kwargs, **options) -> None:
        super().__init__()
        self.target, self.kwargs, self.options = target, kwargs, options
        self.aborted = False

    def start(self) -> None:
        pass

    def abort(self, *_) -> None:
        self.aborted = True

    def isRunning(self) -> bool:
        return not self.aborted

    def is_paused(self) -> bool:
        return False
