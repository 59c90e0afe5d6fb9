"""The source series of a CT read from DICOM, and its arrays in the series' own frame order.

A DICOM Segmentation references the source images frame by frame, so its frames must follow the
source slices. The reader brought the CT to canonical voxel order (`Reorientation`); this module
re-reads the slice headers, orders them with the reader's own `stack_slices`, checks that they
still describe the CT that was analysed, and maps canonical arrays back to (slice, row, column).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ..errors import FvlmInputError
from ..geometry import lps_to_ras
from ..io.dicom_files import scan_folder
from ..io.dicom_geometry import stack_slices
from ..volume import Volume

AFFINE_TOLERANCE_MM = 1e-3
# Type 2 attributes of the Patient and General Study modules: present in a conformant CT, possibly
# empty; anonymised exports sometimes drop them, and derived objects copy them from the source.
TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "ReferringPhysicianName", "StudyID", "AccessionNumber")


@dataclass
class SourceSeries:
    """The headers of the CT's slices in stack order (ascending along the slice normal)."""

    ct: Volume
    datasets: list[Dataset]

    def frames(self, canonical: np.ndarray) -> np.ndarray:
        """A canonical (z, y, x) array on the CT grid as (slice, row, column) in ``datasets`` order."""
        if canonical.shape != self.ct.shape:
            raise ValueError(f"array shape {canonical.shape} is not the CT's {self.ct.shape}")
        file_ijk = self.ct.source.reorientation.to_source(canonical)  # (column, row, slice)
        return np.ascontiguousarray(np.transpose(file_ijk, (2, 1, 0)))


def require_dicom_ct(ct: Volume) -> None:
    """Refuse, before any work, a CT that did not come from a DICOM series."""
    source = ct.source
    if source is None or source.format != "dicom" or not source.details.get("series_uid"):
        where = f" ({source.format} file)" if source is not None else ""
        raise FvlmInputError(f"DICOM results need a CT read from a DICOM series; this CT{where} was not, so "
                             "there are no source images to reference. Export NIfTI instead.")


def source_series(ct: Volume) -> SourceSeries:
    """The CT's source slice headers, in stack order; refused when the folder no longer holds the
    series the CT was read from (files moved, removed or changed)."""
    require_dicom_ct(ct)
    folder, uid = Path(ct.source.path), ct.source.details["series_uid"]
    if not folder.is_dir():
        raise FvlmInputError(f"The DICOM folder '{folder}' the CT was read from is gone; DICOM results "
                             "reference its images, so open the series again from where it is now.")
    files = [f for f in scan_folder(folder, pixels=False).series.get(uid, []) if f.header is not None]
    changed = FvlmInputError(f"The series {uid} in '{folder}' has changed since the CT was read; open it "
                             "again before exporting DICOM results.")
    if not files:
        raise changed
    stack = stack_slices([f.header for f in files], [f.name for f in files])
    same = (len(files) == ct.source.reorientation.shape_xyz[2]
            and np.allclose(lps_to_ras(stack.affine_lps), ct.source.affine, atol=AFFINE_TOLERANCE_MM))
    if not same:
        raise changed
    datasets = [files[k].dataset for k in stack.order]
    if any("FrameOfReferenceUID" not in d for d in datasets):
        raise FvlmInputError(f"The series {uid} has images without a FrameOfReferenceUID, which every CT "
                             "image must carry; DICOM results could not be placed in its space.")
    for dataset in datasets:  # in memory only: the source files are never written
        for keyword in TYPE2_KEYWORDS:
            if keyword not in dataset:
                setattr(dataset, keyword, "")
    return SourceSeries(ct, datasets)
