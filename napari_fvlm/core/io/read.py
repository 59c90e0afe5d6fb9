"""Reading a volume by path: a NIfTI file, a DICOM folder or a single DICOM file.

The one dispatch every front end uses (the napari reader, the panel, `fvlm analyze`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FvlmInputError
from ..volume import Volume
from .nifti import is_nifti_path


def is_dicom_file(path: str, any_name: bool = False) -> bool:
    """A DICOM file: named *.dcm, or of any name when ``any_name``."""
    from .dicom_files import has_dicm_preamble

    named = any_name or path.lower().endswith(".dcm")
    return named and not is_nifti_path(path) and os.path.isfile(path) and has_dicm_preamble(Path(path))


def read_volume(path, series_uid: str | None = None) -> Volume:
    """The volume at ``path``; DICOM folders give one series (``series_uid``, else the largest).

    Refuses a single slice (not a CT volume); an image that is not CT in HU is read with the reason
    in ``source.details["not_ct"]``.
    """
    from .hu import not_ct_reason

    path = str(path)
    if os.path.isdir(path) or is_dicom_file(path, any_name=True):
        from .dicom import read_dicom_series
        volume = read_dicom_series(path, series_uid)
    else:
        from .nifti import read_nifti
        volume = read_nifti(path)
    if volume.is_labels:
        return volume
    if 1 in volume.shape:
        size = " x ".join(str(n) for n in volume.shape if n != 1) or "1 x 1"
        raise FvlmInputError(f"{Path(path).name}: a single {size} slice, not a CT volume; open the "
                             f"whole series (its folder, or a file of it beside the others).")
    if volume.source is not None:
        volume.source.details["not_ct"] = not_ct_reason(volume.array)
    return volume
