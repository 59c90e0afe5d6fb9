"""Anatomy pooling: one embedding per anatomy from the tokens inside its mask (docs/method.md, "Vision side").

A learnable query per anatomy attends, through ONE multi-head attention shared by all anatomies,
to that anatomy's tokens taken from every tapped level; a per-anatomy linear projection and L2
normalisation follow. Keys and values are projected once and shared by all anatomy queries.
With the fine focal branch (focal.py) each anatomy's pooled focal features join the attention
output before its projection.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_fvlm.core.model.config import ModelConfig


def token_mask(mask: torch.Tensor | np.ndarray, patch_zyx: tuple[int, int, int]) -> torch.Tensor:
    """Boolean mask at input resolution, (Z, Y, X) or (B, Z, Y, X) -> token mask (.., Zt, Yt, Xt).

    A token belongs to the anatomy when any voxel of its patch does (max pooling); the trailing
    remainder smaller than a patch is dropped exactly as the patch embedding drops it.
    """
    mask = torch.as_tensor(mask)
    if mask.ndim not in (3, 4):
        raise ValueError(f"An anatomy mask must be (z, y, x) or (batch, z, y, x), got {tuple(mask.shape)}.")
    batched = mask if mask.ndim == 4 else mask[None]
    pooled = F.max_pool3d(batched[:, None].float(), kernel_size=patch_zyx, stride=patch_zyx)[:, 0] > 0
    return pooled if mask.ndim == 4 else pooled[0]


class SharedAnatomyAttention(nn.Module):
    """Multi-head cross-attention with packed q/k/v weights (nn.MultiheadAttention's layout)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _project(self, x: torch.Tensor, part: int) -> torch.Tensor:
        width = self.in_proj_weight.shape[1]
        rows = slice(part * width, (part + 1) * width)
        return F.linear(x, self.in_proj_weight[rows], self.in_proj_bias[rows])

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)  # (..., L, C) -> (..., h, L, C/h)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """queries (A, C), tokens (B, T, C), allowed (B, A, T) bool -> (B, A, C).

        Every row of ``allowed`` must hold at least one True (the caller handles empty anatomies).
        """
        q = self._split_heads(self._project(queries, 0))[None]  # (1, h, A, c)
        k = self._split_heads(self._project(tokens, 1))  # (B, h, T, c)
        v = self._split_heads(self._project(tokens, 2))
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            q.expand(tokens.shape[0], -1, -1, -1), k, v, attn_mask=allowed[:, None], dropout_p=drop
        )
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def value_path(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each token's output had every head attended to it alone: out_proj(value(token))."""
        return self.out_proj(self._project(tokens, 2))


class AnatomyPooling(nn.Module):
    """Per-anatomy queries + shared attention + per-anatomy projections (in config order)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.anatomies = tuple(config.anatomies)
        self.queries = nn.Parameter(torch.zeros(len(self.anatomies), config.width))
        nn.init.trunc_normal_(self.queries, std=0.02)
        self.attn = SharedAnatomyAttention(config.width, config.pool_heads, config.dropout)
        self.focal_size = config.focal_pooled_size
        self.projections = nn.ModuleList(nn.Linear(config.width + self.focal_size, config.embed_dim)
                                         for _ in self.anatomies)

    def anatomy_index(self, anatomy: str) -> int:
        if anatomy not in self.anatomies:
            raise ValueError(
                f"The model knows no anatomy '{anatomy}'; it knows {', '.join(self.anatomies)}."
            )
        return self.anatomies.index(anatomy)

    def forward(
        self, levels: list[torch.Tensor], grid: tuple[int, int, int], token_masks: dict[str, torch.Tensor],
        focal: dict[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Embeddings {anatomy: (B, D)} (L2-normalised) and valid flags {anatomy: (B,) bool}.

        An anatomy without tokens in a sample gets valid False and a zero embedding there.
        ``focal``: {anatomy: (B, P)} pooled focal features, required when the model has them.
        """
        pooled, flags = self.attention_pooled(levels, grid, token_masks)
        return self.project(pooled, flags, focal), flags

    def attention_pooled(self, levels: list[torch.Tensor], grid: tuple[int, int, int],
                         token_masks: dict[str, torch.Tensor]
                         ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The attention-pooled token vectors {anatomy: (B, width)} before the projection, and
        the valid flags {anatomy: (B,) bool}."""
        if not token_masks:
            return {}, {}
        batch, tokens_per_level, _ = levels[0].shape
        names = list(token_masks)
        indices = [self.anatomy_index(name) for name in names]
        masks = []
        for name in names:
            mask = torch.as_tensor(token_masks[name], device=levels[0].device)
            if tuple(mask.shape) != (batch, *grid):
                raise ValueError(
                    f"Token mask for '{name}' has shape {tuple(mask.shape)}, expected {(batch, *grid)} "
                    "(batch, token grid); build it with token_mask() from a mask of the encoded input."
                )
            masks.append(mask.reshape(batch, tokens_per_level).bool())
        allowed = torch.stack(masks, dim=1)  # (B, A, N)
        valid = allowed.any(dim=-1)  # (B, A)
        # Rows with no token would give NaN from softmax; let them see everything, then discard.
        allowed = allowed | ~valid[..., None]
        tokens = torch.cat(levels, dim=1)  # (B, L*N, C), level-major like the mask repeat below
        allowed = allowed.repeat(1, 1, len(levels))
        pooled = self.attn(self.queries[indices], tokens, allowed)  # (B, A, C)
        return ({name: pooled[:, slot] for slot, name in enumerate(names)},
                {name: valid[:, slot] for slot, name in enumerate(names)})

    def project(self, pooled: dict[str, torch.Tensor], flags: dict[str, torch.Tensor],
                focal: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """L2-normalised embeddings {anatomy: (B, D)} of `attention_pooled` vectors joined to the
        pooled focal features (zero where an anatomy has no token)."""
        if self.focal_size and (focal is None or not set(pooled) <= set(focal)):
            raise ValueError("This model has a focal branch: pass each anatomy's pooled focal features.")
        embeddings = {}
        for name, joined in pooled.items():
            if self.focal_size:
                joined = torch.cat([joined, focal[name].to(joined.dtype)], dim=-1)
            embedding = F.normalize(self.projections[self.anatomy_index(name)](joined).float(), dim=-1)
            embeddings[name] = embedding * flags[name][:, None]
        return embeddings

    def dense_embeddings(self, levels: list[torch.Tensor], anatomy: str,
                         focal: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token embeddings (B, N, D) in the anatomy's embedding space, for heatmaps.

        MaskCLIP-style dense features: for each head the pooled output is a convex combination of
        the tokens' value vectors, so the pooled embedding (before normalisation) is a weighted
        mix of exactly these per-token vectors. A token's dense embedding is what the anatomy
        embedding would be if the attention put all its weight on that token, spread evenly over
        the token's copies in the tapped levels (the mean of the levels, by linearity). A focal
        model joins the anatomy's pooled focal features ``focal`` (B, P) to every token.
        """
        return self.project_dense(self.value_tokens(levels), anatomy, focal)

    def value_tokens(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """The anatomy-independent part of the dense embeddings, (B, N, width): compute it once."""
        return self.attn.value_path(torch.stack(levels, dim=0).mean(dim=0))

    def project_dense(self, value_tokens: torch.Tensor, anatomy: str,
                      focal: torch.Tensor | None = None) -> torch.Tensor:
        """Dense embeddings (B, N, D) of one anatomy from `value_tokens` (and its pooled focal
        features (B, P), for a focal model)."""
        if self.focal_size:
            if focal is None:
                raise ValueError("This model has a focal branch: pass the anatomy's pooled focal features.")
            value_tokens = torch.cat([value_tokens, focal[:, None].expand(-1, value_tokens.shape[1], -1)
                                      .to(value_tokens.dtype)], dim=-1)
        dense = self.projections[self.anatomy_index(anatomy)](value_tokens)
        return F.normalize(dense.float(), dim=-1)
