"""Splits and their caches: which samples make train / val / test, and preparing each once.

`prepare_split` builds the missing cache files of a split (optionally in worker processes, or
shared between training processes by rank) and returns the paths; epochs only read them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from .cache import cache_folder, preprocessing_key, write_sample
from .config import TrainConfig

SPLITS = ("train", "val", "test")


def cache_key(config: TrainConfig, model_config) -> dict[str, Any]:
    """Everything that changes a cached sample of this experiment."""
    key = {**preprocessing_key(model_config), "dataset": config.dataset, "image_dtype": config.image_dtype,
           "decomposition": config.decomposition}
    if config.dataset == "phantom":
        key.update(phantom_shape=list(config.phantom_shape), phantom_spacing=list(config.phantom_spacing))
    else:
        key.update(ct_rate_root=str(Path(config.ct_rate_root).resolve()), ct_rate_masks=config.ct_rate_masks,
                   ct_rate_metadata_rescale=config.ct_rate_metadata_rescale)
    return key


def split_sources(config: TrainConfig, model_config, split: str) -> list[tuple[str, Callable[[], tuple]]]:
    """[(sample id, builder)] of a split; a builder returns (prepared input, meta, lesions or None)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    if config.dataset == "phantom":
        from .phantom_data import phantom_sample

        start, stop = getattr(config, f"{split}_seeds")
        return [(f"phantom-{seed}", functools.partial(phantom_sample, seed, model_config, config))
                for seed in range(start, stop)]
    from .ctrate import _stem, ct_rate_sample, ct_rate_splits, scan_ct_rate

    volumes = scan_ct_rate(config.ct_rate_root, config.ct_rate_masks, config.ct_rate_metadata_rescale)
    chosen = ct_rate_splits(volumes, config.ct_rate_val_fraction, config.ct_rate_limit)[split]
    return [(_stem(v.name), functools.partial(ct_rate_sample, v, model_config, config)) for v in chosen]


def _build_one(path: Path, build: Callable[[], tuple], anatomies, image_dtype: str) -> Path:
    prepared, meta, lesions = build()
    return write_sample(path, prepared, anatomies, meta, image_dtype, lesions)


def prepare_split(config: TrainConfig, split: str, rank: int = 0, world: int = 1, workers: int = 0,
                  progress: bool = False) -> list[Path]:
    """Cache paths of a split, building the missing ones (this rank builds every world-th one)."""
    model_config = config.model_config()
    folder = cache_folder(config.cache_dir, config.dataset, cache_key(config, model_config))
    sources = split_sources(config, model_config, split)
    paths = [folder / f"{sample_id}.npz" for sample_id, _ in sources]
    todo = [(p, b) for i, (p, (_, b)) in enumerate(zip(paths, sources)) if i % world == rank and not p.exists()]
    if todo:
        bar = _progress(len(todo), f"caching {split}", progress)
        anatomies = list(model_config.anatomies)
        if workers > 0:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(_build_one, *zip(*todo), [anatomies] * len(todo),
                                  [config.image_dtype] * len(todo)):
                    bar.update(1)
        else:
            for path, build in todo:
                _build_one(path, build, anatomies, config.image_dtype)
                bar.update(1)
        bar.close()
    return paths


def _progress(total: int, label: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=label, disable=not enabled, leave=False)
