"""Calibration files: round trip, refusals, fitting on synthetic score tables, and the fitting
and checking commands on a tiny model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.inference.calibration import (
    CALIBRATION_FILE,
    Calibration,
    PlattMap,
    calibrated_scores,
    read_calibration,
    weights_fingerprint,
    write_calibration,
)
from training.calibrate import (
    calibrate_checkpoint,
    expected_calibration_error,
    fit_calibration,
    platt_fit,
    reliability_bins,
    specific_threshold,
)
from training.protocol import Table


def small_calibration(fingerprint=None) -> Calibration:
    return Calibration(
        pairs={("lung_left", "lung nodule"): PlattMap(1.5, -0.5, 0.4, 12, 40, 0.91, "anatomy")},
        findings={"lung nodule": PlattMap(0.8, -1.0, 0.3, 20, 300, 0.8),
                  "emphysema": PlattMap(0.0, -2.0, 0.5, 10, 300, 0.55)},
        overall=PlattMap(0.5, -1.5, 0.35, 60, 900, 0.7, "overall"),
        min_auc=0.75, model="demo", weights_fingerprint=fingerprint, fitted_on={"split": "val", "samples": 64})


def test_round_trip_keeps_every_map_and_applies_them_identically(tmp_path):
    written = small_calibration()
    write_calibration(tmp_path, written)
    read = read_calibration(tmp_path)
    assert read.to_dict() == written.to_dict()
    raw = np.random.default_rng(0).uniform(0, 1, (3, 4, 5))
    for anatomy, finding in (("lung_left", "lung nodule"), ("lung_right", "lung nodule"), ("x", "emphysema")):
        np.testing.assert_array_equal(read.calibrate(anatomy, finding, raw), written.calibrate(anatomy, finding, raw))
    assert read.lookup("lung_left", "lung nodule").level == "anatomy"
    assert read.lookup("lung_right", "lung nodule").level == "finding"  # falls back to the finding
    assert read.lookup("heart", None).level == "overall"  # free text: the pooled map
    assert read.lookup("heart", "cardiomegaly") is None and read.calibrate("heart", "cardiomegaly", raw) is None
    # one function for table and maps: a score equals the array map at that value
    score = read.score("lung_left", "lung nodule", 0.42)
    assert score.probability == pytest.approx(float(read.calibrate("lung_left", "lung nodule", 0.42)))
    assert score.above and score.threshold == pytest.approx(read.threshold("lung_left", "lung nodule"))
    # a finding the model does not separate (AUC 0.55 < min_auc 0.75) flags nothing, anywhere
    assert not read.lookup("x", "emphysema").separates
    assert not read.above("x", "emphysema", raw).any() and not read.score("x", "emphysema", 0.99).above


def test_a_folder_without_the_file_is_uncalibrated(tmp_path):
    assert read_calibration(tmp_path) is None
    assert calibrated_scores({"heart": {"cardiomegaly": 0.9}}, None) == {}


@pytest.mark.parametrize("edit, message", [
    (lambda d: "{not json", "not valid JSON"),
    (lambda d: {**d, "format": "something-else"}, "not a calibration file"),
    (lambda d: {**d, "version": 2}, "version 2"),
    (lambda d: {**d, "method": "isotonic"}, "unknown calibration method"),
    (lambda d: {**d, "findings": []}, "must be objects"),
    (lambda d: {**d, "pairs": {"lung nodule": d["findings"]["lung nodule"]}}, "is not \"anatomy/finding\""),
    (lambda d: {**d, "findings": {"lung nodule": {"slope": 1.0}}}, "lacks intercept"),
    (lambda d: {**d, "findings": {"lung nodule": {**d["findings"]["lung nodule"], "slope": -1.0}}}, "slope must be"),
    (lambda d: {**d, "findings": {"lung nodule": {**d["findings"]["lung nodule"], "threshold": "high"}}},
     "finite numbers"),
    (lambda d: {**d, "overall": {**d["overall"], "auc": 1.5}}, "auc must be"),
    (lambda d: {**d, "min_auc": "x"}, "min_auc"),
    (lambda d: {**d, "maps": []}, "\"maps\" must be an object"),
    (lambda d: {**d, "maps": {"findings": {"x": {"slope": 1.0}}, "pairs": {}}}, "maps: finding 'x' lacks"),
])
def test_malformed_or_unknown_version_files_are_refused_in_one_line(tmp_path, edit, message):
    data = json.loads(json.dumps(small_calibration().to_dict()))
    edited = edit(data)
    (tmp_path / CALIBRATION_FILE).write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(FvlmInputError) as error:
        read_calibration(tmp_path)
    text = str(error.value)
    assert message in text and "\n" not in text and CALIBRATION_FILE in text


def test_heatmaps_get_their_own_fits_on_map_peaks_with_few_absent_maps_above_threshold(tmp_path):
    """Map peaks run higher than scores (one place is not the anatomy's pooled score): their
    own fit puts the threshold above 95% of the absent maps, where the score's would light up
    nearly all of them."""
    rng = np.random.default_rng(3)
    labels = (rng.uniform(size=400) < 0.3).astype(int)
    scores = np.clip(0.2 + 0.5 * labels + rng.normal(0, 0.12, 400), 0.01, 0.99)
    peaks = np.clip(0.75 + 0.2 * labels + rng.normal(0, 0.06, 400), 0.01, 0.999)
    table = Table(["heart/cardiomegaly"], labels[:, None], scores[:, None])
    map_table = Table(["heart/cardiomegaly"], labels[:, None], peaks[:, None])
    calibration = fit_calibration(table, map_table=map_table)
    score_fit = calibration.lookup("heart", "cardiomegaly")
    map_fit = calibration.for_maps().lookup("heart", "cardiomegaly")
    absent = peaks[labels == 0]
    assert (absent >= score_fit.threshold).mean() > 0.9  # the score's threshold would light them up
    assert (absent >= map_fit.threshold).mean() <= 0.05
    write_calibration(tmp_path, calibration)
    read = read_calibration(tmp_path)
    assert read.to_dict() == calibration.to_dict() and read.maps is not None
    assert read.for_maps().threshold("heart", "cardiomegaly") == pytest.approx(map_fit.calibrated_threshold)
    older = small_calibration()  # a file without map fits: heatmaps use the scores' fits
    assert older.maps is None and older.for_maps() is older


def test_the_specific_threshold_lets_at_most_the_allowed_share_reach_it():
    negatives = np.arange(100, dtype=float)
    threshold = specific_threshold(negatives, 0.05)
    assert (negatives >= threshold).sum() == 5 and threshold > 94.0
    assert (negatives >= specific_threshold(negatives, 0.0)).sum() == 0


def test_a_calibration_of_other_weights_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights one" * 1000)
    write_calibration(tmp_path, small_calibration(weights_fingerprint(tmp_path)))
    assert read_calibration(tmp_path) is not None
    (tmp_path / "model.safetensors").write_bytes(b"weights two" * 1000)
    with pytest.raises(FvlmInputError, match="fitted on other weights"):
        read_calibration(tmp_path)


def table_of(columns: dict[str, tuple]) -> Table:
    """An anatomy table from {"anatomy/finding": (labels, raw scores)} of equal length."""
    names = sorted(columns)
    labels = np.stack([np.asarray(columns[n][0]) for n in names], axis=1)
    scores = np.stack([np.asarray(columns[n][1], dtype=float) for n in names], axis=1)
    return Table(names, labels, scores)


def test_fitting_finds_the_roc_corner_threshold_and_monotone_calibration():
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(30, int), np.zeros(90, int)]
    raw = np.r_[rng.uniform(0.62, 0.95, 30), rng.uniform(0.05, 0.55, 90)]  # separated: corner at the lowest positive
    sparse = np.r_[np.ones(3, int), np.zeros(117, int)]  # too few positives for a pair of its own
    calibration = fit_calibration(table_of({"heart/cardiomegaly": (labels, raw),
                                            "aorta/cardiomegaly": (sparse, rng.uniform(0, 1, 120))}), min_class=10)
    own = calibration.lookup("heart", "cardiomegaly")
    assert own.level == "anatomy" and own.threshold == pytest.approx(raw[:30].min())
    assert own.positives == 30 and own.negatives == 90 and own.auc == 1.0 and own.separates
    assert calibration.lookup("aorta", "cardiomegaly").level == "finding"
    grid = np.linspace(0, 1, 201)
    for anatomy in ("heart", "aorta"):
        values = calibration.calibrate(anatomy, "cardiomegaly", grid)
        assert np.all(np.diff(values) >= 0) and np.all((values >= 0) & (values <= 1))
    assert np.all(np.diff(calibration.calibrate("heart", "cardiomegaly", grid)[1:-1]) > 0)  # strictly: ranks kept
    above = calibration.above("heart", "cardiomegaly", raw)
    np.testing.assert_array_equal(above, raw >= own.threshold)
    calibrated_threshold = calibration.threshold("heart", "cardiomegaly")
    np.testing.assert_array_equal(above, calibration.calibrate("heart", "cardiomegaly", raw) >= calibrated_threshold)


def test_platt_recovers_a_known_miscalibration_and_lowers_the_error():
    rng = np.random.default_rng(2)
    raw = rng.uniform(0.001, 0.999, 20000)
    logit = np.log(raw / (1 - raw))
    truth = 1 / (1 + np.exp(-(0.5 * logit - 1.0)))  # raw scores far too confident and too high
    labels = (rng.uniform(0, 1, raw.size) < truth).astype(int)
    slope, intercept = platt_fit(raw, labels)
    assert slope == pytest.approx(0.5, abs=0.05) and intercept == pytest.approx(-1.0, abs=0.08)
    calibration = fit_calibration(table_of({"lung_left/emphysema": (labels, raw)}), min_class=10)
    calibrated = calibration.calibrate("lung_left", "emphysema", raw)
    assert expected_calibration_error(calibrated, labels) < 0.02 < 0.1 < expected_calibration_error(raw, labels)


def test_a_finding_the_model_does_not_separate_is_calibrated_but_never_flagged():
    rng = np.random.default_rng(3)
    labels = (rng.uniform(0, 1, 400) < 0.2).astype(int)
    calibration = fit_calibration(table_of({"liver/liver lesion": (labels, rng.uniform(0, 1, 400))}),
                                  min_class=10, min_auc=0.75)
    chosen = calibration.lookup("liver", "liver lesion")
    assert not chosen.separates and chosen.auc < 0.75
    assert not calibration.above("liver", "liver lesion", np.linspace(0, 1, 50)).any()
    # no signal: a shallow Platt map keeps the calibrated probability near the base rate
    assert chosen.slope < 0.3
    assert np.abs(calibration.calibrate("liver", "liver lesion", np.linspace(0.1, 0.9, 50)) - labels.mean()).max() < 0.1


def test_expected_calibration_error_by_hand():
    probabilities = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55])
    labels = np.array([0, 0, 1, 0, 1, 1])
    # bins: [0, 0.1) mean 0.05 observed 0; [0.9, 1] mean 0.95 observed 0.5; [0.5, 0.6) mean 0.55 observed 1
    assert expected_calibration_error(probabilities, labels) == pytest.approx((2 * 0.05 + 2 * 0.45 + 2 * 0.45) / 6)
    assert sum(b["count"] for b in reliability_bins(probabilities, labels)) == 6


def test_the_core_module_needs_neither_torch_nor_qt():
    code = ("import sys, napari_fvlm.core.inference.calibration; "
            "bad = [m for m in ('torch', 'qtpy', 'napari', 'PyQt6') if m in sys.modules]; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-1000:]


# --- the commands, on a tiny random model --------------------------------------------------------
TINY = "training/configs/phantom-tiny.json"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_cache):
    """A random tiny model saved the way training saves one (its config record in config.json)."""
    import torch

    from napari_fvlm.core.model import build_model, save_checkpoint
    from training.config import load_config, run_record

    folder = tmp_path_factory.mktemp("tiny")
    config = load_config(TINY, [f"cache_dir={tiny_cache}", "val_seeds=[10000, 10012]",
                                "test_seeds=[20000, 20006]"])
    torch.manual_seed(0)
    save_checkpoint(build_model(config.model_config()), folder / "model", {"train_config": run_record(config)})
    return folder / "model"


@pytest.mark.slow
def test_calibrate_writes_the_file_and_the_check_reports_on_held_out_samples(tiny_model, tmp_path, capsys):
    from training.__main__ import main

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    assert main(["calibration-check", "--model", str(model)]) == 2
    assert "no calibration.json" in capsys.readouterr().err
    assert main(["calibrate", "--model", str(model), "--min-class", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    calibration = read_calibration(model)
    assert calibration.fitted_on["split"] == "val" and calibration.fitted_on["samples"] == 12
    assert calibration.fitted_on["first"] == "phantom-10000" and calibration.fitted_on["last"] == "phantom-10011"
    assert calibration.findings and printed["fits"]["finding"] == len(calibration.findings)
    assert calibration.weights_fingerprint == weights_fingerprint(model)
    assert calibration.maps is not None and calibration.maps.findings  # the heatmaps' own fits

    out = tmp_path / "check"
    assert main(["calibration-check", "--model", str(model), "--out", str(out)]) == 0
    report = json.loads((out / "calibration-check.json").read_text())
    assert report["samples"] == 6 and report["split"] == "test" and report["rows"] > 0
    assert 0.0 <= report["ece"] <= 1.0 and 0.0 <= report["above_share"] <= 1.0
    assert sum(b["count"] for b in report["bins"]) == report["rows"]
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "expected calibration error" in (out / "calibration-check.md").read_text()
    with pytest.raises(FvlmInputError, match="must stay held out"):
        calibrate_checkpoint(model, split="test")
