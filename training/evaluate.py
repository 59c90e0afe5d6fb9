"""Zero-shot evaluation of a checkpoint on a split, with the CT-CLIP protocol (docs/method.md).

Scores come from the plugin's own inference engine (`Analyzer`: the same encoding, prompts and
heatmaps users see), through one function, `engine_scorer`; another scorer (a different prompt
set, an ensemble) is a function of the same `Scorer` type. Thresholds are chosen on the
validation split and applied to the test split; the test split is read here and nowhere in
training.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.model.config import read_checkpoint_config
from napari_fvlm.core.phantom.catalog import FINDINGS

from .cache import CachedSample, read_sample
from .config import TrainConfig, apply_overrides
from .datasets import prepare_split
from .metrics import bootstrap_interval
from .protocol import build_tables, evaluate_table, markdown, per_anatomy, thresholds

Scorer = Callable[[CachedSample], dict]
"""A cached sample -> {"scores": {anatomy: {finding: probability}}, "grounding": [per lesion dicts]}."""


def prepared_input(sample: CachedSample):
    """The cached sample as the engine's `ModelInput` (the grid it was prepared on)."""
    from napari_fvlm.core.inference.preprocess import ModelInput

    meta = sample.meta
    masks = {a: sample.masks[i] for i, a in enumerate(meta["anatomies"]) if meta["present"][a]}
    return ModelInput(sample.image, masks, sample.affine, dict(meta["cut"]), list(meta["absent"]))


def ground_lesions(sample: CachedSample, patch_zyx, anatomy_size, scored, heatmap_of) -> list[dict]:
    """Pointing game and Dice of each lesion of ``sample``: the heatmap of its finding over the
    smallest anatomy holding it that ``scored(anatomy, finding)`` accepts (``anatomy_size`` gives
    its size), against the lesion's mask at the heatmap's resolution: voxels for a fine map on the
    sample's grid, else tokens of ``patch_zyx`` voxels. ``heatmap_of(anatomy, finding)`` gives the
    map with NaN outside the anatomy."""
    from napari_fvlm.core.model.pooling import token_mask

    from .metrics import heatmap_dice, pointing_hit

    rows = []
    for label, finding in sample.meta.get("lesion_findings", {}).items():
        candidates = [a for a in sample.meta["lesion_anatomies"].get(label, []) if scored(a, finding)]
        if not candidates:
            continue  # not scored for this finding set
        anatomy = min(candidates, key=anatomy_size)
        heatmap = heatmap_of(anatomy, finding)
        lesion = sample.lesions == int(label)
        target = lesion if heatmap.shape == lesion.shape else token_mask(lesion, patch_zyx).numpy()
        if not target.any():
            continue  # smaller than one token
        rows.append({"lesion": int(label), "finding": finding, "anatomy": anatomy,
                     "hit": pointing_hit(heatmap, target), "dice": heatmap_dice(heatmap, target)})
    return rows


def engine_scorer(model, finding_set: str, heatmaps: bool = True, map_peaks: bool = False) -> Scorer:
    """Scores (and lesion grounding) from the inference engine's `Analyzer`; with ``map_peaks``
    also each scored anatomy x finding's raw heatmap peak (what map calibration fits)."""
    from napari_fvlm.core.inference.analyzer import Analyzer
    from napari_fvlm.core.inference.encoding import encode_ct
    from napari_fvlm.core.inference.findings import findings_for

    analyzer = Analyzer(model, finding_set=finding_set)

    def heatmap_of(encoded, anatomy, finding):
        heatmap = analyzer.finding_heatmap(encoded, anatomy, finding)
        return np.where(heatmap.inside, heatmap.values, np.nan)

    def score(sample: CachedSample) -> dict:
        channels = None
        if model.focal is not None and sample.path is not None:  # cached beside the sample: computed once
            from .focal_cache import read_channels

            channels = read_channels(sample.path, model.config, sample.image)
        encoded = encode_ct(model, prepared_input(sample), channels=channels)
        result = {"scores": analyzer.scores(encoded), "grounding": []}
        if heatmaps:
            result["grounding"] = ground_lesions(
                sample, model.config.patch_zyx, lambda a: int(encoded.token_masks[a].sum()),
                lambda a, f: a in encoded.embeddings and f in findings_for(a, finding_set),
                lambda a, f: heatmap_of(encoded, a, f))
        if map_peaks:
            result["map_peaks"] = {a: {f: float(np.nanmax(heatmap_of(encoded, a, f))) for f in table}
                                   for a, table in result["scores"].items()}
        return result

    return score


def score_split(paths: list[Path], scorer: Scorer, progress: bool = True) -> list[dict]:
    """Per sample: the scorer's output plus the sample's labels."""
    from tqdm import tqdm

    results = []
    for path in tqdm(paths, desc="scoring", disable=not progress, leave=False):
        sample = read_sample(path)
        results.append({"id": sample.meta["id"], **scorer(sample), "labels": sample.meta["labels"],
                        "study_labels": sample.meta["study_labels"]})
    return results


def grounding_summary(results: list[dict], resamples: int) -> dict:
    found = [g for r in results for g in r["grounding"]]
    if not found:
        return {"lesions": 0}
    hits = np.array([g["hit"] for g in found], dtype=float)
    dices = np.array([g["dice"] for g in found])
    per_finding: dict[str, dict] = {}
    for name in sorted({g["finding"] for g in found}):
        chosen = [g for g in found if g["finding"] == name]
        per_finding[name] = {"lesions": len(chosen), "pointing_game": float(np.mean([g["hit"] for g in chosen])),
                             "dice": float(np.mean([g["dice"] for g in chosen]))}
    focal = np.array([g["finding"] in FINDINGS and FINDINGS[g["finding"]].focal for g in found])
    focal_hits = hits[focal]
    return {"lesions": len(found), "pointing_game": float(hits.mean()),
            "pointing_game_ci": bootstrap_interval(lambda rows: float(hits[rows].mean()), len(hits), resamples),
            "focal_lesions": int(focal.sum()),
            "pointing_game_focal": float(focal_hits.mean()) if focal.any() else None,
            "dice": float(dices.mean()),
            "dice_ci": bootstrap_interval(lambda rows: float(dices[rows].mean()), len(dices), resamples),
            "per_finding": per_finding}


def run_protocol(val_results: list[dict], test_results: list[dict], resamples: int = 1000) -> dict:
    """Thresholds from validation, metrics (with CIs) on test, per finding / anatomy / label."""
    val_study, val_anatomy = build_tables(val_results)
    test_study, test_anatomy = build_tables(test_results)
    study = evaluate_table(test_study, thresholds(val_study), resamples)
    anatomy = evaluate_table(test_anatomy, thresholds(val_anatomy), resamples)
    return {"study": study, "anatomy": anatomy, "per_anatomy": per_anatomy(anatomy),
            "grounding": grounding_summary(test_results, resamples)}


def checkpoint_train_config(model_dir: Path, overrides: list[str]) -> TrainConfig:
    _, extra = read_checkpoint_config(model_dir)
    record = extra.get("train_config")
    if not record:
        raise FvlmInputError(f"'{model_dir}' was not written by training (no train_config in its config.json); "
                             "evaluate a run's best/ folder.")
    return TrainConfig.from_dict(apply_overrides(record["train"], list(overrides)))


def evaluate_checkpoint(model_dir: str | Path, split: str = "test", out: str | Path | None = None,
                        resamples: int = 1000, overrides: list[str] = (), progress: bool = True,
                        scorer_factory=engine_scorer) -> dict:
    """Evaluate a training checkpoint on ``split``; writes evaluation.json and evaluation.md."""
    from napari_fvlm.core.model.checkpoint import load_checkpoint

    model_dir = Path(model_dir)
    config = checkpoint_train_config(model_dir, overrides)
    model = load_checkpoint(model_dir)
    finding_set = config.finding_set
    scorer = scorer_factory(model, finding_set)
    val_results = score_split(prepare_split(config, "val", progress=progress), scorer, progress)
    test_results = val_results if split == "val" else score_split(
        prepare_split(config, split, progress=progress), scorer, progress)
    result = run_protocol(val_results, test_results, resamples)
    result["summary"] = {
        "model": str(model_dir), "split": split, "samples": len(test_results), "finding_set": finding_set,
        "thresholds_from": "val" + (" (the evaluated split itself: optimistic)" if split == "val" else ""),
        "study_mean": result["study"]["mean"], "anatomy_mean": result["anatomy"]["mean"],
        "pointing_game": result["grounding"].get("pointing_game"),
        "pointing_game_focal": result["grounding"].get("pointing_game_focal"), "dice": result["grounding"].get("dice"),
    }
    result["samples"] = test_results
    out = Path(out) if out else model_dir.parent / f"evaluation-{model_dir.name}-{split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(_plain(result), indent=2, allow_nan=False), encoding="utf-8")
    (out / "evaluation.md").write_text(markdown(result), encoding="utf-8")
    return result


def _plain(value):
    """JSON-ready: numpy scalars to Python, tuples to lists, NaN (undefined metric) to null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    return value
