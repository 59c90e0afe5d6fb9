"""The phantom's patient frame and shape rasterisation on bounding boxes.

Anatomy is described in patient millimetres, ordered like the arrays (z, y, x): z runs superior
(0 at the bottom of the modelled 320 mm), y posterior and x to the patient's left, both 0 on the
body axis. Every shape is evaluated only on the sub-grid of its bounding box, never on the whole
volume, which is what keeps a 256 x 256 x 128 phantom under a second.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

Box = tuple[slice, slice, slice]
Z_SPAN_MM = 320.0  # superior-inferior extent of the modelled anatomy (lung apex to upper kidneys)


class Frame:
    """Voxel grid <-> patient mm, and the grid's voxel-to-RAS affine (LPS voxel order)."""

    def __init__(self, shape, spacing_zyx, body_index_zyx):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = np.asarray(spacing_zyx, dtype=float)
        self.origin = np.asarray(body_index_zyx, dtype=float)  # voxel of patient (Z_SPAN/2, 0, 0)
        self.offset = np.array([Z_SPAN_MM / 2, 0.0, 0.0])
        self.axes = tuple(((np.arange(n) - o) * s + c).astype(np.float32)
                          for n, o, s, c in zip(self.shape, self.origin, self.spacing, self.offset))

    @property
    def affine(self) -> np.ndarray:
        """x index grows to the patient's left, y posterior, z superior: diag(-sx, -sy, +sz)."""
        sz, sy, sx = self.spacing
        oz, oy, ox = self.origin
        affine = np.diag([-sx, -sy, sz, 1.0])
        affine[:3, 3] = [sx * ox, sy * oy, -sz * oz]  # RAS = (-x_mm, -y_mm, z_mm - Z_SPAN/2)
        return affine

    def to_index(self, zyx_mm) -> np.ndarray:
        """Fractional voxel index (z, y, x) of patient mm points (..., 3)."""
        return (np.asarray(zyx_mm, float) - self.offset) / self.spacing + self.origin

    def to_mm(self, zyx_index) -> np.ndarray:
        """Patient mm of voxel indices (..., 3)."""
        return (np.asarray(zyx_index, float) - self.origin) * self.spacing + self.offset

    def box(self, lo_mm, hi_mm) -> Box | None:
        """Slices of the voxels whose centres lie in [lo, hi] mm; None when that is empty."""
        lo = np.ceil(self.to_index(lo_mm) - 1e-6).astype(int)
        hi = np.floor(self.to_index(hi_mm) + 1e-6).astype(int) + 1
        lo, hi = np.maximum(lo, 0), np.minimum(hi, self.shape)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def grid(self, box: Box, center=(0.0, 0.0, 0.0)):
        """Broadcastable mm offsets (z[:, None, None], y[None, :, None], x[None, None, :]) from ``center``."""
        z, y, x = (axis[sl] - np.float32(c) for axis, sl, c in zip(self.axes, box, center))
        return z[:, None, None], y[None, :, None], x[None, None, :]


def axial_rotation(angle: float) -> np.ndarray:
    """Rows are the local axes: z, then the in-plane axes turned by ``angle`` (radians) towards +x."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


class Ellipsoid:
    """An ellipsoid in patient mm: centre (z, y, x), semi-axes along its local axes, rotation rows."""

    def __init__(self, center, semi, angle: float = 0.0):
        self.center = np.asarray(center, dtype=float)
        self.semi = np.asarray(semi, dtype=float)
        self.angle = float(angle)

    @property
    def rotation(self) -> np.ndarray:
        return axial_rotation(self.angle)

    def scaled(self, factor: float, pad_mm: float = 0.0) -> Ellipsoid:
        return Ellipsoid(self.center, self.semi * factor + pad_mm, self.angle)

    def extent(self) -> np.ndarray:
        """Half-size of the axis-aligned box around it, (z, y, x) mm."""
        return np.sqrt(((self.rotation * self.semi[:, None]) ** 2).sum(axis=0))

    def bounding_box(self, frame: Frame, pad_mm: float = 0.0) -> Box | None:
        ext = self.extent() + pad_mm
        return frame.box(self.center - ext, self.center + ext)

    def level(self, frame: Frame, box: Box) -> np.ndarray:
        """Normalised squared radius on ``box`` (<= 1 inside), float32."""
        z, y, x = frame.grid(box, self.center)
        if self.angle == 0.0:
            a, b, c = (float(v) for v in self.semi)
            return (z / a) ** 2 + (y / b) ** 2 + (x / c) ** 2
        rot = self.rotation.astype(np.float32)
        total = (z / float(self.semi[0])) ** 2
        for row, semi in zip(rot[1:], self.semi[1:]):  # row[0] == 0: in-plane rotation only
            total = total + ((row[1] * y + row[2] * x) / float(semi)) ** 2
        return total

    def mask(self, frame: Frame, pad_mm: float = 0.0) -> tuple[Box, np.ndarray] | None:
        box = self.bounding_box(frame, pad_mm)
        return None if box is None else (box, self.level(frame, box) <= 1.0)


def tube(frame: Frame, points, radii) -> Iterator[tuple[Box, np.ndarray]]:
    """Voxels within a polyline's radius (linearly varying along each segment), segment by segment."""
    points = np.asarray(points, dtype=float)
    radii = np.broadcast_to(np.asarray(radii, dtype=float), (len(points),))
    for a, b, ra, rb in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
        r = max(ra, rb)
        box = frame.box(np.minimum(a, b) - r, np.maximum(a, b) + r)
        if box is None:
            continue
        z, y, x = frame.grid(box, a)
        d = (b - a).astype(np.float32)
        t = (z * d[0] + y * d[1]) + x * d[2]
        t *= np.float32(1.0 / max(float(d @ d), 1e-9))
        np.clip(t, 0.0, 1.0, out=t)
        dist2 = (z - t * d[0]) ** 2
        dist2 += (y - t * d[1]) ** 2
        dist2 += (x - t * d[2]) ** 2
        limit = np.float32(ra) + t * np.float32(rb - ra)
        yield box, dist2 <= limit * limit


def union_box(a: Box | None, b: Box | None) -> Box | None:
    """The smallest box holding both (either may be None)."""
    if a is None or b is None:
        return a or b
    return tuple(slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(a, b))


def box_of_mask(mask: np.ndarray, within: Box) -> Box | None:
    """The tight box of a mask given on the sub-grid ``within``."""
    spans = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return None
        start = within[axis].start
        spans.append(slice(start + int(hit[0]), start + int(hit[-1]) + 1))
    return tuple(spans)
