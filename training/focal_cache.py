"""Cached focal-branch channels: the fixed filters run once per sample, not once per epoch.

Beside each cached sample, ``focal-<hash>/<sample>.npz`` holds its channels as uint8 (the
filters' settings are hashed into the folder name, so other settings never read stale files).
A missing file is computed and written when first needed, so a run can start before the
prefill (`prefill_channels`, run by ``python -m training cache``) has finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.inference.filters import dequantise, focal_channels, quantise

from .cache import read_sample


def focal_key(model_config) -> str:
    fields = ("hu_window", "spacing_zyx", "input_windows", "focal_blobs", "focal_smooth_mm")
    data = {k: model_config.to_dict()[k] for k in fields}
    if model_config.focal_bands:  # only then: caches made before bands existed keep their key
        data["focal_bands"] = model_config.to_dict()["focal_bands"]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def channels_path(sample_path: Path, model_config) -> Path:
    sample_path = Path(sample_path)
    return sample_path.parent / f"focal-{focal_key(model_config)}" / sample_path.name


def read_channels(sample_path: Path, model_config, image: np.ndarray | None = None) -> np.ndarray:
    """(C, Z, Y, X) float32 channels of a cached sample, computed and stored when missing."""
    path = channels_path(sample_path, model_config)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return dequantise(data["channels"])
        except (OSError, KeyError, ValueError) as error:
            raise FvlmInputError(f"Cached channels '{path}' are damaged ({error}); delete the file.") from None
    if image is None:
        image = read_sample(sample_path).image
    stored = quantise(focal_channels(image, model_config))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez_compressed(tmp, channels=stored)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dequantise(stored)


def prefill_channels(paths, model_config, workers: int = 0, progress: bool = False) -> None:
    """Compute the channels of every sample that lacks them (in ``workers`` processes if > 0)."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    todo = [p for p in paths if not channels_path(p, model_config).is_file()]
    bar = tqdm(total=len(todo), desc="focal channels", disable=not progress, leave=False)
    if workers > 0 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_write_channels, todo, [model_config] * len(todo), chunksize=4):
                bar.update()
    else:
        for path in todo:
            _write_channels(path, model_config)
            bar.update()
    bar.close()


def _write_channels(path, model_config) -> None:
    read_channels(path, model_config)  # computes and stores them; the values are not needed here
