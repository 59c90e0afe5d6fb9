"""Read a DICOM CT series from a folder into a `Volume` (HU, RAS world, canonical LPS voxel order).

Real exports are messy: several series in one folder, scrambled file names and InstanceNumbers,
reports and DICOMDIRs beside the images, a truncated file. So the reader groups images by
SeriesInstanceUID, orders slices by their position along the slice normal, checks the spacing,
and says in plain words what it chose and why (``volume.source.details["note"]`` and a
``UserWarning``, which napari shows as a notification).

The file voxel order kept in ``SourceInfo`` is (i = column, j = row, k = slice), with k ascending
along the slice normal (row cosine x column cosine).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from ..errors import FvlmInputError
from ..geometry import lps_to_ras, reorientation_for
from ..volume import SourceInfo, Volume
from .dicom_files import (
    DicomFile,
    decode_slice,
    has_dicm_preamble,
    is_ct_image,
    iter_files,
    require_decoder,
    scan_folder,
    unreadable_message,
)
from .dicom_geometry import stack_slices, tag_numbers, tag_text

_INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One image series of a folder, as a user would pick it from a list."""

    series_uid: str
    description: str
    modality: str
    n_files: int
    n_slices: int  # distinct slice positions (fewer than n_files when positions repeat)
    is_ct_image: bool
    rows: int
    cols: int

    def label(self) -> str:
        description = self.description or "no description"
        return f"'{description}' ({self.modality}, {self.n_slices} slices, UID {self.series_uid})"


def is_dicom_folder(path, max_files: int = 16) -> bool:
    """Cheap test for a reader deciding whether to claim a folder: do any of its first files
    (breadth first, sub-folders included) carry the DICOM preamble?"""
    path = Path(path)
    if not path.is_dir():
        return False
    for count, file in enumerate(iter_files(path)):
        if count >= max_files:
            return False
        if has_dicm_preamble(file):
            return True
    return False


def _existing_folder(folder) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise FvlmInputError(f"'{folder}' is not a folder; give the folder that holds the DICOM series.")
    return folder


def _info(uid: str, files: list[DicomFile]) -> DicomSeriesInfo:
    positions = {round(float(f.header.ipp @ f.header.normal), 2) if f.header else f.name for f in files}
    first = files[0].dataset
    return DicomSeriesInfo(
        series_uid=uid, description=str(first.get("SeriesDescription", "") or ""),
        modality=str(first.get("Modality", "") or ""), n_files=len(files), n_slices=len(positions),
        is_ct_image=is_ct_image(first), rows=int(first.Rows), cols=int(first.Columns),
    )


def _sorted_infos(series: dict) -> list[DicomSeriesInfo]:
    infos = [_info(uid, members) for uid, members in series.items()]
    return sorted(infos, key=lambda s: (not s.is_ct_image, -s.n_slices, -s.n_files, s.series_uid))


def _warn_unreadable(unreadable: list) -> None:
    if unreadable:
        warnings.warn(unreadable_message(unreadable), UserWarning, stacklevel=3)


def list_dicom_series(folder) -> list[DicomSeriesInfo]:
    """The image series of a folder (sub-folders included), largest CT series first."""
    folder = _existing_folder(folder)
    scan = scan_folder(folder, pixels=False)
    _warn_unreadable(scan.unreadable)
    return _sorted_infos(scan.series)


def _choose(
    infos: list[DicomSeriesInfo], series_uid: str | None, folder: Path
) -> tuple[DicomSeriesInfo, str]:
    """The series to read, and a note naming the others when the choice was ours."""
    if series_uid is not None:
        for info in infos:
            if info.series_uid == series_uid:
                return info, ""
        raise FvlmInputError(
            f"No image series with UID {series_uid} in '{folder}'; it holds "
            + "; ".join(i.label() for i in infos) + "."
        )
    chosen = infos[0]
    if len(infos) == 1:
        return chosen, ""
    why = "the largest CT series" if chosen.is_ct_image else "the largest image series (no CT series found)"
    others = "; ".join(i.label() for i in infos[1:])
    return chosen, (
        f"The folder holds {len(infos)} series; read {chosen.label()}, {why}. "
        f"Others: {others}. To read another, open one of its files."
    )


def read_dicom_series(folder, series_uid: str | None = None) -> Volume:
    """Read one series of a folder as HU (int16 when exact, else float32) in canonical orientation.

    Without ``series_uid`` the largest CT series is read. A file path reads the series that file
    belongs to. Every file is read once; the pixel data of the other series is dropped after
    grouping. Raises FvlmInputError for anything that is not one complete 3D series.
    """
    path = Path(folder)
    if path.is_file():
        if not has_dicm_preamble(path):
            raise FvlmInputError(
                f"'{path}' is not a DICOM file; give a DICOM series folder or one of its files."
            )
        if series_uid is None:
            series_uid = tag_text(pydicom.dcmread(path, stop_before_pixels=True), "SeriesInstanceUID")
        path = path.parent
    folder = _existing_folder(path)
    scan = scan_folder(folder, pixels=True)
    if not scan.series:
        broken = " " + unreadable_message(scan.unreadable) if scan.unreadable else ""
        raise FvlmInputError(
            f"No DICOM images found in '{folder}'; choose the folder of a CT series.{broken}"
        )
    infos = _sorted_infos(scan.series)
    info, note = _choose(infos, series_uid, folder)
    files = scan.series.pop(info.series_uid)
    scan.series.clear()  # the other series' pixel data goes now
    first = files[0].dataset
    volume, stack_note = _volume_from(files, scan.unreadable, folder)
    note = " ".join(n for n in (note, stack_note) if n)
    if note:
        warnings.warn(note, UserWarning, stacklevel=2)
    volume.source.details.update(
        series_uid=info.series_uid, description=info.description, modality=info.modality, note=note,
        n_slices=info.n_slices, other_series=[i for i in infos if i.series_uid != info.series_uid],
    )
    if first.get("PatientID"):
        volume.source.details["patient_id"] = str(first.PatientID)
    return volume


def _volume_from(files: list[DicomFile], unreadable: list, folder: Path) -> tuple[Volume, str]:
    """Decode, order and rescale the slices of one series; releases ``files`` as it goes."""
    for syntax in {str(f.dataset.file_meta.get("TransferSyntaxUID", "")) for f in files} - {""}:
        require_decoder(syntax)
    multi = [f.name for f in files if (tag_numbers(f.dataset, "NumberOfFrames") or [1])[0] > 1]
    if multi:
        raise FvlmInputError(
            f"'{multi[0]}' is a multi-frame (enhanced) DICOM image, which this reader does not "
            "support yet; export the series as single-frame images (one file per slice)."
        )
    names, headers, pixels, rescale = [], [], [], []
    for k, file in enumerate(files):
        files[k] = None  # drop the dataset: only its pixel bytes stay, behind the decoded view
        if file.header is None:
            unreadable.append((file.name, file.header_problem))
            continue
        try:
            stored = decode_slice(file.dataset)
        except FvlmInputError:
            raise
        except ValueError as exc:
            unreadable.append((file.name, f"pixel data cannot be decoded: {exc}"))
            continue
        names.append(file.name)
        headers.append(file.header)
        pixels.append(stored)
        slope = tag_numbers(file.dataset, "RescaleSlope") or [1.0]
        intercept = tag_numbers(file.dataset, "RescaleIntercept") or [0.0]
        rescale.append((slope[0], intercept[0]))
    _warn_unreadable(unreadable)
    if not pixels:
        raise FvlmInputError(
            f"None of the {len(files)} images of the series in '{folder}' could be read "
            f"(e.g. '{unreadable[-1][0]}': {unreadable[-1][1][:160]}); the files may be truncated."
        )
    stack = stack_slices(headers, names)
    hu = _hu_array([pixels[k] for k in stack.order], [rescale[k] for k in stack.order])
    del pixels
    affine_file = lps_to_ras(stack.affine_lps)
    array_xyz = hu.transpose(2, 1, 0)
    reorientation = reorientation_for(affine_file, array_xyz.shape)
    canonical, affine = reorientation.to_canonical(array_xyz, affine_file)
    source = SourceInfo(path=str(folder), format="dicom", affine=affine_file, reorientation=reorientation)
    return Volume(np.ascontiguousarray(canonical), affine, source), stack.note


def _hu_array(pixels: list[np.ndarray], rescale: list[tuple[float, float]]) -> np.ndarray:
    """Stack slices as HU: int16 when slope and intercept are integers and the range fits.

    Empties ``pixels`` slice by slice so the stored and the HU copies never both exist whole.
    """
    exact = all(float(v).is_integer() for pair in rescale for v in pair)
    exact = exact and all(p.dtype.kind in "iu" for p in pixels)
    if exact:
        ends = [(slope * p.min() + icpt, slope * p.max() + icpt) for p, (slope, icpt) in zip(pixels, rescale)]
        exact = min(min(e) for e in ends) >= _INT16.min and max(max(e) for e in ends) <= _INT16.max
    out = np.empty((len(pixels),) + pixels[0].shape, dtype=np.int16 if exact else np.float32)
    for k, (slope, intercept) in enumerate(rescale):
        stored, pixels[k] = pixels[k], None
        if exact and slope == 1 and stored.dtype.itemsize == 2:
            # one pass in int16: the wrap-around of 16-bit arithmetic cancels out, as the results fit
            np.add(stored.view(np.int16), np.int64(intercept).astype(np.int16), out=out[k])
        elif exact:
            np.add(np.multiply(stored, np.int64(slope)), np.int64(intercept), out=out[k], casting="unsafe")
        else:
            np.multiply(stored, np.float32(slope), out=out[k], casting="unsafe")
            out[k] += np.float32(intercept)
    return out
