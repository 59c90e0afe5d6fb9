"""The focal branch's fixed input channels, computed once per CT from the prepared [0, 1] image.

Extra HU windows (lung, parenchyma, soft tissue, calcium: one wide window leaves emphysema 0.09
of the input range), the same windows smoothed (local density) and Hessian blobness at a few
scales: the classic nodule-enhancement "dot" filter (Li et al. 2003), which answers spheres and not
vessels, though both share a nodule's HU and diameter. Fixed filters in scipy/numpy (several
times faster than the same separable filters as torch convolutions on a CPU); the model's
`FocalBranch` learns only a small per-voxel map on top of them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def window_channels(image: np.ndarray, hu_window, windows) -> list[np.ndarray]:
    """The model's [0, 1] image (its ``hu_window``) re-windowed to each (low, high) HU window."""
    low, high = hu_window
    hu = image.astype(np.float32) * np.float32(high - low) + np.float32(low)
    return [np.clip((hu - a) / np.float32(b - a), 0.0, 1.0) for a, b in windows]


def hessian(volume: np.ndarray, sigma_mm: float, spacing_zyx) -> list[np.ndarray]:
    """[zz, yy, xx, zy, zx, yx]: the Hessian in mm of ``volume`` smoothed at ``sigma_mm``,
    scale-normalised (times sigma squared)."""
    spacing = np.asarray(spacing_zyx, np.float32)
    smooth = ndimage.gaussian_filter(volume.astype(np.float32, copy=False), sigma_mm / spacing, mode="nearest",
                                     truncate=3.0)
    first = [np.gradient(smooth, axis=a) / spacing[a] for a in range(3)]
    norm = np.float32(sigma_mm ** 2)
    pairs = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
    return [np.gradient(first[i], axis=j) * (norm / spacing[j]) for i, j in pairs]


def eigenvalues(zz, yy, xx, zy, zx, yx) -> np.ndarray:
    """(3, ...) eigenvalues, largest first, of symmetric 3 x 3 matrices given by their six
    entries (any shape): the closed trigonometric form."""
    q = (zz + yy + xx) / 3
    p = np.sqrt(((zz - q) ** 2 + (yy - q) ** 2 + (xx - q) ** 2 + 2 * (zy * zy + zx * zx + yx * yx)) / 6)
    p = np.maximum(p, 1e-12)
    a, d, f = (zz - q) / p, (yy - q) / p, (xx - q) / p
    b, c, e = zy / p, zx / p, yx / p
    r = np.clip((a * (d * f - e * e) - b * (b * f - e * c) + c * (b * e - d * c)) / 2, -1.0, 1.0)
    phi = np.arccos(r) / 3
    largest = q + 2 * p * np.cos(phi)
    smallest = q + 2 * p * np.cos(phi + np.float32(2 * np.pi / 3))
    return np.stack([largest, 3 * q - largest - smallest, smallest])


def blobness(volume: np.ndarray, sigma_mm: float, spacing_zyx, bright: bool) -> np.ndarray:
    """The dot filter (Li et al. 2003): |weakest|^2 / |strongest| Hessian eigenvalue where all
    three have a blob's sign (negative for a bright blob, positive for a dark one), else 0. A tube
    has one eigenvalue near 0 and a plate two, so only spheres answer. Eigenvalues are solved only
    where the trace (their sum) has the blob's sign: elsewhere the answer is 0 anyway."""
    entries = hessian(volume, sigma_mm, spacing_zyx)
    sign = -1.0 if bright else 1.0
    where = np.nonzero(sign * (entries[0] + entries[1] + entries[2]) > 1e-4)
    values = sign * eigenvalues(*(entry[where] for entry in entries))
    ordered = values[::-1] if bright else values  # a blob's: all > 0, ... (weakest last)
    weakest, strongest = np.minimum.reduce(ordered), np.maximum.reduce(ordered)
    out = np.zeros(volume.shape, np.float32)
    out[where] = np.where(weakest > 0, weakest ** 2 / np.maximum(strongest, 1e-12), 0.0)
    return out


BLOB_GAIN = 4.0  # puts a phantom nodule's response near 1, like the windows


def focal_channels(image: np.ndarray, config) -> np.ndarray:
    """(C, Z, Y, X) float32 channels of the prepared image for ``config``'s focal branch:
    the windows, the windows smoothed at ``focal_smooth_mm``, one blobness per ``focal_blobs``
    entry (channel -1: the model's own window, i: the i-th extra window; polarity +1 bright),
    then one band share per ``focal_bands`` entry."""
    spacing = np.asarray(config.spacing_zyx, np.float32)
    windows = window_channels(image, config.hu_window, config.input_windows)
    smooth = [ndimage.gaussian_filter(w, config.focal_smooth_mm / spacing, mode="nearest", truncate=3.0)
              for w in windows]
    blobs = []
    for channel, sigma, polarity in config.focal_blobs:
        source = image if channel < 0 else windows[int(channel)]
        blobs.append(blobness(source, sigma, config.spacing_zyx, bright=polarity > 0) * np.float32(BLOB_GAIN))
    bands = [band_share(image, config.hu_window, band, spacing) for band in config.focal_bands]
    return np.stack(windows + smooth + blobs + bands)


def band_share(image: np.ndarray, hu_window, band, spacing_zyx) -> np.ndarray:
    """The share of voxels near each voxel (Gaussian weights of ``sigma`` mm) whose HU lies in
    [low, high): a density mask, smoothed."""
    low_hu, high_hu = hu_window
    low, high, sigma = band
    scale = np.float32(high_hu - low_hu)
    inside = (image >= (low - low_hu) / scale) & (image < (high - low_hu) / scale)
    return ndimage.gaussian_filter(inside.astype(np.float32), sigma / np.asarray(spacing_zyx, np.float32),
                                   mode="nearest", truncate=3.0)


def focal_channel_count(config) -> int:
    return 2 * len(config.input_windows) + len(config.focal_blobs) + len(config.focal_bands)


CHANNEL_CEILING = 2.0  # channels are stored and used as uint8 steps of 2 / 255 over [0, 2]
_STEPS = 255.0 / CHANNEL_CEILING


def quantise(channels: np.ndarray) -> np.ndarray:
    """float channels -> uint8 (what training caches keep)."""
    return np.round(np.clip(channels, 0.0, CHANNEL_CEILING) * np.float32(_STEPS)).astype(np.uint8)


def dequantise(stored: np.ndarray) -> np.ndarray:
    return stored.astype(np.float32) * np.float32(1.0 / _STEPS)


def model_channels(image: np.ndarray, config) -> np.ndarray:
    """The focal channels exactly as the model sees them, in training and inference alike
    (quantised like the training cache: 0.0078 steps; 2 HU in the lung window)."""
    return dequantise(quantise(focal_channels(image, config)))
