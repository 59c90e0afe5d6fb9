"""Checkpoint folders: ``config.json`` + ``model.safetensors`` (+ ``text_encoder/``).

``config.json`` holds {"format", "model": ModelConfig, "extra": free JSON}. When the config says
``text_in_checkpoint`` the text encoder's weights are in ``model.safetensors`` and its tokenizer
and transformers config in ``text_encoder/``; otherwise only its name is stored and its frozen,
pretrained weights are loaded from there. Only safetensors are read here: pickles are refused.
Folders are written to a hidden sibling and renamed into place, so a reader never sees half a
checkpoint.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.model.config import (
    CHECKPOINT_CONFIG_FILE,
    CHECKPOINT_WEIGHTS_FILE,
    PICKLE_SUFFIXES,
    checkpoint_config_json,
    looks_like_pickle,
    read_checkpoint_config,
)
from napari_fvlm.core.model.fvlm import FvlmModel, build_model

TEXT_FOLDER = "text_encoder"
TEXT_WEIGHTS_PREFIX = "text.model."
_PICKLE_MESSAGE = "looks like a PyTorch pickle, which is never opened here; convert it with `fvlm convert-official`"
_SHOWN = 5


def saved_state(model: FvlmModel) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores: all but the frozen pretrained text weights when excluded."""
    keep_text = model.config.text_in_checkpoint
    return {
        name: tensor for name, tensor in model.state_dict().items()
        if keep_text or not name.startswith(TEXT_WEIGHTS_PREFIX)
    }


def save_checkpoint(model: FvlmModel, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (or its DDP wrapper) to ``folder`` atomically, replacing an earlier checkpoint."""
    from safetensors.torch import save_file

    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or (
            any(folder.iterdir()) and not (folder / CHECKPOINT_CONFIG_FILE).is_file())):
        raise FvlmInputError(
            f"'{folder}' exists and is not an fVLM checkpoint; choose a new or empty folder."
        )
    config_text = checkpoint_config_json(model.config, extra)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in saved_state(model).items()}
        save_file(tensors, str(staging / CHECKPOINT_WEIGHTS_FILE), metadata={"format": "pt"})
        if model.config.text_in_checkpoint:
            if model.text is None:
                raise FvlmInputError("The config keeps the text encoder in the checkpoint, but the model has none.")
            model.text.save_files(staging / TEXT_FOLDER)
        (staging / CHECKPOINT_CONFIG_FILE).write_text(config_text, encoding="utf-8")
        _swap_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _swap_into_place(staging: Path, folder: Path) -> None:
    if not folder.exists():
        staging.rename(folder)
        return
    retired = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    folder.rename(retired)
    staging.rename(folder)
    shutil.rmtree(retired, ignore_errors=True)


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``folder/model.safetensors`` on CPU, refusing pickles and damaged files."""
    from safetensors.torch import load_file

    path = folder / CHECKPOINT_WEIGHTS_FILE
    if not path.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise FvlmInputError(f"'{folder}' has no {CHECKPOINT_WEIGHTS_FILE}; '{pickles[0]}' {_PICKLE_MESSAGE}.")
        raise FvlmInputError(f"'{folder}' has no {CHECKPOINT_WEIGHTS_FILE}; the checkpoint is incomplete.")
    if looks_like_pickle(path):
        raise FvlmInputError(f"'{path}' {_PICKLE_MESSAGE}.")
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # noqa: BLE001 -- safetensors raises its own error type for truncated/corrupt files
        raise FvlmInputError(
            f"'{path}' is damaged or truncated ({str(error).strip()[:120]}); copy or download it again."
        ) from None


def check_weights(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], what: str) -> None:
    """Refuse weights whose names or shapes differ from the model the config describes."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k} {tuple(found[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in found and tuple(found[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing {missing[:_SHOWN]}" + (" ..." if len(missing) > _SHOWN else ""))
    if unexpected:
        problems.append(f"unexpected {unexpected[:_SHOWN]}" + (" ..." if len(unexpected) > _SHOWN else ""))
    if wrong:
        problems.append(f"wrong shape {wrong[:_SHOWN]}" + (" ..." if len(wrong) > _SHOWN else ""))
    if problems:
        raise FvlmInputError(f"The weights in {what} do not match the model config: " + "; ".join(problems) + ".")


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> FvlmModel:
    """An FvlmModel in eval mode on ``device``; ``model.checkpoint_extra`` holds the saved extra."""
    folder = Path(folder)
    config, extra = read_checkpoint_config(folder)
    tensors = read_weights(folder)
    text_source = None
    if config.text_in_checkpoint:
        text_source = folder / TEXT_FOLDER
        if not (text_source / "config.json").is_file():
            raise FvlmInputError(f"'{folder}' lacks {TEXT_FOLDER}/config.json; the checkpoint is incomplete.")
    model = build_model(config, pretrained_text=not config.text_in_checkpoint, text_source=text_source)
    check_weights(saved_state(model), tensors, f"'{folder}'")
    model.load_state_dict(tensors, strict=False)
    model.checkpoint_extra = extra
    return model.eval().to(device)

