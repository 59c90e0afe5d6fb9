"""Where the slices of a DICOM series lie: ordering, spacing checks and the voxel-to-LPS affine.

Slices are ordered by their position along the slice normal (row cosine x column cosine), never
by file name or InstanceNumber, which exporters routinely scramble. The spacing comes from those
positions, not from SliceThickness (overlapping reconstructions make the two differ).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..errors import FvlmInputError

GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
DUPLICATE_MM = 0.01  # closer slices than this are the same position
MIN_TOLERANCE_MM = 0.01  # steps may differ from the median by max(1 %, this) and still be uniform
ORIENTATION_TOLERANCE = 1e-4  # on direction cosines
TILT_NOTE_DEG = 0.1


def tag_text(ds, keyword: str) -> str:
    """A text element's value ("" when absent), read from the raw bytes when still raw.

    pydicom's per-element conversion costs about a third of reading a file; slice headers are
    read for every file of a folder, so the few tags needed are parsed directly.
    """
    element = ds.get_item(keyword)
    value = None if element is None else element.value
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip(" \x00")
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or hasattr(value, "append"):  # a converted multi-value
        return "\\".join(str(v) for v in value)
    return str(value)


def tag_numbers(ds, keyword: str) -> list[float] | None:
    """The numbers of a DS/IS element, or None when absent or empty; ValueError when malformed."""
    text = tag_text(ds, keyword)
    return [float(v) for v in text.split("\\")] if text else None


@dataclass(frozen=True)
class SliceHeader:
    """The geometry tags of one slice, as numbers."""

    ipp: np.ndarray  # ImagePositionPatient, LPS mm of the first transmitted pixel
    iop: np.ndarray  # ImageOrientationPatient: row cosine (3) then column cosine (3)
    pixel_spacing: tuple[float, float]  # (between rows, between columns), mm
    rows: int
    cols: int
    thickness: float | None
    normal: np.ndarray  # unit slice normal, row cosine x column cosine

    @classmethod
    def from_dataset(cls, ds) -> SliceHeader:
        """Raises KeyError (missing tag) or ValueError (malformed tag)."""
        ipp, iop = tag_numbers(ds, "ImagePositionPatient"), tag_numbers(ds, "ImageOrientationPatient")
        spacing, thickness = tag_numbers(ds, "PixelSpacing"), tag_numbers(ds, "SliceThickness")
        missing = [tag for tag, v in zip(GEOMETRY_TAGS, (ipp, iop, spacing)) if v is None]
        if missing:
            raise KeyError(", ".join(missing))
        if len(ipp) != 3 or len(iop) != 6 or len(spacing) != 2:
            raise ValueError("malformed geometry tags")
        (rx, ry, rz), (cx, cy, cz) = iop[:3], iop[3:]
        normal = np.array([ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx])  # np.cross is slow
        norm = float(np.sqrt(normal @ normal))
        if not 0.9 < norm < 1.1:
            raise ValueError("ImageOrientationPatient does not hold two perpendicular unit vectors")
        return cls(np.array(ipp), np.array(iop), (spacing[0], spacing[1]), int(ds.Rows), int(ds.Columns),
                   thickness[0] if thickness else None, normal / norm)


@dataclass(frozen=True)
class SliceStack:
    """Slices in order along the normal, and the affine from voxel (column, row, slice) to LPS."""

    order: np.ndarray  # indices into the headers, in ascending position along the normal
    affine_lps: np.ndarray
    note: str


def _check_consistent(headers: list[SliceHeader], names: list[str]) -> None:
    """Refuse a series whose slices differ in size, orientation or pixel spacing (naming the odd ones)."""
    checks = (
        ("image sizes", lambda h: f"{h.rows}x{h.cols}", lambda a, b: (a.rows, a.cols) == (b.rows, b.cols)),
        ("slice orientations", lambda h: str(h.iop.round(3).tolist()),
         lambda a, b: np.abs(a.iop - b.iop).max() <= ORIENTATION_TOLERANCE),
        ("pixel spacings", lambda h: str(h.pixel_spacing),
         lambda a, b: np.allclose(a.pixel_spacing, b.pixel_spacing, atol=1e-4)),
    )
    for what, describe, same in checks:
        common = Counter(describe(h) for h in headers).most_common(1)[0][0]
        reference = next(h for h in headers if describe(h) == common)
        odd = [k for k, h in enumerate(headers) if not same(h, reference)]
        if odd:
            raise FvlmInputError(
                f"The series mixes {what} ({len(headers) - len(odd)} slices {common}, {len(odd)} "
                f"{describe(headers[odd[0]])}, e.g. file '{names[odd[0]]}'), so it is not one 3D volume; "
                "remove the odd files or choose another series."
            )


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
        known = bool(first.thickness and first.thickness > 0)
        step = first.thickness if known else 1.0
        slice_vector = normal * step
        source = "its SliceThickness" if known else "1 mm, as SliceThickness is absent"
        notes.append(f"A single slice: its spacing along the normal is {source} ({step:g} mm).")
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
    return SliceStack(order, affine, " ".join(notes))
