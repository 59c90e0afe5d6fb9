"""The fVLM model: image encoder, anatomy pooling, text encoder and a learnable temperature."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.model.config import ModelConfig
from napari_fvlm.core.model.focal import FocalBranch
from napari_fvlm.core.model.pooling import AnatomyPooling, token_mask
from napari_fvlm.core.model.text import TextEncoder
from napari_fvlm.core.model.vision import VisionTransformer3d

Grid = tuple[int, int, int]


@dataclass
class FvlmOutput:
    """What `FvlmModel.forward` returns (one forward call keeps DDP's gradient sync whole)."""

    embeddings: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    text_embeddings: torch.Tensor | None


class FvlmModel(nn.Module):
    """Anatomy-level CLIP: per-anatomy image embeddings contrasted with sentence embeddings.

    Parameter names (the checkpoint format): ``vision.*``, ``pooling.*``, ``text.model.*`` (the
    transformers encoder), ``text.proj.*``, ``log_temperature`` and, with the fine focal branch,
    ``focal.*``.
    """

    def __init__(self, config: ModelConfig, text: TextEncoder | None) -> None:
        super().__init__()
        self.config = config
        self.vision = VisionTransformer3d(config)
        self.pooling = AnatomyPooling(config)
        self.focal = None
        if config.focal:
            from napari_fvlm.core.inference.filters import focal_channel_count

            self.focal = FocalBranch(focal_channel_count(config), config.focal_hidden, config.focal_features,
                                     config.focal_min)
        self.text = text
        self.log_temperature = nn.Parameter(torch.tensor(math.log(config.temperature_init)))

    @property
    def anatomies(self) -> tuple[str, ...]:
        return self.config.anatomies

    @property
    def device(self) -> torch.device:
        return self.log_temperature.device

    @property
    def temperature(self) -> torch.Tensor:
        """exp(log_temperature) clamped to the config's bounds (the reference clamps to [0.001, 0.5])."""
        low, high = self.config.temperature_bounds
        return self.log_temperature.exp().clamp(low, high)

    def encode_image(self, images: torch.Tensor, shapes=None) -> tuple[list[torch.Tensor], Grid]:
        """(B, 1, Z, Y, X) float in [0, 1] -> (token levels, each (B, N, width); grid (Zt, Yt, Xt)).
        ``shapes``: each image's own (z, y, x) in a padded batch (see `VisionTransformer3d`)."""
        if not torch.is_tensor(images) or not images.is_floating_point():
            raise TypeError("encode_image takes a float tensor scaled to [0, 1] (HU window applied).")
        return self.vision(images.to(self.device), shapes)

    def token_masks(self, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Boolean anatomy masks at input resolution -> token masks (max pooling to the grid)."""
        return {name: token_mask(mask, self.config.patch_zyx).to(self.device) for name, mask in masks.items()}

    def pool(self, levels: list[torch.Tensor], grid: Grid, token_masks: dict[str, torch.Tensor],
             focal: dict[str, torch.Tensor] | None = None
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """{anatomy: (B, D) L2-normalised}, {anatomy: (B,) bool valid}; see `AnatomyPooling`.
        ``focal``: the pooled focal features of a focal model (`pool_focal`)."""
        return self.pooling(levels, grid, token_masks, focal)

    def pool_focal(self, focal: list | None, names) -> dict[str, torch.Tensor] | None:
        """{anatomy: (B, P)} pooled focal features; ``focal``: per sample (voxels (M, C), masks
        (A, M)) from `focal.focal_inputs`, mask rows in the order of ``names``. None for a model
        without the focal branch."""
        if self.focal is None:
            return None
        if focal is None:
            raise ValueError("This model has a focal branch: it needs the focal channels and voxel masks.")
        pooled = self.focal([(v.to(self.device), m.to(self.device)) for v, m in focal])
        return {name: pooled[:, i] for i, name in enumerate(names)}

    def dense_embeddings(self, levels: list[torch.Tensor], anatomy: str,
                         focal: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token embeddings (B, N, D) in ``anatomy``'s space, for heatmaps (see pooling.py)."""
        return self.pooling.dense_embeddings(levels, anatomy, focal)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Sentences -> (T, D) L2-normalised embeddings."""
        if self.text is None:
            raise FvlmInputError("This model was built without a text encoder; build it with one.")
        return self.text(texts)

    def forward(self, images: torch.Tensor, token_masks: dict[str, torch.Tensor],
                texts: list[str] | None = None, shapes=None, focal: list | None = None) -> FvlmOutput:
        """``focal``: a focal model's inputs per sample (see `pool_focal`), masks in token_masks' order."""
        levels, grid = self.encode_image(images, shapes)
        focal = self.pool_focal(focal, list(token_masks))
        embeddings, valid = self.pool(levels, grid, token_masks, focal)
        text_embeddings = self.encode_text(texts) if texts is not None else None
        return FvlmOutput(embeddings, valid, text_embeddings)


def build_model(config: ModelConfig, pretrained_text: bool = True, text_source: str | Path | None = None,
                with_text: bool = True) -> FvlmModel:
    """A fresh FvlmModel for ``config``.

    ``pretrained_text`` loads the text encoder's pretrained weights (else only its architecture,
    for weights that come from a checkpoint); ``text_source`` overrides where the text encoder's
    files are read (default: ``config.text_encoder``). The text encoder is frozen when the config
    keeps its weights out of checkpoints (they must stay the pretrained ones).
    """
    text = None
    if with_text:
        text = TextEncoder(
            text_source or config.text_encoder, config.embed_dim, pooling=config.text_pooling,
            max_length=config.text_max_length, pretrained=pretrained_text,
            frozen=not config.text_in_checkpoint,
        )
    return FvlmModel(config, text)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 where the GPU supports it, else float16 on CUDA; None (float32) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def inference_context(device: str | torch.device):
    """No-grad inference; mixed precision on CUDA, plain float32 on CPU."""
    device = torch.device(device)
    dtype = autocast_dtype(device)
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type="cuda", dtype=dtype):
                yield
