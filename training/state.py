"""Training checkpoints for exact resumption: safetensors + JSON only, never pickles.

``<run>/checkpoints/step-00000120/`` holds ``model/`` (an ordinary model checkpoint the plugin
can open; ``peer/`` too with co-teaching), ``optimizer.safetensors`` (AdamW moments and step
counts by parameter name) with ``optimizer.json`` (group settings, AMP scaler), one
``rng-rank<r>`` pair per process (torch, CUDA, numpy and Python generators) and ``state.json``
(step, epoch, next batch, best validation loss). A folder is written under a hidden name and
renamed when complete; ``latest.json`` then points at it, so a crash never leaves a checkpoint
that `--resume` would half-read.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.model.checkpoint import read_weights, save_checkpoint, saved_state

from .distributed import Processes, barrier

LATEST = "latest.json"


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, python_state, python_gauss = random.getstate()
    info = {"numpy": [kind, int(position), int(has_gauss), float(gauss)],
            "python": [version, list(python_state), python_gauss]}
    return tensors, info


def set_rng_state(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, position, has_gauss, gauss = info["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), position, has_gauss, gauss))
    version, python_state, python_gauss = info["python"]
    random.setstate((version, tuple(python_state), python_gauss))


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """AdamW state by parameter name, and the groups' settings (names instead of tensors)."""
    tensors, groups = {}, []
    for group in optimizer.param_groups:
        for name, parameter in zip(group["names"], group["params"]):
            for key, value in optimizer.state.get(parameter, {}).items():
                tensors[f"{name}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"})
    return tensors, groups


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state, index, saved_groups = {}, 0, []
    for group, saved in zip(optimizer.param_groups, groups):
        if list(group["names"]) != list(saved["names"]):
            raise FvlmInputError("The checkpoint's optimizer holds other parameters than this model; "
                                 "resume with the config the run was started with.")
        for name in group["names"]:
            found = {key[len(name) + 1:]: value for key, value in tensors.items()
                     if key.startswith(name + ".") and key[len(name) + 1:] in ("step", "exp_avg", "exp_avg_sq")}
            if found:
                state[index] = found
            index += 1
        saved = {k: tuple(v) if k == "betas" else v for k, v in saved.items()}
        saved_groups.append({**saved, "params": list(range(index - len(group["names"]), index))})
    optimizer.load_state_dict({"state": state, "param_groups": saved_groups})


def save_training_state(run_dir: Path, models, optimizer, scaler, progress: dict[str, Any],
                        extra: dict[str, Any], processes: Processes, keep: int = 2) -> Path | None:
    """Write a complete checkpoint of the run at ``progress['step']``; every process must call it."""
    folder_name = f"step-{progress['step']:08d}"
    root = run_dir / "checkpoints"
    staging = root / f".{folder_name}.partial"
    if processes.main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier(processes)
    tensors, info = rng_state()
    _save_tensors(tensors, staging / f"rng-rank{processes.rank}.safetensors")
    (staging / f"rng-rank{processes.rank}.json").write_text(json.dumps(info), encoding="utf-8")
    barrier(processes)
    if not processes.main:
        barrier(processes)
        return None
    for index, model in enumerate(models):
        save_checkpoint(model, staging / ("model" if index == 0 else f"peer{index}"), extra=extra)
    moments, groups = optimizer_tensors(optimizer)
    _save_tensors(moments, staging / "optimizer.safetensors")
    scaler_state = scaler.state_dict() if scaler is not None and scaler.is_enabled() else {}
    (staging / "optimizer.json").write_text(json.dumps({"groups": groups, "scaler": scaler_state}), encoding="utf-8")
    (staging / "state.json").write_text(json.dumps({**progress, "world": processes.world}, indent=2),
                                        encoding="utf-8")
    final = root / folder_name
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    (root / f".{LATEST}").write_text(json.dumps({"folder": folder_name, "step": progress["step"]}), encoding="utf-8")
    (root / f".{LATEST}").replace(root / LATEST)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    barrier(processes)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    folder = run_dir / "checkpoints" / json.loads(pointer.read_text(encoding="utf-8"))["folder"]
    return folder if folder.is_dir() else None


def load_training_state(folder: Path, models, optimizer, scaler, processes: Processes) -> dict[str, Any]:
    """Restore weights, optimizer, scaler and this process's generators; returns the progress dict."""
    progress = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    if progress.get("world", 1) != processes.world:
        raise FvlmInputError(f"The checkpoint was written by {progress['world']} processes; resume with the same "
                             f"number (the batch order depends on it), not {processes.world}.")
    for index, model in enumerate(models):
        tensors = read_weights(folder / ("model" if index == 0 else f"peer{index}"))
        expected = saved_state(model)
        if set(tensors) != set(expected):
            raise FvlmInputError(f"'{folder}' holds weights of another model; resume with the run's own config.")
        model.load_state_dict(tensors, strict=False)
    settings = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
    load_optimizer(optimizer, _load_tensors(folder / "optimizer.safetensors"), settings["groups"])
    if scaler is not None and settings.get("scaler"):
        scaler.load_state_dict(settings["scaler"])
    rng_file = folder / f"rng-rank{processes.rank}.safetensors"
    set_rng_state(_load_tensors(rng_file), json.loads(rng_file.with_suffix(".json").read_text(encoding="utf-8")))
    return progress
