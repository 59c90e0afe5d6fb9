"""`write_phantom`: the phantom's files, all or nothing.

Every file is first written into a hidden temporary folder inside ``out_dir`` and only then
renamed into place, so a failure leaves no half-written file behind. NIfTI volumes are stored
in the canonical voxel order (the (z, y, x) array transposed to (x, y, z)) with qform and sform
both set to the affine, code 1 (scanner).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import FvlmInputError
from ..io.files import usual_mode
from ..volume import Volume
from .generate import Phantom

FILES = ("ct.nii.gz", "anatomy.nii.gz", "lesions.nii.gz", "report.txt", "labels.json")


def _save_nifti(volume: Volume, dtype, path: Path) -> None:
    image = nib.Nifti1Image(np.asarray(volume.array, dtype=dtype).transpose(2, 1, 0), volume.affine)
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    image.header.set_xyzt_units("mm")
    if dtype == np.int16:
        image.header["scl_slope"], image.header["scl_inter"] = 1.0, 0.0
    nib.save(image, str(path))


def labels_json(phantom: Phantom) -> dict:
    """What labels.json holds: the grid, each finding with its lesion label, the classes present."""
    return {
        "seed": phantom.seed,
        "shape_zyx": list(phantom.ct.shape),
        "spacing_zyx": [float(s) for s in phantom.ct.spacing],
        "findings": [{"name": f.name, "anatomy": f.anatomy, "side": f.side, "lesion_label": f.lesion_label,
                      "center_world_mm": [round(v, 2) for v in f.center_world_mm],
                      "size_mm": f.size_mm, "sentence": f.sentence} for f in phantom.findings],
        "anatomy_labels": {str(k): v for k, v in sorted(phantom.anatomy.labels.items())},
        "sentences": [[text, key] for text, key in phantom.sentences],
    }


def write_phantom(phantom: Phantom, out_dir) -> Path:
    """Write ct.nii.gz (int16 HU), anatomy.nii.gz, lesions.nii.gz, report.txt and labels.json
    into ``out_dir`` (created if missing); returns the folder."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FvlmInputError(f"{out} is a file, not a folder; choose a folder for the phantom's files.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".phantom-", dir=out))
        usual_mode(staging, directory=True)
    except OSError as error:
        raise FvlmInputError(f"cannot create the folder {out} ({error.strerror}); "
                             f"choose a writable folder.") from None
    try:
        lesion_dtype = np.uint8 if phantom.lesions.array.max(initial=0) < 256 else np.uint16
        _save_nifti(phantom.ct, np.int16, staging / "ct.nii.gz")
        _save_nifti(phantom.anatomy, np.uint8, staging / "anatomy.nii.gz")
        _save_nifti(phantom.lesions, lesion_dtype, staging / "lesions.nii.gz")
        (staging / "report.txt").write_text(phantom.report, encoding="utf-8")
        (staging / "labels.json").write_text(json.dumps(labels_json(phantom), indent=2), encoding="utf-8")
        for name in FILES:
            os.replace(staging / name, out / name)
    except OSError as error:
        raise FvlmInputError(f"writing the phantom into {out} failed ({error}); check the folder's space "
                             f"and permissions.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
