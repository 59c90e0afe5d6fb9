"""Worker lifecycle: one job at a time off the GUI thread, a cancel flag, and named continuations.

The job runs in napari's thread pool and never touches widgets; its outcome comes back on the GUI
thread through Qt signals and is routed to one of the caller's continuations: done, refused (bad
input, with a message), cancelled, or failed (a bug: napari also shows its traceback).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from qtpy.QtCore import QEvent, QObject, Signal

from .jobs import CANCELLED, Refused, guarded


@dataclass
class Continuations:
    """What to call on the GUI thread with a job's outcome."""

    done: Callable[[object], None]
    refused: Callable[[str], None]
    cancelled: Callable[[], None]
    failed: Callable[[Exception], None]


class Runner(QObject):
    """Runs one job at a time; ``progressed`` relays the job's progress to the GUI thread."""

    progressed = Signal(float, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.kind: str | None = None  # what runs now ("analysis", "query"), None when idle
        self.worker = None
        self._then: Continuations | None = None  # dropped once routed: workers outlive their jobs
        self._cancel = threading.Event()
        self._finished = threading.Event()  # set by the worker thread when the job body has returned
        self._finished.set()

    @property
    def busy(self) -> bool:
        return self.kind is not None

    def start(self, kind: str, job: Callable, *args, then: Continuations, with_progress: bool = False) -> bool:
        """Start ``job(*args[, progress=, cancel=])`` in a worker; False (nothing started) when busy."""
        from napari.qt.threading import create_worker

        if self.busy:
            return False
        cancel, finished = threading.Event(), threading.Event()
        self._cancel, self._finished, self.kind, self._then = cancel, finished, kind, then
        extra = {"progress": self.progressed.emit, "cancel": cancel} if with_progress else {}

        def body():
            try:
                return guarded(job, *args, **extra)
            finally:
                finished.set()

        worker = create_worker(body, _start_thread=False)
        worker.returned.connect(self._route)  # bound methods: no reference to ``then`` stays behind
        worker.errored.connect(self._fail)
        self.worker = worker
        worker.start()
        return True

    def cancel(self) -> bool:
        """Ask the running job to stop at its next check; False when nothing runs."""
        if not self.busy:
            return False
        self._cancel.set()
        return True

    def stop(self, wait_s: float = 2.0) -> bool:
        """Cancel and wait up to ``wait_s`` for the job to return; True when no job is left running."""
        self._cancel.set()
        return self._finished.wait(wait_s)

    def is_finished(self) -> bool:
        """True when no job body is running in a worker thread (whether or not its outcome was routed)."""
        return self._finished.is_set()

    def _take(self) -> Continuations:
        then, self._then, self.kind, self.worker = self._then, None, None, None
        return then

    def _route(self, outcome) -> None:
        then = self._take()
        if isinstance(outcome, Refused):
            then.refused(outcome.message)
        elif outcome is CANCELLED:
            then.cancelled()
        else:
            then.done(outcome)

    def _fail(self, err: Exception) -> None:
        self._take().failed(err)


class CloseWatcher(QObject):
    """Calls ``on_close`` when a widget's top-level window is closed (hidden, but not minimised).

    Qt hides a window when it closes; a minimise is a *spontaneous* hide from the window system.
    The window is held weakly: a dock widget must not keep the viewer alive.
    """

    def __init__(self, on_close: Callable[[], object], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.on_close = on_close
        self._window = None

    def watch(self, widget) -> None:
        window = widget.window()
        if window is not widget and window is not self.watched():
            window.installEventFilter(self)
            self._window = weakref.ref(window)

    def watched(self):
        return self._window() if self._window is not None else None

    def eventFilter(self, obj, event) -> bool:
        if obj is self.watched() and event.type() == QEvent.Type.Hide and not event.spontaneous():
            self.on_close()
        return False
