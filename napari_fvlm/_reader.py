"""napari reader: NIfTI files, DICOM folders and single DICOM files dropped on the viewer.

It claims only what it opens (``READER_PATTERNS`` and DICOM folders), and says in the viewer what
was odd about a file: another series chosen, a mask without names, an image that is not CT.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ._layers import DICOM_SERIES_KEY, layer_name, volume_layer_data
from .core.errors import FvlmInputError
from .core.io.nifti import is_nifti_path
from .core.io.read import is_dicom_file, read_volume

PLUGIN = "napari-fvlm"
READER_PATTERNS = ("*.nii", "*.nii.gz", "*.dcm")  # as in napari.yaml; folders are claimed when DICOM
MAX_SERIES_ACTIONS = 3  # buttons on the notification that opens another series of the folder


def get_reader(path):
    """Claim NIfTI files, DICOM folders and DICOM files; decline everything else (return None)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = str(path)
    if is_nifti_path(path) or is_dicom_file(path):
        return read_volume_layers
    if os.path.isdir(path):
        from .core.io.dicom import is_dicom_folder
        if is_dicom_folder(path):
            return read_volume_layers
    return None


def read_volume_layers(path, series_uid: str | None = None) -> list[tuple]:
    """Layers for one path. Unusable input shows one clear notification and adds nothing; anything
    odd about a usable file is said in a notification too (and kept in the layer's metadata)."""
    path = str(path[0] if isinstance(path, list) else path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            volume = read_volume(path, series_uid)
        except FvlmInputError as err:
            _notify_error(str(err))
            return [(None,)]
    details = volume.source.details if volume.source is not None else {}
    dicom = volume.source is not None and volume.source.format == "dicom"
    name = _dicom_layer_name(volume) if dicom else layer_name(path)
    data, kwargs, kind = volume_layer_data(volume, name)
    note = details.get("note", "")
    if dicom:
        kwargs["metadata"][DICOM_SERIES_KEY] = {
            "series_uid": details["series_uid"], "description": details["description"], "folder": volume.source.path,
            "other_series": [info.label() for info in details["other_series"]]}
    if note:
        _notify(note, actions=_other_series_actions(volume) if dicom else ())
    if details.get("not_ct"):
        _notify(f"{name} does not look like a CT in Hounsfield units: {details['not_ct']}. It is shown in a "
                f"window from its own values; the analysis expects a CT in HU.")
    for warning in caught:  # what the core readers warn about, said in the viewer
        if not issubclass(warning.category, UserWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        elif str(warning.message) != note:
            _notify(str(warning.message))
    return [(data, kwargs, kind)]


def _dicom_layer_name(volume) -> str:
    """The folder's name, with the series' description when the folder holds others."""
    details = volume.source.details
    folder = Path(volume.source.path).name
    if not details.get("other_series"):
        return folder
    return f"{folder} ({details['description'] or 'series ' + details['series_uid'][-8:]})"


def _other_series_actions(volume) -> list[tuple]:
    """Notification buttons, each opening another series of the same folder in the current viewer."""
    folder = volume.source.path
    actions = []
    for info in volume.source.details["other_series"][:MAX_SERIES_ACTIONS]:
        text = f"Open '{info.description or info.series_uid[-8:]}' ({info.n_slices} slices)"
        actions.append((text, lambda _toast=None, uid=info.series_uid: open_series(folder, uid)))
    return actions


def open_series(folder: str, series_uid: str, viewer=None) -> list:
    """Open one series of a DICOM folder in ``viewer`` (default: the current one); the layers added."""
    import napari
    from napari.layers import Layer

    viewer = viewer or napari.current_viewer()
    return [viewer.add_layer(Layer.create(*layer)) for layer in read_volume_layers(folder, series_uid)
            if layer[0] is not None]


def _notify(message: str, severity: str = "warning", actions=()) -> None:
    from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

    notification_manager.dispatch(Notification(message, NotificationSeverity(severity), actions=actions))


def _notify_error(message: str) -> None:
    _notify(message, "error")


def reader_patterns_without_preference() -> list[str]:
    """The patterns this plugin reads for which napari has no preferred reader yet."""
    from napari.settings import get_settings

    preferences = get_settings().plugins.extension2reader
    return [p for p in READER_PATTERNS if p not in preferences]


def prefer_this_reader() -> list[str]:
    """Make napari open ``READER_PATTERNS`` with this plugin without asking, where the user has not
    chosen another reader. Called only when the user agrees (the panel asks once). Returns the
    patterns set.

    napari's builtin reader also claims *.nii/*.nii.gz (through imageio, which cannot read them
    without ITK) and *.dcm, so without a preference a drag-and-drop asks which plugin to use.
    """
    from napari.settings import get_settings

    missing = reader_patterns_without_preference()
    if missing:
        settings = get_settings().plugins
        settings.extension2reader = {**settings.extension2reader, **dict.fromkeys(missing, PLUGIN)}
    return missing
