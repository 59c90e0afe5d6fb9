"""Label volumes in NIfTI: telling masks from images, and where their label names come from.

Label names use the XML label table that TotalSegmentator writes into a NIfTI header extension
(a "CaretExtension"), so masks written here open with names in TotalSegmentator-aware tools and
TotalSegmentator's own multilabel output opens here with names. A ``labels.json`` beside the file
names the labels of files without that table; without either, values that are all TotalSegmentator
`total` ids are named as its classes, and the reader says so.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import FvlmInputError

NIFTI_INTENT_LABEL = 1002
MAX_LABEL_VALUE = 1000
MAX_DISTINCT_LABELS = 256
MAX_DENSE_LABELS = 128  # more values than this, filling over half of 1..max: an image
DENSE_SHARE = 0.5
SLAB_VOXELS = 1 << 23  # counted a slab at a time: bincount needs int64, 8x a uint8 mask's memory


def present_values(array: np.ndarray, background: bool = False) -> np.ndarray:
    """The distinct values of a non-negative integer (label) array, ascending; 0 only when
    ``background`` and present."""
    flat = np.asarray(array).reshape(-1)
    seen = np.zeros(int(flat.max(initial=0)) + 1, dtype=bool)
    for start in range(0, flat.size, SLAB_VOXELS):
        seen[np.flatnonzero(np.bincount(flat[start:start + SLAB_VOXELS].astype(np.int64)))] = True
    seen[0] &= background
    return np.flatnonzero(seen)


def label_values(array: np.ndarray, header=None, declared: bool = False) -> np.ndarray | None:
    """The non-zero values of a label volume, or None when ``array`` is not one, in one pass.

    A volume is labels when ``declared`` (it carries label names), when its header's intent says
    so, or when it is an integer volume with few non-negative values (CT, with air at -1000,
    never is) that do not fill their range the way an image's intensities do (an 8-bit image uses
    most of 0..255; TotalSegmentator's largest task has 117 classes).
    """
    declared = declared or (header is not None and int(header.get("intent_code", 0)) == NIFTI_INTENT_LABEL)
    if not declared:
        if not np.issubdtype(array.dtype, np.integer) or array.size == 0:
            return None
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > MAX_LABEL_VALUE or hi == 0:
            return None
    present = present_values(array, background=True)
    if not declared and present.size > MAX_DISTINCT_LABELS:
        return None
    if not declared and present.size > MAX_DENSE_LABELS and present.size >= DENSE_SHARE * hi:
        return None  # intensities, not class ids
    return present[present != 0]


def label_names_from_extensions(header) -> dict[int, str]:
    """{id: name} from a label-table header extension; {} when there is none or it is unreadable."""
    names: dict[int, str] = {}
    for extension in getattr(header, "extensions", []):
        content = extension.get_content()
        if not isinstance(content, (bytes, str)) or b"LabelTable" not in (
                content if isinstance(content, bytes) else content.encode()):
            continue
        try:
            root = ET.fromstring(content)
        except ET.ParseError:
            continue
        for label in root.iter("Label"):
            try:
                names[int(label.get("Key"))] = (label.text or "").strip()
            except (TypeError, ValueError):
                continue
    return {k: v for k, v in names.items() if v}


def label_names_extension(labels: dict[int, str]) -> nib.nifti1.Nifti1Extension:
    """A header extension holding ``labels`` as a label table (TotalSegmentator's format).

    Names go in CDATA sections verbatim, so ``&``, ``<`` and quotes read back as written; a name
    holding a character XML cannot carry (a control character) is refused rather than lost.
    """
    rows = "\n".join(f'<Label Key="{int(k)}" Red="1" Green="1" Blue="1" Alpha="1">{_cdata(k, v)}</Label>'
                     for k, v in sorted(labels.items()))
    xml = ('<?xml version="1.0" encoding="UTF-8"?><CaretExtension><VolumeInformation Index="0">'
           f"<LabelTable>\n{rows}\n</LabelTable><VolumeType><![CDATA[Label]]></VolumeType>"
           "</VolumeInformation></CaretExtension>")
    return nib.nifti1.Nifti1Extension(0, xml.encode("utf-8"))


_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # not allowed in XML 1.0


def _cdata(key: int, name) -> str:
    """``name`` as CDATA; a ``]]>`` inside it is split across two sections so it cannot end one."""
    name = str(name)
    bad = _NOT_XML.search(name)
    if bad:
        raise FvlmInputError(f"label {int(key)}: its name {name!r} holds the character U+{ord(bad.group()):04X}, "
                             "which a NIfTI label table cannot store; rename the label.")
    return "<![CDATA[" + name.replace("]]>", "]]]]><![CDATA[>") + "]]>"


SIDECAR_NAMES = ("{stem}.labels.json", "labels.json")  # beside the mask file, the first one found


def sidecar_path(path) -> Path | None:
    """The label-names file beside a mask file (``<name>.labels.json``, else ``labels.json``), or None.
    A ``labels.json`` written by `fvlm phantom` describes the phantom's findings, not label names:
    it is no sidecar (the phantom's masks carry TotalSegmentator ids)."""
    path = Path(path)
    stem = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    for pattern in SIDECAR_NAMES:
        candidate = path.with_name(pattern.format(stem=stem))
        if candidate.is_file() and not _is_phantom_description(candidate):
            return candidate
    return None


def _is_phantom_description(path: Path) -> bool:
    """True for the labels.json of `fvlm phantom` (core/phantom/io.py: "findings", "anatomy_labels")."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # label_names_from_json says what is wrong with it
    return isinstance(content, dict) and {"findings", "anatomy_labels"} <= content.keys()


def label_names_from_json(path) -> dict[int, str]:
    """{id: name} from a labels JSON file: ``{"1": "liver", ...}``, ``{"liver": 1, ...}``, or either
    under a ``"labels"`` key (nnU-Net's dataset.json). Raises FvlmInputError when unreadable."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FvlmInputError(f"{path.name}: cannot read the label names ({err}); fix or remove it.") from None
    if isinstance(content, dict) and isinstance(content.get("labels"), dict):
        content = content["labels"]
    names: dict[int, str] = {}
    for key, value in (content.items() if isinstance(content, dict) else ()):
        pair = (key, value) if str(key).strip().isdigit() else (value, key)
        try:
            names[int(pair[0])] = str(pair[1]).strip()
        except (TypeError, ValueError):
            raise FvlmInputError(f"{path.name}: label names map ids to names, like {{\"1\": \"liver\"}}; "
                                 f"{key!r}: {value!r} is neither.") from None
    if not names:
        raise FvlmInputError(f"{path.name}: no label names in it; write them like {{\"1\": \"liver\"}}.")
    return {k: v for k, v in names.items() if k != 0 and v}


def placeholder_name(value: int) -> str:
    """The name of a label no file names."""
    return f"label {int(value)}"


def is_placeholder(name: str) -> bool:
    return name.startswith("label ") and name[6:].isdigit()


def name_labels(present, names: dict[int, str], known: dict[int, str]) -> tuple[dict[int, str], str]:
    """({id: name} for the values ``present``, a note on anything odd; "" when nothing is).

    ``names`` are the file's own (header or labels.json). Without them, values that are all ids of
    ``known`` (TotalSegmentator's `total` classes) are named from it, when there are several: a
    single region (a binary mask) does not say which anatomy it is, and is left unnamed.
    """
    present = [int(v) for v in present]
    if names:
        unnamed = [v for v in present if v not in names]
        note = f"no names for the values {', '.join(map(str, unnamed))}." if unnamed else ""
        return {v: names.get(v, placeholder_name(v)) for v in present}, note
    placeholders = {v: placeholder_name(v) for v in present}
    if len(present) == 1:
        return placeholders, (f"a single unnamed region (value {present[0]}): it does not say which anatomy it "
                              f"is. Name it in a labels.json beside the file, e.g. {{\"{present[0]}\": \"liver\"}}.")
    if present and all(v in known for v in present):
        return {v: known[v] for v in present}, ("no label names in the file; its values are TotalSegmentator "
                                                "`total` ids, so they are named as its classes.")
    return placeholders, ("no label names in the file, and its values are not TotalSegmentator `total` ids; "
                          "name them in a labels.json beside the file, e.g. {\"1\": \"liver\"}.") if present else ""
