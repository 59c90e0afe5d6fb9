"""The official fVLM evaluation protocol, for models whose config says ``inference_protocol: reference``.

What the reference's data scripts and ``eval.py`` do to one CT, step by step (checked against its
code; docs/ct-rate-official.md "The `reference` protocol"), computed here without its detours:

1. The CT and its `total` labels in LPS voxel order (i to the patient's left, j posterior, k
   superior): the voxel order of the CT-RATE files the reference reads. Our readers bring every
   input (NIfTI of any orientation, DICOM) to exactly this order, so every orientation of a scan
   gives the same arrays.
2. Resize in index space as MONAI ``Resized`` does (trilinear for HU, nearest for labels, no
   corner alignment) to ``int(n * spacing / target)`` voxels per axis; like the reference, the
   first axis (x) is scaled by the y spacing and y by the x spacing (the same for square pixels).
3. Organs: lung = five lobes, heart = heart + left atrial appendage, esophagus, aorta.
4. Crop to the organs' union, from 5 slices / 20 pixels before its first voxel to 4 / 19 after
   its last (the reference slices ``[min - 5, max + 5)``), HU window to [0, 1], padding to the
   minimum input (symmetric, value 0).
5. Per organ: a crop of at least 112 x 288 x 352 centred on the organ's box (moved inside the
   image), its mask holding only that organ, padded at the end to whole patches; the position
   embedding is interpolated to the crop's token grid. The organ's embedding comes from its own
   crop; its probabilities (the reference averages over crops, and each organ has one) follow.

Only the voxels inside the union crop are interpolated, the crops of equal shape are encoded as
one batch, and the texts are encoded once per model (by the caller's cache): the same numbers as
the reference's loop, in a fraction of its time. Heatmaps: each organ's per-token embeddings from
its own crop, placed on one common token grid (the processed image's) at the nearest token.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..anatomy.catalog import group_set
from ..errors import FvlmInputError
from ..geometry import spacing_xyz
from ..model.fvlm import FvlmModel, inference_context
from ..model.pooling import token_mask
from ..progress import Progress, check_cancel
from ..volume import Volume
from .encoding import EncodedCT, token_grid_affine
from .preprocess import window

ORGANS = ("lung", "heart", "esophagus", "aorta")  # the reference's organ ids 1..4
MARGIN_BEFORE = np.array([5, 20, 20])  # (z, y, x) voxels before the union's first voxel
MARGIN_AFTER = np.array([4, 19, 19])  # ... and after its last
CROP_ZYX = np.array([112, 288, 352])


@dataclass
class ReferenceInput:
    """The processed image of the reference (union crop, windowed, padded) and its organ crops."""

    image: np.ndarray  # (Z, Y, X) float32 in [0, 1]
    organs: np.ndarray  # (Z, Y, X) uint8: 0 background, 1..4 = ORGANS
    affine: np.ndarray  # processed voxel (i, j, k) -> RAS mm
    crops: dict[str, tuple[np.ndarray, np.ndarray]]  # organ -> (start, stop) voxels (z, y, x)
    absent: list[str]
    cut: dict[str, bool]


def check_reference_config(config) -> None:
    if config.anatomy_group_set != "ct-rate" or tuple(config.anatomies) != ORGANS:
        raise FvlmInputError(f"The reference protocol scores the organs {', '.join(ORGANS)} (anatomy group set "
                             f"'ct-rate'); model '{config.name}' has {', '.join(config.anatomies)}.")


def _nearest_sources(size_in: int, size_out: int) -> np.ndarray:
    """torch's nearest (MONAI ``Resized`` mode "nearest") source index for every output index."""
    index = torch.arange(size_in, dtype=torch.float32)[None, None]
    return F.interpolate(index, size=size_out, mode="nearest")[0, 0].long().numpy()


def resize_box(array: np.ndarray, shape_out, box: tuple[slice, slice, slice]) -> np.ndarray:
    """The voxels ``box`` of ``array`` resized to ``shape_out`` as MONAI ``Resized`` resizes images
    (torch's trilinear interpolation, float32, no corner alignment): bit for bit its values on the
    same axis order, within float32 rounding (2e-4 HU) of the reference's call on the (x, y, z)
    array, without importing MONAI (tests/test_reference_equivalence.py, benchmarks/bench_resize.py).
    The interpolation is one pass over the whole volume: measured 2x faster than a separable
    interpolation of the box alone."""
    volume = torch.from_numpy(np.array(array, dtype=np.float32))[None, None]
    resized = F.interpolate(volume, size=tuple(int(s) for s in shape_out), mode="trilinear", align_corners=False)
    return resized[0, 0][box].numpy()


def target_shape(ct: Volume, spacing_zyx) -> tuple[int, int, int]:
    """The reference's resize target (z, y, x): int(n * (spacing / target)) with x scaled by the y
    spacing and y by the x spacing, as its resize script computes it."""
    sx, sy, sz = (float(s) for s in spacing_xyz(ct.affine))
    tz, ty, tx = (float(s) for s in spacing_zyx)
    z, y, x = ct.shape
    return int(z * (sz / tz)), int(y * (sx / tx)), int(x * (sy / ty))


def _organ_lookup() -> np.ndarray:
    """`total` class id -> organ number (0 for every other class; the last entry catches larger ids)."""
    groups = {g.name: g for g in group_set("ct-rate")}
    lut = np.zeros(max(max(g.class_ids) for g in groups.values()) + 2, np.uint8)
    for number, organ in enumerate(ORGANS, start=1):
        lut[list(groups[organ].class_ids)] = number
    return lut


def resized_organs(labels: np.ndarray, shape_out) -> np.ndarray:
    """The reference's organ map (0, 1..4 = ORGANS) resized by nearest neighbour to ``shape_out``."""
    nearest = [_nearest_sources(int(i), int(o)) for i, o in zip(labels.shape, shape_out)]
    lut = _organ_lookup()
    if np.prod(shape_out) < labels.size:  # gather first when resizing shrinks the map
        for axis, index in enumerate(nearest):
            labels = labels.take(index, axis=axis)
        return lut[np.clip(labels, 0, len(lut) - 1)]
    organs = lut[np.clip(labels, 0, len(lut) - 1)]
    for axis, index in enumerate(nearest):
        organs = organs.take(index, axis=axis)
    return organs


def prepare_reference(ct: Volume, labels: Volume, config) -> ReferenceInput:
    """Steps 1-4 of the protocol and each organ's crop box (step 5)."""
    check_reference_config(config)
    if ct.is_labels:
        raise FvlmInputError("The CT layer holds labels, not an image in HU; pick the CT image.")
    if not labels.same_grid(ct):
        raise FvlmInputError("The anatomy masks are not on the CT's grid; align them first.")
    shape_in, shape_out = np.array(ct.shape), np.array(target_shape(ct, config.spacing_zyx))
    if (shape_out < 1).any():
        raise FvlmInputError(f"The CT {tuple(ct.shape)} is too small to resample to the model's voxel size.")
    label_array = np.asarray(labels.array)
    if not np.issubdtype(label_array.dtype, np.integer):
        label_array = label_array.astype(np.int32)
    organs = resized_organs(label_array, shape_out)
    boxes = {organ: found for organ, found in zip(ORGANS, ndimage.find_objects(organs, max_label=len(ORGANS)))
             if found is not None}
    if not boxes:
        raise FvlmInputError("None of the model's organs (lung, heart, esophagus, aorta) is in the masks of "
                             "this CT; is it a chest CT?")
    first = np.min([[s.start for s in box] for box in boxes.values()], axis=0)
    last = np.max([[s.stop - 1 for s in box] for box in boxes.values()], axis=0)
    lo = np.maximum(first - MARGIN_BEFORE, 0)
    hi = np.minimum(last + MARGIN_AFTER + 1, shape_out)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    image, organs = window(resize_box(ct.array, shape_out, box), config.hu_window), organs[box]
    pad_shape = np.maximum(np.array(config.min_input_shape_zyx), organs.shape)
    before = (pad_shape - organs.shape) // 2
    padding = [(int(b), int(p - s - b)) for b, p, s in zip(before, pad_shape, organs.shape)]
    image, organs = np.pad(image, padding), np.pad(organs, padding)
    shift = before - lo  # resized voxel -> processed voxel
    crops = {organ: _centre_crop(np.array([s.start for s in box]) + shift, np.array([s.stop - 1 for s in box]) + shift,
                                 np.array(organs.shape)) for organ, box in boxes.items()}
    cut = {organ: any(s.start == 0 or s.stop == n for s, n in zip(box, shape_out)) for organ, box in boxes.items()}
    scale_zyx = shape_in / shape_out
    offset_zyx = scale_zyx * (0.5 - shift) - 0.5  # processed voxel q -> CT voxel scale * q + offset
    to_ct = np.eye(4)
    to_ct[:3, :3] = np.diag(scale_zyx[::-1])
    to_ct[:3, 3] = offset_zyx[::-1]
    return ReferenceInput(image, organs, ct.affine @ to_ct, crops, [o for o in ORGANS if o not in boxes], cut)


def _centre_crop(first: np.ndarray, last: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's organ-centred crop of an organ spanning voxels [first, last]: at least CROP_ZYX
    (or last - first), centred on (first + last) // 2, moved back inside the image at the far end."""
    size = np.maximum(CROP_ZYX, last - first)
    centre = (first + last) // 2
    start = np.maximum(0, centre - size // 2)
    stop = np.minimum(shape, start + size)
    start = np.where(stop - start < size, np.maximum(0, stop - size), start)
    return start, stop


def encode_reference(model: FvlmModel, ct: Volume, labels: Volume, progress: Progress | None = None,
                     cancel: threading.Event | None = None, organs=ORGANS) -> EncodedCT:
    """An `EncodedCT` whose anatomy embeddings are the reference protocol's (one crop per organ;
    ``organs`` limits which organs are encoded)."""
    start_time = time.perf_counter()
    if progress is not None:
        progress(0.05, "preparing the organ crops")
    prepared = prepare_reference(ct, labels, model.config)
    prepare_s = time.perf_counter() - start_time
    patch = np.array(model.config.patch_zyx)
    inputs = {}
    for organ, (start, stop) in prepared.crops.items():
        if organ not in organs:
            continue
        box = tuple(slice(a, b) for a, b in zip(start, stop))
        padding = [(0, int(-s % p)) for s, p in zip(stop - start, patch)]
        inputs[organ] = (np.pad(prepared.image[box], padding), np.pad(prepared.organs[box] == ORGANS.index(organ) + 1,
                                                                      padding))
    groups: dict[tuple, list[str]] = {}
    for organ, (image, _) in inputs.items():
        groups.setdefault(image.shape, []).append(organ)
    embeddings, dense, grids = {}, {}, {}
    with inference_context(model.device):
        for n, organs in enumerate(groups.values()):
            check_cancel(cancel)
            batch = torch.from_numpy(np.stack([inputs[o][0] for o in organs]))[:, None]
            levels, grid = model.encode_image(batch)
            masks = torch.from_numpy(np.stack([inputs[o][1] for o in organs]))
            tokens = token_mask(masks, model.config.patch_zyx).to(model.device)
            values = model.pooling.value_tokens(levels)
            for row, organ in enumerate(organs):
                own = [level[row:row + 1] for level in levels]
                pooled, _ = model.pool(own, grid, {organ: tokens[row:row + 1]})
                embeddings[organ] = pooled[organ][0].float()
                dense[organ] = model.pooling.project_dense(values[row:row + 1], organ)[0].float()
                grids[organ] = (grid, tokens[row].cpu().numpy())
            if progress is not None:
                progress(0.1 + 0.8 * (n + 1) / len(groups), f"encoded {', '.join(organs)}")
    common, token_masks, placed = _common_grid(prepared, grids, dense, patch)
    return EncodedCT(levels=[], grid=common, token_affine=token_grid_affine(prepared.affine, patch),
                     token_masks=token_masks, embeddings=embeddings, dense=placed, absent=list(prepared.absent),
                     cut=prepared.cut, timing_s={"prepare": prepare_s,
                                                 "encode": time.perf_counter() - start_time - prepare_s})


def _common_grid(prepared: ReferenceInput, grids, dense, patch):
    """Each organ's crop tokens moved onto the processed image's token grid (nearest token)."""
    shifts = {o: (prepared.crops[o][0] + (patch - 1) / 2.0) // patch for o in grids}
    extent = np.ceil(np.array(prepared.image.shape) / patch).astype(int)
    for organ, (grid, _) in grids.items():
        extent = np.maximum(extent, shifts[organ].astype(int) + np.array(grid))
    common = tuple(int(e) for e in extent)
    token_masks, placed = {}, {}
    for organ, (grid, mask) in grids.items():
        box = tuple(slice(int(s), int(s) + g) for s, g in zip(shifts[organ], grid))
        token_masks[organ] = np.zeros(common, bool)
        token_masks[organ][box] = mask
        values = torch.zeros((*common, dense[organ].shape[-1]), dtype=dense[organ].dtype, device=dense[organ].device)
        values[box] = dense[organ].reshape(*grid, -1)
        placed[organ] = values.reshape(-1, values.shape[-1])
    return common, token_masks, placed
