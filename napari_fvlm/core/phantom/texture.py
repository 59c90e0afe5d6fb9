"""From materials to a CT image: HU per material, lung vessels and airways, scanner noise, blur.

Lung parenchyma without vessels looks nothing like a CT, and a model trained on it would learn
that; a random branching tree from each hilum gives the vessel-and-bronchus texture cheaply
(a few hundred small tube segments, each painted on its own bounding box).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .layout import Layout
from .shapes import Frame, tube
from .tissue import IS_LUNG, Canvas

_BINOMIAL = np.array([0.25, 0.5, 0.25], dtype=np.float32)
_BYTE_STD = 73.9  # std of uniform random bytes read as int8; the 3 x 3 blur makes them Gaussian
_NOISE_KEPT = 0.375  # std of white noise after the in-plane binomial blur, per unit before
_TRUNKS_PER_LUNG = 14
_TUBE_GENERATIONS = 3  # thicker branches are painted as tubes, thinner ones as voxel lines
_GENERATIONS = 8
_SHRINK_LENGTH, _SHRINK_RADIUS = 0.8, 0.72


def _tree(rng: np.random.Generator, roots: np.ndarray, directions: np.ndarray, length: float,
          radius: float, in_lung) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Per generation: segment starts, ends and radius of random binary trees grown level by
    level; a child whose end leaves the lung gets one more random turn, then is dropped."""
    levels = []
    starts, directions = roots, directions / np.linalg.norm(directions, axis=1, keepdims=True)
    for _generation in range(_GENERATIONS):
        ends = starts + directions * length
        levels.append((starts, ends, radius))
        length, radius = length * _SHRINK_LENGTH, radius * _SHRINK_RADIUS
        parents = np.repeat(directions, 2, axis=0)
        starts = np.repeat(ends, 2, axis=0)
        directions = np.empty_like(parents)
        pending = np.ones(len(parents), dtype=bool)
        for _attempt in range(2):
            turn = parents[pending] + rng.normal(0.0, 0.5, (int(pending.sum()), 3))
            turn /= np.linalg.norm(turn, axis=1, keepdims=True)
            directions[pending] = turn
            pending[pending] = ~in_lung(starts[pending] + turn * length)
        starts, directions = starts[~pending], directions[~pending]
        if not len(starts):
            break
    return levels


def _vessel_hu(radius: float) -> float:
    """Thin vessels fill only part of a voxel: they look fainter than blood (partial volume)."""
    return max(-450.0, -40.0 - max(0.0, 2.5 - radius) * 200.0)


def paint_lung_texture(hu: np.ndarray, canvas: Canvas, frame: Frame, layout: Layout,
                       rng: np.random.Generator) -> None:
    """Pulmonary vessels (bright) with bronchi beside the larger ones (dark lumen, thin wall)."""

    def in_lung(points: np.ndarray) -> np.ndarray:
        index = np.rint(frame.to_index(points)).astype(np.int64)
        inside = np.all((index >= 0) & (index < frame.shape), axis=1)
        out = np.zeros(len(points), dtype=bool)
        out[inside] = IS_LUNG[canvas.material[tuple(index[inside].T)]]
        return out

    thin_points, thin_values = [], []
    for side, sign in (("right", -1.0), ("left", 1.0)):
        (cy, cx), (_, rx) = layout.lungs[side]
        hilum = np.array([rng.uniform(192, 208), cy, cx - sign * 0.5 * rx])
        directions = rng.normal(0.0, 1.0, (_TRUNKS_PER_LUNG, 3)) * (1.3, 0.8, 0.6)
        directions[:, 2] = sign * (0.4 + np.abs(directions[:, 2]))  # away from the mediastinum
        roots = hilum + rng.uniform(-1.0, 1.0, (_TRUNKS_PER_LUNG, 3)) * (25.0, 8.0, 4.0)
        levels = _tree(rng, roots, directions, rng.uniform(30, 40), rng.uniform(4.0, 5.5), in_lung)
        for generation, (starts, ends, radius) in enumerate(levels):
            value = _vessel_hu(radius)
            if generation >= _TUBE_GENERATIONS:
                length = np.linalg.norm(ends[0] - starts[0])
                steps = max(2, int(np.ceil(length / (0.5 * frame.spacing.min()))))
                t = np.linspace(0.0, 1.0, steps)[None, :, None]
                thin_points.append((starts[:, None] + (ends - starts)[:, None] * t).reshape(-1, 3))
                thin_values.append(np.full(len(thin_points[-1]), value, np.float32))
                continue
            for a, b in zip(starts, ends):
                _paint_in_lung(hu, canvas, frame, (a, b), (radius, radius * _SHRINK_RADIUS), value)
                if generation < 2:
                    axis = np.cross(b - a, (1.0, 0.0, 0.0))
                    axis = axis / max(np.linalg.norm(axis), 1e-6) * (radius + 2.0)
                    airway, outer = (a + axis, b + axis), 0.8 * radius
                    _paint_in_lung(hu, canvas, frame, airway, outer, -150.0)
                    _paint_in_lung(hu, canvas, frame, airway, outer - 1.2, -990.0)
    if thin_points:
        _paint_lines(hu, canvas, frame, np.concatenate(thin_points), np.concatenate(thin_values))


def _paint_lines(hu, canvas: Canvas, frame: Frame, points: np.ndarray, values: np.ndarray) -> None:
    """Thin vessels: the lung voxels their centre lines pass through, brightest value wins."""
    index = np.rint(frame.to_index(points)).astype(np.int64)
    keep = np.all((index >= 0) & (index < frame.shape), axis=1)
    z, y, x = index[keep].T
    values = values[keep]
    lung = IS_LUNG[canvas.material[z, y, x]]
    z, y, x, values = z[lung], y[lung], x[lung], values[lung]
    order = np.argsort(values)  # with repeated voxels the last (brightest) assignment wins
    hu[z[order], y[order], x[order]] = np.maximum(hu[z[order], y[order], x[order]], values[order])


def _paint_in_lung(hu, canvas: Canvas, frame: Frame, points, radii, value: float) -> None:
    for box, mask in tube(frame, points, radii):
        mask &= IS_LUNG[canvas.material[box]]
        np.copyto(hu[box], np.float32(value), where=mask)


def add_noise_and_blur(hu: np.ndarray, rng: np.random.Generator, sigma_hu: float) -> None:
    """Gaussian noise, then a binomial blur in-plane: correlated noise and soft edges, like a
    reconstructed CT; ``sigma_hu`` is the noise left after the blur."""
    raw = np.frombuffer(rng.bytes(hu.size), dtype=np.int8).reshape(hu.shape)
    noise = np.multiply(raw, np.float32(sigma_hu / _NOISE_KEPT / _BYTE_STD), dtype=np.float32)
    hu += noise
    ndimage.correlate1d(hu, _BINOMIAL, axis=2, output=noise, mode="nearest")
    ndimage.correlate1d(noise, _BINOMIAL, axis=1, output=hu, mode="nearest")


def to_int16(hu: np.ndarray) -> np.ndarray:
    np.clip(hu, -1024.0, 3071.0, out=hu)
    np.rint(hu, out=hu)
    return hu.astype(np.int16)
