"""Materials: what each painted voxel is, mapped to a `total` label and to HU by two lookup tables.

Codes 1..117 are the TotalSegmentator `total` classes themselves (their bulk tissue). Codes from
200 up are tissues that carry another HU under the same label (air in the trachea, fluid in the
stomach) or no label at all (fat, muscle, spinal fluid). Code 0 is the air around the body.
"""

from __future__ import annotations

import numpy as np

from ..anatomy.totalseg_classes import TOTAL_CLASS_IDS as IDS
from .shapes import union_box

OUTSIDE = 0
FAT, MUSCLE, MEDIASTINUM, ABDOMEN, CSF, DISC = 200, 201, 202, 203, 204, 205
TRACHEA_AIR, ESOPHAGUS_AIR, STOMACH_AIR, STOMACH_FLUID = 210, 211, 212, 213

LOBES_LEFT = ("lung_upper_lobe_left", "lung_lower_lobe_left")
LOBES_RIGHT = ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right")
LOBES = LOBES_LEFT + LOBES_RIGHT
LOBE_IDS = tuple(IDS[name] for name in LOBES)

# (label, HU mean, HU spread between phantoms) for codes that are not a class's bulk tissue
_EXTRA: dict[int, tuple[int, float, float]] = {
    OUTSIDE: (0, -1000.0, 0.0),
    FAT: (0, -100.0, 10.0),
    MUSCLE: (0, 45.0, 5.0),
    MEDIASTINUM: (0, -85.0, 10.0),
    ABDOMEN: (0, 15.0, 8.0),  # bowel and mesentery, unresolved at this scale
    CSF: (0, 8.0, 3.0),
    DISC: (0, 85.0, 10.0),
    TRACHEA_AIR: (IDS["trachea"], -1000.0, 0.0),
    ESOPHAGUS_AIR: (IDS["esophagus"], -1000.0, 0.0),
    STOMACH_AIR: (IDS["stomach"], -1000.0, 0.0),
    STOMACH_FLUID: (IDS["stomach"], 10.0, 5.0),
}

# bulk HU of the classes the phantom paints (unenhanced CT); (mean, spread between phantoms)
_CLASS_HU: dict[str, tuple[float, float]] = {
    **dict.fromkeys(LOBES, (-850.0, 25.0)),
    "heart": (40.0, 4.0), "aorta": (45.0, 4.0), "esophagus": (35.0, 4.0),
    "trachea": (30.0, 5.0),  # airway wall; the lumen is TRACHEA_AIR
    "liver": (60.0, 8.0), "spleen": (48.0, 4.0), "kidney_left": (32.0, 4.0),
    "kidney_right": (32.0, 4.0), "stomach": (35.0, 4.0), "sternum": (450.0, 40.0),
    "costal_cartilages": (120.0, 20.0), "spinal_cord": (30.0, 3.0),
    "autochthon_left": (45.0, 4.0), "autochthon_right": (45.0, 4.0),
    **{f"rib_{side}_{n}": (700.0, 50.0) for side in ("left", "right") for n in range(1, 13)},
    **{f"vertebrae_{level}": (400.0, 40.0) for level in
       ("L1", *(f"T{n}" for n in range(1, 13)))},
}

LABEL_OF_CODE = np.zeros(256, dtype=np.uint8)
LABEL_OF_CODE[1:118] = np.arange(1, 118)
for _code, (_label, _, _) in _EXTRA.items():
    LABEL_OF_CODE[_code] = _label

IS_LUNG = np.zeros(256, dtype=bool)
IS_LUNG[list(LOBE_IDS)] = True


def hu_table(rng: np.random.Generator) -> np.ndarray:
    """HU of each material code for one phantom: class means jittered so phantoms differ."""
    table = np.zeros(256, dtype=np.float32)
    for name, (mean, spread) in _CLASS_HU.items():
        table[IDS[name]] = mean + spread * rng.standard_normal()
    lung = -850.0 + 25.0 * rng.standard_normal()  # one parenchyma density for all lobes
    table[list(LOBE_IDS)] = lung
    for code, (_, mean, spread) in _EXTRA.items():
        table[code] = mean + spread * rng.standard_normal()
    return table


def lookup(codes: tuple[int, ...] | list[int]) -> np.ndarray:
    """Boolean table over material codes: fast membership test with ``table[material]``."""
    table = np.zeros(256, dtype=bool)
    table[list(codes)] = True
    return table


class Canvas:
    """The material volume being painted, with the box each code was painted in."""

    def __init__(self, shape: tuple[int, int, int]):
        self.material = np.zeros(shape, dtype=np.uint8)
        self.boxes: dict[int, tuple[slice, slice, slice]] = {}

    def paint(self, box, mask: np.ndarray, code: int, over: np.ndarray | None = None) -> None:
        """Set ``code`` where ``mask`` (broadcastable to the box) holds and, if given, the
        current material is one of ``over`` (a table from `lookup`)."""
        view = self.material[box]
        mask = np.broadcast_to(mask, view.shape)
        if over is not None:
            mask = mask & over[view]
        np.copyto(view, np.uint8(code), where=mask)
        self.boxes[code] = union_box(self.boxes.get(code), box)

    def box_of(self, codes) -> tuple[slice, slice, slice] | None:
        """Union of the boxes the given codes were painted in (None if none was painted)."""
        out = None
        for code in codes:
            out = union_box(out, self.boxes.get(code))
        return out
