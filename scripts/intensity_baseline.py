"""Is a finding visible in the model's input at all? Study AUC of hand-made intensity counts.

    .venv/bin/python scripts/intensity_baseline.py --config training/configs/phantom-demo.json \
        --evaluation runs/phantom-demo/eval-test/evaluation.json

Each count is the number of lung voxels (eroded by one voxel) of the prepared test images in an
HU range; no learning. Where a count separates a finding and the model does not, the information
is in the input and the encoder has not learned to extract it.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import ndimage

COUNTS = {  # finding -> lung HU range counted
    "emphysema": (-1100, -960),
    "pleural effusion": (-100, 200),
    "consolidation": (-100, 200),
    "ground-glass opacity": (-700, -450),
    "lung nodule": (-100, 200),
}


def main() -> None:
    from training.cache import read_sample
    from training.config import load_config
    from training.datasets import prepare_split
    from training.metrics import fast_auc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="training/configs/phantom-demo.json")
    parser.add_argument("--evaluation", help="a model's evaluation.json on the same split, to compare")
    args = parser.parse_args()
    config = load_config(args.config, [])
    low, high = config.model_config().hu_window
    counts, labels = {name: [] for name in COUNTS}, {name: [] for name in COUNTS}
    for path in prepare_split(config, "test"):
        sample = read_sample(path)
        anatomies = list(sample.meta["anatomies"])
        lung = sample.masks[anatomies.index("lung_left")] | sample.masks[anatomies.index("lung_right")]
        hu = sample.image[ndimage.binary_erosion(lung)] * (high - low) + low
        for name, (lo, hi) in COUNTS.items():
            counts[name].append(int(np.count_nonzero((hu >= lo) & (hu < hi))))
            labels[name].append(sample.meta["study_labels"][name])
    model = {}
    if args.evaluation:
        with open(args.evaluation, encoding="utf-8") as handle:
            model = {row: values["auc"] for row, values in json.load(handle)["study"]["labels"].items()}
    print("| finding | lung HU counted | count AUC | model AUC |\n|---|---|---|---|")
    for name, (lo, hi) in COUNTS.items():
        auc = fast_auc(np.array(labels[name]), np.array(counts[name], dtype=float))
        print(f"| {name} | {lo} to {hi} | {auc:.3f} | {model.get(name, float('nan')):.3f} |")


if __name__ == "__main__":
    main()
