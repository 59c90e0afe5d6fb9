"""Bring a label volume onto a CT's grid, or refuse a mask that belongs to another scan.

Masks from TotalSegmentator share the CT's grid; masks from elsewhere (a coarser export, another
orientation of the same scan) are resampled nearest-neighbour through world space. A mask whose
labelled region lies mostly outside the CT cannot be of this scan and is refused.
"""

from __future__ import annotations

import numpy as np

from ..errors import FvlmInputError
from ..io.labels import present_values
from ..resample import resample
from ..volume import Volume

MIN_WORLD_OVERLAP = 0.5  # share of the mask's labelled box that must lie inside the CT


def world_box(affine: np.ndarray, lo_zyx, hi_zyx) -> tuple[np.ndarray, np.ndarray]:
    """RAS mm box (min, max) of the voxels lo..hi (inclusive, z y x), to their outer faces."""
    lo = np.asarray(lo_zyx, float)[::-1] - 0.5
    hi = np.asarray(hi_zyx, float)[::-1] + 0.5
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    world = corners @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine, float)[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def _labelled_box(labels: Volume) -> tuple[np.ndarray, np.ndarray]:
    present = [np.flatnonzero(np.any(labels.array, axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
    if any(p.size == 0 for p in present):  # an empty mask: judge by its whole grid
        return world_box(labels.affine, (0, 0, 0), np.array(labels.shape) - 1)
    return world_box(labels.affine, [p[0] for p in present], [p[-1] for p in present])


def world_overlap(ct: Volume, labels: Volume) -> float:
    """Share (0..1) of the mask's labelled RAS box that lies inside the CT's RAS box."""
    ct_lo, ct_hi = world_box(ct.affine, (0, 0, 0), np.array(ct.shape) - 1)
    lo, hi = _labelled_box(labels)
    inside = np.clip(np.minimum(hi, ct_hi) - np.maximum(lo, ct_lo), 0, None)
    size = np.maximum(hi - lo, 1e-6)
    return float(np.prod(inside / size))


def align_labels(ct: Volume, labels: Volume) -> Volume:
    """``labels`` on ``ct``'s grid (and source, for writing in its geometry), names kept."""
    if labels.same_grid(ct):
        return ct.with_array(labels.array, labels.labels)
    overlap = world_overlap(ct, labels)
    if overlap < MIN_WORLD_OVERLAP:
        raise FvlmInputError(
            f"the masks do not line up with this CT: only {overlap:.0%} of the labelled region lies "
            f"inside the scan, so they belong to another scan; segment this CT or open its own masks.")
    array = resample(labels.array, labels.affine, ct.affine, ct.shape, order=0)
    names = labels.labels
    if names is not None:
        present = set(present_values(array).tolist())
        names = {k: v for k, v in names.items() if k in present}
    return ct.with_array(array, names)
