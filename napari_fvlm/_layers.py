"""Volumes <-> napari layer data, keeping the original geometry beside the display geometry.

A layer made here carries, in ``metadata``, the canonical affine (``fvlm_affine``), the file's own
affine (``fvlm_affine_ras``, as read) and the `SourceInfo` needed to write it back exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .core.geometry import display_affine, display_scale_translate
from .core.io.hu import intensity_window
from .core.io.labels import present_values
from .core.volume import Volume
from .core.windows import DEFAULT_WINDOW, contrast_limits

# Layer metadata written by this plugin: every key starts with the plugin's prefix.
METADATA_PREFIX = "fvlm_"
AFFINE_KEY = METADATA_PREFIX + "affine"  # the canonical voxel-to-RAS affine of the layer's array
SOURCE_KEY = METADATA_PREFIX + "source"  # the `SourceInfo` that writes the array back in its file's geometry
FILE_AFFINE_KEY = METADATA_PREFIX + "affine_ras"  # the file's own affine, as read
SOURCE_PATH_KEY = METADATA_PREFIX + "source_path"
DICOM_SERIES_KEY = METADATA_PREFIX + "dicom_series"  # the series shown and the folder's others
HEATMAP_KEY = METADATA_PREFIX + "heatmap"  # "finding" or "query" on the heatmap layers the panel makes
LINKED_PRIOR_KEY = METADATA_PREFIX + "linked_prior"  # on the prior shown beside the current (a view, not a CT)
LABEL_COLORMAP_KEY = METADATA_PREFIX + "label_colormap"  # a Labels layer's colours before anatomies were hidden


def layer_name(path) -> str:
    name = Path(str(path).rstrip("/")).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _geometry_kwargs(volume: Volume) -> dict:
    scale, translate = display_scale_translate(volume.affine)
    metadata = {AFFINE_KEY: volume.affine.copy(), SOURCE_KEY: volume.source}
    if volume.source is not None:
        metadata[FILE_AFFINE_KEY] = np.asarray(volume.source.affine).copy()
        metadata[SOURCE_PATH_KEY] = volume.source.path
    return {"scale": tuple(scale), "translate": tuple(translate), "metadata": metadata}


def volume_layer_data(volume: Volume, name: str) -> tuple:
    """A napari LayerDataTuple: Labels (with names as features) for masks, Image otherwise: a CT in
    the default HU window, an image that is not CT (``source.details["not_ct"]``) in its own range."""
    kwargs = {"name": name, **_geometry_kwargs(volume)}
    if volume.is_labels:
        ids = sorted(volume.labels)
        kwargs["features"] = {"index": [0, *ids], "name": ["background", *(volume.labels[i] for i in ids)]}
        kwargs["opacity"] = 0.5
        return volume.array, kwargs, "labels"
    not_ct = volume.source is not None and volume.source.details.get("not_ct")
    window = intensity_window(volume.array) if not_ct else contrast_limits(DEFAULT_WINDOW)
    kwargs.update(colormap="gray", contrast_limits=window)
    return volume.array, kwargs, "image"


def layer_volume(data: np.ndarray, attributes: dict, is_labels: bool = False) -> Volume:
    """Rebuild the `Volume` a layer shows from its data and attributes (napari's layer state)."""
    metadata = attributes.get("metadata") or {}
    affine = metadata.get(AFFINE_KEY)
    if affine is None:  # a layer that did not come from our reader: its scale/translate are LPS mm
        scale = np.asarray(attributes.get("scale", (1, 1, 1)), float)[-3:]
        affine = display_affine(scale, np.asarray(attributes.get("translate", (0, 0, 0)), float)[-3:])
    data = np.asarray(data)
    labels = _label_names(data, attributes.get("features")) if is_labels else None
    return Volume(data, np.asarray(affine, float), metadata.get(SOURCE_KEY), labels)


def _label_names(data: np.ndarray, features) -> dict[int, str]:
    """{id: name} for the labels present in ``data``, named from the layer's features table."""
    names: dict[int, str] = {}
    if features is not None and "index" in features and "name" in features:
        names = {int(i): str(n) for i, n in zip(features["index"], features["name"])}
    return {int(i): names.get(int(i), f"label {int(i)}") for i in present_values(data)}
