"""Body wall and skeleton: skin to cavity, the diaphragm, spine, ribs and sternum.

The wall is painted slice by slice on 2D maps (the body's cross-section only scales with height),
which costs a few 2D operations per slice instead of full-volume temporaries.
"""

from __future__ import annotations

import numpy as np

from ..anatomy.totalseg_classes import TOTAL_CLASS_IDS as IDS
from .layout import VERTEBRA_HEIGHT_MM, VERTEBRAE, Layout
from .shapes import Z_SPAN_MM, Frame, tube
from .tissue import ABDOMEN, CSF, DISC, FAT, MEDIASTINUM, MUSCLE, OUTSIDE, Canvas

DIAPHRAGM_MM = 5.0
# where each rib's bony part ends, as an angle around the body from the spine (0) to the sternum (pi)
_RIB_END = {1: 2.6, 2: 2.6, 3: 2.6, 4: 2.6, 5: 2.6, 6: 2.6, 7: 2.6, 8: 2.45, 9: 2.3, 10: 2.15,
            11: 1.75, 12: 1.35}
_STERNUM_Z = (108.0, 276.0)


def paint_wall(canvas: Canvas, frame: Frame, layout: Layout) -> None:
    """Air, fat, muscle, then the cavity: mediastinum above the diaphragm, abdomen below."""
    zs, ys, xs = frame.axes
    radius = layout.body_radius(ys[:, None], xs[None, :])
    floor = layout.diaphragm_z(ys[:, None], xs[None, :])
    b = layout.body_semi_yx[0]
    muscle_at, cavity_at = 1.0 - layout.fat_mm / b, layout.cavity_fraction()
    ring_codes = np.array([OUTSIDE, FAT, MUSCLE, MEDIASTINUM], dtype=np.uint8)
    for k, (z, scale) in enumerate(zip(zs, layout.body_scale(zs))):
        ring = (radius <= scale).astype(np.uint8)
        ring += radius <= scale * muscle_at
        cavity = radius <= scale * cavity_at
        ring += cavity
        out = ring_codes[ring]
        out[cavity & (z < floor)] = MUSCLE  # the diaphragm
        out[cavity & (z < floor - DIAPHRAGM_MM)] = ABDOMEN
        canvas.material[k] = out


def _prism(frame: Frame, z_range, center_yx, semi_yx, hole_radius: float = 0.0):
    """Elliptic cylinder (optionally with a round hole) along z: (box, 2D mask broadcast in z)."""
    cy, cx = center_yx
    ry, rx = semi_yx
    box = frame.box((z_range[0], cy - ry, cx - rx), (z_range[1], cy + ry, cx + rx))
    if box is None:
        return None
    _, y, x = frame.grid(box, (0.0, cy, cx))
    level = (y / ry) ** 2 + (x / rx) ** 2
    mask = level <= 1.0
    if hole_radius:
        mask &= y * y + x * x > hole_radius ** 2
    return box, mask


def _block(frame: Frame, lo, hi):
    box = frame.box(lo, hi)
    return None if box is None else (box, np.ones((1, 1, 1), bool))


def _paint(canvas: Canvas, shape, code: int) -> None:
    if shape is not None:
        canvas.paint(shape[0], shape[1], code)


def paint_spine(canvas: Canvas, frame: Frame, layout: Layout) -> None:
    """Back muscles, discs, vertebrae T1..L1 as stacked blocks, the canal and the cord."""
    sy = layout.spine_y
    full = (-10.0, Z_SPAN_MM + 20.0)
    for side, sign in (("left", 1.0), ("right", -1.0)):
        _paint(canvas, _prism(frame, full, (sy + 42, sign * 30), (18, 20)), IDS[f"autochthon_{side}"])
    _paint(canvas, _prism(frame, full, (sy, 0.0), (13, 18)), DISC)
    for n, name in enumerate(VERTEBRAE):
        top = Z_SPAN_MM - n * VERTEBRA_HEIGHT_MM
        bone = (top - VERTEBRA_HEIGHT_MM + 2.0, top - 2.0)
        semi = (11.0 + 5.0 * n / 12, 14.0 + 8.0 * n / 12)
        canal_y = sy + semi[0] + 9.0
        code = IDS[f"vertebrae_{name}"]
        _paint(canvas, _prism(frame, bone, (sy, 0.0), semi), code)
        _paint(canvas, _prism(frame, bone, (canal_y, 0.0), (13.0, 13.0), hole_radius=7.5), code)
        _paint(canvas, _block(frame, (bone[0], canal_y + 8, -4.0), (bone[1], canal_y + 34, 4.0)), code)
        for sign in (1.0, -1.0):
            lo, hi = sorted((sign * 8.0, sign * 32.0))
            _paint(canvas, _block(frame, (bone[0] + 3, canal_y - 6, lo), (bone[1] - 3, canal_y + 4, hi)),
                   code)
        span = (top - VERTEBRA_HEIGHT_MM, top)
        _paint(canvas, _prism(frame, span, (canal_y, 0.0), (7.5, 7.5)), CSF)
        _paint(canvas, _prism(frame, span, (canal_y, 0.0), (4.5, 4.5)), IDS["spinal_cord"])


def _around_wall(layout: Layout, z: float, angles: np.ndarray, sign: float, out_mm: float):
    """Points just outside the cavity wall at height z, at angles from the spine (0) to the sternum (pi)."""
    direction = np.stack([np.cos(angles), sign * np.sin(angles)], axis=1)  # (y, x)
    cavity = float(layout.body_scale(z)) * layout.cavity_fraction()
    unit = layout.body_radius(direction[:, 0], direction[:, 1]).astype(float)
    return direction * (cavity / unit + out_mm)[:, None]


def paint_ribs(canvas: Canvas, frame: Frame, layout: Layout) -> None:
    """Twelve ribs per side curving from the spine around the wall, sloping down to the front;
    ribs 1-7 continue as costal cartilage to the sternum."""
    for n, end in _RIB_END.items():
        z_back = Z_SPAN_MM - (n - 0.5) * VERTEBRA_HEIGHT_MM
        drop = 30.0 + 5.0 * n
        for side, sign in (("left", 1.0), ("right", -1.0)):
            angles = np.linspace(0.5, np.pi - 0.12 if n <= 7 else end, 18)
            z = z_back - drop * ((angles - 0.5) / (np.pi - 0.5)) ** 1.2
            yx = _around_wall(layout, float(z.mean()), angles, sign, 4.0)
            points = np.column_stack([z, yx])
            head = np.array([[z_back, layout.spine_y + 6.0, sign * 12.0]])
            bony = angles <= end
            radius = 5.5 if n == 1 else 4.5
            for box, mask in tube(frame, np.vstack([head, points[bony]]), radius):
                canvas.paint(box, mask, IDS[f"rib_{side}_{n}"])
            if n <= 7:
                cartilage = points[np.flatnonzero(bony)[-1]:]
                for box, mask in tube(frame, cartilage, 4.0):
                    canvas.paint(box, mask, IDS["costal_cartilages"])


def paint_sternum(canvas: Canvas, frame: Frame, layout: Layout) -> None:
    """Manubrium, body and xiphoid: a flat plate in the anterior wall, painted slice by slice."""
    zs = frame.axes[0]
    b = layout.body_semi_yx[0]
    for k in np.flatnonzero((zs >= _STERNUM_Z[0]) & (zs <= _STERNUM_Z[1])):
        z = float(zs[k])
        front = float(layout.body_scale(z)) * layout.cavity_fraction() * b
        half_width = 24.0 if z > 250.0 else (15.0 if z > 125.0 else 8.0)
        shape = _prism(frame, (z, z), (-front - 6.0, 0.0), (6.5, half_width))
        _paint(canvas, shape, IDS["sternum"])
