"""Zero-shot CT-RATE evaluation of a model that was not trained here (the converted official fVLM).

Each volume is read from the CT-RATE layout (`ctrate.scan_ct_rate`) with its TotalSegmentator
masks and scored by the inference engine (`Analyzer`) with the protocol the model's config names:
the reference protocol for converted official weights, exactly what `fvlm analyze` computes.
Validation is the usual hashed share of CT-RATE's train patients (thresholds are chosen there),
the test split is CT-RATE's valid split; metrics are the CT-CLIP protocol's (`protocol.py`).
docs/ct-rate-official.md tells how to reproduce the paper's table with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_fvlm.core.anatomy.catalog import group_set
from napari_fvlm.core.errors import FvlmInputError

from .ctrate import FINDING_SET, CtRateVolume, ct_rate_labels, ct_rate_splits, scan_ct_rate
from .evaluate import _plain, run_protocol
from .protocol import markdown


def score_volume(analyzer, volume: CtRateVolume) -> dict:
    """One volume's scores and labels, in the form `protocol.build_tables` reads."""
    from napari_fvlm.core.anatomy.providers import MaskFileProvider
    from napari_fvlm.core.io.nifti import read_nifti

    ct = read_nifti(volume.path)
    if volume.rescale is not None:
        slope, intercept = volume.rescale
        ct = ct.with_array((ct.array.astype(np.float32) * slope + intercept).astype(np.float32))
    labels = MaskFileProvider(volume.masks).segment(ct)
    encoded = analyzer.encode(ct, labels)
    groups = [g for g in group_set(analyzer.config.anatomy_group_set) if g.name in analyzer.config.anatomies]
    anatomy_labels, study_labels = ct_rate_labels(volume.labels, groups)
    return {"id": volume.name, "scores": analyzer.scores(encoded), "grounding": [], "labels": anatomy_labels,
            "study_labels": study_labels}


def evaluate_on_ct_rate(model_dir: str | Path, root: str | Path, masks: str = "masks", split: str = "test",
                        out: str | Path | None = None, resamples: int = 1000, val_fraction: float = 0.05,
                        limit: int = 0, metadata_rescale: bool = False, protocol: str | None = None,
                        progress: bool = True) -> dict:
    """Evaluate ``model_dir`` on CT-RATE at ``root``; writes evaluation.json and evaluation.md."""
    from tqdm import tqdm

    from napari_fvlm.core.inference.analyzer import Analyzer
    from napari_fvlm.core.inference.models import load_model

    model, folder = load_model(str(model_dir), "auto")
    if model.config.anatomy_group_set != "ct-rate":
        raise FvlmInputError(f"'{model_dir}' scores the '{model.config.anatomy_group_set}' anatomies; CT-RATE "
                             "evaluation needs a model of the 'ct-rate' set (lung, heart, esophagus, aorta).")
    analyzer = Analyzer(model, finding_set=FINDING_SET, protocol=protocol)
    splits = ct_rate_splits(scan_ct_rate(root, masks, metadata_rescale), val_fraction, limit)
    if not splits["val"] or not splits[split]:
        raise FvlmInputError(f"CT-RATE at '{root}' has no usable volumes for validation or {split}; thresholds "
                             "come from validation (a held-out share of the train patients, with masks).")
    results = {}
    for name in dict.fromkeys(("val", split)):
        results[name] = [score_volume(analyzer, v) for v in tqdm(splits[name], desc=f"scoring {name}",
                                                                  disable=not progress, leave=False)]
    result = run_protocol(results["val"], results[split], resamples)
    result["summary"] = {
        "model": str(folder), "protocol": analyzer.protocol, "split": split, "samples": len(results[split]),
        "finding_set": FINDING_SET, "thresholds_from": "val" + (" (the evaluated split: optimistic)"
                                                                 if split == "val" else ""),
        "study_mean": result["study"]["mean"], "anatomy_mean": result["anatomy"]["mean"],
    }
    result["samples"] = results[split]
    out = Path(out) if out else Path(folder).parent / f"evaluation-{Path(folder).name}-ct-rate-{split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(_plain(result), indent=2, allow_nan=False), encoding="utf-8")
    (out / "evaluation.md").write_text(markdown(result), encoding="utf-8")
    return result
