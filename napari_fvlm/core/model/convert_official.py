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
text_encoder.encoder.layer.N.crossattention.*              dropped with a note (BLIP-style configs;
                                                           text-only encoding never runs them)
text_encoder.embeddings.token_type_embeddings              zeroed (see below)
=========================================================  ======================================

The reference's BERT (LAVIS ``med.py``) adds token-type embeddings only when its forward is given
token types, and its text forward never is, whatever ``add_type_embeddings`` says; a stock
transformers BERT always adds row 0 of the table. The converted table is therefore all zeros, so
the stock BERT computes exactly the reference's text embeddings. Text configs the reference would
run differently (relative positions, a decoder, a ``fusion_layer`` below the layer count) are
refused. A temperature outside the config's clamp range (the reference does not clamp it at
evaluation) is kept as saved, the range widened to hold it.

The reference taps the outputs of blocks 4, 7, 10 and the final normed output, as our fvlm-b
config does. Its input arrays are (z, y, x) in the stored voxel order of the CT-RATE NIfTI files.
"""

from __future__ import annotations

import dataclasses
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
CROSS_ATTENTION = re.compile(r"^text_encoder\.encoder\.layer\.\d+\.crossattention\.")
TOKEN_TYPES = "text.model.embeddings.token_type_embeddings.weight"
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
    except Exception as error:  # noqa: BLE001 -- refused pickle content, damaged archive, not a torch file
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


def map_state_dict(reference: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float, list[str]]:
    """Rename reference tensors to ours: (tensors, saved temperature, notes on what was dropped).
    Names we do not know are refused (it is not an fVLM file)."""
    mapped, unknown, cross, temperature = {}, [], 0, None
    for name, tensor in reference.items():
        if DROPPED.search(name):
            continue
        if CROSS_ATTENTION.match(name):
            cross += 1
        elif name == TEMPERATURE_KEY:
            temperature = float(tensor)
        elif (ours := map_name(name)) is not None:
            mapped[ours] = tensor.float()
        else:
            unknown.append(name)
    if unknown:
        raise FvlmInputError(
            f"The checkpoint has parameters the fVLM reference model does not ({unknown[:5]}); "
            "it is not an official fVLM checkpoint."
        )
    if temperature is None:
        raise FvlmInputError("The checkpoint has no temperature ('temp'); it is not an official fVLM checkpoint.")
    if not math.isfinite(temperature) or temperature <= 0:
        raise FvlmInputError(f"The checkpoint's temperature {temperature} is not a positive number; it is damaged.")
    dropped = f"dropped {cross} cross-attention tensors of the text encoder (unused by text-only encoding)"
    notes = [dropped] if cross else []
    return mapped, temperature, notes


def reference_settings(config: ModelConfig) -> ModelConfig:
    """``config`` set to answer as the reference evaluation does: its prompt pair per finding (and
    its "Not ..." wording for any other finding), its per-organ crop protocol, and anatomy masks
    from TotalSegmentator's full-resolution `total` model, which it was trained and evaluated on."""
    from napari_fvlm.core.inference.findings import REFERENCE_PROMPTS

    return dataclasses.replace(config, finding_prompts=REFERENCE_PROMPTS, prompt_positive="{finding}.",
                               prompt_negative="Not {finding}.", inference_protocol="reference",
                               totalseg_fast=False)


def check_text_config(source: str | Path) -> None:
    """Refuse a text config the reference's BERT would run differently from a stock BERT."""
    from transformers import PretrainedConfig

    from napari_fvlm.core.model.text import resolve_text_source

    resolved = resolve_text_source(source)
    try:
        data, _ = PretrainedConfig.get_config_dict(resolved)
    except (OSError, ValueError):
        return  # reported with its own clear message when the text encoder is built
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    problems = []
    model_type = str(data.get("model_type", "bert"))
    if model_type != "bert" and (model_type in CONFIG_MAPPING or "bert" not in model_type.lower()):
        problems.append(f"model type '{model_type}' (the reference runs a BERT)")
    if data.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position embeddings '{data['position_embedding_type']}'")
    if data.get("is_decoder"):
        problems.append("a decoder (is_decoder)")
    layers = data.get("num_hidden_layers")
    if data.get("fusion_layer") is not None and layers is not None and data["fusion_layer"] < layers:
        problems.append(f"fusion_layer {data['fusion_layer']} < {layers} layers (text runs only the first ones)")
    if problems:
        raise FvlmInputError(f"The text encoder config of '{source}' is not one the fVLM reference runs: "
                             + "; ".join(problems) + ".")


def convert_official(pth_path: str | Path, out_folder: str | Path, config: ModelConfig | None = None,
                     text_encoder: str | Path | None = None) -> tuple[Path, list[str]]:
    """Convert the official fVLM ``.pth`` to a napari-fvlm checkpoint folder: (folder, notes).

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
    config = reference_settings(config)
    mapped, temperature, notes = map_state_dict(_read_state_dict(path))
    low, high = config.temperature_bounds
    if not low <= temperature <= high:
        config = dataclasses.replace(config, temperature_bounds=(min(low, temperature), max(high, temperature)))
        notes.append(f"temperature {temperature:g} kept as saved (outside the clamp range {low:g}-{high:g})")
    mapped["log_temperature"] = torch.tensor(math.log(temperature))
    check_text_config(text_encoder or config.text_encoder)
    model = build_model(config, pretrained_text=False, text_source=text_encoder)
    expected = saved_state(model)
    if TOKEN_TYPES in expected:
        if TOKEN_TYPES in mapped and tuple(mapped[TOKEN_TYPES].shape)[1:] != tuple(expected[TOKEN_TYPES].shape)[1:]:
            check_weights(expected, mapped, f"'{path.name}' (after renaming)")  # the clear shape message
        notes.append("token-type embeddings zeroed: the reference's text forward adds none")
        mapped[TOKEN_TYPES] = torch.zeros_like(expected[TOKEN_TYPES])
    check_weights(expected, mapped, f"'{path.name}' (after renaming)")
    model.load_state_dict(mapped, strict=True)
    extra = {"converted_from": path.name, "source": "alibaba-damo-academy/fvlm", "conversion_notes": notes}
    return save_checkpoint(model, out_folder, extra=extra), notes
