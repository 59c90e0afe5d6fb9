"""DICOM series reading: `read_dicom_series` against decoding every file with plain pydicom.

The baseline is the least any reader must do (`[pydicom.dcmread(f).pixel_array for f in files]`);
the reader adds grouping, ordering, checks, HU rescale and reorientation on top, and should cost
at most 1.5x of it. Run: `python -m benchmarks.bench_dicom`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom

from benchmarks.timing import verdict
from napari_fvlm.core.io.dicom import read_dicom_series
from tests.dicom_fixtures import SeriesGeometry, write_ct_series

TARGET_RATIO = 1.5
REPEATS = 3


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 2000, size=(300, 512, 512), dtype=np.int16)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        write_ct_series(folder, hu, SeriesGeometry(pixel_spacing=(0.7, 0.7)), seed=1)
        del hu
        files = sorted(folder.iterdir())

        def baseline() -> None:
            [pydicom.dcmread(f).pixel_array for f in files]

        def reader() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a clean series must read without any warning
                read_dicom_series(folder)

        baseline(), reader()  # warm the page cache and imports
        base_s, reader_s = [], []
        for _ in range(REPEATS):  # interleaved, so a busy machine slows both alike
            base_s.append(_seconds(baseline))
            reader_s.append(_seconds(reader))
    base, ours = statistics.median(base_s), statistics.median(reader_s)
    ratio = ours / base
    print(f"  pydicom read-all {base:.3f} s, read_dicom_series {ours:.3f} s (median of {REPEATS})")
    print(f"dicom 300-slice series vs pydicom read-all: {ratio:.2f}x (target <= {TARGET_RATIO}) "
          f"{verdict(ratio <= TARGET_RATIO)}")


if __name__ == "__main__":
    main()
