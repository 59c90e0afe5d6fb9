"""napari writers: Image and Labels layers to NIfTI in their original geometry."""

from __future__ import annotations

from pathlib import Path

from ._layers import layer_volume
from .core.errors import FvlmInputError
from .core.io.nifti import write_nifti


def write_image(path: str, data, attributes: dict) -> list[str]:
    return _write(path, data, attributes, is_labels=False)


def write_labels(path: str, data, attributes: dict) -> list[str]:
    return _write(path, data, attributes, is_labels=True)


def _write(path: str, data, attributes: dict, is_labels: bool) -> list[str]:
    try:
        return _write_volume(path, data, attributes, is_labels)
    except FvlmInputError as err:
        # napari silently drops a writer's ValueError (FvlmInputError is one) and reports "not a
        # valid writer"; an OSError reaches the user with our message.
        raise OSError(str(err)) from None


def _write_volume(path: str, data, attributes: dict, is_labels: bool) -> list[str]:
    target = Path(path)
    if not str(target).lower().endswith((".nii", ".nii.gz")):
        target = target.with_name(target.name + ".nii.gz")
    volume = layer_volume(data, attributes, is_labels=is_labels)
    if volume.array.ndim != 3:
        raise FvlmInputError("only 3D layers can be written to NIfTI.")
    source = volume.source.path if volume.source is not None else None
    if source and Path(source).resolve() == target.resolve():
        raise FvlmInputError(f"{target.name} is the file this layer was read from; choose another name.")
    return [str(write_nifti(volume, target))]
