"""The one timer of the benchmarks: the median wall time of a few runs, and the target line."""

from __future__ import annotations

import statistics
import time


def median_seconds(run, repeats: int = 5) -> float:
    """Median wall-clock seconds of ``run()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"
