"""The reference protocol's resize against MONAI's `Resized`, the transform the reference calls.

The reference resizes the CT (trilinear) and its merged organ map (nearest) with MONAI's
`Resized` on the file's (x, y, z) array; `reference_protocol` computes the same with torch's
interpolation on (z, y, x), so the plugin never imports MONAI (13-19 s). Measured on a
512x512x300 chest CT (0.75 x 0.75 x 1 mm) resized to the reference's 1 x 1 x 3 mm: the largest
CT difference (target <= 1e-3 HU: float32 rounding), the organ maps (target: identical); for
information, the time of each and MONAI's import time in a fresh process.
"""

from __future__ import annotations

import subprocess
import sys

from benchmarks.timing import median_seconds, verdict


def _import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import monai.transforms; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np
    import torch

    from benchmarks.chest_ct import chest_ct
    from napari_fvlm.core.inference.reference_protocol import (
        ORGANS,
        _organ_lookup,
        resize_box,
        resized_organs,
        target_shape,
    )

    ct, labels = chest_ct()
    shape = target_shape(ct, (3.0, 1.0, 1.0))
    whole = tuple(slice(0, n) for n in shape)
    label_array = np.asarray(labels.array)

    def ours():
        return resize_box(ct.array, shape, whole), resized_organs(label_array, shape)

    import_s = _import_seconds()
    from monai.transforms import Resized

    lookup = _organ_lookup()
    resize = Resized(keys=["image", "label"], spatial_size=shape[::-1], mode=("trilinear", "nearest"))

    # what the reference resizes: the CT as read from the file, (x, y, z) float32, and the organ
    # map its merge step wrote (the merge is not timed; ours maps the labels inside its resize)
    stored = {"image": np.ascontiguousarray(ct.array.T, dtype=np.float32),
              "label": np.ascontiguousarray(lookup[np.clip(label_array, 0, len(lookup) - 1)].T, dtype=np.float32)}

    def theirs():
        out = resize({key: torch.from_numpy(array)[None] for key, array in stored.items()})
        return out["image"][0].numpy().T, out["label"][0].numpy().T

    (image, organs), (image_ref, organs_ref) = ours(), theirs()
    largest = float(np.abs(image - image_ref).max())
    same_organs = bool(np.array_equal(organs, organs_ref)) and set(np.unique(organs)) == set(range(len(ORGANS) + 1))
    ours_s, theirs_s = median_seconds(ours, 3), median_seconds(theirs, 3)
    print(f"(reference resize {ct.shape} -> {shape}: ours {ours_s:.2f}s from int16 labels and HU, MONAI Resized "
          f"{theirs_s:.2f}s from float32 arrays, after {import_s:.1f}s to import it in a fresh process)")
    print(f"reference resize vs MONAI Resized, CT: largest difference {largest:.1e} HU (target <= 1e-3) "
          f"{verdict(largest <= 1e-3)}")
    print(f"reference resize vs MONAI Resized, organ map: {'identical' if same_organs else 'different'} "
          f"(target identical) {verdict(same_organs)}")


if __name__ == "__main__":
    main()
