"""Linked views of a prior and a current CT of one patient.

A point of one CT corresponds to the point of the other at the same relative position within the
bounding box of the same anatomy (the smallest anatomy group holding it; outside every anatomy,
within all labelled voxels), so a reader at the heart's centre in one CT is at the heart's centre
in the other even when the heart has grown. The boxes are read once per CT (one pass over its
labels), so following a moving point costs a few operations.

`LinkedViews` places the prior beside the current in one napari world (LPS mm, z y x; see
core/geometry.py): to the current's right on screen, shifted so that the point corresponding to
the current's linked point lies on the same axial slice and screen row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..anatomy.align import world_box
from ..anatomy.catalog import group_set
from ..errors import FvlmInputError
from ..geometry import display_to_ras, ras_to_display
from ..volume import Volume

Box = tuple[np.ndarray, np.ndarray]  # (first, last) voxel, inclusive, (z, y, x)
SIDE_GAP_MM = 20.0  # between the current's image and the prior's, on screen


def _class_boxes(array: np.ndarray) -> tuple[dict[int, Box], np.ndarray]:
    """({label id: voxel box}, voxel count per label id) in one pass."""
    from scipy import ndimage

    if not np.issubdtype(array.dtype, np.integer) or array.min(initial=0) < 0:
        raise FvlmInputError("The anatomy masks hold negative or non-integer labels; link views on "
                             "TotalSegmentator label maps.")
    boxes = {index + 1: (np.array([s.start for s in found], float), np.array([s.stop - 1 for s in found], float))
             for index, found in enumerate(ndimage.find_objects(array)) if found is not None}
    return boxes, np.bincount(array.ravel())


def _union(boxes: list[Box]) -> Box:
    return np.min([lo for lo, _ in boxes], axis=0), np.max([hi for _, hi in boxes], axis=0)


@dataclass(frozen=True)
class AnatomyBoxes:
    """The voxel bounding box of each anatomy group present in one CT's labels, and, per label id,
    the groups holding it, smallest first."""

    labels: Volume
    boxes: dict[str, Box]  # "" is the box of every labelled voxel
    holders: dict[int, tuple[str, ...]]

    @classmethod
    def of(cls, labels: Volume, names: str) -> AnatomyBoxes:
        """The boxes of the groups of the set ``names`` (e.g. "fine") in ``labels``."""
        array = np.asarray(labels.array)
        class_boxes, counts = _class_boxes(array)
        boxes = {"": _union(list(class_boxes.values()))} if class_boxes else {}
        sizes: dict[str, int] = {}
        for group in group_set(names):
            present = [c for c in group.class_ids if c in class_boxes]
            if present:
                boxes[group.name] = _union([class_boxes[c] for c in present])
                sizes[group.name] = int(sum(counts[c] for c in present))
        holders = {c: tuple(sorted((g.name for g in group_set(names) if c in g.class_ids and g.name in sizes),
                                   key=lambda n: (sizes[n], n))) for c in class_boxes}
        return cls(labels, boxes, holders)

    def anatomy_at(self, voxel) -> str:
        """The smallest anatomy group holding ``voxel`` (z, y, x); "" outside every one."""
        index = tuple(int(round(v)) for v in voxel)
        if not all(0 <= i < n for i, n in zip(index, self.labels.shape)):
            return ""
        return next(iter(self.holders.get(int(self.labels.array[index]), ())), "")

    def box(self, anatomy: str) -> Box:
        if anatomy not in self.boxes:
            raise FvlmInputError(f"The {anatomy.replace('_', ' ') or 'labelled region'} is missing from one of "
                                 "the CTs' masks, so the views cannot be linked there.")
        return self.boxes[anatomy]

    def point(self, anatomy: str, fraction) -> np.ndarray:
        """RAS mm of the relative position ``fraction`` (z, y, x; 0 to 1) in the anatomy's box."""
        lo, hi = self.box(anatomy)
        return self.labels.to_world(lo + np.asarray(fraction, float) * (hi - lo))

    def corresponding(self, world_mm, other: AnatomyBoxes) -> tuple[np.ndarray, str]:
        """(RAS mm in ``other``'s CT, anatomy) of a point of this CT."""
        voxel = self.labels.to_voxel(np.asarray(world_mm, float))
        anatomy = self.anatomy_at(voxel)
        lo, hi = self.box(anatomy)
        other.box(anatomy)  # refused when the other CT lacks it
        return other.point(anatomy, (voxel - lo) / np.maximum(hi - lo, 1.0)), anatomy


def display_extent(volume: Volume) -> Box:
    """The napari world box (LPS mm, z y x) a volume covers, to its voxels' outer faces."""
    lo, hi = world_box(volume.affine, (0, 0, 0), np.array(volume.shape) - 1)
    corners = ras_to_display(np.array([lo, hi]))
    return corners.min(axis=0), corners.max(axis=0)


@dataclass(frozen=True)
class Link:
    """Where the prior is shown for one linked point of the current (napari world, z y x)."""

    shift: np.ndarray  # added to the prior's own napari translate
    prior_point: np.ndarray  # the corresponding prior point, as shown
    anatomy: str  # the anatomy both points lie in ("" outside every anatomy)


@dataclass(frozen=True)
class LinkedViews:
    """The prior beside the current in one napari world: to the right of the current on screen,
    ``gap_mm`` apart, and moved along z and y so that the prior point corresponding to the
    current's linked point lies on the same axial slice and screen row."""

    prior: AnatomyBoxes
    current: AnatomyBoxes
    current_right_mm: float  # the current image's right edge on screen (napari world x)
    prior_left_mm: float  # the prior image's own left edge on screen
    gap_mm: float = SIDE_GAP_MM

    @classmethod
    def of(cls, prior_labels: Volume, current_labels: Volume, names: str) -> LinkedViews:
        """For the masks of both CTs (on their CTs' grids) and the model's anatomy group set."""
        return cls(AnatomyBoxes.of(prior_labels, names), AnatomyBoxes.of(current_labels, names),
                   float(display_extent(current_labels)[1][2]), float(display_extent(prior_labels)[0][2]))

    def link(self, point) -> Link:
        """The prior's placement for the current's point ``point``."""
        point = np.asarray(point, float)
        ras, anatomy = self.current.corresponding(display_to_ras(point), self.prior)
        own = ras_to_display(ras)
        shift = np.array([point[0] - own[0], point[1] - own[1],
                          self.current_right_mm + self.gap_mm - self.prior_left_mm])
        return Link(shift, own + shift, anatomy)

    def on_prior(self, point) -> bool:
        """Whether ``point`` lies right of the current image, where the prior is shown."""
        return float(point[2]) > self.current_right_mm

    def current_point(self, point, shift) -> tuple[np.ndarray, str]:
        """(napari world point of the current, anatomy) corresponding to ``point`` on the prior as
        shown with ``shift``."""
        ras, anatomy = self.prior.corresponding(display_to_ras(np.asarray(point, float) - shift), self.current)
        return ras_to_display(ras), anatomy
