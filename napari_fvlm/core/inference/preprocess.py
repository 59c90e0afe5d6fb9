"""The method's preprocessing, one implementation for inference and training.

HU window -> [0, 1]; resampling to the model's voxel size; a crop around the union of the model's
anatomies (+ a margin); padding to the model's minimum input and to whole patches. The crop and
the resampling are one step: the CT is resampled straight onto the final padded grid, so no
voxel outside it is ever computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..anatomy.catalog import group_masks, group_set
from ..errors import FvlmInputError
from ..resample import resample
from ..volume import Volume

MARGIN_SLICES = 5  # docs/method.md "Vision side": crop + 5 slices along z ...
MARGIN_PIXELS = 20  # ... and + 20 pixels in-plane, at the model's voxel size


@dataclass
class ModelInput:
    """A CT prepared for the model, on a grid with its own voxel-to-RAS affine."""

    image: np.ndarray  # (Z, Y, X) float32 in [0, 1]
    masks: dict[str, np.ndarray]  # anatomy -> bool (Z, Y, X)
    affine: np.ndarray
    cut: dict[str, bool]  # anatomy touches the edge of the scanned field of view
    absent: list[str]  # the model's anatomies with no voxel in this CT


def window(hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """Clip HU to the window and scale it to [0, 1] (float32)."""
    low, high = hu_window
    out = np.clip(hu.astype(np.float32, copy=False), low, high)  # a new array: the input is kept
    out -= low
    out *= 1.0 / (high - low)
    return out


def _class_boxes(labels: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{class id: (lo, hi)} voxel boxes (z, y, x), hi exclusive, in one pass over the labels."""
    boxes = {}
    for index, found in enumerate(ndimage.find_objects(labels)):
        if found is not None:
            boxes[index + 1] = (np.array([s.start for s in found]), np.array([s.stop for s in found]))
    return boxes


def _round_up(values: np.ndarray, multiple) -> np.ndarray:
    return (np.ceil(np.asarray(values) / np.asarray(multiple)) * np.asarray(multiple)).astype(int)


def model_grid(ct: Volume, lo_zyx: np.ndarray, hi_zyx: np.ndarray, spacing_zyx, min_shape_zyx,
               patch_zyx) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the padded model grid centred on the CT voxel box [lo, hi)."""
    spacing_zyx = np.asarray(spacing_zyx, float)
    ct_spacing = ct.spacing
    margins_mm = 2 * np.array([MARGIN_SLICES, MARGIN_PIXELS, MARGIN_PIXELS]) * spacing_zyx
    extent_mm = (hi_zyx - lo_zyx) * ct_spacing + margins_mm
    shape = np.maximum(_round_up(np.ceil(extent_mm / spacing_zyx), patch_zyx), min_shape_zyx)
    shape = _round_up(shape, patch_zyx)
    centre_voxel = (lo_zyx + hi_zyx - 1) / 2.0
    centre_world = ct.to_world(centre_voxel)
    directions = ct.affine[:3, :3] / ct.spacing[::-1]  # unit columns for (i, j, k)
    affine = np.eye(4)
    affine[:3, :3] = directions * spacing_zyx[::-1]
    affine[:3, 3] = centre_world - affine[:3, :3] @ ((shape[::-1] - 1) / 2.0)
    return affine, tuple(int(s) for s in shape)


def prepare_input(ct: Volume, labels: Volume, anatomies, group_set_name: str, spacing_zyx,
                  hu_window, min_shape_zyx, patch_zyx) -> ModelInput:
    """Window, resample and crop ``ct`` around the named anatomies of ``labels`` (CT grid)."""
    if ct.is_labels:
        raise FvlmInputError("The CT layer holds labels, not an image in HU; pick the CT image.")
    if not labels.same_grid(ct):
        raise FvlmInputError("The anatomy masks are not on the CT's grid; align them first.")
    groups = [g for g in group_set(group_set_name) if g.name in set(anatomies)]
    label_array = np.asarray(labels.array)
    if not np.issubdtype(label_array.dtype, np.integer):
        label_array = label_array.astype(np.int32)
    boxes = _class_boxes(label_array)
    group_boxes = {}
    for group in groups:
        found = [boxes[c] for c in group.class_ids if c in boxes]
        if found:
            group_boxes[group.name] = (np.min([b[0] for b in found], 0), np.max([b[1] for b in found], 0))
    if not group_boxes:
        names = ", ".join(g.name for g in groups)
        raise FvlmInputError(f"None of the model's anatomies ({names}) is in the masks of this CT; "
                             "is it a scan of another body region (a head CT has no lungs)?")
    lo = np.min([b[0] for b in group_boxes.values()], 0)
    hi = np.max([b[1] for b in group_boxes.values()], 0)
    affine, shape = model_grid(ct, lo, hi, spacing_zyx, min_shape_zyx, patch_zyx)
    hu = resample(ct.array, ct.affine, affine, shape, order=1, cval=float(hu_window[0]))
    grid_labels = resample(label_array, labels.affine, affine, shape, order=0, cval=0)
    masks = group_masks(grid_labels, groups)
    edge = np.array(ct.shape)
    cut = {name: bool((b[0] == 0).any() or (b[1] == edge).any()) for name, b in group_boxes.items()}
    absent = [g.name for g in groups if g.name not in group_boxes or not masks[g.name].any()]
    return ModelInput(window(hu, hu_window), {k: v for k, v in masks.items() if k not in absent},
                      affine, cut, absent)


def prepare_for_model(ct: Volume, labels: Volume, config) -> ModelInput:
    """`prepare_input` with every setting taken from a model config."""
    return prepare_input(ct, labels, config.anatomies, config.anatomy_group_set, config.spacing_zyx,
                         config.hu_window, config.min_input_shape_zyx, config.patch_zyx)
