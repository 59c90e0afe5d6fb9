"""Cached samples as torch batches: dataset, padding collate, and a resumable batch order.

The order of an epoch is a permutation drawn from (seed, epoch) alone, cut into global batches
of ``batch_size x processes``; process r takes the r-th slice of each. Resuming at step k of an
epoch just skips k batches, so no sampler state needs saving, and a run on N processes sees the
same global batches as one process with the N-fold batch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .cache import read_sample


def text_id(text: str) -> int:
    """A stable 63-bit id of a text (identical texts -> equal ids, on every process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1


class CachedDataset(Dataset):
    """Cached samples as tensors: image (1, Z, Y, X), masks (A, Z, Y, X), flags (A,), texts."""

    def __init__(self, paths: list[Path], anatomies, exclude_cut: bool = False) -> None:
        self.paths = list(paths)
        self.anatomies = list(anatomies)
        self.exclude_cut = exclude_cut

    def include(self, meta: dict) -> list[bool]:
        """Anatomies this sample takes part in the loss for: present (and, if asked, not cut)."""
        return [bool(meta["present"][a]) and not (self.exclude_cut and meta["cut"].get(a, False))
                for a in self.anatomies]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        sample = read_sample(self.paths[index])
        meta = sample.meta
        if meta["anatomies"] != self.anatomies:
            raise ValueError(f"{self.paths[index]} was cached for other anatomies; clear the cache.")
        texts = [meta["texts"][a] for a in self.anatomies]
        return {
            "id": meta["id"],
            "image": torch.from_numpy(sample.image)[None],
            "masks": torch.from_numpy(sample.masks),
            "include": torch.tensor(self.include(meta)),
            "normal": torch.tensor([not meta["abnormal"][a] for a in self.anatomies]),
            "texts": texts,
            "text_ids": torch.tensor([text_id(t) for t in texts], dtype=torch.int64),
            "report": meta["report"],
        }


def collate(items: list[dict], shape: tuple[int, int, int] | None = None) -> dict:
    """Stack samples, padding images with 0 and masks with False to the batch's largest shape
    (or to ``shape``, when that is larger in every axis)."""
    largest = np.max([item["image"].shape[1:] for item in items], axis=0)
    shape = np.maximum(largest, shape).tolist() if shape is not None else largest.tolist()
    images = torch.zeros(len(items), 1, *shape)
    masks = torch.zeros(len(items), items[0]["masks"].shape[0], *shape, dtype=torch.bool)
    for i, item in enumerate(items):
        z, y, x = item["image"].shape[1:]
        images[i, :, :z, :y, :x] = item["image"]
        masks[i, :, :z, :y, :x] = item["masks"]
    return {
        "ids": [item["id"] for item in items],
        "images": images,
        "masks": masks,
        "include": torch.stack([item["include"] for item in items]),
        "normal": torch.stack([item["normal"] for item in items]),
        "text_ids": torch.stack([item["text_ids"] for item in items]),
        "texts": [item["texts"] for item in items],
        "reports": [item["report"] for item in items],
    }


def pad_batch(batch: dict, shape) -> dict:
    """A collated batch padded further (image 0, masks False) to ``shape`` (z, y, x)."""
    current = tuple(batch["images"].shape[2:])
    shape = tuple(int(s) for s in shape)
    if current == shape:
        return batch
    padding = [0, shape[2] - current[2], 0, shape[1] - current[1], 0, shape[0] - current[0]]
    images = torch.nn.functional.pad(batch["images"], padding, value=0.0)
    masks = torch.nn.functional.pad(batch["masks"], padding, value=False)
    return {**batch, "images": images, "masks": masks}


def epoch_batches(count: int, batch_size: int, world: int, rank: int, epoch: int, seed: int) -> list[list[int]]:
    """This process's batches of one epoch (global batches that do not fill up are dropped)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(count, generator=generator).tolist()
    global_batch = batch_size * world
    batches = []
    for start in range(0, count - global_batch + 1, global_batch):
        chunk = order[start:start + global_batch]
        batches.append(chunk[rank * batch_size:(rank + 1) * batch_size])
    return batches


def batch_loader(dataset: Dataset, batches: list[list[int]], workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                      persistent_workers=False)


def steps_per_epoch(count: int, batch_size: int, world: int, grad_accum: int) -> int:
    """Optimizer steps of one epoch."""
    return (count // (batch_size * world)) // grad_accum
