"""Import the official fVLM checkpoint (alibaba-damo-academy/fvlm, a LAVIS ``.pth``).

The ``.pth`` is read with ``torch.load(weights_only=True)``: tensors and plain containers only,
no code runs (the one place in the project where torch.load is allowed). A top-level "model" or
"state_dict" entry and "module." prefixes (DDP) are unwrapped. Names are mapped as below, every
shape is checked against the config (``fvlm-b`` unless given) and the result is written with
`save_checkpoint`; the fine-tuned CXR-BERT weights are kept, so its tokenizer and config files
must be available (hub cache or a local folder passed as ``text_encoder``).

=========================================================  ======================================
reference name (N = block, K = anatomy index)              napari-fvlm name
=========================================================  ======================================
visual_encoder.patch_embedding.patch_embeddings.{w,b}      vision.patch_embed.{w,b}
visual_encoder.patch_embedding.position_embeddings         vision.pos_embed  (1, 7*16*11, 768)
visual_encoder.blocks.N.norm1 / norm2                      vision.blocks.N.norm1 / norm2
visual_encoder.blocks.N.attn.qkv  ([q|k|v], heads inside)  vision.blocks.N.attn.qkv
visual_encoder.blocks.N.attn.out_proj                      vision.blocks.N.attn.proj
visual_encoder.blocks.N.mlp.linear1 / linear2              vision.blocks.N.mlp.fc1 / fc2
visual_encoder.norm                                        vision.norm
attention.in_proj_weight / in_proj_bias                    pooling.attn.in_proj_weight / _bias
attention.out_proj                                         pooling.attn.out_proj
query_tokens  (4, 768), order lung, heart, esophagus,      pooling.queries
aorta
vision_projs.K                                             pooling.projections.K
text_proj                                                  text.proj
text_encoder.{embeddings,encoder}.*  (BERT)                text.model.{embeddings,encoder}.*
temp  (a plain scalar)                                     log_temperature = log(clamped temp)
text_encoder.cls.*, text_encoder.pooler.*, *.position_ids  dropped (MLM head, unused pooler,
                                                           buffers of older transformers)
=========================================================  ======================================

The reference taps the outputs of blocks 4, 7, 10 and the final normed output, as our fvlm-b
config does. Its input arrays are (z, y, x) in the stored voxel order of the CT-RATE NIfTI files.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.model.checkpoint import check_weights, save_checkpoint, saved_state
from napari_fvlm.core.model.config import ModelConfig, preset
from napari_fvlm.core.model.fvlm import build_model

NAME_RULES: list[tuple[str, str]] = [
    (r"^visual_encoder\.patch_embedding\.patch_embeddings\.", "vision.patch_embed."),
    (r"^visual_encoder\.patch_embedding\.position_embeddings$", "vision.pos_embed"),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.out_proj\.", r"vision.blocks.\1.attn.proj."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.linear1\.", r"vision.blocks.\1.mlp.fc1."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.linear2\.", r"vision.blocks.\1.mlp.fc2."),
    (r"^visual_encoder\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv)\.", r"vision.blocks.\1.\2."),
    (r"^visual_encoder\.norm\.", "vision.norm."),
    (r"^attention\.(in_proj_weight|in_proj_bias)$", r"pooling.attn.\1"),
    (r"^attention\.out_proj\.", "pooling.attn.out_proj."),
    (r"^query_tokens$", "pooling.queries"),
    (r"^vision_projs\.(\d+)\.", r"pooling.projections.\1."),
    (r"^text_proj\.", "text.proj."),
    (r"^text_encoder\.(embeddings|encoder)\.", r"text.model.\1."),
]
DROPPED = re.compile(r"^text_encoder\.(cls|pooler)\.|\.position_ids$")
TEMPERATURE_KEY = "temp"


def map_name(name: str) -> str | None:
    """Our name for a reference parameter name, or None when no rule applies."""
    for pattern, replacement in NAME_RULES:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # refused pickle content, damaged archive, not a torch file
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise FvlmInputError(
            f"'{path.name}' could not be read as a tensors-only PyTorch checkpoint ({first[:160]})."
        ) from None
    for _ in range(3):  # {"model": {...}} or {"state_dict": {...}}, possibly nested
        if isinstance(payload, dict) and not any(torch.is_tensor(v) for v in payload.values()):
            inner = next((payload[k] for k in ("state_dict", "model") if isinstance(payload.get(k), dict)), None)
            if inner is None:
                break
            payload = inner
    tensors = {k: v for k, v in payload.items() if torch.is_tensor(v)} if isinstance(payload, dict) else {}
    if not tensors:
        raise FvlmInputError(f"'{path.name}' holds no model weights; is it the official fVLM checkpoint?")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in tensors.items()}


def map_state_dict(reference: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename reference tensors to ours; refuse names we do not know (it is not an fVLM file)."""
    mapped, unknown = {}, []
    for name, tensor in reference.items():
        if DROPPED.search(name):
            continue
        if name == TEMPERATURE_KEY:
            low, high = config.temperature_bounds
            mapped["log_temperature"] = torch.tensor(math.log(min(max(float(tensor), low), high)))
        elif (ours := map_name(name)) is not None:
            mapped[ours] = tensor.float()
        else:
            unknown.append(name)
    if unknown:
        raise FvlmInputError(
            f"The checkpoint has parameters the fVLM reference model does not ({unknown[:5]}); "
            "it is not an official fVLM checkpoint."
        )
    return mapped


def convert_official(pth_path: str | Path, out_folder: str | Path, config: ModelConfig | None = None,
                     text_encoder: str | Path | None = None) -> Path:
    """Convert the official fVLM ``.pth`` to a napari-fvlm checkpoint folder; returns the folder.

    ``config`` defaults to the ``fvlm-b`` preset; ``text_encoder`` is where CXR-BERT's tokenizer
    and config are read (default: the config's hub id, from the local cache when offline).
    """
    path = Path(pth_path)
    if not path.is_file():
        raise FvlmInputError(f"Official checkpoint '{path}' does not exist; check the path.")
    config = config or preset("fvlm-b")
    if not config.text_in_checkpoint:
        raise FvlmInputError("The official checkpoint fine-tunes its text encoder; use a config with "
                             "text_in_checkpoint true.")
    if config.stem_channels:
        raise FvlmInputError("The official checkpoint has a linear patch embedding; use a config with "
                             "stem_channels 0.")
    mapped = map_state_dict(_read_state_dict(path), config)
    model = build_model(config, pretrained_text=False, text_source=text_encoder)
    check_weights(saved_state(model), mapped, f"'{path.name}' (after renaming)")
    model.load_state_dict(mapped, strict=True)
    extra = {"converted_from": path.name, "source": "alibaba-damo-academy/fvlm"}
    return save_checkpoint(model, out_folder, extra=extra)
