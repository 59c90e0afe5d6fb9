"""Thoracic and upper-abdominal organs, painted into the cavity the body wall left.

Each organ is painted only over the materials it may displace (the ``over`` tables), so the
cavity's boundary and the diaphragm clip organs without any extra geometry.
"""

from __future__ import annotations

import numpy as np

from ..anatomy.totalseg_classes import TOTAL_CLASS_IDS as IDS
from .layout import Layout, Tube
from .shapes import Ellipsoid, Frame, tube
from .tissue import (
    ABDOMEN,
    ESOPHAGUS_AIR,
    LOBE_IDS,
    MEDIASTINUM,
    STOMACH_AIR,
    STOMACH_FLUID,
    TRACHEA_AIR,
    Canvas,
    lookup,
)

_THORAX = lookup([MEDIASTINUM, *LOBE_IDS])
_LUNG_TAPER_MM = 95.0  # height over which a lung narrows to its apex
_STOMACH_WALL_MM = 4.0
_AIRWAY_WALL_MM = 2.0


def paint_lungs(canvas: Canvas, frame: Frame, layout: Layout) -> None:
    """Each lung: an elliptic column narrowing to its apex, standing on the diaphragm (the
    mediastinum material marks the cavity above it), split into lobes by fissure planes."""
    floor_low = float(min(layout.dome_top.values())) - 90.0
    for side in ("right", "left"):
        (cy, cx), (ry, rx) = layout.lungs[side]
        box = frame.box((floor_low, cy - ry, cx - rx), (layout.apex_z, cy + ry, cx + rx))
        z, y, x = frame.grid(box)
        inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= np.clip(
            (layout.apex_z - z) / _LUNG_TAPER_MM, 0.0, 1.0)
        z_mid, slope = layout.oblique_fissure[side]
        upper = z >= z_mid + slope * y  # the oblique fissure rises towards the back
        lower_code = IDS[f"lung_lower_lobe_{side}"]
        canvas.paint(box, inside & ~upper, lower_code, over=_THORAX)
        if side == "right":
            middle = upper & (z < layout.horizontal_fissure_z)
            canvas.paint(box, inside & middle, IDS["lung_middle_lobe_right"], over=_THORAX)
            upper = upper & ~middle
        canvas.paint(box, inside & upper, IDS[f"lung_upper_lobe_{side}"], over=_THORAX)


def _paint_ellipsoid(canvas: Canvas, frame: Frame, shape: Ellipsoid, code: int, over=None) -> None:
    found = shape.mask(frame)
    if found is not None:
        canvas.paint(found[0], found[1], code, over)


def _paint_tube(canvas: Canvas, frame: Frame, points, radii, code: int, over=None) -> None:
    for box, mask in tube(frame, points, radii):
        canvas.paint(box, mask, code, over)


def _fluid_and_air(canvas: Canvas, frame: Frame, shape: Ellipsoid, air_fraction: float) -> None:
    """Stomach content: fluid below, air on top (the patient lies supine, so 'top' is anterior)."""
    inner = shape.scaled(1.0, pad_mm=-_STOMACH_WALL_MM)
    found = inner.mask(frame)
    if found is None:
        return
    box, mask = found
    stomach = lookup([IDS["stomach"]])
    canvas.paint(box, mask, STOMACH_FLUID, over=stomach)
    reach = inner.extent()[1]
    level = inner.center[1] - reach + 2.0 * reach * air_fraction
    _, y, _ = frame.grid(box)
    canvas.paint(box, mask & (y < level), STOMACH_AIR, over=lookup([STOMACH_FLUID]))


def paint_abdomen(canvas: Canvas, frame: Frame, layout: Layout) -> None:
    """Liver, stomach, spleen and kidneys below the diaphragm."""
    liver, stomach, spleen = IDS["liver"], IDS["stomach"], IDS["spleen"]
    _paint_ellipsoid(canvas, frame, layout.liver, liver, lookup([ABDOMEN]))
    _paint_ellipsoid(canvas, frame, layout.stomach, stomach, lookup([ABDOMEN, liver]))
    _fluid_and_air(canvas, frame, layout.stomach, layout.stomach_air_fraction)
    _paint_ellipsoid(canvas, frame, layout.spleen, spleen, lookup([ABDOMEN, liver]))
    for side, shape in layout.kidneys.items():
        _paint_ellipsoid(canvas, frame, shape, IDS[f"kidney_{side}"], lookup([ABDOMEN, liver, spleen]))


def _sub_tube(line: Tube, start: float, stop: float, n: int = 12) -> np.ndarray:
    """Points of a polyline between two fractions of its length."""
    steps = np.linalg.norm(np.diff(line.points, axis=0), axis=1)
    at = np.concatenate([[0.0], np.cumsum(steps)]) / steps.sum()
    wanted = np.linspace(start, stop, n)
    return np.column_stack([np.interp(wanted, at, line.points[:, i]) for i in range(3)])


def paint_mediastinum(canvas: Canvas, frame: Frame, layout: Layout) -> None:
    """Heart (with any pericardial fluid), esophagus, a hiatal hernia, aorta and airways."""
    heart = layout.heart.scaled(1.0, pad_mm=layout.pericardial_rim_mm)
    _paint_ellipsoid(canvas, frame, heart, IDS["heart"], _THORAX)
    esophagus = layout.esophagus
    _paint_tube(canvas, frame, esophagus.points, esophagus.radii, IDS["esophagus"])
    for start, stop in layout.esophagus_air:
        _paint_tube(canvas, frame, _sub_tube(esophagus, start, stop), 3.0, ESOPHAGUS_AIR,
                    lookup([IDS["esophagus"]]))
    if layout.hernia is not None:
        soft = lookup([MEDIASTINUM, ABDOMEN, *LOBE_IDS, IDS["esophagus"],
                       ESOPHAGUS_AIR, IDS["liver"], IDS["stomach"], STOMACH_FLUID, STOMACH_AIR])
        _paint_ellipsoid(canvas, frame, layout.hernia, IDS["stomach"], soft)
        _fluid_and_air(canvas, frame, layout.hernia, 0.4)
    _paint_tube(canvas, frame, layout.aorta.points, layout.aorta.radii, IDS["aorta"])
    airways = [layout.trachea, *layout.bronchi]  # main bronchi have no `total` class: trachea
    for line in airways:
        _paint_tube(canvas, frame, line.points, line.radii, IDS["trachea"])
    for line in airways:
        _paint_tube(canvas, frame, line.points, line.radii - _AIRWAY_WALL_MM, TRACHEA_AIR,
                    lookup([IDS["trachea"]]))
