"""Progress of the running analysis, shown twice: the panel's own bar and napari's activity dock."""

from __future__ import annotations

from qtpy.QtWidgets import QProgressBar


class ProgressReport:
    """Drives the panel's QProgressBar and a napari `progress` bar from the job's (fraction, message)."""

    def __init__(self, bar: QProgressBar, title: str = "fVLM analysis") -> None:
        self.bar = bar
        self.title = title
        self._napari = None

    def start(self) -> None:
        from napari.utils import progress

        self.close()
        self.bar.setValue(0)
        self._napari = progress(total=100, desc=self.title)

    def update(self, fraction: float, message: str) -> None:
        percent = int(round(100 * min(max(fraction, 0.0), 1.0)))
        self.bar.setValue(percent)
        self.bar.setFormat(f"%p% {message}")
        bar = self._napari
        if bar is not None:  # napari's handlers may process events: the job can finish in between
            bar.set_description(f"fVLM: {message}")
            if self._napari is bar:
                bar.update(max(0, percent - bar.n))

    def finish(self, completed: bool) -> None:
        self.bar.setValue(100 if completed else 0)
        self.bar.setFormat("%p%")
        self.close()

    def close(self) -> None:
        """Remove napari's bar (also when the viewer closes mid-run)."""
        if self._napari is not None:
            self._napari.close()
            self._napari = None
