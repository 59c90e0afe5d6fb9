"""Encode a CT once and keep its tokens: every later query is a text forward and a dot product.

One pass over the whole anatomy crop when it fits the model's input; otherwise the crop is cut
into patch-aligned windows of the model's input size, encoded one by one, and their token grids
stitched back (overlaps averaged), so pooling and heatmaps always see one token grid.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FvlmInputError
from ..model.fvlm import FvlmModel, inference_context
from ..model.pooling import token_mask
from ..progress import Progress, check_cancel
from .preprocess import ModelInput


@dataclass
class EncodedCT:
    """A CT's tokens and anatomy embeddings for one model: everything queries need."""

    levels: list[torch.Tensor]  # each (1, N, width)
    grid: tuple[int, int, int]  # token grid (Zt, Yt, Xt)
    token_affine: np.ndarray  # token index (i, j, k) -> RAS mm of the token's centre
    token_masks: dict[str, np.ndarray]  # anatomy -> bool (Zt, Yt, Xt)
    embeddings: dict[str, torch.Tensor]  # anatomy -> (D,) L2-normalised; valid anatomies only
    dense: dict[str, torch.Tensor]  # anatomy -> (N, D) per-token embeddings, for token maps ({} with ``fine``)
    absent: list[str]
    cut: dict[str, bool]
    timing_s: dict[str, float] = field(default_factory=dict)
    fine: FineVoxels | None = None  # a focal model's per-voxel features, for fine heatmaps

    @property
    def anatomies(self) -> list[str]:
        return list(self.embeddings)


@dataclass
class FineVoxels:
    """A focal model's features of every voxel inside some anatomy, on the prepared input grid."""

    affine: np.ndarray  # input voxel (i, j, k) -> RAS mm
    shape: tuple[int, int, int]  # the input grid (Z, Y, X)
    index: np.ndarray  # (M,) flat indices of the voxels into that grid
    features: torch.Tensor  # (M, F) focal features
    masks: dict[str, np.ndarray]  # anatomy -> (M,) bool
    pooled: dict[str, torch.Tensor] = field(default_factory=dict)  # anatomy -> (width,) attention-pooled tokens
    parts: dict = field(default_factory=dict)  # anatomy -> its text-independent parts (grounding.py)


def token_grid_affine(input_affine: np.ndarray, patch_zyx) -> np.ndarray:
    """Affine of the token grid: token (i, j, k) sits at the centre of its patch."""
    patch_xyz = np.asarray(patch_zyx, float)[::-1]
    to_input = np.eye(4)
    to_input[:3, :3] = np.diag(patch_xyz)
    to_input[:3, 3] = (patch_xyz - 1) / 2
    return np.asarray(input_affine, float) @ to_input


def _window_starts(size: int, window: int, patch: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window, window)) + [size - window]
    return [s - s % patch for s in starts]


def _encode_tokens(model: FvlmModel, image: np.ndarray, cancel, progress) -> tuple[list[torch.Tensor], tuple]:
    """Token levels over the whole image, windowed when it is larger than the model's input."""
    config = model.config
    window = np.minimum(config.min_input_shape_zyx, image.shape)
    patch = np.asarray(config.patch_zyx)
    grid = tuple(int(s) for s in np.asarray(image.shape) // patch)
    starts = [_window_starts(image.shape[a], int(window[a]), int(patch[a])) for a in range(3)]
    windows = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
    sums, counts = None, torch.zeros(grid)
    for n, (z, y, x) in enumerate(windows):
        check_cancel(cancel)
        crop = image[z:z + window[0], y:y + window[1], x:x + window[2]]
        levels, win_grid = model.encode_image(torch.from_numpy(np.ascontiguousarray(crop))[None, None])
        tz, ty, tx = z // patch[0], y // patch[1], x // patch[2]
        if sums is None:
            sums = [torch.zeros((*grid, level.shape[-1])) for level in levels]
        for total, level in zip(sums, levels):
            total[tz:tz + win_grid[0], ty:ty + win_grid[1], tx:tx + win_grid[2]] += \
                level[0].float().cpu().reshape(*win_grid, -1)
        counts[tz:tz + win_grid[0], ty:ty + win_grid[1], tx:tx + win_grid[2]] += 1
        if progress is not None:
            progress(0.1 + 0.8 * (n + 1) / len(windows), f"encoding window {n + 1}/{len(windows)}")
    device = model.device
    levels = [(total / counts[..., None]).reshape(1, -1, total.shape[-1]).to(device) for total in sums]
    return levels, grid


def encode_ct(model: FvlmModel, prepared: ModelInput, progress: Progress | None = None,
              cancel: threading.Event | None = None, channels: np.ndarray | None = None) -> EncodedCT:
    """Tokens, token masks and anatomy embeddings of a prepared CT; ``channels``: the focal
    model's input channels when already computed (`filters.model_channels` of the image)."""
    config = model.config
    start = time.perf_counter()
    if progress is not None:
        progress(0.1, "encoding the CT")
    with inference_context(model.device):
        levels, grid = _encode_tokens(model, prepared.image, cancel, progress)
        check_cancel(cancel)
        masks = {name: token_mask(mask, config.patch_zyx) for name, mask in prepared.masks.items()}
        masks = {name: m for name, m in masks.items() if m.any()}
        if not masks:
            raise FvlmInputError("The anatomies are too small to cover a single model token.")
        focal, fine = _focal(model, prepared, list(masks), channels) if model.focal is not None else (None, None)
        pooled, valid = model.pooling.attention_pooled(levels, grid, {k: v[None].to(model.device)
                                                                      for k, v in masks.items()})
        embeddings = model.pooling.project(pooled, valid, focal)
        kept = {name: emb[0].float() for name, emb in embeddings.items() if bool(valid[name][0])}
        if fine is None:  # token maps; a focal model's maps are per voxel (grounding.fine_probabilities)
            values = model.pooling.value_tokens(levels)
            dense = {name: model.pooling.project_dense(values, name)[0].float() for name in kept}
        else:
            dense = {}
            fine.pooled = {name: pooled[name][0].float() for name in kept}
    absent = list(prepared.absent) + [name for name in prepared.masks if name not in kept]
    return EncodedCT(levels=levels, grid=grid, token_affine=token_grid_affine(prepared.affine, config.patch_zyx),
                     token_masks={k: v.cpu().numpy() for k, v in masks.items() if k in kept},
                     embeddings=kept, dense=dense, absent=absent, cut=dict(prepared.cut),
                     timing_s={"encode": time.perf_counter() - start}, fine=fine)


def _focal(model: FvlmModel, prepared: ModelInput, names: list[str], channels=None) -> tuple[dict, FineVoxels]:
    """Pooled focal features {anatomy: (1, P)} and the per-voxel features for fine heatmaps."""
    from ..model.focal import focal_inputs
    from .filters import model_channels

    if channels is None:
        channels = model_channels(prepared.image, model.config)
    elif tuple(channels.shape[1:]) != tuple(prepared.image.shape):
        raise ValueError(f"focal channels {channels.shape} do not match the image {prepared.image.shape}")
    channels = torch.from_numpy(channels)
    stacked = torch.from_numpy(np.stack([prepared.masks[n] for n in names]))
    voxels, inside_masks = focal_inputs(channels, stacked)
    features = model.focal.voxel_features(voxels.to(model.device))
    pooled = model.focal.pool(features, inside_masks)[None]  # the features just computed, not again
    index = np.flatnonzero(stacked.flatten(1).any(dim=0).numpy())
    fine = FineVoxels(np.asarray(prepared.affine, float), tuple(prepared.image.shape), index,
                      features.float(), {n: inside_masks[i].numpy() for i, n in enumerate(names)})
    return {n: pooled[:, i] for i, n in enumerate(names)}, fine
