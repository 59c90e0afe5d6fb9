"""A synthetic 512x512x300 chest CT with TotalSegmentator-id masks for the `ct-rate` anatomies."""

from __future__ import annotations

import numpy as np

from napari_fvlm.core.anatomy.totalseg_classes import TOTAL_CLASS_IDS as IDS
from napari_fvlm.core.volume import Volume

SHAPE = (300, 512, 512)
SPACING_ZYX = (1.0, 0.75, 0.75)


def chest_ct(seed: int = 0) -> tuple[Volume, Volume]:
    """Lungs (~300 x 200 x 250 mm), heart, aorta and esophagus inside a body, with noise."""
    affine = np.diag([-SPACING_ZYX[2], -SPACING_ZYX[1], SPACING_ZYX[0], 1.0])
    affine[:3, 3] = [192.0, 192.0, -150.0]
    ct = np.full(SHAPE, -1000, np.int16)
    labels = np.zeros(SHAPE, np.uint8)
    mm = [(np.arange(n) - n / 2) * s for n, s in zip(SHAPE, SPACING_ZYX)]
    z, y, x = mm[0][:, None, None], mm[1][None, :, None], mm[2][None, None, :]
    ct[:, (np.abs(mm[1]) < 130)[:, None] & (np.abs(mm[2]) < 180)[None, :]] = 30
    def put(name, centre, radii, hu):
        inside = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + \
                 ((x - centre[2]) / radii[2]) ** 2 < 1
        labels[inside] = IDS[name]
        ct[inside] = hu
    put("lung_upper_lobe_right", (40, 0, -80), (70, 95, 70), -850)
    put("lung_lower_lobe_right", (-50, 10, -80), (70, 95, 70), -850)
    put("lung_upper_lobe_left", (40, 0, 80), (70, 95, 70), -850)
    put("lung_lower_lobe_left", (-50, 10, 80), (70, 95, 70), -850)
    put("heart", (-40, -40, 15), (45, 55, 60), 40)
    put("aorta", (0, 35, 20), (110, 12, 12), 45)
    put("esophagus", (0, 45, -5), (110, 7, 7), 35)
    ct += np.random.default_rng(seed).normal(0, 15, SHAPE).astype(np.int16)
    return Volume(ct, affine), Volume(labels, affine.copy(), labels={i: n for n, i in IDS.items()})
