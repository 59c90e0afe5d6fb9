"""Evaluation metrics against scikit-learn and hand-worked cases; the protocol's val -> test thresholds."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, roc_auc_score

from napari_fvlm.core.errors import FvlmInputError
from training.compare import comparison_table, load_run, paired_auc_difference
from training.metrics import (
    auc,
    bootstrap_interval,
    corner_threshold,
    dice,
    fast_auc,
    fast_thresholded,
    heatmap_dice,
    label_metrics,
    pointing_hit,
    thresholded_metrics,
)
from training.protocol import build_tables, evaluate_table, markdown, per_anatomy, thresholds


def test_auc_and_thresholded_metrics_on_a_known_case():
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]
    assert auc(labels, scores) == 0.75  # 3 of the 4 positive-negative pairs ordered right
    metrics = thresholded_metrics(labels, scores, 0.35)  # predictions 0 1 1 1
    assert metrics["accuracy"] == 0.75
    # class 1: precision 2/3, recall 1, F1 0.8; class 0: precision 1, recall 0.5, F1 2/3; weights 1/2
    assert math.isclose(metrics["f1_weighted"], 0.5 * 0.8 + 0.5 * 2 / 3)
    assert math.isclose(metrics["precision_weighted"], 0.5 * 2 / 3 + 0.5 * 1.0)
    assert math.isnan(auc([1, 1], [0.2, 0.3]))


def test_corner_threshold_picks_roc_point_nearest_top_left():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.9])
    # at 0.5: TPR 1, FPR 1/3 (distance 1/3); at 0.7: TPR 2/3, FPR 0 (distance 1/3); at 0.6 worse.
    # sklearn lists thresholds from high to low, so the first minimum (0.7) is kept
    assert corner_threshold(labels, scores) in (0.5, 0.7)
    separable = corner_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert 0.2 < separable <= 0.8 and thresholded_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], separable)["accuracy"] == 1


def test_metrics_equal_sklearn_and_fast_versions_agree():
    rng = np.random.default_rng(3)
    for _ in range(20):
        labels = rng.integers(0, 2, 60)
        scores = np.round(rng.random(60) + 0.4 * labels, 2)  # rounding makes ties
        threshold = float(np.median(scores))
        predicted = (scores >= threshold).astype(int)
        reference = {"accuracy": accuracy_score(labels, predicted),
                     "f1_weighted": f1_score(labels, predicted, average="weighted", zero_division=0),
                     "precision_weighted": precision_score(labels, predicted, average="weighted", zero_division=0)}
        ours = label_metrics(labels, scores, threshold)
        fast = fast_thresholded(labels, scores, threshold)
        for key, value in reference.items():
            assert math.isclose(ours[key], value) and math.isclose(fast[key], value, abs_tol=1e-12)
        assert math.isclose(ours["auc"], roc_auc_score(labels, scores))
        assert math.isclose(fast_auc(labels, scores), roc_auc_score(labels, scores), abs_tol=1e-12)


def test_bootstrap_interval_contains_the_point_estimate():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 80)
    scores = rng.random(80) + 0.5 * labels
    point = auc(labels, scores)
    low, high = bootstrap_interval(lambda rows: fast_auc(labels[rows], scores[rows]), 80, 500, seed=1)
    assert low < point < high and low > 0.5 and high <= 1.0
    assert bootstrap_interval(lambda rows: 0.3, 10, 50) == (0.3, 0.3)


def test_pointing_game_and_dice():
    heatmap = np.zeros((2, 3, 3))
    heatmap[1, 2, 2] = 1.0
    heatmap[0, 0, 0] = 0.6
    lesion = np.zeros((2, 3, 3), bool)
    lesion[1, 2, 2] = True
    assert pointing_hit(heatmap, lesion)
    assert not pointing_hit(heatmap, np.roll(lesion, 1, axis=2))
    outside = np.where(lesion, np.nan, heatmap)  # NaN marks voxels outside the map's anatomy: never the peak
    second = np.zeros_like(lesion)
    second[0, 0, 0] = True
    assert pointing_hit(outside, second) and not pointing_hit(np.full((2, 3, 3), np.nan), lesion)
    assert dice(lesion, lesion) == 1.0 and dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    # thresholded at 0.5: two voxels predicted, one of them the lesion -> 2 * 1 / (2 + 1)
    assert math.isclose(heatmap_dice(heatmap, lesion, 0.5), 2 / 3)
    assert heatmap_dice(heatmap, lesion, 0.9) == 1.0


def _result(scores, labels):
    return {"scores": {"lung": {"nodule": scores[0]}, "heart": {"cardiomegaly": scores[1]}},
            "labels": {"lung": {"nodule": labels[0]}, "heart": {"cardiomegaly": labels[1]}},
            "study_labels": {"nodule": labels[0], "cardiomegaly": labels[1]}, "grounding": []}


def test_protocol_takes_thresholds_from_validation():
    val = [_result((s, s), (int(s > 0.65), int(s > 0.65))) for s in (0.1, 0.3, 0.5, 0.7, 0.8, 0.9)]
    test = [_result((s, s), (int(s > 0.45), int(s > 0.45))) for s in (0.2, 0.4, 0.5, 0.6, 0.75, 0.95)]
    val_study, val_anatomy = build_tables(val)
    test_study, test_anatomy = build_tables(test)
    chosen = thresholds(val_study)
    assert chosen == {"cardiomegaly": 0.7, "nodule": 0.7}
    result = evaluate_table(test_study, chosen, resamples=200)
    nodule = result["labels"]["nodule"]
    assert nodule["auc"] == 1.0 and nodule["threshold"] == 0.7
    # test positives 0.5, 0.6, 0.75, 0.95: the validation threshold 0.7 misses 0.5 and 0.6
    assert math.isclose(nodule["accuracy"], 4 / 6)
    assert nodule["auc_ci"][0] <= 1.0 and nodule["accuracy_ci"][0] <= 4 / 6 <= nodule["accuracy_ci"][1]
    anatomy = evaluate_table(test_anatomy, thresholds(val_anatomy), resamples=50)
    assert set(anatomy["labels"]) == {"heart/cardiomegaly", "lung/nodule"}
    assert per_anatomy(anatomy)["lung"]["accuracy"] == pytest.approx(4 / 6)
    text = markdown({"summary": {"model": "m", "split": "test", "samples": 6, "thresholds_from": "val"},
                     "study": result, "anatomy": anatomy, "per_anatomy": per_anatomy(anatomy)})
    assert "| nodule | 1.000" in text and "lung/nodule" in text


def test_study_score_is_the_highest_anatomy_score():
    result = {"scores": {"lung_left": {"emphysema": 0.2}, "lung_right": {"emphysema": 0.9}},
              "labels": {}, "study_labels": {"emphysema": 1}}
    study, anatomy = build_tables([result])
    assert study.names == ["emphysema"] and study.scores[0, 0] == 0.9 and anatomy.names == []


def _evaluated_run(folder, name, loss, calibration, auc, epochs=6):
    """A run folder as `training evaluate` leaves it (config record + evaluation summary)."""
    folder.mkdir()
    train = {"name": name, "loss": loss, "calibration": calibration, "epochs": epochs, "batch_size": 8,
             "grad_accum": 1, "lr": 5e-4, "seed": 0, "model_preset": "demo", "train_seeds": [0, 512],
             "val_seeds": [10000, 10064], "test_seeds": [20000, 20128]}
    (folder / "train_config.json").write_text(json.dumps({"train": train}))
    mean = {"auc": auc, "auc_ci": [auc - 0.02, auc + 0.02]}
    result = {"summary": {"samples": 128, "study_mean": mean, "anatomy_mean": mean},
              "grounding": {"pointing_game": 0.5, "pointing_game_focal": 0.25, "dice": 0.4}}
    (folder / "eval-test").mkdir()
    (folder / "eval-test" / "evaluation.json").write_text(json.dumps(result))
    return folder


def test_comparison_table_rows_and_budget_check(tmp_path):
    anatomy = load_run(_evaluated_run(tmp_path / "a", "phantom-anatomy", "fvlm", True, 0.81))
    clip = load_run(_evaluated_run(tmp_path / "b", "phantom-global-clip", "global_clip", True, 0.62))
    table = comparison_table([anatomy, clip])
    rows = [line for line in table.splitlines() if line.startswith("| phantom-")]
    assert rows[0].startswith("| phantom-anatomy | anatomy-level + false-negative calibration | 0.810 (0.790-0.830)")
    assert "| 0.500 (0.250) | 0.400 |" in rows[0] and "global CLIP" in rows[1]
    assert "epochs 6" in table and "128 test phantoms" in table and "Not comparable" not in table
    longer = load_run(_evaluated_run(tmp_path / "c", "phantom-long", "fvlm", False, 0.9, epochs=12))
    assert "**Not comparable**: the runs differ in epochs" in comparison_table([anatomy, longer])
    with pytest.raises(FvlmInputError, match="evaluate the run first"):
        load_run(tmp_path / "missing")


def test_paired_auc_difference_uses_the_same_resamples_for_both_runs():
    labels = [0, 1] * 10
    def run(flip):
        return {"name": "r", "samples": [
            {"id": f"phantom-{i}", "study_labels": {"cardiomegaly": y}, "labels": {"heart": {"cardiomegaly": y}},
             "scores": {"heart": {"cardiomegaly": float(y != flip) * 0.8 + 0.1}}} for i, y in enumerate(labels)]}
    right, wrong = run(False), run(True)
    value, (low, high) = paired_auc_difference(right, wrong, resamples=50)
    assert value == 1.0 and low == high == 1.0  # paired: every resample has AUC 1 vs 0
    assert paired_auc_difference(right, right, resamples=50) == (0.0, (0.0, 0.0))
    shifted = {"samples": right["samples"][1:]}
    assert paired_auc_difference(right, shifted) is None
