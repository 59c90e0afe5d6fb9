"""Evaluation metrics (pure numpy / scikit-learn): the CT-CLIP protocol, bootstrap intervals,
and grounding (pointing game, Dice of a thresholded heatmap).

CT-CLIP protocol, per label: AUC; the threshold at the ROC point nearest (0, 1), chosen on the
validation split and applied unchanged to the test split; accuracy, weighted F1 and weighted
precision of the thresholded scores.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score, roc_auc_score, roc_curve


def _arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(labels).astype(int).ravel(), np.asarray(scores, dtype=float).ravel()


def _one_class(labels: np.ndarray) -> bool:
    return labels.size == 0 or bool(labels.min() == labels.max())


def auc(labels, scores) -> float:
    """ROC AUC; NaN when only one class is present (AUC is undefined there)."""
    labels, scores = _arrays(labels, scores)
    if _one_class(labels):
        return float("nan")
    return float(roc_auc_score(labels, scores))


def corner_threshold(labels, scores) -> float:
    """The score threshold of the ROC point nearest (FPR 0, TPR 1); 0.5 when undefined."""
    labels, scores = _arrays(labels, scores)
    if _one_class(labels):
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, scores)
    finite = np.isfinite(thresholds)
    distance = np.hypot(fpr[finite], 1.0 - tpr[finite])
    return float(thresholds[finite][int(np.argmin(distance))])


def thresholded_metrics(labels, scores, threshold: float) -> dict[str, float]:
    """Accuracy, weighted F1 and weighted precision of ``scores >= threshold``."""
    labels, scores = _arrays(labels, scores)
    predicted = (scores >= threshold).astype(int)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_weighted": float(f1_score(labels, predicted, average="weighted", zero_division=0)),
        "precision_weighted": float(precision_score(labels, predicted, average="weighted", zero_division=0)),
    }


def label_metrics(labels, scores, threshold: float) -> dict[str, float]:
    """All protocol metrics of one label at a threshold chosen elsewhere (on validation)."""
    labels, scores = _arrays(labels, scores)
    return {"auc": auc(labels, scores), **thresholded_metrics(labels, scores, threshold),
            "threshold": float(threshold), "positives": int(labels.sum()), "count": int(labels.size)}


def bootstrap_interval(statistic: Callable[[np.ndarray], float], count: int, resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``count`` samples drawn with
    replacement; resamples where the statistic is undefined (NaN) are skipped."""
    if count == 0 or resamples <= 0:
        return float("nan"), float("nan")
    return percentile_interval([statistic(rows) for rows in bootstrap_draws(count, resamples, seed)], level)


def bootstrap_draws(count: int, resamples: int, seed: int = 0) -> list[np.ndarray]:
    """Index arrays of ``resamples`` bootstrap samples of ``count`` items (fixed by ``seed``)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, count, count) for _ in range(resamples)]


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap values, NaNs (undefined resamples) left out."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def pointing_hit(heatmap: np.ndarray, target: np.ndarray) -> bool:
    """Pointing game: does the heatmap's peak (the plugin's one peak rule, over the map's defined,
    non-NaN values) lie inside the target mask?"""
    from napari_fvlm.core.inference.grounding import peak_index

    heatmap = np.asarray(heatmap, dtype=float)
    defined = np.isfinite(heatmap)
    return bool(defined.any() and np.asarray(target, dtype=bool)[peak_index(heatmap, defined)])


def dice(predicted: np.ndarray, target: np.ndarray) -> float:
    """Dice overlap of two masks (1 when both are empty)."""
    predicted, target = np.asarray(predicted, dtype=bool), np.asarray(target, dtype=bool)
    total = predicted.sum() + target.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(predicted, target).sum() / total)


def heatmap_dice(heatmap: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> float:
    """Dice of ``heatmap >= threshold`` (heatmaps in [0, 1]) against the target mask."""
    return dice(np.nan_to_num(np.asarray(heatmap, dtype=float), nan=0.0) >= threshold, target)


# --- fast versions for bootstrap resampling (checked against scikit-learn in the tests) ----------
def fast_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; NaN for one class."""
    from scipy.stats import rankdata

    labels, scores = _arrays(labels, scores)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def fast_thresholded(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """`thresholded_metrics` from the 2 x 2 confusion counts."""
    labels, scores = _arrays(labels, scores)
    predicted = scores >= threshold
    truth = labels == 1
    n = labels.size
    f1, precision = 0.0, 0.0
    for cls_true, cls_pred in ((truth, predicted), (~truth, ~predicted)):
        support, hits, claimed = cls_true.sum(), (cls_true & cls_pred).sum(), cls_pred.sum()
        p = hits / claimed if claimed else 0.0
        r = hits / support if support else 0.0
        f1 += support / n * (2 * p * r / (p + r) if p + r else 0.0)
        precision += support / n * p
    return {"accuracy": float((predicted == truth).mean()), "f1_weighted": float(f1),
            "precision_weighted": float(precision)}
