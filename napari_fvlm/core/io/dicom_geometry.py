"""Where the slices of a DICOM series lie: ordering, spacing checks and the voxel-to-LPS affine.

Slices are ordered by their position along the slice normal (row cosine x column cosine), never
by file name or InstanceNumber, which exporters routinely scramble. The spacing comes from those
positions, not from SliceThickness (overlapping reconstructions make the two differ).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FvlmInputError

GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
DUPLICATE_MM = 0.01  # closer slices than this are the same position
MIN_TOLERANCE_MM = 0.01  # steps may differ from the median by max(1 %, this) and still be uniform
ORIENTATION_TOLERANCE = 1e-4  # on direction cosines
TILT_NOTE_DEG = 0.1


@dataclass(frozen=True)
class SliceHeader:
    """The geometry tags of one slice, as numbers."""

    ipp: np.ndarray  # ImagePositionPatient, LPS mm of the first transmitted pixel
    iop: np.ndarray  # ImageOrientationPatient: row cosine (3) then column cosine (3)
    pixel_spacing: tuple[float, float]  # (between rows, between columns), mm
    rows: int
    cols: int
    thickness: float | None

    @classmethod
    def from_dataset(cls, ds) -> "SliceHeader":
        """Raises KeyError (missing tag) or ValueError (malformed tag)."""
        missing = [tag for tag in GEOMETRY_TAGS if ds.get(tag) in (None, "")]
        if missing:
            raise KeyError(", ".join(missing))
        thickness = ds.get("SliceThickness")
        spacing = [float(v) for v in ds.PixelSpacing]
        ipp, iop = np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float)
        if ipp.shape != (3,) or iop.shape != (6,) or len(spacing) != 2:
            raise ValueError("malformed geometry tags")
        return cls(ipp, iop, (spacing[0], spacing[1]), int(ds.Rows), int(ds.Columns),
                   float(thickness) if thickness not in (None, "") else None)

    @property
    def normal(self) -> np.ndarray:
        normal = np.cross(self.iop[:3], self.iop[3:])
        return normal / np.linalg.norm(normal)


@dataclass(frozen=True)
class SliceStack:
    """Slices in order along the normal, and the affine from voxel (column, row, slice) to LPS."""

    order: np.ndarray  # indices into the headers, in ascending position along the normal
    positions: np.ndarray  # mm along the normal, in that order
    affine_lps: np.ndarray
    note: str


def _refuse_mixed(what: str, first: str, odd: str, names: list[str], k: int) -> None:
    raise FvlmInputError(
        f"The series mixes {what} ({first} and {odd}, e.g. file '{names[k]}'), so it is not one 3D "
        "volume; remove the odd files or choose another series."
    )


def _check_consistent(headers: list[SliceHeader], names: list[str]) -> None:
    first = headers[0]
    for k, h in enumerate(headers):
        if (h.rows, h.cols) != (first.rows, first.cols):
            _refuse_mixed("image sizes", f"{first.rows}x{first.cols}", f"{h.rows}x{h.cols}", names, k)
        if np.abs(h.iop - first.iop).max() > ORIENTATION_TOLERANCE:
            _refuse_mixed("slice orientations", f"{first.iop.round(3).tolist()}",
                          f"{h.iop.round(3).tolist()}", names, k)
        if not np.allclose(h.pixel_spacing, first.pixel_spacing, atol=1e-4):
            _refuse_mixed("pixel spacings", f"{first.pixel_spacing}", f"{h.pixel_spacing}", names, k)


def _median_step(positions: np.ndarray, names: list[str]) -> float:
    steps = np.diff(positions)
    duplicate = np.flatnonzero(steps < DUPLICATE_MM)
    if duplicate.size:
        k = int(duplicate[0])
        raise FvlmInputError(
            f"{duplicate.size} slice(s) share a position with another slice (e.g. files '{names[k]}' "
            f"and '{names[k + 1]}' at {positions[k]:.2f} mm along the slice normal): the series holds "
            "repeated or multi-phase images; remove the duplicates or choose another series."
        )
    median = float(np.median(steps))
    tolerance = max(0.01 * median, MIN_TOLERANCE_MM)
    multiples = np.rint(steps / median)
    gaps = np.flatnonzero((multiples >= 2) & (np.abs(steps - multiples * median) <= tolerance * multiples))
    if gaps.size:
        where = ", ".join(
            f"{int(multiples[k]) - 1} between {positions[k]:.2f} and {positions[k + 1]:.2f} mm" for k in gaps
        )
        raise FvlmInputError(
            f"The series is missing {int((multiples[gaps] - 1).sum())} slice(s) ({where} along the slice "
            f"normal; the step elsewhere is {median:.4g} mm); export the complete series again."
        )
    return median


def stack_slices(headers: list[SliceHeader], names: list[str]) -> SliceStack:
    """Order the slices and build the affine; refuses mixed sizes, duplicates and missing slices.

    Non-uniform steps (off the median by more than 1 % or 0.01 mm) are kept with the median step
    and described in ``note``. A single slice gets SliceThickness (else 1 mm) along the normal. A
    gantry tilt is kept exactly, as a sheared affine, rather than resampled away.
    """
    _check_consistent(headers, names)
    first = headers[0]
    normal = first.normal
    unsorted = np.array([h.ipp @ normal for h in headers])
    order = np.argsort(unsorted, kind="stable")
    positions = unsorted[order]
    ipps = np.array([headers[k].ipp for k in order])
    names = [names[k] for k in order]
    notes = []
    if len(headers) == 1:
        step = first.thickness if first.thickness and first.thickness > 0 else 1.0
        slice_vector = normal * step
        notes.append(f"A single slice: its spacing along the normal is taken from SliceThickness ({step:g} mm).")
    else:
        step = _median_step(positions, names)
        deviation = np.abs(positions - positions[0] - step * np.arange(len(positions))).max()
        steps = np.diff(positions)
        if np.abs(steps - step).max() > max(0.01 * step, MIN_TOLERANCE_MM):
            notes.append(
                f"Slice spacing is not uniform (steps from {steps.min():.4g} to {steps.max():.4g} mm); "
                f"using the median step {step:.4g} mm, so slices may be off by up to {deviation:.2g} mm."
            )
        per_mm = (ipps[-1] - ipps[0]) / (positions[-1] - positions[0])  # LPS shift per mm along normal
        slice_vector = per_mm * step
        tilt = np.degrees(np.arccos(min(1.0, 1.0 / np.linalg.norm(per_mm))))
        if tilt > TILT_NOTE_DEG:
            notes.append(f"Gantry tilt of {tilt:.2f} degrees, kept as a sheared affine.")
    row_spacing, col_spacing = first.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = first.iop[:3] * col_spacing  # i: along a row, column index grows
    affine[:3, 1] = first.iop[3:] * row_spacing  # j: down a column, row index grows
    affine[:3, 2] = slice_vector
    affine[:3, 3] = ipps[0]
    return SliceStack(order, positions, affine, " ".join(notes))
