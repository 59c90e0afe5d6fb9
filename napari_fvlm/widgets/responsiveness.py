"""How long the Qt event loop pauses: a 20 ms timer whose late ticks are the window's freezes."""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import QEventLoop, Qt, QTimer

TICK_MS = 20


class GapMeter:
    """Records the time of every tick of a `TICK_MS` timer; ``largest_gap_s`` is the longest wait."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self.timer.start(TICK_MS)

    def stop(self) -> float:
        self.timer.stop()
        self.ticks.append(time.perf_counter())
        return self.largest_gap_s()

    def largest_gap_s(self) -> float:
        return float(np.diff(self.ticks).max()) if len(self.ticks) > 1 else 0.0

    def gaps_over(self, seconds: float) -> list[tuple[float, float]]:
        """(start, length) of every gap longer than ``seconds``, relative to the first tick."""
        ticks = np.asarray(self.ticks)
        gaps = np.diff(ticks)
        return [(float(ticks[i] - ticks[0]), float(gaps[i])) for i in np.flatnonzero(gaps > seconds)]


def wait_until(done, timeout_s: float, poll_ms: int = 5) -> None:
    """Run the event loop until ``done()`` is true; TimeoutError after ``timeout_s``.

    A real (nested) event loop, not a ``processEvents`` spin: only an event loop carries out
    ``deleteLater``, and napari hides its activity spinner when a finished progress bar is
    deleted, so under a spin the spinner animated for ever and repainted the window 17 times a
    second, which a user's running napari never does."""
    end = time.monotonic() + timeout_s
    _run_loop(lambda: done() or time.monotonic() > end, poll_ms)
    if not done():
        raise TimeoutError(f"the action did not finish within {timeout_s:.0f} s")


def settle(seconds: float, poll_ms: int = 5) -> None:
    """Run the event loop for ``seconds`` (pending redraws and continuations land)."""
    end = time.monotonic() + seconds
    _run_loop(lambda: time.monotonic() >= end, poll_ms)


def _run_loop(finished, poll_ms: int) -> None:
    """Run a nested event loop until ``finished()``, checked every ``poll_ms``."""
    if finished():
        return
    loop = QEventLoop()
    poll = QTimer()
    poll.timeout.connect(lambda: finished() and loop.quit())
    poll.start(poll_ms)
    loop.exec()
    poll.stop()
