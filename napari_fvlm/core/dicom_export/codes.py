"""Coded concepts for anatomies and findings, taken from pydicom's tables of DICOM Part 16 codes.

Every SNOMED CT code here comes from `pydicom.sr.codedict` by keyword, so none is typed by hand. A
finding Part 16 has no code for gets a local code of this project's own scheme (``99FVLM``, a
private scheme designator as DICOM allows), whose meaning is exactly the finding's name.
"""

from __future__ import annotations

import hashlib

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ..anatomy.catalog import AnatomyGroup

LOCAL_SCHEME = "99FVLM"
# anatomy group -> SNOMED CT keyword of its structure; the side becomes a laterality modifier
ANATOMY_KEYWORDS = {
    "lung": "Lung", "lung_left": "Lung", "lung_right": "Lung",
    "lung_upper_lobe_left": "UpperLobeOfLung", "lung_upper_lobe_right": "UpperLobeOfLung",
    "lung_lower_lobe_left": "LowerLobeOfLung", "lung_lower_lobe_right": "LowerLobeOfLung",
    "lung_middle_lobe_right": "MiddleLobeOfRightLung",
    "heart": "Heart", "aorta": "Aorta", "esophagus": "Esophagus", "trachea": "Trachea",
    "liver": "Liver", "spleen": "Spleen", "kidneys": "Kidney", "stomach": "Stomach",
}
FINDING_KEYWORDS = {
    "pleural effusion": "PleuralEffusion", "pericardial effusion": "PericardialEffusion",
    "cardiomegaly": "Cardiomegaly", "lung nodule": "Nodule", "liver lesion": "Lesion",
}
SIDES = {"left": codes.SCT.Left, "right": codes.SCT.Right}
ANATOMY_CATEGORY = codes.SCT.AnatomicalStructure
FINDING_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure


def local_code(meaning: str) -> Code:
    """A code of the project's scheme, its value derived from the meaning (the same meaning, the
    same value) and kept within CodeValue's 16 characters, which every reader handles."""
    return Code(f"FVLM-{hashlib.sha256(meaning.encode()).hexdigest()[:11].upper()}", LOCAL_SCHEME, meaning)


def anatomy_code(group: AnatomyGroup) -> Code:
    """The structure of an anatomy group (a lobe: "upper lobe of lung"; its side: `side_code`)."""
    keyword = ANATOMY_KEYWORDS.get(group.name)
    return getattr(codes.SCT, keyword) if keyword else local_code(group.display)


def side_code(group: AnatomyGroup) -> Code | None:
    """The patient's side of a lateral anatomy group (SNOMED CT Left / Right), None otherwise."""
    return SIDES.get(group.side) if group.side else None


def finding_code(finding: str) -> Code:
    keyword = FINDING_KEYWORDS.get(finding)
    return getattr(codes.SCT, keyword) if keyword else local_code(finding)
