"""Where anatomy masks come from: one interface for TotalSegmentator, mask files and masks in memory.

Every provider returns a label Volume on the CT's grid whose values are TotalSegmentator `total`
class ids and whose ``labels`` name them, so the catalog and the model never ask where masks
came from.
"""

from __future__ import annotations

import threading
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import FvlmInputError
from ..io.labels import is_placeholder, present_values
from ..io.nifti import is_nifti_path, read_nifti
from ..progress import Progress, check_cancel
from ..volume import Volume
from .align import align_labels
from .totalseg_classes import TOTAL_CLASS_IDS, TOTAL_CLASSES


class SegmentationProvider(Protocol):
    """Makes a `total`-id label Volume on a CT's grid.

    ``progress(fraction, message)`` is called from the calling thread; ``cancel`` is checked
    between steps and stops the work with `core.progress.Cancelled`.
    """

    name: str

    def segment(self, ct: Volume, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> Volume: ...


def to_total_ids(array: np.ndarray, names: dict[int, str] | None, source: str) -> tuple[np.ndarray, dict[int, str]]:
    """(uint8 array of `total` ids, {id: name} of those present) from any label array.

    With class names (a TotalSegmentator header, a labels.json, a named layer), values are mapped by
    name ("Lung upper lobe left" is `lung_upper_lobe_left`); without them, values are taken to be
    `total` ids, except a single region (a binary mask), which does not say which anatomy it is and
    is refused. Anything unknown is dropped with one warning.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.integer):
        if array.size and not np.array_equal(array, np.round(array)):
            raise FvlmInputError(f"{source}: holds fractional values; a mask holds class ids (integers).")
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise FvlmInputError(f"{source}: holds negative values; a mask holds class ids (0 = background).")
    present = present_values(array)
    names = {int(k): _class_name(v) for k, v in (names or {}).items() if not is_placeholder(v)}
    by_name = any(v in TOTAL_CLASS_IDS for v in names.values())
    if not names and present.size == 1:
        value = int(present[0])
        raise FvlmInputError(
            f"{source}: a single unnamed region (value {value}), so it does not say which anatomy it is "
            f"(it is not taken as `total` class {value}, {TOTAL_CLASSES.get(value, 'none')}); use masks whose "
            f"labels are named (TotalSegmentator's output, or a labels.json beside the file, "
            f"e.g. {{\"{value}\": \"liver\"}}).")
    lut = np.zeros(int(present.max(initial=0)) + 1, dtype=np.uint8)
    unknown = []
    for value in present.tolist():
        total_id = TOTAL_CLASS_IDS.get(names.get(value, "")) if by_name else (
            value if value in TOTAL_CLASSES else None)
        if total_id is None:
            unknown.append(names.get(value, str(value)))
        else:
            lut[value] = total_id
    if unknown:
        kind = "class names" if by_name else "values (not TotalSegmentator `total` ids)"
        warnings.warn(f"{source}: ignored unknown {kind}: {', '.join(map(str, unknown))}.",
                      UserWarning, stacklevel=3)
    identity = array.dtype == np.uint8 and all(lut[v] == v for v in present.tolist())
    out = array if identity else lut[array] if array.size else array.astype(np.uint8)
    kept = sorted({int(v) for v in lut[present]} - {0})
    return out, {i: TOTAL_CLASSES[i] for i in kept}


def _class_name(name: str) -> str:
    """A label name as TotalSegmentator spells its classes ("Lung upper lobe left" -> lung_upper_lobe_left)."""
    spelled = "_".join(str(name).strip().split())
    lowered = spelled.lower()
    return spelled if spelled in TOTAL_CLASS_IDS or lowered not in TOTAL_CLASS_IDS else lowered


class VolumeProvider:
    """Masks already in memory: the phantom's own, or a napari Labels layer."""

    name = "masks in memory"

    def __init__(self, label_volume: Volume):
        self.label_volume = label_volume

    def segment(self, ct: Volume, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> Volume:
        check_cancel(cancel, "Loading the masks")
        array, names = to_total_ids(self.label_volume.array, self.label_volume.labels, "the mask volume")
        labels = Volume(array, self.label_volume.affine, self.label_volume.source, names)
        aligned = align_labels(ct, labels)
        if progress is not None:
            progress(1.0, "Masks ready")
        return aligned


class MaskFileProvider:
    """TotalSegmentator output on disk: one multilabel NIfTI, or a folder of `<class>.nii.gz` masks."""

    name = "mask file"

    def __init__(self, path, max_threads: int = 4):
        self.path = Path(path)
        self.max_threads = max_threads

    def segment(self, ct: Volume, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> Volume:
        check_cancel(cancel, "Loading the masks")
        if self.path.is_dir():
            labels = self._read_folder(progress, cancel)
        elif self.path.is_file():
            labels = self._read_file()
        else:
            raise FvlmInputError(f"{self.path.name}: no such mask file or folder.")
        check_cancel(cancel, "Loading the masks")
        aligned = align_labels(ct, labels)
        if progress is not None:
            progress(1.0, "Masks ready")
        return aligned

    def _read_file(self) -> Volume:
        if not is_nifti_path(self.path):
            raise FvlmInputError(f"{self.path.name}: masks are read from NIfTI files (.nii or .nii.gz).")
        volume = read_nifti(self.path)
        if volume.labels is None and not np.issubdtype(volume.array.dtype, np.floating):
            raise FvlmInputError(f"{self.path.name}: looks like an image, not a label volume; "
                                 f"choose TotalSegmentator's segmentation file.")
        array, labels = to_total_ids(volume.array, volume.labels, self.path.name)
        return Volume(array, volume.affine, volume.source, labels)

    def _read_folder(self, progress: Progress | None, cancel: threading.Event | None) -> Volume:
        files = sorted(p for p in self.path.iterdir() if p.is_file() and is_nifti_path(p))
        stems = {p: p.name[: -len(".nii.gz")] if p.name.lower().endswith(".gz") else p.name[: -len(".nii")]
                 for p in files}
        known = [p for p in files if stems[p] in TOTAL_CLASS_IDS]
        unknown = [p.name for p in files if stems[p] not in TOTAL_CLASS_IDS]
        if unknown:
            warnings.warn(f"{self.path.name}: ignored files that are not TotalSegmentator `total` classes: "
                          f"{', '.join(unknown)}.", UserWarning, stacklevel=3)
        if not known:
            raise FvlmInputError(f"{self.path.name}: no TotalSegmentator class masks in this folder "
                                 f"(expected files like liver.nii.gz, heart.nii.gz).")

        def read(path: Path) -> Volume:
            check_cancel(cancel, "Loading the masks")
            return read_nifti(path)

        combined: Volume | None = None
        workers = max(1, self.max_threads)
        with ThreadPoolExecutor(max_workers=workers) as pool:  # inflating releases the GIL
            pending = deque(pool.submit(read, p) for p in known[:workers])  # bounded read-ahead
            for done, path in enumerate(known, start=1):
                mask = pending.popleft().result()
                if done - 1 + workers < len(known):
                    pending.append(pool.submit(read, known[done - 1 + workers]))
                if combined is None:
                    combined = Volume(np.zeros(mask.shape, np.uint8), mask.affine, mask.source, {})
                elif not mask.same_grid(combined):
                    mask = align_labels(combined, mask)
                class_id = TOTAL_CLASS_IDS[stems[path]]
                hit = mask.array != 0
                if hit.any():
                    combined.array[hit] = class_id
                    combined.labels[class_id] = stems[path]
                if progress is not None:
                    progress(done / len(known) * 0.95, f"Read {path.name}")
        return combined


def __getattr__(name: str):
    """`TotalSegmentatorProvider` lives in its own module (it imports this one)."""
    if name == "TotalSegmentatorProvider":
        from .totalseg import TotalSegmentatorProvider
        return TotalSegmentatorProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
