"""How long the Qt event loop pauses: a 20 ms timer whose late ticks are the window's freezes."""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import Qt, QTimer

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


def wait_until(app, done, timeout_s: float, poll_s: float = 0.005) -> None:
    """Run the event loop until ``done()`` is true; TimeoutError after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > end:
            raise TimeoutError(f"the action did not finish within {timeout_s:.0f} s")
        app.processEvents()
        time.sleep(poll_s)


def settle(app, seconds: float, poll_s: float = 0.005) -> None:
    """Run the event loop for ``seconds`` (pending redraws and continuations land)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(poll_s)
