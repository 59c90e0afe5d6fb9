"""Phantom generation time at the default 256 x 256 x 128 grid, against drawing as many normal
random numbers (float32) in the same run: `python -m benchmarks.bench_phantom`."""

from __future__ import annotations

from itertools import count

import numpy as np

from benchmarks.timing import median_seconds, verdict
from napari_fvlm.core.phantom import generate_phantom

SHAPE = (128, 256, 256)
TARGET_S = 1.0
REPEATS = 5


def main() -> None:
    generate_phantom(100, shape=SHAPE)  # warm-up: imports and first-touch memory
    seeds = count()
    baseline = median_seconds(lambda: np.random.default_rng(next(seeds)).normal(size=SHAPE).astype(np.float32),
                              REPEATS)
    print(f"baseline: np.random normal {SHAPE} float32: {baseline:.3f}s")
    median = median_seconds(lambda: generate_phantom(next(seeds), shape=SHAPE), REPEATS)
    print(f"phantom 256x256x128 generation: {median:.3f}s (target <= {TARGET_S}) {verdict(median <= TARGET_S)}")


if __name__ == "__main__":
    main()
