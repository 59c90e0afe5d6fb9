"""The fine focal branch: small findings seen at the input's resolution, pooled over fine masks.

A ViT token of the demo model covers 40 x 48 x 48 mm, ~70% of a lung's token region is not lung,
and one wide HU window leaves emphysema 0.09 of the input range: small findings drown. This branch
works per voxel instead. Its input is fixed channels computed once per CT
(`napari_fvlm.core.inference.filters`: extra HU windows, smoothed windows, Hessian blobness); a
per-voxel MLP (linear layers over each voxel's channels, ~1,000 parameters: it cannot memorise phantoms) maps
them to ``focal_features`` features, and each anatomy pools them over its voxel mask: the mean,
a log-mean-exp (a soft maximum: one small lesion in a large lung moves it, a mean dilutes it) and,
optionally, the same soft minimum.

`AnatomyPooling` joins the pooled vector to the attention-pooled ViT vector before the anatomy's
projection. Over a single voxel both poolings give that voxel's own features: the voxel-level
heatmaps (`inference.grounding`) apply the anatomy score's rule to each voxel that way.
"""

from __future__ import annotations

import torch
from torch import nn

LME_FLOOR = 1e-300  # keeps log-mean-exp finite (float64) when an anatomy lies far below the maximum
LME_TEMPERATURE = 0.1  # sharpens the soft maximum: features of MLP-initialisation size act as a max
GAIN_INIT = 8.0  # the pooled features start on the scale of the attention-pooled ViT vector


class FocalBranch(nn.Module):
    """Per-voxel MLP on the fixed channels -> per-anatomy [mean, log-mean-exp] over voxel masks."""

    def __init__(self, channels: int, hidden: int, features: int, with_min: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.features = features
        self.with_min = with_min
        # Linear layers on (voxels, channels): a 1 x 1 x 1 Conv3d computes the same ~30x slower on a CPU
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, features))
        # Without it the focal part of an anatomy's projection was ~10x smaller than the ViT part
        # (measured on a trained model) and the focal findings stayed at chance.
        self.gain = nn.Parameter(torch.tensor(GAIN_INIT))

    @property
    def pooled_size(self) -> int:
        return (3 if self.with_min else 2) * self.features

    def voxel_features(self, voxels: torch.Tensor) -> torch.Tensor:
        """(M, C) channels of M voxels -> (M, F) features, scaled by the learned gain (what a
        voxel alone pools to)."""
        if voxels.ndim != 2 or voxels.shape[1] != self.channels:
            raise ValueError(f"The focal branch takes (voxels, {self.channels}) channels, got {tuple(voxels.shape)}.")
        return self.gain * self.mlp(voxels.float())

    def forward(self, samples: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Per sample (voxels (M, C), masks (A, M) bool) -> (B, A, P) pooled features (zeros for
        an empty mask). Only voxels of some anatomy are passed (`focal_inputs`): nothing else is
        ever pooled, and skipping the rest more than halves the work."""
        return torch.stack([self.pool(self.voxel_features(voxels), masks) for voxels, masks in samples])

    def pool(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(M, F) voxel features, (A, M) masks -> (A, P) this branch's pooled statistics."""
        return pool_features(features, masks.to(features.device), self.with_min)


def focal_inputs(channels, masks) -> tuple[torch.Tensor, torch.Tensor]:
    """Channels (C, Z, Y, X) and voxel masks (A, Z, Y, X) -> (voxels (M, C), masks (A, M)) over the
    M voxels inside any mask; also returns nothing else, so padding never counts."""
    channels, masks = torch.as_tensor(channels), torch.as_tensor(masks, dtype=torch.bool)
    flat = masks.flatten(1)
    inside = flat.any(dim=0)
    return channels.flatten(1)[:, inside].t().contiguous(), flat[:, inside].contiguous()


def pool_features(features: torch.Tensor, masks: torch.Tensor, with_min: bool = False,
                  temperature: float = LME_TEMPERATURE) -> torch.Tensor:
    """features (N, F), masks (A, N) bool -> (A, 2F) or (A, 3F): masked mean, masked log-mean-exp at
    ``temperature`` (a soft maximum) and, ``with_min``, the soft minimum; over one voxel each gives
    its features."""
    weights = masks.to(features.dtype)
    counts = weights.sum(dim=1, keepdim=True)
    safe = counts.clamp(min=1.0)
    pooled = [weights @ features / safe, _soft_max(features, weights, safe, temperature)]
    if with_min:
        pooled.append(-_soft_max(-features, weights, safe, temperature))
    return torch.cat(pooled, dim=1).masked_fill(counts == 0, 0.0)


def _soft_max(features, weights, counts, temperature) -> torch.Tensor:
    """Masked log-mean-exp (A, F) of features (N, F) under weights (A, N)."""
    scaled = features.double() / temperature  # float64: other anatomies' maxima must not underflow
    top = scaled.detach().amax(dim=0, keepdim=True)
    total = weights.double() @ torch.exp(scaled - top)
    return (temperature * (top + torch.log(total / counts.double() + LME_FLOOR))).to(features.dtype)
