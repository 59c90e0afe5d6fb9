"""Finding and reading the DICOM files of a folder, and decoding their pixel data.

A file counts as DICOM when it has the 128-byte preamble followed by ``DICM`` (DICOM Part 10);
anything else (notes, ``.DS_Store``, thumbnails) is ignored without comment. DICOM files that are
not images (DICOMDIR, structured reports) are ignored too; broken image files are reported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ..errors import FvlmInputError
from .dicom_geometry import SliceHeader, tag_text

try:
    from pydicom.pixels import get_decoder
except ImportError:  # pydicom < 3 decodes through ds.pixel_array only
    get_decoder = None

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_INSTALL_HINTS = (  # (words in the transfer syntax name, what to install)
    (("JPEG 2000", "HTJ2K"), "`pip install pylibjpeg pylibjpeg-openjpeg` (or `pip install python-gdcm`)"),
    (("JPEG-LS",), "`pip install pylibjpeg pylibjpeg-libjpeg` (or `pip install python-gdcm`)"),
    (("JPEG",), "`pip install pylibjpeg pylibjpeg-libjpeg` (or `pip install python-gdcm`)"),
    (("RLE",), "`pip install pylibjpeg pylibjpeg-rle`"),
)


def iter_files(folder: Path) -> Iterator[Path]:
    """Files under ``folder``, breadth first, lazily (so a caller can stop early); hidden ones skipped."""
    pending = [Path(folder)]
    while pending:
        directory = pending.pop(0)
        subdirs = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(Path(entry.path))
                    elif entry.is_file():
                        yield Path(entry.path)
        except OSError:
            continue
        pending.extend(sorted(subdirs))


def has_dicm_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_image_dataset(ds: Dataset) -> bool:
    return "Rows" in ds and "Columns" in ds


def _sop_class(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else "") or "")


def is_ct_image(ds: Dataset) -> bool:
    sop = _sop_class(ds)
    return sop == CT_IMAGE_STORAGE or (not sop and ds.get("Modality") == "CT")


def _claims_image(ds: Dataset) -> bool:
    """True when the file says it is an image (by SOP class) although it may lack the image tags."""
    meta = getattr(ds, "file_meta", None) or {}
    claims = (meta.get("MediaStorageSOPClassUID"), ds.get("SOPClassUID"))
    return any("Image Storage" in UID(str(sop)).name for sop in claims if sop)


@dataclass
class DicomFile:
    """One image file: its dataset, and its slice geometry (None, with the reason, when unusable)."""

    name: str
    dataset: Dataset
    header: SliceHeader | None
    header_problem: str = ""


@dataclass
class FolderScan:
    """The image files of a folder, grouped by series UID, and the files that could not be read."""

    series: dict[str, list[DicomFile]] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)


def scan_folder(folder: Path, *, pixels: bool) -> FolderScan:
    """Read every DICOM file once: with its pixel data when ``pixels``, else the header only."""
    scan = FolderScan()
    for path in sorted(iter_files(folder)):
        name = str(path.relative_to(folder))
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=not pixels)  # refuses files without "DICM"
        except InvalidDicomError:
            continue  # not DICOM at all: notes, thumbnails, Finder litter
        except Exception as exc:  # noqa: BLE001 -- pydicom raises many types for broken files
            scan.unreadable.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        if not is_image_dataset(ds) or (pixels and "PixelData" not in ds):
            if _claims_image(ds):
                scan.unreadable.append((name, "image tags or pixel data missing (truncated file?)"))
            continue
        try:
            file = DicomFile(name, ds, SliceHeader.from_dataset(ds))
        except (KeyError, ValueError) as exc:
            file = DicomFile(name, ds, None, f"missing or malformed geometry tags: {exc}")
        scan.series.setdefault(tag_text(ds, "SeriesInstanceUID"), []).append(file)
    return scan


def unreadable_message(unreadable: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"'{name}' ({reason[:120]})" for name, reason in unreadable[:3])
    more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
    return f"Skipped {len(unreadable)} unreadable DICOM file(s): {shown}{more}."


def _decoder_available(uid: UID) -> bool:
    if get_decoder is None:  # pydicom < 3: let decoding itself tell
        return True
    try:
        return get_decoder(uid).is_available
    except NotImplementedError:
        return False


def require_decoder(transfer_syntax: str) -> None:
    """Refuse, before any decoding, a compressed series that pydicom cannot decode here."""
    uid = UID(transfer_syntax)
    if not uid.is_compressed or _decoder_available(uid):
        return
    hint = next((h for words, h in _INSTALL_HINTS if any(w in uid.name for w in words)), None)
    todo = (f"install a decoder with {hint}" if hint else
            "pydicom has no decoder for it: convert the series to an uncompressed transfer syntax first")
    raise FvlmInputError(
        f"The images are compressed with the transfer syntax '{uid.name}' ({uid}), which cannot be "
        f"decoded in this environment; {todo}, then open the series again."
    )


def _stored_values(ds: Dataset) -> np.ndarray:
    if get_decoder is None:  # pydicom < 3
        return ds.pixel_array
    # pydicom's own decoder, as a read-only view on the file's bytes where it can (3x faster than
    # ds.pixel_array, which copies); it copies when it must clear bits above BitsStored
    view_only = ds.get("BitsStored") == ds.get("BitsAllocated")
    return get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, view_only=view_only)[0]


def decode_slice(ds: Dataset) -> np.ndarray:
    """The stored values of one single-frame slice (no rescale, maybe read-only); ValueError when broken."""
    try:
        pixels = _stored_values(ds)
    except NotImplementedError as exc:  # no handler: only reachable with pydicom < 3
        raise FvlmInputError(
            f"The pixel data cannot be decoded ({exc}); install a decoder such as "
            "`pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg` or `pip install python-gdcm`."
        ) from exc
    except Exception as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    if pixels.shape != (ds.Rows, ds.Columns):
        raise ValueError(f"pixel data of shape {pixels.shape}, expected one {ds.Rows}x{ds.Columns} frame")
    return pixels
