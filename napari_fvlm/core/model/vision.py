"""3D ViT image encoder returning multi-level tokens (docs/method.md, "Vision side").

Input (B, 1, Z, Y, X) in [0, 1] is cut into a (Zt, Yt, Xt) token grid (a trailing remainder
smaller than one patch is dropped, the same floor rule the anatomy masks follow in
`pooling.token_mask`). No CLS token: every token is a place in the body.

The patch embedding is one of three (``ModelConfig.stem_channels`` / ``stem_kind``):
- the reference's: one Conv3d with stride = patch (``stem_channels`` 0);
- `conv_stem` (``stem_kind`` "conv", the demo model's): strided 3 x 3 x 3 convolutions that halve
  the patch until 2 voxels are left, then one embedding; it sees shape (a round nodule against a
  vessel crossing the slice), and every voxel is read;
- `max_pool_stem` (``stem_kind`` "maxpool"): quarter-patch embeddings, GELU, a 2x max pool and a 2x
  embedding; a linear embedding of a whole patch sees a 6 mm nodule as a fraction of a percent of
  its voxels, while the max lets a token report a small spot wherever it lies in the patch.
Every stem gives the same token grid (nested floor divisions compose).
The fine focal branch, which works per voxel beside this encoder, lives in `focal.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.model.config import ModelConfig

Grid = tuple[int, int, int]


def interpolate_position_embedding(pos_embed: torch.Tensor, grid_from: Grid, grid_to: Grid) -> torch.Tensor:
    """Resize a (1, Zf*Yf*Xf, C) position embedding to another token grid, trilinearly in (z, y, x)."""
    if tuple(grid_from) == tuple(grid_to):
        return pos_embed
    channels = pos_embed.shape[-1]
    volume = pos_embed.reshape(1, *grid_from, channels).permute(0, 4, 1, 2, 3)
    resized = F.interpolate(volume.float(), size=tuple(grid_to), mode="trilinear", align_corners=False)
    return resized.to(pos_embed.dtype).flatten(2).transpose(1, 2)


def position_embedding_from_2d(pos_embed_2d: torch.Tensor, grid_zyx: Grid) -> torch.Tensor:
    """A 3D position embedding initialised from a 2D (MAE/ImageNet ViT) one.

    The 2D table ((1,) [1 +] H*W, C; a leading CLS entry is dropped when present) is resized
    bilinearly to (Y, X) and repeated along Z, as the fVLM authors initialised their ViT.
    Returns (1, Z*Y*X, C).
    """
    table = pos_embed_2d.reshape(-1, pos_embed_2d.shape[-1])
    count = table.shape[0]
    side = int(round(count ** 0.5))
    if side * side != count:  # a CLS entry first
        table, count = table[1:], count - 1
        side = int(round(count ** 0.5))
    if side * side != count:
        raise FvlmInputError(f"A 2D position embedding with {table.shape[0]} entries is not a square grid.")
    channels = table.shape[-1]
    image = table.reshape(1, side, side, channels).permute(0, 3, 1, 2).float()
    z, y, x = grid_zyx
    plane = F.interpolate(image, size=(y, x), mode="bilinear", align_corners=False)
    volume = plane.unsqueeze(2).expand(1, channels, z, y, x)
    return volume.flatten(2).transpose(1, 2).contiguous().to(pos_embed_2d.dtype)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """``keys``: (B, N) bool, the tokens that may be attended to (None: all)."""
        batch, tokens, width = x.shape
        # Fused qkv layout: [q | k | v], each split into heads (the common ViT layout).
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        mask = keys[:, None, None, :] if keys is not None else None
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask, dropout_p=drop)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, width * mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), keys))
        return x + self.mlp(self.norm2(x))


def conv_stem(patch_zyx: Grid, channels: int, width: int) -> nn.Sequential:
    """Strided 3 x 3 x 3 convolutions (GroupNorm, GELU), channels doubling from ``channels``, each
    halving every axis with more than 2 voxels of patch left, then one ``width`` embedding of the
    2 x 2 x 2 (or less) that is left. Sees shape, not only brightness: a round nodule and a vessel
    crossing the slice differ only over a few voxels in 3D. A stride-2 kernel of 3 still reads
    every voxel, so a small spot is never skipped."""
    remaining, layers, inputs, outputs = list(patch_zyx), [], 1, channels
    while max(remaining) > 2:
        stride = tuple(2 if r > 2 else 1 for r in remaining)
        layers += [nn.Conv3d(inputs, outputs, kernel_size=3, stride=stride, padding=1),
                   nn.GroupNorm(min(8, outputs), outputs), nn.GELU()]
        remaining = [r // s for r, s in zip(remaining, stride)]
        inputs, outputs = outputs, outputs * 2
    layers.append(nn.Conv3d(inputs, width, kernel_size=tuple(remaining), stride=tuple(remaining)))
    return nn.Sequential(*layers)


def max_pool_stem(patch_zyx: Grid, channels: int, width: int) -> nn.Sequential:
    """Sub-patch embedding (patch / 4) -> GELU -> 2x max pool -> 2x embedding to ``width``."""
    sub = tuple(p // 4 for p in patch_zyx)
    return nn.Sequential(nn.Conv3d(1, channels, kernel_size=sub, stride=sub), nn.GELU(), nn.MaxPool3d(2),
                         nn.Conv3d(channels, width, kernel_size=2, stride=2))


class VisionTransformer3d(nn.Module):
    """Patch embedding + learned 3D position embedding + pre-norm blocks; taps multi-level tokens."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.patch_zyx = tuple(config.patch_zyx)
        self.grid_zyx = tuple(config.position_grid_zyx)
        self.tap_blocks = tuple(config.tap_blocks)
        width = config.width
        if config.stem_channels:
            stem = conv_stem if config.stem_kind == "conv" else max_pool_stem
            self.patch_embed = stem(self.patch_zyx, config.stem_channels, width)
        else:
            self.patch_embed = nn.Conv3d(1, width, kernel_size=self.patch_zyx, stride=self.patch_zyx)
        tokens = self.grid_zyx[0] * self.grid_zyx[1] * self.grid_zyx[2]
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, width))
        self.pos_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(width, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(width)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        for module in self.patch_embed.modules():  # as in MAE: a Linear over the flattened patch
            if isinstance(module, nn.Conv3d):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))

    def forward(self, images: torch.Tensor, shapes=None) -> tuple[list[torch.Tensor], Grid]:
        """Images (B, 1, Z, Y, X) -> (levels: list of (B, N, width), token grid (Zt, Yt, Xt)).

        ``shapes`` (B x (z, y, x), optional): each image's own shape inside a batch padded at the
        far end. A sample's tokens are then exactly those it has alone: its stem and position
        embedding see its own grid, and padding tokens are never attended to.
        """
        if images.ndim != 5 or images.shape[1] != 1:
            raise ValueError(
                f"The image encoder takes a (batch, 1, z, y, x) tensor, got shape {tuple(images.shape)}."
            )
        if any(s < p for s, p in zip(images.shape[2:], self.patch_zyx)):
            raise ValueError(
                f"Input {tuple(images.shape[2:])} (z, y, x) is smaller than one patch {self.patch_zyx}; "
                "pad the crop to the model's minimum input shape."
            )
        grid = self.token_grid(images.shape[2:])
        grids = [grid] * images.shape[0] if shapes is None else [self.token_grid(s) for s in shapes]
        if len(grids) != images.shape[0] or any(g > b for own in grids for g, b in zip(own, grid)):
            raise ValueError(f"shapes {[tuple(map(int, s)) for s in shapes]} do not fit the batch "
                                 f"{tuple(images.shape[2:])}: one shape per image, none larger than the batch.")
        if all(own == grid for own in grids):
            x, keys = self._embed(images, grid), None
        else:
            keys = torch.zeros(images.shape[0], *grid, dtype=torch.bool, device=images.device)
            rows = []
            for b, own in enumerate(grids):
                keys[(b, *(slice(0, g) for g in own))] = True
                volume = self._embed(images[b:b + 1], own).transpose(1, 2).reshape(1, -1, *own)
                padding = [0, grid[2] - own[2], 0, grid[1] - own[1], 0, grid[0] - own[0]]
                rows.append(F.pad(volume, padding).flatten(2).transpose(1, 2))
            x, keys = torch.cat(rows), keys.flatten(1)
        levels = []
        for number, block in enumerate(self.blocks, start=1):
            x = block(x, keys)
            if number in self.tap_blocks:
                levels.append(x)
        levels.append(self.norm(x))
        return levels, grid

    def token_grid(self, shape) -> Grid:
        """The token grid of an image shape (whole patches only: the floor rule)."""
        return tuple(int(s) // p for s, p in zip(shape, self.patch_zyx))

    def _embed(self, images: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Patch embedding + position embedding of the whole patches of ``grid``: (B, N, width)."""
        whole = [g * p for g, p in zip(grid, self.patch_zyx)]
        tokens = self.patch_embed(images[..., :whole[0], :whole[1], :whole[2]].to(self.pos_embed.dtype))
        tokens = tokens.flatten(2).transpose(1, 2)
        return self.pos_drop(tokens + interpolate_position_embedding(self.pos_embed, self.grid_zyx, grid))
