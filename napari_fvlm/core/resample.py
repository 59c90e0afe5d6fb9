"""The one resampler: move an array from one voxel grid to another through world space.

Used for CT -> model spacing (linear), masks on another grid (nearest) and heatmaps from the
token grid to the CT grid (linear). Grids are given by their voxel-to-RAS affines, so any two
grids that share world space line up, whatever their orientation.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def zyx_matrix(dst_affine: np.ndarray, src_affine: np.ndarray) -> np.ndarray:
    """4x4 map from destination voxel (z, y, x) to source voxel (z, y, x)."""
    ijk = np.linalg.inv(np.asarray(src_affine, float)) @ np.asarray(dst_affine, float)
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1.0  # (z, y, x) <-> (i, j, k)
    return perm @ ijk @ perm


def resample(array: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray,
             dst_shape: tuple[int, int, int], order: int = 1, cval: float = 0.0,
             output_dtype=None) -> np.ndarray:
    """Values of ``array`` (on the grid of ``src_affine``) on the grid (``dst_affine``, ``dst_shape``).

    ``order`` 0 is nearest neighbour (labels), 1 trilinear. Outside the source: ``cval``.
    """
    m = zyx_matrix(dst_affine, src_affine)
    linear, offset = m[:3, :3], m[:3, 3]
    out_dtype = output_dtype or (array.dtype if order == 0 else np.float32)
    if order in (0, 1) and np.allclose(linear, np.diag(np.diag(linear)), atol=1e-9):
        coords = [np.diag(linear)[a] * np.arange(dst_shape[a]) + offset[a] for a in range(3)]
        return _separable(array, coords, order, cval).astype(out_dtype, copy=False)
    source = array if order == 0 else np.asarray(array, dtype=np.float32)
    # "grid-constant": a source voxel covers its whole box, so points in the outer half of an edge
    # voxel still take (or blend with) its value; plain "constant" would treat them as outside.
    return ndimage.affine_transform(source, linear, offset=offset, output_shape=tuple(dst_shape),
                                    order=order, mode="grid-constant", cval=cval, output=out_dtype,
                                    prefilter=False)


def grid_affine(affine: np.ndarray, shape_zyx, new_spacing_zyx) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of a grid covering the same field of view at ``new_spacing_zyx`` mm.

    Directions and the world position of voxel (0, 0, 0)'s corner are kept.
    """
    affine = np.asarray(affine, float)
    old = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # (i, j, k) = (x, y, z)
    new = np.asarray(new_spacing_zyx, float)[::-1]
    directions = affine[:3, :3] / old
    extent = old * np.asarray(shape_zyx, float)[::-1]
    shape_xyz = np.maximum(1, np.round(extent / new)).astype(int)
    out = np.eye(4)
    out[:3, :3] = directions * new
    corner = affine[:3, 3] - directions @ (old / 2)  # outer corner of voxel 0
    out[:3, 3] = corner + directions @ (new / 2)
    return out, tuple(int(s) for s in shape_xyz[::-1])


def _separable(array: np.ndarray, coords: list[np.ndarray], order: int, cval: float) -> np.ndarray:
    """Axis-aligned nearest/linear resampling, one axis at a time (same result as the general path).

    Source voxel index ``c`` covers [c - 0.5, c + 0.5); outside the source, values are ``cval``.
    Only the part of the source the output touches is read, and axes that shrink the most go
    first, so later passes work on small arrays.
    """
    crop = []
    for axis, c in enumerate(coords):
        lo = int(np.clip(np.floor(c.min()) - 1, 0, array.shape[axis]))
        hi = int(np.clip(np.ceil(c.max()) + 2, lo, array.shape[axis]))
        crop.append(slice(lo, hi))
        coords[axis] = c - lo
    array = array[tuple(crop)]
    if array.size == 0:
        return np.full(tuple(len(c) for c in coords), cval, dtype=np.float32 if order else array.dtype)
    sizes = array.shape
    order_of_axes = sorted(range(3), key=lambda a: len(coords[a]) / sizes[a])
    if order == 0:
        index = [np.floor(c + 0.5).astype(np.int64) for c in coords]
        inside = [(i >= 0) & (i < n) for i, n in zip(index, sizes)]
        out = array
        for axis in order_of_axes:
            out = np.take(out, np.clip(index[axis], 0, sizes[axis] - 1), axis=axis)
        outside = ~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])
        if outside.any():
            out = out.copy()
            out[outside] = cval
        return out
    out = array
    for axis in order_of_axes:
        out = _linear_1d(out, coords[axis], axis, cval)
    return out


def _linear_1d(values: np.ndarray, coords: np.ndarray, axis: int, cval: float) -> np.ndarray:
    """Linear interpolation along one axis; a neighbour outside the array has the value ``cval``."""
    n = values.shape[axis]
    low = np.floor(coords).astype(np.int64)
    frac = (coords - low).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = len(coords)
    result = None
    outside_weight = np.zeros(len(coords), np.float32)
    for neighbour, weight in ((low, 1.0 - frac), (low + 1, frac)):
        valid = (neighbour >= 0) & (neighbour < n)
        outside_weight += np.where(valid, 0.0, weight).astype(np.float32)
        taken = np.take(values, np.clip(neighbour, 0, n - 1), axis=axis)
        term = taken * np.where(valid, weight, 0.0).astype(np.float32).reshape(shape)
        result = term if result is None else result + term
    if cval and outside_weight.any():
        result += np.float32(cval) * outside_weight.reshape(shape)
    return result.astype(np.float32, copy=False)
