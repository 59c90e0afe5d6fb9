"""Experiments side by side: a markdown table of evaluated runs (the ablation table in docs/).

Each run is a run folder holding its `train_config.json` and an evaluation folder written by
``python -m training evaluate --out RUN/eval-test``. The table also says whether the runs are
comparable: same budget (epochs, batch, steps), same training seeds, same model.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_fvlm.core.errors import FvlmInputError

from .config import TRAIN_CONFIG_FILE
from .metrics import bootstrap_draws, fast_auc, percentile_interval
from .protocol import Table, build_tables

EVALUATION = "evaluation.json"
SHARED = ("train_seeds", "val_seeds", "test_seeds", "epochs", "batch_size", "grad_accum", "lr", "seed",
          "model_preset")


def load_run(run: str | Path, evaluation: str = "eval-test") -> dict:
    """{"name", "train" (config values), "summary", "grounding"} of one evaluated run."""
    run = Path(run)
    record, result = run / TRAIN_CONFIG_FILE, run / evaluation / EVALUATION
    for path in (record, result):
        if not path.is_file():
            raise FvlmInputError(f"'{path}' is missing: evaluate the run first "
                                 f"(python -m training evaluate --model {run}/best --out {run}/{evaluation}).")
    train = json.loads(record.read_text(encoding="utf-8"))["train"]
    data = json.loads(result.read_text(encoding="utf-8"))
    return {"name": train["name"], "train": train, "summary": data["summary"], "grounding": data["grounding"],
            "samples": data.get("samples", [])}


def _mean_auc(table: Table, rows=None) -> float:
    values = [fast_auc(*table.column(j, rows)) for j in range(len(table.names))]
    values = [v for v in values if v == v]  # a resample with one class has no AUC
    return sum(values) / len(values) if values else float("nan")


def paired_auc_difference(run: dict, baseline: dict, resamples: int = 1000, seed: int = 0
                          ) -> tuple[float, tuple[float, float]] | None:
    """Mean study AUC of ``run`` minus ``baseline`` on the same test samples, with a paired 95%
    bootstrap interval (each resample draws the same samples for both); None when the runs were
    not scored on the same samples."""
    ids = [s["id"] for s in run["samples"]]
    if not ids or ids != [s["id"] for s in baseline["samples"]]:
        return None
    table, base = build_tables(run["samples"])[0], build_tables(baseline["samples"])[0]
    draws = bootstrap_draws(len(ids), resamples, seed)
    differences = [_mean_auc(table, rows) - _mean_auc(base, rows) for rows in draws]
    return _mean_auc(table) - _mean_auc(base), percentile_interval(differences)


def _arm(train: dict) -> str:
    if train["loss"] == "global_clip":
        return "global CLIP (whole report)"
    return "anatomy-level" + (" + false-negative calibration" if train["calibration"] else ", no calibration")


def _ci(metrics: dict, key: str) -> str:
    low, high = metrics[f"{key}_ci"]
    return f"{metrics[key]:.3f} ({low:.3f}-{high:.3f})"


def comparison_table(runs: list[dict]) -> str:
    """Markdown: one row per run, and a line on what the runs share (or a warning if they differ)."""
    if not runs:
        raise FvlmInputError("No runs to compare.")
    differ = [k for k in SHARED if len({json.dumps(r["train"].get(k)) for r in runs}) > 1]
    lines = ["| run | loss | study AUC (95% CI) | anatomy AUC (95% CI) | pointing game (focal) | Dice |",
             "|---|---|---|---|---|---|"]
    for run in runs:
        summary, grounding = run["summary"], run["grounding"]
        focal = grounding.get("pointing_game_focal")
        pointing = f"{grounding['pointing_game']:.3f}" + (f" ({focal:.3f})" if focal is not None else "")
        lines.append(f"| {run['name']} | {_arm(run['train'])} | {_ci(summary['study_mean'], 'auc')} | "
                     f"{_ci(summary['anatomy_mean'], 'auc')} | {pointing} | {grounding['dice']:.3f} |")
    first = runs[0]["train"]
    shared = ", ".join(f"{k} {json.dumps(first.get(k))}" for k in SHARED if k not in differ)
    lines += ["", f"Shared by every run: {shared}; {runs[0]['summary']['samples']} test phantoms."]
    if differ:
        lines.append(f"**Not comparable**: the runs differ in {', '.join(differ)}.")
    for run in runs[1:]:
        paired = paired_auc_difference(runs[0], run)
        if paired is not None:
            value, (low, high) = paired
            lines.append(f"\nStudy AUC of {runs[0]['name']} minus {run['name']}: {value:+.3f} "
                         f"(paired bootstrap 95% CI {low:+.3f} to {high:+.3f}).")
    return "\n".join(lines) + "\n"
