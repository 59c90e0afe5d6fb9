"""Fitting a checkpoint's calibration on a labelled split, and checking it on a held-out one.

``python -m training calibrate --model DIR`` scores the validation split with the engine
(`engine_scorer`, no heatmaps) and fits, per anatomy x finding where both classes have at least
``min_class`` rows and per finding (pooled over anatomies) otherwise, Platt scaling of the raw
logit and the ROC-corner threshold; a map pooled over every finding serves free-text queries.
The heatmaps get the same fits on each map's peak, their thresholds raised until at most
``MAP_FALSE_POSITIVE`` of the absent findings' maps reach them (calibration.py says why).
It writes ``DIR/calibration.json`` (read by `napari_fvlm.core.inference.calibration`).
``python -m training calibration-check --model DIR`` scores a held-out split and reports the
expected calibration error over all anatomy x finding rows, the share of rows above threshold
against the share of present findings, and a reliability plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.inference.calibration import (
    MAP_FALSE_POSITIVE,
    Calibration,
    PlattMap,
    raw_logits,
    read_calibration,
    weights_fingerprint,
    write_calibration,
)

from .metrics import corner_threshold, fast_auc
from .protocol import Table, build_tables

MIN_CLASS = 10  # rows of each class an anatomy x finding needs for its own map
MIN_AUC = 0.75  # a map fitted on rows the model separates less well flags nothing
BINS = 10  # equal-width bins of the expected calibration error and the reliability plot
FIT_SPLITS = ("train", "val")


# --- fitting (pure numpy / scipy) -----------------------------------------------------------------
def platt_fit(raw, labels) -> tuple[float, float]:
    """(slope >= 0, intercept) of ``sigmoid(slope * logit(raw) + intercept)`` by maximum likelihood
    with Platt's smoothed targets, (N+ + 1) / (N+ + 2) and 1 / (N- + 2), which keep a small or
    one-sided sample from being fitted to exactly 0 and 1."""
    from scipy.optimize import minimize
    from scipy.special import expit

    x = raw_logits(raw).ravel()
    y = np.asarray(labels).astype(int).ravel()
    positives = int(y.sum())
    negatives = y.size - positives
    target = np.where(y == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))

    def loss(params):
        z = params[0] * x + params[1]
        residual = expit(z) - target
        return float(np.sum(np.logaddexp(0.0, z) - target * z)), np.array([residual @ x, residual.sum()])

    mean = float(target.mean())
    start = [0.0, float(np.log(mean / (1 - mean)))]  # the best flat map: the start is never worse
    found = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=[(0.0, None), (None, None)])
    return float(found.x[0]), float(found.x[1])


def fit_map(raw, labels, level: str, max_false_positive: float | None = None) -> PlattMap | None:
    """A `PlattMap` of these rows; None unless both classes occur. With ``max_false_positive``
    the ROC-corner threshold is raised, if needed, until at most that share of negatives reach it."""
    raw, labels = np.asarray(raw, dtype=float).ravel(), np.asarray(labels).astype(int).ravel()
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return None
    slope, intercept = platt_fit(raw, labels)
    threshold = corner_threshold(labels, raw)
    if max_false_positive is not None:
        threshold = max(threshold, specific_threshold(raw[labels == 0], max_false_positive))
    threshold = min(max(threshold, 0.0), 1.0)
    return PlattMap(slope, intercept, threshold, positives, negatives, fast_auc(labels, raw), level)


def specific_threshold(negatives, max_false_positive: float) -> float:
    """The lowest threshold that at most ``max_false_positive`` of ``negatives`` reach (>=)."""
    ordered = np.sort(np.asarray(negatives, dtype=float))[::-1]
    allowed = int(np.floor(max_false_positive * ordered.size))  # negatives that may reach it
    return float(np.nextafter(ordered[allowed], np.inf)) if allowed < ordered.size else float(ordered[-1])


def _columns(table: Table) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """{(anatomy, finding): (labels, raw scores)} of an anatomy table's known, scored rows."""
    out = {}
    for j, name in enumerate(table.names):
        anatomy, finding = name.split("/", 1)
        out[anatomy, finding] = table.column(j)
    return out


def fit_calibration(table: Table, min_class: int = MIN_CLASS, min_auc: float = MIN_AUC, model: str = "",
                    fingerprint: str | None = None, fitted_on: dict | None = None,
                    map_table: Table | None = None) -> Calibration:
    """The calibration of an anatomy table (labels, raw scores): per pair where the data allow,
    per finding otherwise, and pooled over everything. Maps with an AUC below ``min_auc`` on
    their fitting rows are kept (their probabilities are calibrated) but flag nothing. With
    ``map_table`` (the same rows' raw heatmap peaks) the heatmaps get their own fits."""
    pairs, findings, overall = _fit_tables(table, min_class, None)
    maps = None
    if map_table is not None:
        maps = Calibration(*_fit_tables(map_table, min_class, MAP_FALSE_POSITIVE), min_auc)
    calibration = Calibration(pairs, findings, overall, min_auc, model, fingerprint,
                              dict(fitted_on or {}, min_class=min_class), maps)
    return Calibration.from_dict(calibration.to_dict())  # exactly what a reader of the file gets


def _fit_tables(table: Table, min_class: int, max_false_positive: float | None) -> tuple[dict, dict, PlattMap | None]:
    columns = _columns(table)
    pairs = {}
    for key, (labels, raw) in columns.items():
        positives = int(labels.sum())
        if positives >= max(min_class, 1) and labels.size - positives >= max(min_class, 1):
            pairs[key] = fit_map(raw, labels, "anatomy", max_false_positive)
    findings = {}
    for finding in sorted({f for _a, f in columns}):
        chosen = [columns[k] for k in columns if k[1] == finding]
        fitted = fit_map(np.concatenate([r for _l, r in chosen]), np.concatenate([lab for lab, _r in chosen]),
                         "finding", max_false_positive)
        if fitted is not None:
            findings[finding] = fitted
    everything = list(columns.values())
    overall = fit_map(np.concatenate([r for _l, r in everything]), np.concatenate([lab for lab, _r in everything]),
                      "overall", max_false_positive) if everything else None
    return pairs, findings, overall


# --- checking -------------------------------------------------------------------------------------
def reliability_bins(probabilities, labels, bins: int = BINS) -> list[dict]:
    """Equal-width bins of predicted probability: count, mean prediction, observed frequency."""
    probabilities, labels = np.asarray(probabilities, dtype=float), np.asarray(labels, dtype=float)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": count,
                     "mean_probability": float(probabilities[inside].mean()) if count else None,
                     "observed": float(labels[inside].mean()) if count else None})
    return rows


def expected_calibration_error(probabilities, labels, bins: int = BINS) -> float:
    """Sum over equal-width bins of (share of rows) x |mean prediction - observed frequency|."""
    total = len(probabilities)
    if total == 0:
        return float("nan")
    return float(sum(b["count"] / total * abs(b["mean_probability"] - b["observed"])
                     for b in reliability_bins(probabilities, labels, bins) if b["count"]))


def calibrated_rows(table: Table, calibration: Calibration) -> dict[str, np.ndarray]:
    """Every known, scored, calibrated anatomy x finding row of a table, as flat arrays."""
    parts: dict[str, list] = {k: [] for k in ("finding", "level", "label", "raw", "probability", "above")}
    for (anatomy, finding), (labels, raw) in _columns(table).items():
        chosen = calibration.lookup(anatomy, finding)
        if chosen is None or not labels.size:
            continue
        parts["finding"] += [finding] * labels.size
        parts["level"] += [chosen.level] * labels.size
        parts["label"].append(labels)
        parts["raw"].append(raw)
        parts["probability"].append(chosen(raw))
        parts["above"].append(chosen.above(raw))
    out = {k: np.array(v) for k, v in parts.items() if k in ("finding", "level")}
    for key in ("label", "raw", "probability", "above"):
        out[key] = np.concatenate(parts[key]) if parts[key] else np.zeros(0)
    return out


def _summary(rows: dict[str, np.ndarray], mask=None) -> dict:
    mask = np.ones(rows["label"].size, bool) if mask is None else mask
    labels, probabilities = rows["label"][mask], rows["probability"][mask]
    return {"rows": int(mask.sum()), "positives": int(labels.sum()),
            "ece": expected_calibration_error(probabilities, labels),
            "ece_raw": expected_calibration_error(rows["raw"][mask], labels),
            "above_share": float(rows["above"][mask].mean()) if mask.any() else float("nan"),
            "present_share": float(labels.mean()) if mask.any() else float("nan"),
            "auc": fast_auc(labels, rows["raw"][mask])}


def calibration_report(results: list[dict], calibration: Calibration) -> dict:
    """ECE (calibrated and raw), shares above threshold / present, per finding and overall."""
    _study, table = build_tables(results)
    rows = calibrated_rows(table, calibration)
    known = int(sum(table.column(j)[0].size for j in range(len(table.names))))
    report = {"samples": len(results), **_summary(rows), "uncalibrated_rows": known - int(rows["label"].size),
              "bins": reliability_bins(rows["probability"], rows["label"]),
              "bins_raw": reliability_bins(rows["raw"], rows["label"])}
    report["per_finding"] = {f: _summary(rows, rows["finding"] == f) for f in sorted(set(rows["finding"].tolist()))}
    report["per_level"] = {lvl: _summary(rows, rows["level"] == lvl) for lvl in sorted(set(rows["level"].tolist()))}
    return report


def reliability_plot(report: dict, path: str | Path, title: str) -> Path:
    """Reliability diagram (observed frequency against mean predicted probability per bin, raw and
    calibrated, marker area by row count) above a histogram of the calibrated predictions; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5.2, 6.4), height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    for key, label, color in (("bins_raw", f"raw (ECE {report['ece_raw']:.3f})", "tab:gray"),
                              ("bins", f"calibrated (ECE {report['ece']:.3f})", "tab:red")):
        used = [b for b in report[key] if b["count"]]
        sizes = [10 + 200 * b["count"] / max(max(b2["count"] for b2 in used), 1) for b in used]
        top.plot([b["mean_probability"] for b in used], [b["observed"] for b in used], color=color, linewidth=1)
        top.scatter([b["mean_probability"] for b in used], [b["observed"] for b in used], s=sizes, color=color,
                    label=label, zorder=3)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed frequency of the finding", title=title)
    top.legend(loc="upper left", fontsize=8, markerscale=0.5)
    counts = [b["count"] for b in report["bins"]]
    bottom.bar([b["low"] + 0.05 for b in report["bins"]], counts, width=0.09, color="tab:red")
    bottom.set(yscale="log", xlabel="predicted probability", ylabel="rows")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def report_markdown(report: dict, title: str) -> str:
    def cell(value, digits=3):
        return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"

    lines = [f"# {title}", "", f"{report['samples']} samples, {report['rows']} calibrated anatomy x finding rows "
             f"({report['uncalibrated_rows']} rows without calibration left out).", "",
             f"- expected calibration error ({BINS} bins): {cell(report['ece'])} "
             f"(raw scores: {cell(report['ece_raw'])})",
             f"- rows above threshold: {cell(100 * report['above_share'], 1)}%; findings truly present: "
             f"{cell(100 * report['present_share'], 1)}%", "",
             "| finding | rows | present | above threshold | present share | ECE | raw ECE | AUC |",
             "|---|---|---|---|---|---|---|---|"]
    levels = [(f"*fitted per {level}*", values) for level, values in report["per_level"].items()]
    for name, s in [*report["per_finding"].items(), *levels]:
        lines.append(f"| {name} | {s['rows']} | {s['positives']} | {cell(100 * s['above_share'], 1)}% | "
                     f"{cell(100 * s['present_share'], 1)}% | {cell(s['ece'])} | {cell(s['ece_raw'])} | "
                     f"{cell(s['auc'])} |")
    return "\n".join(lines) + "\n"


# --- the commands ---------------------------------------------------------------------------------
def _setup(model_dir: Path, config_path: str | None, overrides):
    """(training config that defines the splits, model, finding set) for a model folder."""
    from napari_fvlm.core.model.checkpoint import load_checkpoint

    from .config import load_config
    from .evaluate import checkpoint_train_config

    config = load_config(config_path, overrides) if config_path else checkpoint_train_config(model_dir, overrides)
    model = load_checkpoint(model_dir)
    model.eval()
    return config, model, "phantom" if config.dataset == "phantom" else "ct-rate"


def score_for_calibration(config, model, finding_set: str, split: str, progress: bool = True,
                          map_peaks: bool = False) -> list[dict]:
    """Scores and labels of every sample of a split (the engine's scores, without lesion
    grounding; with ``map_peaks`` each scored map's raw peak too)."""
    from .datasets import prepare_split
    from .evaluate import engine_scorer, score_split

    paths = prepare_split(config, split, workers=config.num_workers, progress=progress)
    if not paths:
        raise FvlmInputError(f"The {split} split of '{config.name}' is empty; nothing to calibrate on.")
    return score_split(paths, engine_scorer(model, finding_set, heatmaps=False, map_peaks=map_peaks), progress)


def calibrate_checkpoint(model_dir: str | Path, split: str = "val", config_path: str | None = None,
                         overrides=(), min_class: int = MIN_CLASS, min_auc: float = MIN_AUC,
                         progress: bool = True) -> tuple[Calibration, dict]:
    """Fit the calibration on ``split`` and write it into the model folder; (calibration, report of
    it on the fitting split itself: optimistic)."""
    model_dir = Path(model_dir)
    if split not in FIT_SPLITS:
        raise FvlmInputError(f"Calibrate on {' or '.join(FIT_SPLITS)}, not '{split}': the test split must "
                             "stay held out for checking the calibration.")
    config, model, finding_set = _setup(model_dir, config_path, list(overrides))
    results = score_for_calibration(config, model, finding_set, split, progress, map_peaks=True)
    _study, table = build_tables(results)
    _study, map_table = build_tables([{**r, "scores": r["map_peaks"]} for r in results])
    ids = [r["id"] for r in results]
    fitted_on = {"dataset": config.dataset, "config": config.name, "split": split, "samples": len(results),
                 "first": ids[0], "last": ids[-1], "finding_set": finding_set}
    calibration = fit_calibration(table, min_class, min_auc, model.config.name, weights_fingerprint(model_dir),
                                  fitted_on, map_table)
    if not calibration.findings:
        raise FvlmInputError(f"No finding of the {split} split has both present and absent cases; "
                             "nothing could be calibrated (use a larger split).")
    write_calibration(model_dir, calibration)
    return calibration, calibration_report(results, calibration)


def check_calibration(model_dir: str | Path, split: str = "test", out: str | Path | None = None,
                      config_path: str | None = None, overrides=(), progress: bool = True) -> dict:
    """The model folder's calibration on ``split``: calibration-check.json/.md and reliability.png in ``out``."""
    model_dir = Path(model_dir)
    calibration = read_calibration(model_dir)
    if calibration is None:
        raise FvlmInputError(f"'{model_dir}' has no calibration.json; fit it first with "
                             f"`python -m training calibrate --model {model_dir}`.")
    config, model, finding_set = _setup(model_dir, config_path, list(overrides))
    if split == calibration.fitted_on.get("split") and config.dataset == calibration.fitted_on.get("dataset"):
        note = " (the split it was fitted on: optimistic)"
    else:
        note = ""
    report = calibration_report(score_for_calibration(config, model, finding_set, split, progress), calibration)
    report["model"], report["split"] = str(model_dir), split + note
    out = Path(out) if out else model_dir.parent / f"calibration-{model_dir.name}-{split}"
    out.mkdir(parents=True, exist_ok=True)
    title = f"Calibration of {model.config.name} on {split}{note}"
    from .evaluate import _plain

    (out / "calibration-check.json").write_text(json.dumps(_plain(report), indent=2), encoding="utf-8")
    (out / "calibration-check.md").write_text(report_markdown(report, title), encoding="utf-8")
    reliability_plot(report, out / "reliability.png", f"{model.config.name}, {split} ({report['samples']} samples)")
    report["out"] = str(out)
    return report

