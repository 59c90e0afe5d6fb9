"""One analysis session for both front ends: `fvlm analyze` and the panel write the same folder,
a CT is encoded once per model, and the whole output folder appears at once or not at all."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_fvlm.core.inference import analyzer as analyzer_module
from napari_fvlm.core.inference import export
from napari_fvlm.core.inference.session import AnalysisSession, AnatomySource, export_findings, flagged_findings
from napari_fvlm.core.io.read import read_volume

from engine_fixtures import CASE_QUERIES

JOB_TIMEOUT_MS = 60_000


def _without_timings(path) -> dict:
    """findings.json with its timings (the only field that differs between two runs) removed."""
    document = json.loads(path.read_text())
    assert document.pop("timing_s")["total"] > 0
    return document


def _heatmaps(folder) -> dict[str, np.ndarray]:
    return {p.name: np.asanyarray(nib.load(p).dataobj) for p in sorted((folder / "heatmaps").iterdir())}


@pytest.mark.gui
def test_cli_and_panel_write_identical_folders(synthetic_case, analysed_case, make_napari_viewer, qtbot, tmp_path):
    folder, model = synthetic_case
    ct, masks = str(folder / "ct.nii.gz"), str(folder / "anatomy.nii.gz")
    viewer = make_napari_viewer()
    ct_layer = viewer.open(ct, plugin="napari-fvlm")[0]
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", "fVLM analysis")
    panel.view.inputs.select_mask_file(masks)
    panel.view.inputs.select(ct=ct_layer.name, checkpoint=model)
    assert panel.analyze()
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)
    for query in CASE_QUERIES:  # what `fvlm analyze` was asked for `analysed_case`
        assert panel.ask(query)
        qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)
    # the map the panel showed by itself is a flagged finding's, which the CLI writes too
    flagged = flagged_findings(panel.state.result.analysis)
    assert all(flagged.get(finding) == anatomy for anatomy, finding in panel.state.shown_findings)
    assert panel.export_findings(tmp_path / "panel")
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)

    cli, gui = analysed_case, tmp_path / "panel"
    assert _without_timings(cli / "findings.json") == _without_timings(gui / "findings.json")
    assert (cli / "findings.csv").read_bytes() == (gui / "findings.csv").read_bytes()
    cli_maps, gui_maps = _heatmaps(cli), _heatmaps(gui)
    assert list(cli_maps) == list(gui_maps) and len(cli_maps) >= 1 + len(flagged)
    for name, values in cli_maps.items():
        np.testing.assert_array_equal(values, gui_maps[name])


@pytest.fixture(scope="module")
def encodings(synthetic_case):
    """A session that analysed the synthetic case once, and how often it encoded a CT."""
    folder, model = synthetic_case
    calls = []
    real_encode = analyzer_module.encode_ct
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(analyzer_module, "encode_ct", lambda *a, **k: calls.append(1) or real_encode(*a, **k))
        session, anatomy = AnalysisSession(), AnatomySource.from_masks(str(folder / "anatomy.nii.gz"))
        first = session.run(read_volume(folder / "ct.nii.gz"), anatomy, model, "cpu")
        yield session, anatomy, first, calls


def test_the_same_ct_and_model_are_encoded_once(synthetic_case, encodings):
    folder, model = synthetic_case
    session, anatomy, first, calls = encodings
    again = session.run(read_volume(folder / "ct.nii.gz"), anatomy, model, "cpu")  # read anew: same voxels
    assert len(calls) == 1 and len(session.models) == 1
    assert again.encoded is first.encoded and again.analysis.scores == first.analysis.scores
    assert "encode" not in again.analysis.timing_s  # the reused encoding's time is not claimed twice


def test_a_failed_export_leaves_no_folder(encodings, tmp_path, monkeypatch):
    _session, _anatomy, analysed, _calls = encodings

    def broken(_analysis):
        raise OSError("disk full")

    monkeypatch.setattr(export, "findings_csv", broken)  # the last file written
    with pytest.raises(OSError):
        export_findings(tmp_path / "out", analysed)
    assert list(tmp_path.iterdir()) == []
