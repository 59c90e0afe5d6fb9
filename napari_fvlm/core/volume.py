"""`Volume`: a CT or label volume with its geometry, the one image type of the core."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .geometry import Reorientation, spacing_xyz, voxel_to_world, world_to_voxel


@dataclass
class SourceInfo:
    """Where a volume came from, and what a writer needs to put it back exactly.

    ``affine`` and ``reorientation`` describe the file's own voxel order; ``header`` is the
    NIfTI header (or None); ``details`` holds format-specific facts (DICOM series UID, ...).
    """

    path: str | None
    format: str
    affine: np.ndarray
    reorientation: Reorientation
    header: Any = None
    details: dict = field(default_factory=dict)


@dataclass
class Volume:
    """A 3D array in canonical (z, y, x) LPS voxel order with its voxel-to-RAS affine.

    ``affine`` maps (i, j, k) = (x, y, z) voxel indices of ``array`` to RAS mm.
    ``labels`` names the values of a label volume ({id: name}); None for images.
    """

    array: np.ndarray
    affine: np.ndarray
    source: SourceInfo | None = None
    labels: dict[int, str] | None = None

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a Volume is 3D, got shape {self.array.shape}")
        self.affine = np.asarray(self.affine, dtype=float)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm in array order (z, y, x)."""
        return spacing_xyz(self.affine)[::-1]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def is_labels(self) -> bool:
        return self.labels is not None

    def to_world(self, zyx) -> np.ndarray:
        """RAS mm of voxel positions (z, y, x)."""
        return voxel_to_world(self.affine, zyx)

    def to_voxel(self, xyz) -> np.ndarray:
        """Voxel positions (z, y, x) of RAS mm points."""
        return world_to_voxel(self.affine, xyz)

    def same_grid(self, other: Volume, atol: float = 1e-3) -> bool:
        """True when both volumes share shape and affine (to ``atol`` mm)."""
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol)

    def with_array(self, array: np.ndarray, labels: dict[int, str] | None = None) -> Volume:
        """A volume on the same grid and source, holding another array (a mask, a heatmap)."""
        if array.shape != self.shape:
            raise ValueError(f"array shape {array.shape} is not the volume's {self.shape}")
        return Volume(array, self.affine.copy(), self.source, labels)
