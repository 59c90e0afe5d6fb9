"""What a calibration file changes for users: `fvlm analyze`'s findings.json and log line, the
panel's findings table (flags, colours, "uncalibrated"), findings.csv; and what a bad file does."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from napari_fvlm.cli import main
from napari_fvlm.core.inference.calibration import (
    CALIBRATION_FILE,
    CalibratedScore,
    Calibration,
    PlattMap,
    read_calibration,
    weights_fingerprint,
    write_calibration,
)
from napari_fvlm.core.inference.findings import PHANTOM_FINDINGS

from engine_fixtures import write_synthetic_case

FLAGGED = "cardiomegaly"  # threshold 0: above for any score
UNSEPARATED = "pericardial effusion"  # threshold 0 too, but AUC below min_auc: never flagged


def phantom_calibration(model_dir) -> Calibration:
    """Finding-level maps for every phantom finding: one always above threshold, one that the
    model "does not separate", the rest never above (threshold 1)."""
    findings = {}
    for finding in {f for table in PHANTOM_FINDINGS.values() for f in table}:
        threshold = 0.0 if finding in (FLAGGED, UNSEPARATED) else 1.0
        auc = 0.6 if finding == UNSEPARATED else 0.95
        findings[finding] = PlattMap(0.7, -1.2, threshold, 20, 200, auc)
    return Calibration({}, findings, PlattMap(0.5, -1.0, 0.5, 100, 1000, 0.8, "overall"), min_auc=0.75,
                       model="demo", weights_fingerprint=weights_fingerprint(model_dir),
                       fitted_on={"split": "val", "samples": 64, "finding_set": "phantom"})


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The synthetic CT and masks, the random model uncalibrated, and a calibrated copy of it."""
    folder, model = write_synthetic_case(tmp_path_factory.mktemp("calibrated"))
    calibrated = folder / "calibrated-model"
    shutil.copytree(model, calibrated)
    write_calibration(calibrated, phantom_calibration(calibrated))
    return folder, model, str(calibrated)


def _analyze(capsys, case, model, out):
    folder = case[0]
    code = main(["analyze", str(folder / "ct.nii.gz"), "--masks", str(folder / "anatomy.nii.gz"),
                 "--model", str(model), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_findings_json_carries_raw_and_calibrated_values_and_thresholds(case, tmp_path, capsys):
    _folder, _model, calibrated = case
    code, out, err = _analyze(capsys, case, calibrated, tmp_path / "result")
    assert code == 0, err
    doc = json.loads((tmp_path / "result" / "findings.json").read_text())
    calibration = read_calibration(calibrated)
    assert doc["calibration"]["status"] == "calibrated" and doc["calibration"]["version"] == 1
    assert doc["calibration"]["fitted_on"]["samples"] == 64
    heart = doc["anatomies"]["heart"]
    for finding, raw in heart["findings"].items():  # the raw probabilities stay where they were
        entry = heart["calibrated"][finding]
        chosen = calibration.lookup("heart", finding)
        assert entry["probability"] == pytest.approx(float(chosen(raw)), abs=1e-6)
        assert entry["threshold"] == pytest.approx(chosen.calibrated_threshold, abs=1e-6)
        assert entry["raw_threshold"] == chosen.threshold and entry["fitted_on"] == "finding"
        assert entry["above_threshold"] == (finding == FLAGGED)
        assert entry["separates"] == (finding != UNSEPARATED)
    # a calibrated model scores the finding set it was calibrated on: every row calibrated
    assert all(set(a["calibrated"]) == set(a["findings"]) for a in doc["anatomies"].values())
    # the flagged finding's map is written; the never-flagged ones are not
    maps = {m["finding"]: m for m in doc["heatmaps"]}
    assert set(maps) == {FLAGGED} and maps[FLAGGED]["above_threshold"] is True
    assert maps[FLAGGED]["calibrated_probability"] == heart["calibrated"][FLAGGED]["probability"]
    assert "calibrated: 1 above threshold: cardiomegaly (heart)" in out


def test_without_calibration_findings_json_says_uncalibrated(case, tmp_path, capsys):
    code, out, err = _analyze(capsys, case, case[1], tmp_path / "plain")
    assert code == 0, err
    doc = json.loads((tmp_path / "plain" / "findings.json").read_text())
    assert doc["calibration"] == {"status": "uncalibrated"}
    assert all(set(a) == {"findings"} for a in doc["anatomies"].values())
    assert "uncalibrated model" in out


def test_a_bad_calibration_file_is_refused_in_one_line_before_any_work(case, tmp_path, capsys):
    broken = tmp_path / "broken-model"
    shutil.copytree(case[2], broken)
    data = json.loads((broken / CALIBRATION_FILE).read_text())
    (broken / CALIBRATION_FILE).write_text(json.dumps({**data, "version": 99}))
    code, _out, err = _analyze(capsys, case, broken, tmp_path / "never")
    assert code == 2 and "version 99" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


def _score(raw, probability, threshold, above, separates=True):
    return CalibratedScore(raw, probability, threshold, 0.5, above, "finding", separates)


def test_the_table_flags_and_colours_only_scores_above_threshold(qtbot):
    from napari_fvlm.widgets.results_table import PROBABILITY, THRESHOLD, ResultsTable

    table = ResultsTable()
    qtbot.addWidget(table)
    scores = {"heart": {"cardiomegaly": 0.9, "pericardial effusion": 0.99, "extra": 0.97},
              "lung_left": {"emphysema": 0.2}}
    calibrated = {"heart": {"cardiomegaly": _score(0.9, 0.30, 0.2, True),
                            "pericardial effusion": _score(0.99, 0.60, 0.7, False)},
                  "lung_left": {"emphysema": _score(0.2, 0.05, 0.1, False, separates=False)}}
    table.set_scores(scores, calibrated)
    rows = table.rows()
    # flagged first although another calibrated score is higher; uncalibrated last whatever its raw value
    assert [(r.anatomy, r.finding) for r in rows] == [("heart", "cardiomegaly"), ("heart", "pericardial effusion"),
                                                      ("lung_left", "emphysema"), ("heart", "extra")]
    assert [r.rank for r in rows] == [1, 2, 3, 4] and table.calibration_status == "partly calibrated"
    shown = [(table.item(i, PROBABILITY).text(), table.item(i, THRESHOLD).text()) for i in range(4)]
    assert shown == [("0.3", "above 0.20"), ("0.6", "below 0.70"), ("0.05", "not separated"), ("uncalibrated", "—")]
    from qtpy.QtCore import Qt
    coloured = [table.item(i, 1).data(Qt.ItemDataRole.BackgroundRole) is not None for i in range(4)]
    assert coloured == [True, False, False, False]

    table.set_scores({"heart": {"cardiomegaly": 0.2, "extra": 0.9}})
    assert table.calibration_status == "uncalibrated"
    assert [(r.finding, r.rank, r.shown_probability) for r in table.rows()] == [
        ("extra", 1, "uncalibrated"), ("cardiomegaly", 2, "uncalibrated")]
    assert all(table.item(i, 1).data(Qt.ItemDataRole.BackgroundRole) is None for i in range(2))


def test_the_panel_shows_calibrated_probabilities_and_exports_them(make_napari_viewer, case, qtbot, tmp_path):
    folder, _model, calibrated = case
    viewer = make_napari_viewer()
    ct_layer = viewer.open(str(folder / "ct.nii.gz"), plugin="napari-fvlm")[0]
    masks_layer = viewer.open(str(folder / "anatomy.nii.gz"), plugin="napari-fvlm")[0]
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", "fVLM analysis")
    panel.view.inputs.select(ct=ct_layer.name, labels=masks_layer.name, checkpoint=calibrated)
    said, say = [], panel.view.say
    panel.view.say = lambda message, level="info": (said.append(message), say(message, level))
    assert panel.analyze()
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=60_000)  # the analysis, then the top finding's map
    result = panel.state.result
    assert result is not None, panel.view.status.text()
    scored = [m for m in said if m.startswith("Scored ")]  # the analysis' words, before the map's
    assert len(scored) == 1 and scored[0].startswith(f"Scored {len(result.analysis.scores)} anatomies "
                                                     "(1 above threshold) in ")
    assert panel.view.table.calibration_status == "calibrated"
    assert panel.view.findings_box.title().startswith("Findings (calibrated probability")
    first = panel.view.table.rows()[0]
    assert (first.anatomy, first.finding, first.above) == ("heart", FLAGGED, True)
    assert not any(r.above for r in panel.view.table.rows()[1:])
    assert panel.view.table.choose("heart", FLAGGED)  # the top row, already chosen: its heatmap job runs
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=60_000)
    assert f"{FLAGGED} in heart: p = {result.analysis.calibrated['heart'][FLAGGED].probability:.2f}, above its threshold" \
        in panel.view.status.text()

    out = tmp_path / "export"
    assert panel.export_findings(out)
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=60_000)
    with open(out / "findings.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert (table[0]["anatomy"], table[0]["finding"], table[0]["above_threshold"]) == ("heart", FLAGGED, "yes")
    scored = result.analysis.calibrated["heart"][FLAGGED]
    assert float(table[0]["calibrated_probability"]) == pytest.approx(scored.probability, abs=1e-6)
    assert float(table[0]["raw_probability"]) == pytest.approx(result.analysis.scores["heart"][FLAGGED], abs=1e-6)
    assert {row["above_threshold"] for row in table[1:]} == {"no"}
    document = json.loads((out / "findings.json").read_text())
    assert document["anatomies"]["heart"]["calibrated"][FLAGGED]["above_threshold"] is True
    assert np.isclose(document["anatomies"]["heart"]["findings"][FLAGGED], result.analysis.scores["heart"][FLAGGED])
