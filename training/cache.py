"""On-disk cache of prepared training samples: preprocessing runs once per sample, never per epoch.

One ``.npz`` per sample (read with ``allow_pickle=False``): the image as float16 or uint8, the
anatomy masks as packed bits (A, Z, Y, X) in the model's anatomy order (groups overlap - a lobe
lies in its lung - so one label map cannot hold them), lesion voxels as flat indices + labels,
the grid affine, and a JSON string with texts, flags and labels. A cache folder is named by a
hash of everything that changes its content, so a new preprocessing never reads stale files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.inference.preprocess import ModelInput
from napari_fvlm.core.io.files import write_atomic

CACHE_FORMAT = 1
MANIFEST = "manifest.json"


@dataclass
class CachedSample:
    """A prepared sample as training and evaluation read it back."""

    image: np.ndarray  # (Z, Y, X) float32 in [0, 1]
    masks: np.ndarray  # (A, Z, Y, X) bool, model anatomy order
    affine: np.ndarray  # model grid voxel -> RAS mm
    lesions: np.ndarray  # (Z, Y, X) uint16 lesion labels (0: none)
    meta: dict[str, Any]  # id, anatomies, texts, abnormal, present, cut, report, labels, lesions
    path: Path | None = None  # the file it was read from (its cached focal channels lie beside it)


def cache_folder(root: str | Path, kind: str, key: dict[str, Any]) -> Path:
    """``root/<kind>-<hash of key>``; the key is stored there as the manifest."""
    text = json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True)
    folder = Path(root) / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / MANIFEST
    if not manifest.exists():
        write_atomic(manifest, json.dumps(json.loads(text), indent=2).encode("utf-8"))
    return folder


def preprocessing_key(model_config) -> dict[str, Any]:
    """The model config fields that change a prepared sample."""
    fields = ("anatomy_group_set", "anatomies", "spacing_zyx", "hu_window", "min_input_shape_zyx", "patch_zyx")
    data = model_config.to_dict()
    return {k: data[k] for k in fields}


def encode_image(image: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return image.astype(np.float16)


def decode_image(stored: np.ndarray) -> np.ndarray:
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) * np.float32(1.0 / 255.0)
    return stored.astype(np.float32)


def present_flags(prepared: ModelInput, anatomies) -> dict[str, bool]:
    """Anatomies with voxels in the prepared input (the others get no embedding)."""
    return {a: a in prepared.masks and a not in prepared.absent and bool(prepared.masks[a].any())
            for a in anatomies}


def write_sample(path: str | Path, prepared: ModelInput, anatomies, meta: dict[str, Any],
                 image_dtype: str = "float16", lesions: np.ndarray | None = None) -> Path:
    """Store one prepared sample atomically (a reader never sees half a file)."""
    path = Path(path)
    shape = prepared.image.shape
    masks = np.zeros((len(anatomies), *shape), dtype=bool)
    for index, name in enumerate(anatomies):
        if name in prepared.masks:
            masks[index] = prepared.masks[name]
    lesion_index = np.zeros(0, np.int64)
    lesion_value = np.zeros(0, np.uint16)
    if lesions is not None:
        lesion_index = np.flatnonzero(lesions)
        lesion_value = lesions.ravel()[lesion_index].astype(np.uint16)
    meta = {**meta, "anatomies": list(anatomies), "present": present_flags(prepared, anatomies),
            "cut": {k: bool(v) for k, v in prepared.cut.items()}, "absent": list(prepared.absent)}
    arrays = {"image": encode_image(prepared.image, image_dtype), "masks": np.packbits(masks.ravel()),
              "shape": np.asarray((len(anatomies), *shape), np.int64), "affine": np.asarray(prepared.affine),
              "lesion_index": lesion_index, "lesion_value": lesion_value, "meta": np.asarray(json.dumps(meta))}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        _write_npz(tmp, arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """An .npz that `np.load` reads: masks and lesions deflated (smooth shapes shrink ~20x), the
    image stored as is (CT noise hardly compresses, and inflating it would slow every epoch)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            method = zipfile.ZIP_STORED if name == "image" else zipfile.ZIP_DEFLATED
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asarray(array), allow_pickle=False)


def read_sample(path: str | Path) -> CachedSample:
    """One cached sample; refuses damaged files with a clear message."""
    try:
        with np.load(path, allow_pickle=False) as data:
            shape = tuple(int(n) for n in data["shape"])
            masks = np.unpackbits(data["masks"], count=int(np.prod(shape))).reshape(shape).astype(bool)
            image = decode_image(data["image"])
            lesions = np.zeros(image.size, np.uint16)
            lesions[data["lesion_index"]] = data["lesion_value"]
            return CachedSample(image, masks, data["affine"].astype(float), lesions.reshape(image.shape),
                                json.loads(str(data["meta"])), Path(path))
    except (OSError, KeyError, ValueError) as error:
        raise FvlmInputError(f"Cached sample '{path}' is damaged ({error}); delete it to rebuild it.") from None
