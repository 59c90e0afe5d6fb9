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

from napari_fvlm.core.model.focal import focal_inputs
from napari_fvlm.core.model.pooling import token_mask

from .cache import read_sample
from .focal_cache import read_channels


def text_id(text: str) -> int:
    """A stable 63-bit id of a text (identical texts -> equal ids, on every process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1


class CachedDataset(Dataset):
    """Cached samples as tensors: image (1, Z, Y, X), masks (A, Z, Y, X), flags (A,), texts.

    With ``patch_zyx`` the masks come at token resolution (A, Z/pz, Y/py, X/px), pooled as the
    model pools them (`token_mask`): the model only ever sees token masks, and a sample's token
    masks are ~2,000 times smaller than its voxel masks. With ``in_memory`` each sample is read
    from disk once and then kept (what makes epochs after the first cost compute only), its image
    as float16 when that is exact.
    """

    def __init__(self, paths: list[Path], anatomies, exclude_cut: bool = False,
                 patch_zyx: tuple[int, int, int] | None = None, in_memory: bool = False,
                 focal_config=None, label_slots=()) -> None:
        self.paths = list(paths)
        self.anatomies = list(anatomies)
        self.exclude_cut = exclude_cut
        self.patch_zyx = tuple(patch_zyx) if patch_zyx is not None else None
        self.kept: dict[int, dict] | None = {} if in_memory else None
        self.focal_config = focal_config  # a model config with a focal branch: add its channels
        self.label_slots = list(label_slots)  # (anatomy, finding): labels for the auxiliary loss

    def include(self, meta: dict) -> list[bool]:
        """Anatomies this sample takes part in the loss for: present (and, if asked, not cut)."""
        return [bool(meta["present"][a]) and not (self.exclude_cut and meta["cut"].get(a, False))
                for a in self.anatomies]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        if self.kept is not None and index in self.kept:
            return self.kept[index]
        item = self._read(index)
        if self.kept is not None:
            item = self.kept[index] = {**item, "image": _compact(item["image"])}
        return item

    def _read(self, index: int) -> dict:
        sample = read_sample(self.paths[index])
        meta = sample.meta
        if meta["anatomies"] != self.anatomies:
            raise ValueError(f"{self.paths[index]} was cached for other anatomies; clear the cache.")
        texts = [meta["texts"][a] for a in self.anatomies]
        extra = {}
        if self.focal_config is not None:  # the voxels inside the anatomies, at full resolution
            channels = read_channels(self.paths[index], self.focal_config, sample.image)
            extra["focal"] = focal_inputs(torch.from_numpy(channels), torch.from_numpy(sample.masks))
        if self.label_slots:
            labels = meta.get("labels", {})
            extra["labels"] = torch.tensor([labels.get(a, {}).get(f, -1) for a, f in self.label_slots])
        return {**extra,
            "id": meta["id"],
            "image": torch.from_numpy(sample.image)[None],
            "masks": self._masks(sample.masks),
            "include": torch.tensor(self.include(meta)),
            "normal": torch.tensor([not meta["abnormal"][a] for a in self.anatomies]),
            "texts": texts,
            "text_ids": torch.tensor([text_id(t) for t in texts], dtype=torch.int64),
            "report": meta["report"],
        }

    def _masks(self, masks: np.ndarray) -> torch.Tensor:
        masks = torch.from_numpy(masks)
        return masks if self.patch_zyx is None else token_mask(masks, self.patch_zyx)


def _compact(image: torch.Tensor) -> torch.Tensor:
    """The image as float16 when that is exact (a float16 cache), halving what in-memory training
    keeps; collate turns it back into float32."""
    half = image.half()
    return half if torch.equal(half.float(), image) else image


def _mask_shape(image_shape, image_now, mask_now) -> list[int]:
    """The mask shape that goes with ``image_shape``, at the resolution of a mask of shape
    ``mask_now`` beside an image of shape ``image_now`` (voxel or token masks)."""
    return [int(s) // (i // m) for s, i, m in zip(image_shape, image_now, mask_now)]


def collate(items: list[dict], shape: tuple[int, int, int] | None = None) -> dict:
    """Stack samples, padding images with 0 and masks with False to the batch's largest shape
    (or to ``shape``, when that is larger in every axis). Images are whole patches, so padding
    token masks the same way gives exactly the token masks of the padded voxel masks; "shapes"
    keeps each image's own shape, so the model encodes each sample as if it were alone. Focal
    inputs stay a list (each sample's own voxels); auxiliary labels are stacked (-1: unknown)."""
    largest = np.max([item["image"].shape[1:] for item in items], axis=0)
    shape = np.maximum(largest, shape).tolist() if shape is not None else largest.tolist()
    images = torch.zeros(len(items), 1, *shape)
    first = items[0]
    mask_shape = _mask_shape(shape, first["image"].shape[1:], first["masks"].shape[1:])
    masks = torch.zeros(len(items), first["masks"].shape[0], *mask_shape, dtype=torch.bool)
    for i, item in enumerate(items):
        z, y, x = item["image"].shape[1:]
        images[i, :, :z, :y, :x] = item["image"]
        mz, my, mx = item["masks"].shape[1:]
        masks[i, :, :mz, :my, :mx] = item["masks"]
    extra = {}
    if "focal" in first:  # per sample (voxels (M, C), masks (A, M)): nothing to pad
        extra["focal"] = [item["focal"] for item in items]
    if "labels" in first:
        extra["labels"] = torch.stack([item["labels"] for item in items])
    return {**extra,
        "ids": [item["id"] for item in items],
        "images": images,
        "shapes": torch.tensor([list(item["image"].shape[1:]) for item in items]),  # each image's own
        "masks": masks,
        "include": torch.stack([item["include"] for item in items]),
        "normal": torch.stack([item["normal"] for item in items]),
        "text_ids": torch.stack([item["text_ids"] for item in items]),
        "texts": [item["texts"] for item in items],
        "reports": [item["report"] for item in items],
    }


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
