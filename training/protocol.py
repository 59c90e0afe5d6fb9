"""Tables of labels and scores, and the CT-CLIP protocol over them with bootstrap intervals.

A table is (label names, labels S x L with -1 where unknown, scores S x L with NaN where not
scored). Labels are either study-level findings ("emphysema": the study's label vs the highest
score of the anatomies it is scored on) or anatomy-level ("lung_left/emphysema").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import bootstrap_draws, corner_threshold, fast_auc, fast_thresholded, label_metrics, percentile_interval

METRICS = ("auc", "accuracy", "f1_weighted", "precision_weighted")


@dataclass
class Table:
    names: list[str]
    labels: np.ndarray  # (S, L) int, -1 unknown
    scores: np.ndarray  # (S, L) float, NaN not scored

    def column(self, index: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        labels, scores = self.labels[:, index], self.scores[:, index]
        if rows is not None:
            labels, scores = labels[rows], scores[rows]
        keep = (labels >= 0) & np.isfinite(scores)
        return labels[keep], scores[keep]


def build_tables(results: list[dict]) -> tuple[Table, Table]:
    """(study table, anatomy table) from per-sample {"scores", "labels", "study_labels"}."""
    study_rows, anatomy_rows = [], []
    for result in results:
        best: dict[str, float] = {}
        for findings in result["scores"].values():
            for finding, value in findings.items():
                best[finding] = max(best.get(finding, -np.inf), value)
        study_rows.append({f: (int(v), best.get(f, np.nan)) for f, v in result["study_labels"].items()})
        anatomy_rows.append({f"{a}/{f}": (int(v), result["scores"].get(a, {}).get(f, np.nan))
                             for a, table in result["labels"].items() for f, v in table.items()})
    return _table(study_rows), _table(anatomy_rows)


def _table(rows: list[dict]) -> Table:
    names = sorted({name for row in rows for name in row})
    labels = np.full((len(rows), len(names)), -1, dtype=int)
    scores = np.full((len(rows), len(names)), np.nan)
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            if name in row:
                labels[i, j], scores[i, j] = row[name]
    return Table(names, labels, scores)


def thresholds(table: Table) -> dict[str, float]:
    """Per label, the ROC corner threshold (from the validation table)."""
    return {name: corner_threshold(*table.column(j)) for j, name in enumerate(table.names)}


def _fast_metrics(labels, scores, threshold) -> list[float]:
    values = {"auc": fast_auc(labels, scores), **fast_thresholded(labels, scores, threshold)}
    return [values[m] for m in METRICS]


def evaluate_table(table: Table, chosen: dict[str, float], resamples: int = 1000, seed: int = 0) -> dict:
    """Per-label metrics at the given thresholds, their mean over labels, with 95% bootstrap CIs
    (samples resampled jointly for all labels, so the mean's interval is a real one)."""
    usable = [j for j in range(len(table.names)) if table.column(j)[0].size]
    draws = bootstrap_draws(table.labels.shape[0], resamples, seed) if usable else []
    values = np.full((len(draws), len(table.names), len(METRICS)), np.nan)
    for r, rows in enumerate(draws):  # every metric of every label from the same resample
        for j in usable:
            sampled = table.column(j, rows)
            if sampled[0].size:
                values[r, j] = _fast_metrics(*sampled, chosen.get(table.names[j], 0.5))
    per_label = {}
    for j in usable:
        name = table.names[j]
        metrics = label_metrics(*table.column(j), chosen.get(name, 0.5))
        for k, metric in enumerate(METRICS):
            metrics[f"{metric}_ci"] = percentile_interval(values[:, j, k])
        per_label[name] = metrics
    mean = {metric: _nanmean([per_label[n][metric] for n in per_label]) for metric in METRICS}
    for k, metric in enumerate(METRICS):
        means = [_nanmean(values[r, usable, k]) for r in range(len(draws))]
        mean[f"{metric}_ci"] = percentile_interval(means)
    return {"mean": mean, "labels": per_label}


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def per_anatomy(anatomy_result: dict) -> dict[str, dict[str, float]]:
    """Mean of each metric over the findings of each anatomy (from anatomy-level labels)."""
    grouped: dict[str, list[dict]] = {}
    for name, metrics in anatomy_result["labels"].items():
        grouped.setdefault(name.split("/", 1)[0], []).append(metrics)
    return {a: {m: _nanmean([r[m] for r in rows]) for m in METRICS} for a, rows in grouped.items()}


def _cell(metrics: dict, metric: str) -> str:
    value = metrics.get(metric, float("nan"))
    low, high = metrics.get(f"{metric}_ci", (float("nan"), float("nan")))
    if not np.isfinite(value):
        return "-"
    return f"{value:.3f} ({low:.3f}-{high:.3f})" if np.isfinite(low) else f"{value:.3f}"


def markdown(result: dict) -> str:
    """The results as markdown tables (value and 95% CI)."""
    lines = [f"# Zero-shot evaluation: {result['summary']['model']} on {result['summary']['split']}", "",
             f"{result['summary']['samples']} samples; thresholds from {result['summary']['thresholds_from']}.", ""]
    header = "| label | AUC | accuracy | weighted F1 | weighted precision | positives / count |"
    for title, block in (("Per finding (study level)", result["study"]), ("Per anatomy x finding", result["anatomy"])):
        lines += [f"## {title}", "", header, "|---|---|---|---|---|---|",
                  "| **mean** | " + " | ".join(_cell(block["mean"], m) for m in METRICS) + " | |"]
        for name, metrics in block["labels"].items():
            lines.append(f"| {name} | " + " | ".join(_cell(metrics, m) for m in METRICS)
                         + f" | {metrics['positives']} / {metrics['count']} |")
        lines.append("")
    if result.get("per_anatomy"):
        lines += ["## Per anatomy (mean over its findings)", "",
                  "| anatomy | AUC | accuracy | weighted F1 | weighted precision |", "|---|---|---|---|---|"]
        lines += [f"| {a} | " + " | ".join(f"{m[k]:.3f}" if np.isfinite(m[k]) else "-" for k in METRICS) + " |"
                  for a, m in result["per_anatomy"].items()]
        lines.append("")
    grounding = result.get("grounding")
    if grounding and grounding.get("lesions"):
        lines += ["## Grounding (lesions)", "", f"{grounding['lesions']} lesions: pointing game "
                  f"{grounding['pointing_game']:.3f} (95% CI {grounding['pointing_game_ci'][0]:.3f}-"
                  f"{grounding['pointing_game_ci'][1]:.3f}), Dice {grounding['dice']:.3f} (95% CI "
                  f"{grounding['dice_ci'][0]:.3f}-{grounding['dice_ci'][1]:.3f})."]
        if grounding.get("pointing_game_focal") is not None:
            lines += ["", f"Focal findings ({grounding['focal_lesions']} lesions): pointing game "
                      f"{grounding['pointing_game_focal']:.3f}."]
        lines += ["", "| finding | lesions | pointing game | Dice |", "|---|---|---|---|"]
        lines += [f"| {name} | {m['lesions']} | {m['pointing_game']:.3f} | {m['dice']:.3f} |"
                  for name, m in grounding.get("per_finding", {}).items()]
        lines.append("")
    return "\n".join(lines)
