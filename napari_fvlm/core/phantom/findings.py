"""Painting findings: each writes its HU into the CT and its own label into the lesion volume.

A lesion only takes voxels of its anatomy that no earlier lesion took, so every instance keeps
its own, non-empty label. Each painter returns the box it wrote in, a size in mm and details
the report needs, or None when the anatomy left no room for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..anatomy.totalseg_classes import TOTAL_CLASS_IDS as IDS
from ..anatomy.totalseg_classes import TOTAL_CLASSES
from .catalog import Placement
from .layout import Layout
from .shapes import Box, Ellipsoid, Frame, box_of_mask, tube, union_box
from .tissue import LOBES_LEFT, LOBES_RIGHT, Canvas


@dataclass
class Scene:
    frame: Frame
    layout: Layout
    canvas: Canvas
    anatomy: np.ndarray
    hu: np.ndarray
    lesions: np.ndarray
    rng: np.random.Generator
    effusions: dict = field(default_factory=dict)  # side -> (box, depth per slice in mm)


@dataclass
class Painted:
    box: Box
    size_mm: float
    anatomy: str
    details: dict = field(default_factory=dict)


def _table(names) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[[IDS[n] for n in names]] = True
    return table


def _free(scene: Scene, box: Box, names) -> np.ndarray:
    return _table(names)[scene.anatomy[box]] & (scene.lesions[box] == 0)


def _write(scene: Scene, box: Box, mask: np.ndarray, label: int, value=None, floor=None) -> Box | None:
    """Label ``mask`` in the lesions; set its HU to ``value`` or raise it to at least ``floor``."""
    tight = box_of_mask(mask, box)
    if tight is None:
        return None
    scene.lesions[box][mask] = label
    hu = scene.hu[box]
    if value is not None:
        hu[mask] = value
    if floor is not None:
        hu[mask] = np.maximum(hu[mask], np.float32(floor))
    return tight


def _extent_mm(scene: Scene, box: Box) -> float:
    return float(max((sl.stop - sl.start) * s for sl, s in zip(box, scene.frame.spacing)))


def _main_class(scene: Scene, box: Box, label: int) -> str:
    labels = scene.anatomy[box][scene.lesions[box] == label]
    return TOTAL_CLASSES[int(np.bincount(labels).argmax())]


def _random_points(scene: Scene, box: Box, mask: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` random voxels of ``mask`` (on ``box``) as patient mm (z, y, x)."""
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return np.zeros((0, 3))
    picked = scene.rng.choice(flat, size=min(count, flat.size), replace=False)
    index = np.column_stack(np.unravel_index(picked, mask.shape)) + [sl.start for sl in box]
    return scene.frame.to_mm(index)


def _speck(scene: Scene, center, radius: float) -> Ellipsoid:
    """A tiny sphere that still covers a voxel centre on coarse (2.5 mm) slices."""
    return Ellipsoid(center, np.maximum(radius, 0.55 * scene.frame.spacing))


def _posterior_depth(scene: Scene, box: Box, lung: np.ndarray) -> np.ndarray:
    """Per voxel, the mm to the most posterior lung voxel of its (z, x) column."""
    last = lung.shape[1] - 1 - np.argmax(lung[:, ::-1, :], axis=1)
    rows = np.arange(lung.shape[1])[None, :, None]
    return (last[:, None, :] - rows).astype(np.float32) * np.float32(scene.frame.spacing[1])


def pleural_effusion(scene: Scene, where: Placement, label: int) -> Painted | None:
    """Dependent fluid: a posterior crescent, deepest at the base, thinning upwards."""
    lobes = LOBES_LEFT if where.side == "left" else LOBES_RIGHT
    box = scene.canvas.box_of([IDS[n] for n in lobes])
    lung = _table(lobes)[scene.anatomy[box]]
    z = scene.frame.axes[0][box[0]]
    has = lung.any(axis=(1, 2))
    if not has.any():
        return None
    base, top = float(z[has].min()), float(z[has].max())
    reach = base + (top - base) * scene.rng.uniform(0.5, 0.75)
    depth0 = scene.rng.uniform(12, 45)
    depth = depth0 * np.sqrt(np.clip((reach - z) / (reach - base), 0.0, 1.0))
    mask = lung & (scene.lesions[box] == 0) & (_posterior_depth(scene, box, lung) < depth[:, None, None])
    tight = _write(scene, box, mask, label, value=scene.rng.uniform(5, 15))
    if tight is None:
        return None
    scene.effusions[where.side] = (box, depth)
    return Painted(tight, round(depth0), _main_class(scene, box, label))


def atelectasis(scene: Scene, where: Placement, label: int) -> Painted | None:
    """A dense band next to an effusion on that side, else a flat plate at the lobe's base."""
    rng, value = scene.rng, scene.rng.uniform(20, 45)
    if where.side in scene.effusions and "lower" in where.anatomy:
        box, depth = scene.effusions[where.side]
        lobes = LOBES_LEFT if where.side == "left" else LOBES_RIGHT
        lung = _table(lobes)[scene.anatomy[box]]
        from_back = _posterior_depth(scene, box, lung)
        near = depth[:, None, None]
        band = (from_back >= near) & (from_back < near + rng.uniform(6, 14)) & (near > 0)
        tight = _write(scene, box, band & _free(scene, box, [where.anatomy]), label, value=value)
        if tight is not None:
            return Painted(tight, round(_extent_mm(scene, tight)), where.anatomy, {"passive": True})
    box = scene.canvas.box_of([IDS[where.anatomy]])
    lobe = _free(scene, box, [where.anatomy])
    z_hit = np.flatnonzero(lobe.any(axis=(1, 2)))
    if z_hit.size == 0:
        return None
    low = lobe.copy()
    low[z_hit[0] + max(1, int(0.3 * z_hit.size)):] = False
    for center in _random_points(scene, box, low, 6):
        plate = Ellipsoid(center, (rng.uniform(4, 8), rng.uniform(12, 25), rng.uniform(12, 25)),
                          rng.uniform(0, np.pi)).mask(scene.frame)
        if plate is None:
            continue
        tight = _write(scene, plate[0], plate[1] & _free(scene, plate[0], [where.anatomy]), label,
                       value=value)
        if tight is not None:
            return Painted(tight, round(_extent_mm(scene, tight)), where.anatomy, {"passive": False})
    return None


def _patch(scene: Scene, where: Placement, label: int, diameter, **hu) -> Painted | None:
    """A lobulated patch (three overlapping ellipsoids) inside one lobe."""
    rng, frame = scene.rng, scene.frame
    box = scene.canvas.box_of([IDS[where.anatomy]])
    for center in _random_points(scene, box, _free(scene, box, [where.anatomy]), 8):
        radius = rng.uniform(*diameter) / 2
        around = frame.box(center - 1.6 * radius, center + 1.6 * radius)
        mask = np.zeros(tuple(s.stop - s.start for s in around), dtype=bool)
        for _ in range(3):
            part = Ellipsoid(center + rng.normal(0, radius / 3, 3), radius * rng.uniform(0.5, 1.0, 3),
                             rng.uniform(0, np.pi))
            mask |= part.level(frame, around) <= 1.0
        mask &= _free(scene, around, [where.anatomy])
        if mask.sum() * np.prod(frame.spacing) < 0.3 * 4.19 * radius ** 3:
            continue
        tight = _write(scene, around, mask, label, **hu)
        return Painted(tight, round(_extent_mm(scene, tight)), where.anatomy)
    return None


def consolidation(scene: Scene, where: Placement, label: int) -> Painted | None:
    painted = _patch(scene, where, label, (25, 60), floor=scene.rng.uniform(20, 40))
    if painted is not None:  # air bronchograms: a couple of aerated airways crossing it
        center = scene.frame.to_mm([(s.start + s.stop - 1) / 2 for s in painted.box])
        for _ in range(2):
            step = scene.rng.normal(0, 1, 3) * 12.0
            for box, mask in tube(scene.frame, (center - step, center + step), 1.5):
                scene.hu[box][mask & (scene.lesions[box] == label)] = -900.0
    return painted


def ground_glass_opacity(scene: Scene, where: Placement, label: int) -> Painted | None:
    return _patch(scene, where, label, (15, 40), floor=scene.rng.uniform(-650, -550))


def lung_opacity(scene: Scene, where: Placement, label: int) -> Painted | None:
    return _patch(scene, where, label, (15, 45), floor=scene.rng.uniform(-450, -250))


def emphysema(scene: Scene, where: Placement, label: int) -> Painted | None:
    """Scattered small holes of near-air density: the lung tissue (and its vessels) is gone."""
    box = scene.canvas.box_of([IDS[where.anatomy]])
    count, tight = int(scene.rng.integers(8, 25)), None
    for center in _random_points(scene, box, _free(scene, box, [where.anatomy]), count):
        hole = Ellipsoid(center, np.full(3, scene.rng.uniform(3, 8))).mask(scene.frame)
        if hole is not None:
            mask = hole[1] & _free(scene, hole[0], [where.anatomy])
            part = _write(scene, hole[0], mask, label, value=scene.rng.uniform(-990, -970))
            tight = union_box(tight, part)
    if tight is None:
        return None
    return Painted(tight, round(_extent_mm(scene, tight)), where.anatomy, {"count": count})


def bronchiectasis(scene: Scene, where: Placement, label: int) -> Painted | None:
    """A few dilated bronchi: thick walls around an air lumen, running away from the hilum."""
    rng = scene.rng
    box = scene.canvas.box_of([IDS[where.anatomy]])
    hilum = np.array([200.0, *scene.layout.lungs[where.side][0]])
    lumen, tight = rng.uniform(2.5, 4.0), None
    for start in _random_points(scene, box, _free(scene, box, [where.anatomy]), int(rng.integers(3, 6))):
        direction = start - hilum + rng.normal(0, 10, 3)
        end = start + direction / np.linalg.norm(direction) * rng.uniform(25, 45)
        for radius, value in ((lumen + 1.5, rng.uniform(0, 30)), (lumen, -980.0)):
            for seg_box, mask in tube(scene.frame, (start, end), radius):
                mine = scene.lesions[seg_box] == label
                mask &= _free(scene, seg_box, [where.anatomy]) | mine
                part = _write(scene, seg_box, mask, label, value=value)
                tight = union_box(tight, part)
    if tight is None:
        return None
    return Painted(tight, round(2 * lumen), where.anatomy)


def _sphere_lesion(scene: Scene, where: Placement, label: int, diameter, value) -> Painted | None:
    """A round lesion wholly (97 %) inside its anatomy, shrunk when it does not fit."""
    box = scene.canvas.box_of([IDS[where.anatomy]])
    size = scene.rng.uniform(*diameter)
    for attempt, center in enumerate(_random_points(scene, box, _free(scene, box, [where.anatomy]), 40)):
        if attempt and attempt % 10 == 0:
            size = max(diameter[0] * 0.5, size * 0.8)
        found = Ellipsoid(center, np.full(3, size / 2)).mask(scene.frame)
        if found is None:
            continue
        inside = found[1] & _free(scene, found[0], [where.anatomy])
        if inside.sum() >= 0.97 * found[1].sum() > 0:
            tight = _write(scene, found[0], inside, label, value=value)
            return Painted(tight, round(size), where.anatomy)
    return None


def lung_nodule(scene: Scene, where: Placement, label: int) -> Painted | None:
    return _sphere_lesion(scene, where, label, (6, 25), scene.rng.uniform(20, 45))


def liver_lesion(scene: Scene, where: Placement, label: int) -> Painted | None:
    return _sphere_lesion(scene, where, label, (8, 40), scene.rng.uniform(10, 25))
