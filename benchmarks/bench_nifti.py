"""Loading a 512x512x300 int16 CT (.nii.gz) into a napari-ready layer vs nibabel's own load.

Target: at most 1.3x nibabel (which only inflates and views the voxels; we also reorient and
build the layer with its geometry).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.timing import median_seconds, verdict


def ct_like_volume(shape_xyz=(512, 512, 300), seed: int = 0) -> np.ndarray:
    """A body-shaped int16 HU volume with noise: compresses like a real CT (~half its raw size)."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape_xyz[0]), np.linspace(-1, 1, shape_xyz[1]), indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.6) ** 2 < 1
    lungs = ((np.abs(x) - 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 < 1
    slice_hu = np.where(body, 40, -1000).astype(np.int16)
    slice_hu[lungs & body] = -850
    volume = np.repeat(slice_hu[:, :, None], shape_xyz[2], axis=2)
    volume += rng.normal(0, 20, size=shape_xyz).astype(np.int16)
    return volume


def main(repeats: int = 5) -> None:
    from napari_fvlm._reader import read_volume_layers

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ct.nii.gz"
        affine = np.diag([0.7, 0.7, 1.0, 1.0])
        nib.save(nib.Nifti1Image(ct_like_volume(), affine), path)
        size_mb = path.stat().st_size / 1e6
        baseline = median_seconds(lambda: np.asanyarray(nib.load(path).dataobj), repeats)
        ours = median_seconds(lambda: read_volume_layers(str(path)), repeats)
    ratio = ours / baseline
    print(f"(file {size_mb:.0f} MB; nibabel {baseline:.2f}s, napari-fvlm layer {ours:.2f}s)")
    print(f"nifti 512x512x300 load to layer vs nibabel: {ratio:.2f}x (target <= 1.3) "
          f"{verdict(ratio <= 1.3)}")


if __name__ == "__main__":
    main()
