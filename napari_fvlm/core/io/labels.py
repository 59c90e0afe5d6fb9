"""Label volumes in NIfTI: telling masks from images, and the label names stored in the header.

Label names use the XML label table that TotalSegmentator writes into a NIfTI header extension
(a "CaretExtension"), so masks written here open with names in TotalSegmentator-aware tools and
TotalSegmentator's own multilabel output opens here with names.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

import nibabel as nib
import numpy as np

NIFTI_INTENT_LABEL = 1002
MAX_LABEL_VALUE = 1000
MAX_DISTINCT_LABELS = 256


def label_values(array: np.ndarray, header=None, declared: bool = False) -> np.ndarray | None:
    """The non-zero values of a label volume, or None when ``array`` is not one, in one pass.

    A volume is labels when ``declared`` (it carries label names), when its header's intent says
    so, or when it is an integer volume with few non-negative values (CT, with air at -1000,
    never is).
    """
    declared = declared or (header is not None and int(header.get("intent_code", 0)) == NIFTI_INTENT_LABEL)
    if not declared:
        if not np.issubdtype(array.dtype, np.integer) or array.size == 0:
            return None
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > MAX_LABEL_VALUE or hi == 0:
            return None
    present = np.flatnonzero(np.bincount(array.ravel().astype(np.int64)))
    if not declared and present.size > MAX_DISTINCT_LABELS:
        return None
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
    """A header extension holding ``labels`` as a label table (TotalSegmentator's format)."""
    rows = "\n".join(f'<Label Key="{int(k)}" Red="1" Green="1" Blue="1" Alpha="1">'
                     f"<![CDATA[{escape(str(v))}]]></Label>" for k, v in sorted(labels.items()))
    xml = ('<?xml version="1.0" encoding="UTF-8"?><CaretExtension><VolumeInformation Index="0">'
           f"<LabelTable>\n{rows}\n</LabelTable><VolumeType><![CDATA[Label]]></VolumeType>"
           "</VolumeInformation></CaretExtension>")
    return nib.nifti1.Nifti1Extension(0, xml.encode("utf-8"))
