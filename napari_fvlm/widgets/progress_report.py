"""Progress of the running analysis in the panel's own bar.

napari's activity dock is not used: creating its first bar repaints the whole window on the GUI
thread (seconds on a busy CPU).

Jobs report often (every encoding window, every half second while the model loads); the bars
are redrawn at most every `REDRAW_MS`, with the latest report, so reporting never costs the
window its responsiveness.
"""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QProgressBar

REDRAW_MS = 200


class ProgressReport:
    """Drives the panel's QProgressBar from the job's (fraction, message)."""

    def __init__(self, bar: QProgressBar) -> None:
        self.bar = bar
        self._latest: tuple[int, str] | None = None
        self._timer = QTimer(bar)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._redraw)

    def start(self) -> None:
        self._timer.stop()
        self._latest = None
        self.bar.setValue(0)
        self.bar.setFormat("%p% starting")

    def update(self, fraction: float, message: str) -> None:
        self._latest = (int(round(100 * min(max(fraction, 0.0), 1.0))), message)
        if not self._timer.isActive():
            self._timer.start(REDRAW_MS)

    def shown(self) -> tuple[int, str]:
        """(percent, text) the panel's bar shows now."""
        return self.bar.value(), self.bar.text()

    def _redraw(self) -> None:
        if self._latest is None:
            return
        percent, message = self._latest
        self._latest = None
        self.bar.setValue(percent)
        self.bar.setFormat(f"%p% {message}")

    def finish(self, completed: bool) -> None:
        self._timer.stop()
        self._latest = None
        self.bar.setValue(100 if completed else 0)
        self.bar.setFormat("%p%")

    def close(self) -> None:
        """Stop redrawing (the viewer closes mid-run)."""
        self._timer.stop()
        self._latest = None
