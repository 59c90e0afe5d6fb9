"""napari reader: NIfTI files and DICOM folders dropped on the viewer."""

from __future__ import annotations

import os

from .core.errors import FvlmInputError
from .core.io.nifti import is_nifti_path
from ._layers import layer_name, volume_layer_data


def get_reader(path):
    """Claim NIfTI files and DICOM folders; decline everything else (return None)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = str(path)
    if is_nifti_path(path):
        return read_volume_layers
    if os.path.isdir(path):
        from .core.io.dicom import is_dicom_folder
        if is_dicom_folder(path):
            return read_volume_layers
    return None


def read_volume_layers(path) -> list[tuple]:
    """Layers for one path. Unusable input shows one clear notification and adds nothing."""
    path = str(path[0] if isinstance(path, list) else path)
    try:
        volume = read_volume(path)
    except FvlmInputError as err:
        _notify_error(str(err))
        return [(None,)]
    return [volume_layer_data(volume, layer_name(path))]


def read_volume(path):
    """The core reader for either kind of path (also used by the CLI)."""
    if os.path.isdir(path):
        from .core.io.dicom import read_dicom_series
        return read_dicom_series(path)
    from .core.io.nifti import read_nifti
    return read_nifti(path)


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error
    show_error(message)


def prefer_this_reader_for_nifti() -> list[str]:
    """Make napari open NIfTI with this plugin without asking, unless the user chose otherwise.

    napari's builtin reader also claims *.nii/*.nii.gz (through imageio, which cannot read them
    without ITK), so a first drag-and-drop would ask which plugin to use. Returns the patterns set.
    """
    from napari.settings import get_settings

    preferences = get_settings().plugins.extension2reader
    missing = [p for p in ("*.nii", "*.nii.gz") if p not in preferences]
    if missing:
        get_settings().plugins.extension2reader = {**preferences, **{p: "napari-fvlm" for p in missing}}
    return missing
