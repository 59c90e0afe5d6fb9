"""Write synthetic DICOM CT series from a known HU volume and a known LPS geometry.

Files are written the way real exports look to a careless reader: random file names, written in
shuffled order, with InstanceNumbers that do not follow the anatomy. Only the geometry tags
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing) tell where each slice lies.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid


@dataclass
class SeriesGeometry:
    """Where a series lies in LPS mm: slice k's first voxel is at ``origin + offsets[k] * direction``.

    ``direction`` defaults to the slice normal (row cosine x column cosine); ``pixel_spacing`` is
    DICOM's (between rows, between columns).
    """

    origin_lps: tuple[float, float, float] = (-120.5, -95.25, 40.0)
    row_cosine: tuple[float, float, float] = (1.0, 0.0, 0.0)
    col_cosine: tuple[float, float, float] = (0.0, 1.0, 0.0)
    pixel_spacing: tuple[float, float] = (0.8, 0.6)
    slice_offsets: list[float] = field(default_factory=list)
    direction: tuple[float, float, float] | None = None

    def position(self, k: int) -> np.ndarray:
        direction = self.direction
        if direction is None:
            direction = np.cross(self.row_cosine, self.col_cosine)
        return np.asarray(self.origin_lps) + self.slice_offsets[k] * np.asarray(direction, float)


def rotated_cosines(angles_deg: tuple[float, float, float]) -> tuple[tuple, tuple]:
    """Row and column cosines of an oblique plane: the axial ones rotated about x, y, then z."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    return tuple(rot[:, 0]), tuple(rot[:, 1])


def _ds(values, digits: int) -> list[str]:
    return [f"{round(float(v), digits):.{digits}f}".rstrip("0").rstrip(".") or "0" for v in values]


def ct_slice_dataset(
    stored: np.ndarray,
    ipp: np.ndarray,
    geometry: SeriesGeometry,
    *,
    series_uid: str,
    study_uid: str,
    instance_number: int,
    intercept: float = -1024.0,
    slope: float = 1.0,
    modality: str = "CT",
    sop_class: str = CTImageStorage,
    description: str = "synthetic CT",
    transfer_syntax: str = ExplicitVRLittleEndian,
    frame_of_reference_uid: str | None = None,
) -> Dataset:
    """One CT Image Storage dataset holding ``stored`` (uint16 raw values) at position ``ipp``."""
    meta = FileMetaDataset()
    sop_uid = generate_uid()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    if frame_of_reference_uid:
        ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.Modality, ds.SeriesDescription = modality, description
    ds.PatientID, ds.PatientName = "PHANTOM-001", "Phantom^Synthetic"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = _ds(ipp, 5)
    ds.ImageOrientationPatient = _ds(list(geometry.row_cosine) + list(geometry.col_cosine), 8)
    ds.PixelSpacing = _ds(geometry.pixel_spacing, 5)
    ds.SliceThickness = "2.5"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = _ds([intercept], 4)[0], _ds([slope], 6)[0], "HU"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    if UID(transfer_syntax).is_compressed:  # not really compressed: enough for a reader that must refuse it
        ds.PixelData = encapsulate([ds.PixelData])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    return ds


def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    geometry: SeriesGeometry,
    *,
    seed: int = 0,
    series_uid: str | None = None,
    intercept: float = -1024.0,
    slope: float = 1.0,
    **dataset_kwargs,
) -> list[Path]:
    """Write ``hu[k]`` (k, rows, cols) as slice k of a series; returns the paths in slice order k.

    ``geometry.slice_offsets`` defaults to 2 mm steps. Files get random names, are written in
    shuffled order and carry shuffled InstanceNumbers.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not geometry.slice_offsets:
        geometry.slice_offsets = [2.0 * k for k in range(hu.shape[0])]
    stored = np.rint((np.asarray(hu, float) - intercept) / slope)
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError("HU values do not fit uint16 with this slope/intercept")
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    dataset_kwargs.setdefault("frame_of_reference_uid", generate_uid())
    instance_numbers = rng.permutation(hu.shape[0]) + 1
    paths = [folder / f"{rng.integers(16**10):010x}" for _ in range(hu.shape[0])]
    for k in rng.permutation(hu.shape[0]):
        ds = ct_slice_dataset(
            stored[k].astype(np.uint16), geometry.position(int(k)), geometry,
            series_uid=series_uid, study_uid=study_uid, instance_number=int(instance_numbers[k]),
            intercept=intercept, slope=slope, **dataset_kwargs,
        )
        ds.save_as(paths[k], enforce_file_format=True)
    return paths


def random_hu(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Distinct-looking integer HU values in the CT range."""
    return np.random.default_rng(seed).integers(-1024, 2500, size=shape).astype(np.int16)


def write_non_image_files(folder: Path) -> None:
    """Files real exports carry beside the images: notes, Finder litter, a DICOMDIR, a report (SR)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.txt").write_text("exported by a scanner\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    non_images = (("DICOMDIR", "1.2.840.10008.1.3.10"), ("report", "1.2.840.10008.5.1.4.1.1.88.11"))
    for name, sop_class in non_images:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.Modality = generate_uid(), "SR"
        ds.save_as(folder / name, enforce_file_format=True)


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file under ``folder``: to prove a reader changed nothing."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            out[str(path.relative_to(folder))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns,
            )
    return out


def read_back_world_hu(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(RAS mm of every pixel (n, 3), its HU (n,)), straight from the tags of each file with pydicom.

    Independent of the reader under test: each pixel (row j, column i) lies at
    IPP + i * column spacing * row cosine + j * row spacing * column cosine (LPS), and RAS is LPS
    with x and y negated.
    """
    worlds, values = [], []
    for path in paths:
        ds = pydicom.dcmread(path)
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        j, i = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
        lps = ipp + i[..., None] * col_spacing * iop[:3] + j[..., None] * row_spacing * iop[3:]
        worlds.append((lps * np.array([-1.0, -1.0, 1.0])).reshape(-1, 3))
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        values.append(hu.reshape(-1))
    return np.concatenate(worlds), np.concatenate(values)


def write_phantom_series(folder: Path, phantom, geometry: SeriesGeometry) -> tuple[list[Path], list[Path]]:
    """The phantom's CT and its anatomy labels (stored values = label ids) as two DICOM series in
    ``folder/ct`` and ``folder/labels``, slice k of the arrays at ``geometry.position(k)``; returns
    both lists of paths in that slice order."""
    folder = Path(folder)
    ct_paths = write_ct_series(folder / "ct", phantom.ct.array, geometry, seed=1)
    label_paths = write_ct_series(folder / "labels", phantom.anatomy.array, geometry, seed=2, intercept=0.0)
    return ct_paths, label_paths
