"""A small synthetic chest-like CT with TotalSegmentator-id masks, and a random demo-config model
saved through the real checkpoint format (until trained demo weights exist, tests need no more)."""

from __future__ import annotations

import numpy as np

from napari_fvlm.core.anatomy.totalseg_classes import TOTAL_CLASS_IDS as IDS
from napari_fvlm.core.volume import Volume

SHAPE = (96, 160, 192)  # z, y, x
CASE_QUERIES = ("nodule in the left lower lobe", "fluid around the heart")  # asked of the analysed case
AFFINE = np.array([[-1.8, 0, 0, 170.0], [0, -1.8, 0, 140.0], [0, 0, 3.0, -150.0], [0, 0, 0, 1]])


def synthetic_ct_and_masks() -> tuple[Volume, Volume]:
    """Lungs left/right (canonical x grows to the patient's left), heart, aorta, liver."""
    ct = np.full(SHAPE, -1000, np.int16)
    labels = np.zeros(SHAPE, np.uint8)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    body = ((y - 80) / 70.0) ** 2 + ((x - 96) / 90.0) ** 2 < 1
    ct[np.broadcast_to(body, SHAPE)] = 40
    def ellipsoid(c, r):
        return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 < 1
    parts = {
        "lung_upper_lobe_right": ((62, 80, 55), (20, 45, 30), -850),
        "lung_lower_lobe_right": ((35, 85, 55), (18, 45, 30), -850),
        "lung_upper_lobe_left": ((62, 80, 137), (20, 45, 30), -850),
        "lung_lower_lobe_left": ((35, 85, 137), (18, 45, 30), -850),
        "heart": ((40, 55, 105), (14, 22, 24), 40),
        "aorta": ((50, 105, 110), (30, 7, 7), 45),
        "liver": ((12, 80, 60), (10, 40, 40), 60),
    }
    for name, (centre, radii, hu) in parts.items():
        inside = ellipsoid(centre, radii)
        labels[inside] = IDS[name]
        ct[inside] = hu
    ct += np.random.default_rng(0).normal(0, 15, SHAPE).astype(np.int16)
    names = {IDS[n]: n for n in parts}
    return Volume(ct, AFFINE.copy()), Volume(labels, AFFINE.copy(), labels=names)


def save_random_demo_model(folder) -> str:
    """A randomly initialised `demo` model written as a real checkpoint folder."""
    import torch

    from napari_fvlm.core.model import build_model, preset, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(build_model(preset("demo")), folder)
    return str(folder)


def write_synthetic_case(folder) -> tuple:
    """The synthetic CT and masks as `ct.nii.gz` / `anatomy.nii.gz` in ``folder``, and a random
    demo model in ``folder/model``: returns (folder, model folder)."""
    from napari_fvlm.core.io.nifti import write_nifti

    ct, masks = synthetic_ct_and_masks()
    write_nifti(ct, folder / "ct.nii.gz")
    write_nifti(masks, folder / "anatomy.nii.gz")
    return folder, save_random_demo_model(folder / "model")
