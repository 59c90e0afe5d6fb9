"""Findings of the heart, aorta and hiatus (see findings.py for the conventions)."""

from __future__ import annotations

import numpy as np

from ..anatomy.totalseg_classes import TOTAL_CLASS_IDS as IDS
from .catalog import Placement
from .findings import Painted, Scene, _extent_mm, _free, _speck, _write
from .shapes import union_box


def pericardial_effusion(scene: Scene, where: Placement, label: int) -> Painted | None:
    """The fluid rim between the heart and the pericardium the layout already widened."""
    box = scene.canvas.box_of([IDS["heart"]])
    rim = (scene.layout.heart.level(scene.frame, box) > 1.0) & _free(scene, box, ["heart"])
    tight = _write(scene, box, rim, label, value=scene.rng.uniform(5, 15))
    if tight is None:
        return None
    return Painted(tight, round(scene.layout.pericardial_rim_mm), "heart")


def _paint_specks(scene: Scene, centers, anatomy: str, label: int) -> tuple:
    """Bright calcified specks, each kept to its anatomy; returns (box, largest diameter)."""
    tight, largest = None, 0.0
    for center in centers:
        radius = scene.rng.uniform(1.2, 2.5)
        found = _speck(scene, center, radius).mask(scene.frame)
        if found is None:
            continue
        mask = found[1] & _free(scene, found[0], [anatomy])
        part = _write(scene, found[0], mask, label, floor=scene.rng.uniform(450, 900))
        if part is not None:
            tight = union_box(tight, part)
            largest = max(largest, 2 * radius)
    return tight, largest


def coronary_artery_calcification(scene: Scene, where: Placement, label: int) -> Painted | None:
    """Specks just under the surface of the (inner) heart, on its front and upper half, named
    by the artery that runs there."""
    heart, rng = scene.layout.heart, scene.rng
    directions = rng.normal(0, 1, (200, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = heart.center + (directions * heart.semi * 0.9) @ heart.rotation
    offset = points - heart.center
    keep = (offset[:, 1] < 0) & (offset[:, 0] > -0.2 * heart.semi[0])
    points, offset = points[keep][: int(rng.integers(3, 9))], offset[keep][: 8]
    tight, largest = _paint_specks(scene, points, "heart", label)
    if tight is None:
        return None
    vessels = sorted({"right coronary artery" if dx < -0.2 * heart.semi[2] else
                      "left anterior descending artery" if dy < -0.4 * heart.semi[1] else
                      "circumflex artery" for _, dy, dx in offset[: len(points)]})
    return Painted(tight, round(largest, 1), "heart", {"vessels": vessels})


def cardiomegaly(scene: Scene, where: Placement, label: int) -> Painted | None:
    """The enlarged heart itself (painted by the layout) is the lesion."""
    box = scene.canvas.box_of([IDS["heart"]])
    tight = _write(scene, box, _free(scene, box, ["heart"]), label)
    if tight is None:
        return None
    width = (tight[2].stop - tight[2].start) * scene.frame.spacing[2]
    return Painted(tight, round(float(width)), "heart", {"scale": scene.layout.heart_scale})


def arterial_wall_calcification(scene: Scene, where: Placement, label: int) -> Painted | None:
    """Specks in the wall of the thoracic aorta, named by the segment they lie in."""
    rng, aorta = scene.rng, scene.layout.aorta
    starts, ends = aorta.points[:-1], aorta.points[1:]
    lengths = np.linalg.norm(ends - starts, axis=1) * (starts[:, 0] > 100)
    picks = rng.choice(len(starts), size=int(rng.integers(4, 13)), p=lengths / lengths.sum())
    centers, segments = [], set()
    for i in picks:
        t = rng.uniform()
        axis_point = starts[i] + t * (ends[i] - starts[i])
        radius = aorta.radii[i] + t * (aorta.radii[i + 1] - aorta.radii[i])
        along = (ends[i] - starts[i]) / np.linalg.norm(ends[i] - starts[i])
        side = rng.normal(0, 1, 3)
        side -= side @ along * along
        centers.append(axis_point + side / np.linalg.norm(side) * (radius - 1.0))
        segments.add("aortic arch" if axis_point[0] > 240 else
                     "ascending aorta" if axis_point[1] < 0 else "descending aorta")
    tight, largest = _paint_specks(scene, centers, "aorta", label)
    if tight is None:
        return None
    return Painted(tight, round(largest, 1), "aorta", {"segments": sorted(segments)})


def hiatal_hernia(scene: Scene, where: Placement, label: int) -> Painted | None:
    """The part of the stomach the layout put above the diaphragm, beside the esophagus."""
    hernia = scene.layout.hernia
    box = hernia.bounding_box(scene.frame) if hernia is not None else None
    if box is None:
        return None
    z, y, x = scene.frame.grid(box)
    above = z >= scene.layout.diaphragm_z(y, x) - 5.0
    tight = _write(scene, box, above & _free(scene, box, ["stomach"]), label)
    if tight is None:
        return None
    return Painted(tight, round(_extent_mm(scene, tight)), "stomach")
