"""Is an image a CT in Hounsfield units? If not, say why, and window it from its own values.

A CT in HU has air near -1000 and spans hundreds of units; an MRI, a PET, a photograph, a CT stored
without its rescale, or normalised intensities do not. Judged on a strided sample (about a million
voxels) so that opening a large file stays fast.
"""

from __future__ import annotations

import numpy as np

SAMPLE_VOXELS = 1 << 20
MIN_HU_SPAN = 200.0  # a CT spans at least air (-1000) to soft tissue (0..80)
WINDOW_PERCENTILES = (1.0, 99.0)


def _sample(array: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil((array.size / SAMPLE_VOXELS) ** (1 / 3))))
    return array[::step, ::step, ::step]


def not_ct_reason(array: np.ndarray) -> str:
    """Why ``array`` does not look like a CT in HU, in a few words; "" when it does."""
    if array.dtype.kind == "b" or (array.dtype.kind in "iu" and array.dtype.itemsize == 1):
        return "its voxels are 8-bit values (0..255), not Hounsfield units"
    sample = _sample(array)
    lo, hi = float(sample.min()), float(sample.max())
    if lo >= 0:
        return (f"its values ({lo:g}..{hi:g}) have no negative part, while air is -1000 HU in a CT "
                f"(an MRI, or a CT stored without its rescale?)")
    if hi - lo < MIN_HU_SPAN:
        return f"its values span only {lo:g}..{hi:g} (normalised intensities?), not Hounsfield units"
    return ""


def intensity_window(array: np.ndarray) -> tuple[float, float]:
    """(low, high) display limits from the image's own values: its 1st and 99th percentiles."""
    sample = _sample(array)
    lo, hi = (float(v) for v in np.percentile(sample, WINDOW_PERCENTILES))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)
