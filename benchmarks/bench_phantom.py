"""Phantom generation time at the default 256 x 256 x 128 grid, against drawing as many normal
random numbers (float32) in the same run: `python -m benchmarks.bench_phantom`."""

from __future__ import annotations

import statistics
import time

import numpy as np

from napari_fvlm.core.phantom import generate_phantom

SHAPE = (128, 256, 256)
TARGET_S = 1.0
REPEATS = 5


def _median_seconds(run, repeats: int = REPEATS) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        run(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    generate_phantom(100, shape=SHAPE)  # warm-up: imports and first-touch memory
    baseline = _median_seconds(lambda i: np.random.default_rng(i).normal(size=SHAPE).astype(np.float32))
    print(f"baseline: np.random normal {SHAPE} float32: {baseline:.3f}s")
    median = _median_seconds(lambda i: generate_phantom(i, shape=SHAPE))
    verdict = "ok" if median <= TARGET_S else "MISSED"
    print(f"phantom 256x256x128 generation: {median:.3f}s (target <= {TARGET_S}) {verdict}")


if __name__ == "__main__":
    main()
