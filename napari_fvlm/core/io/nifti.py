"""NIfTI reading and writing with the original geometry restored exactly.

Reading inflates ``.nii.gz`` with ISA-L (about twice zlib's speed; loading is inflate-bound),
parses the header with nibabel, and views the voxel bytes without a copy. Writing puts a
canonical array back into the file's own voxel order with the file's own header and affine,
and deflates with ISA-L too (about six times zlib's fastest level, for the same file size).
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import FvlmInputError
from ..geometry import reorientation_for
from ..volume import SourceInfo, Volume
from .files import write_atomic
from .labels import (
    label_names_extension,
    label_names_from_extensions,
    label_names_from_json,
    label_values,
    name_labels,
    sidecar_path,
)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_HEADER_SIZES = {348: nib.Nifti1Header, 540: nib.Nifti2Header}


def is_nifti_path(path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _inflate(raw: bytes, path: Path) -> bytes:
    try:
        from isal import igzip
        return igzip.decompress(raw)
    except ImportError:  # isal is a dependency, but keep plain gzip as the fallback
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise FvlmInputError(f"{path.name}: the gzip stream is damaged or truncated ({err}).") from None


def _deflate(raw: bytes) -> bytes:
    try:
        from isal import igzip
        return igzip.compress(raw, compresslevel=1)
    except ImportError:
        return gzip.compress(raw, compresslevel=1)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise FvlmInputError(f"{path.name}: cannot read the file ({err.strerror}).") from None
    if not raw:
        raise FvlmInputError(f"{path.name}: the file is empty.")
    if raw[:2] == b"\x1f\x8b":
        return _inflate(raw, path)
    if str(path).lower().endswith(".gz"):
        raise FvlmInputError(f"{path.name}: named .gz but not gzip-compressed; is it another format renamed?")
    return raw


def _parse_header(data: bytes, path: Path):
    for size, header_class in _HEADER_SIZES.items():
        for order in ("<", ">"):
            if len(data) >= 4 and int(np.frombuffer(data[:4], dtype=f"{order}i4")[0]) == size:
                try:
                    return header_class.from_fileobj(BytesIO(data))
                except Exception as err:  # noqa: BLE001 -- nibabel raises several types for bad headers
                    raise FvlmInputError(f"{path.name}: invalid NIfTI header ({err}).") from None
    raise FvlmInputError(f"{path.name}: not a NIfTI file (no NIfTI-1/2 header); is it another format renamed?")


def _voxels(data: bytes, header, path: Path) -> np.ndarray:
    shape = tuple(int(s) for s in header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3 or min(shape) < 1:
        raise FvlmInputError(f"{path.name}: a {len(shape)}D image of shape {shape}; a CT volume is 3D.")
    if len(shape) > 3:
        raise FvlmInputError(f"{path.name}: a {len(shape)}D series of shape {shape}; open one 3D volume "
                             f"(for example split it with `fslsplit` or nibabel's `four_to_three`).")
    dtype = header.get_data_dtype()
    offset = int(header.get_data_offset())
    count = int(np.prod(shape))
    if len(data) < offset + count * dtype.itemsize:
        raise FvlmInputError(f"{path.name}: the file is truncated ({len(data)} bytes, "
                             f"{offset + count * dtype.itemsize} expected).")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape, order="F")
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    slope, inter = header.get_slope_inter()
    if slope is not None and (slope != 1 or (inter or 0) != 0):
        scaled = array * np.float32(slope) + np.float32(inter or 0)
        if np.issubdtype(dtype, np.integer) and float(slope).is_integer() and float(inter or 0).is_integer():
            lo, hi = scaled.min(), scaled.max()
            if lo >= -32768 and hi <= 32767:
                scaled = scaled.astype(np.int16)
        array = scaled
    return array


def _finite(array: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.floating):
        return array
    bad = ~np.isfinite(array)
    if not bad.any():
        return array
    good = array[~bad]
    if good.size == 0:
        raise FvlmInputError(f"{path.name}: every voxel is NaN or infinite; there is no image to show.")
    array = np.where(np.isnan(array), good.min(), np.clip(array, good.min(), good.max())).astype(array.dtype)
    warnings.warn(f"{path.name}: {int(bad.sum())} NaN/infinite voxels replaced by the image's "
                  f"minimum/maximum.", UserWarning, stacklevel=3)
    return array


def read_nifti(path) -> Volume:
    """Read a 3D NIfTI file into a canonical `Volume`; label volumes come back with names (from the
    file's label table, a labels.json beside it, or TotalSegmentator ids), and
    ``source.details["note"]`` says what was odd about them ("" when nothing was).

    Raises FvlmInputError with one clear sentence for anything unusable.
    """
    path = Path(path)
    data = _read_bytes(path)
    header = _parse_header(data, path)
    array_xyz = _finite(_voxels(data, header, path), path)
    affine = header.get_best_affine()
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise FvlmInputError(f"{path.name}: the voxel-to-world affine is degenerate; the header is damaged.")
    reorientation = reorientation_for(affine, array_xyz.shape)
    array, canonical_affine = reorientation.to_canonical(array_xyz, affine)
    names, names_from = label_names_from_extensions(header), "the file's label table"
    sidecar = None if names else sidecar_path(path)
    if sidecar is not None:
        names, names_from = label_names_from_json(sidecar), sidecar.name
    labels, details = None, {}
    present = label_values(array, header, declared=bool(names))
    if present is not None:
        from ..anatomy.totalseg_classes import TOTAL_CLASSES

        array = np.ascontiguousarray(array) if array.flags.writeable else array.copy()
        labels, note = name_labels(present, names, TOTAL_CLASSES)
        details = {"label_names": names_from if names else "", "note": f"{path.name}: {note}" if note else ""}
    source = SourceInfo(path=str(path), format="nifti", affine=affine, reorientation=reorientation,
                        header=header, details=details)
    return Volume(array, canonical_affine, source, labels)


def _header_for(volume: Volume, array_xyz: np.ndarray, affine: np.ndarray):
    """The source header when there is one (keeps codes, units, descrip), updated for this array."""
    source_header = volume.source.header if volume.source is not None else None
    header = source_header.copy() if isinstance(source_header, nib.Nifti1Header) else nib.Nifti1Header()
    header.set_data_shape(array_xyz.shape)
    header.set_data_dtype(array_xyz.dtype)
    header.set_slope_inter(1.0, 0.0)
    qcode = int(header["qform_code"]) or 1
    scode = int(header["sform_code"]) or 1
    header.set_qform(affine, code=qcode)
    header.set_sform(affine, code=scode)
    del header.extensions[:]  # rewritten below: stale label names must not survive
    return header


def write_nifti(volume: Volume, path, array: np.ndarray | None = None, slope: float = 1.0) -> Path:
    """Write ``array`` (default: the volume's) on the volume's grid, in the source file's voxel order.

    ``slope`` is stored as the NIfTI scale factor (readers see ``array * slope``): it lets maps in
    [0, 1] be stored as uint8, which writes several times faster and smaller than float32.
    The file is written to a temporary name beside ``path`` and renamed: never half-written.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise FvlmInputError(f"{path.name}: a NIfTI file name ends in .nii or .nii.gz.")
    array = volume.array if array is None else np.asarray(array)
    if array.shape != volume.shape:
        raise FvlmInputError(f"array shape {array.shape} does not match the volume grid {volume.shape}.")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if volume.source is not None:
        array_xyz = volume.source.reorientation.to_source(array)
        affine = volume.source.affine
    else:
        array_xyz = np.transpose(array, (2, 1, 0))
        affine = volume.affine
    header = _header_for(volume, array_xyz, affine)
    image = nib.Nifti1Image(array_xyz, affine, header)
    image.header.set_slope_inter(slope, 0.0)
    if volume.labels:
        image.header.extensions.append(label_names_extension(volume.labels))
    data = image.to_bytes()
    return write_atomic(path, _deflate(data) if str(path).lower().endswith(".gz") else data)
