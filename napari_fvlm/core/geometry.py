"""Voxel-to-world geometry: one convention for the whole project.

World coordinates are RAS+ millimetres (nibabel's convention): +x points to the patient's Right,
+y Anterior, +z Superior. An affine maps voxel indices (i, j, k) to world, where the array is
stored as ``array[k, j, i]`` (z, y, x). DICOM's LPS is converted on reading.

Every volume is brought to one canonical voxel orientation on reading, ``LPS``: i runs to the
patient's Left, j to Posterior, k to Superior. Shown with napari's last axis as screen columns
and the middle axis as screen rows, this gives the radiological view of an axial slice (patient's
right on screen left, anterior up) with no display flips. The orientation of the file is kept
as an exact axis permutation/flip (`Reorientation`) so writers restore the original voxel order
and affine bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel import orientations as nio

CANONICAL_AXCODES = ("L", "P", "S")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a voxel-to-LPS affine (DICOM) to voxel-to-RAS (nibabel)."""
    return _LPS_TO_RAS @ np.asarray(affine_lps, dtype=float)


def spacing_xyz(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along i, j, k (x, y, z) from the affine's column norms."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def voxel_to_world(affine: np.ndarray, zyx: np.ndarray) -> np.ndarray:
    """World RAS mm of voxel positions given in array order (..., 3) as (z, y, x)."""
    zyx = np.asarray(zyx, dtype=float)
    ijk = zyx[..., ::-1]
    return ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def world_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Voxel positions in array order (z, y, x) of world RAS mm points (..., 3)."""
    inv = np.linalg.inv(np.asarray(affine, dtype=float))
    ijk = np.asarray(xyz, dtype=float) @ inv[:3, :3].T + inv[:3, 3]
    return ijk[..., ::-1]


CANONICAL_ORNT = nio.axcodes2ornt(CANONICAL_AXCODES)


@dataclass(frozen=True)
class Reorientation:
    """The exact axis permutation and flips between a file's voxel order and the canonical one.

    ``file_ornt`` is the file's voxel orientation as a nibabel ornt array; ``shape_xyz`` is the
    file's shape in its own (i, j, k) order.
    """

    file_ornt: np.ndarray
    shape_xyz: tuple[int, int, int]

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.file_ornt, CANONICAL_ORNT))

    def to_canonical(self, array_xyz: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(file array in (i, j, k) order, file affine) -> (canonical array (z, y, x), its affine)."""
        forward = nio.ornt_transform(self.file_ornt, CANONICAL_ORNT)
        data = nio.apply_orientation(array_xyz, forward)
        new_affine = np.asarray(affine, float) @ nio.inv_ornt_aff(forward, self.shape_xyz)
        return np.transpose(data, (2, 1, 0)), new_affine

    def to_source(self, canonical_zyx: np.ndarray) -> np.ndarray:
        """Canonical array (z, y, x) -> array in the file's own (i, j, k) order."""
        backward = nio.ornt_transform(CANONICAL_ORNT, self.file_ornt)
        return nio.apply_orientation(np.transpose(canonical_zyx, (2, 1, 0)), backward)


def reorientation_for(affine: np.ndarray, shape_xyz: tuple[int, ...]) -> Reorientation:
    """The reorientation that brings a file with this affine to canonical LPS voxel order."""
    file_ornt = nio.io_orientation(np.asarray(affine, float))
    return Reorientation(file_ornt, tuple(int(s) for s in shape_xyz[:3]))


# napari's world: LPS millimetres in (S, P, L) = (z, y, x) order. Each display axis is
# (the RAS coordinate it shows, its sign): display = sign * RAS[coordinate].
DISPLAY_AXES_RAS = ((2, 1.0), (1, -1.0), (0, -1.0))
_DISPLAY_FROM_RAS = np.array([[sign * (i == coordinate) for i in range(3)] for coordinate, sign in DISPLAY_AXES_RAS])


def ras_to_display(ras_xyz) -> np.ndarray:
    """napari world (z, y, x), LPS mm, of RAS points [x, y, z] (..., 3)."""
    return np.asarray(ras_xyz, float) @ _DISPLAY_FROM_RAS.T


def display_to_ras(world_zyx) -> np.ndarray:
    """RAS [x, y, z] of napari world points (z, y, x), LPS mm (..., 3): `ras_to_display`'s inverse."""
    return np.asarray(world_zyx, float) @ _DISPLAY_FROM_RAS


def display_scale_translate(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """napari ``scale`` and ``translate`` (z, y, x) for a canonical volume.

    Exact for scans without obliquity, the nearest axis-aligned frame otherwise (exports use the
    true affine).
    """
    affine = np.asarray(affine, float)
    return spacing_xyz(affine)[::-1], ras_to_display(affine[:3, 3])


def display_affine(scale, translate) -> np.ndarray:
    """The canonical voxel-to-RAS affine a napari ``scale`` and ``translate`` (z, y, x) show:
    `display_scale_translate`'s inverse for scans without obliquity."""
    affine = np.eye(4)
    affine[:3, :3] = _DISPLAY_FROM_RAS.T @ np.diag(np.asarray(scale, float)) @ np.eye(3)[::-1]  # columns (i, j, k)
    affine[:3, 3] = display_to_ras(translate)
    return affine
