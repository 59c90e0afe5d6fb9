"""The fVLM model and its checkpoint format.

The config (``ModelConfig``, presets, reading a checkpoint's config) is imported eagerly and needs
no torch; everything else is imported on first use, so ``import napari_fvlm.core.model`` stays
cheap for the plugin.
"""

from __future__ import annotations

import importlib

from napari_fvlm.core.model.config import PRESETS, ModelConfig, preset, read_checkpoint_config

_LAZY = {
    "FvlmModel": "fvlm", "FvlmOutput": "fvlm", "build_model": "fvlm", "inference_context": "fvlm",
    "VisionTransformer3d": "vision", "interpolate_position_embedding": "vision",
    "position_embedding_from_2d": "vision",
    "AnatomyPooling": "pooling", "token_mask": "pooling",
    "TextEncoder": "text", "resolve_text_source": "text",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "convert_official": "convert_official",
}

__all__ = ["ModelConfig", "PRESETS", "preset", "read_checkpoint_config", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
