"""Do heatmaps stay dark where nothing is? Held-out check of probability maps against thresholds.

    .venv/bin/python scripts/map_specificity.py --model napari_fvlm/weights/demo \
        --seeds 20128:20192 --evaluation runs/phantom-demo/eval-test/evaluation.json

For every held-out phantom and every anatomy x finding whose label is 0, the finding's map (the
model's calibration applied) should have no place above the finding's threshold; reported for
the findings the model separates (held-out study AUC >= 0.9 in ``--evaluation``). Free-text
statements of normality ("no abnormality", ...) should draw no hot region: the query check refuses
them (no map; `grounding.states_normality`), and one that passed it would be grounded over every
anatomy and should stay below the free-text threshold everywhere. Prints one line per target.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

NORMAL_QUERIES = ("no abnormality", "no significant abnormalities", "normal findings",
                  "unremarkable", "the lungs are clear")


def main() -> None:
    from tqdm import tqdm

    from napari_fvlm.core.errors import FvlmInputError
    from napari_fvlm.core.inference.findings import findings_for
    from napari_fvlm.core.inference.models import load_analyzer
    from napari_fvlm.core.phantom import generate_phantom
    from training.phantom_data import FINDING_SET, phantom_labels

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--seeds", default="20128:20192", help="held-out phantom seeds START:STOP")
    parser.add_argument("--evaluation", required=True, help="the model's evaluation.json (held-out AUCs)")
    args = parser.parse_args()
    start, stop = (int(v) for v in args.seeds.split(":"))
    with open(args.evaluation) as handle:
        aucs = {name: m["auc"] for name, m in json.load(handle)["study"]["labels"].items()}
    separated = {name for name, auc in aucs.items() if auc is not None and auc >= 0.9}
    analyzer = load_analyzer(args.model)
    calibration = analyzer.calibration
    if calibration is None:
        raise SystemExit("error: the model has no calibration.json; fit it with `python -m training calibrate`.")
    dark, normal_dark = {}, []
    for seed in tqdm(range(start, stop), desc="phantoms"):
        phantom = generate_phantom(seed)
        encoded = analyzer.encode(phantom.ct, phantom.anatomy)
        groups = [g for g in _groups(analyzer) if g.name in encoded.embeddings]
        labels, _ = phantom_labels(phantom.findings, groups)
        for anatomy, table in labels.items():
            for finding, label in table.items():
                if label or finding not in separated or finding not in findings_for(anatomy, FINDING_SET):
                    continue
                heatmap = analyzer.finding_heatmap(encoded, anatomy, finding)
                above = heatmap.values[heatmap.inside] >= heatmap.threshold
                dark.setdefault(finding, []).append(not above.any())
        for query in NORMAL_QUERIES:
            try:
                heatmap = analyzer.ground(encoded, query).heatmap
            except FvlmInputError:  # refused as a statement of normality: no map is drawn
                normal_dark.append(True)
                continue
            normal_dark.append(not (heatmap.values[heatmap.inside] >= heatmap.threshold).any())
    for finding in sorted(dark):
        share = float(np.mean(dark[finding]))
        print(f"{finding}: map dark where absent {share:.3f} of {len(dark[finding])} "
              f"(target >= 0.90) {'ok' if share >= 0.9 else 'MISSED'}")
    share = float(np.mean(normal_dark))
    print(f"normal statements: map dark {share:.3f} of {len(normal_dark)} (target >= 0.95) "
          f"{'ok' if share >= 0.95 else 'MISSED'}")


def _groups(analyzer):
    from napari_fvlm.core.anatomy.catalog import group_set

    return [g for g in group_set(analyzer.config.anatomy_group_set) if g.name in analyzer.config.anatomies]


if __name__ == "__main__":
    main()
