"""The fVLM panel in a real viewer: drag-and-drop, a full analysis with a Labels layer as anatomy,
findings table and heatmaps, queries, anatomy visibility, HU readout, exports re-opened."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from napari_fvlm.core.anatomy.totalseg_classes import TOTAL_CLASS_IDS
from napari_fvlm.core.geometry import display_scale_translate, ras_to_display
from napari_fvlm.core.windows import contrast_limits
from napari_fvlm.widgets.layers import HEATMAP_KEY
from napari_fvlm.widgets.panel import score_words

JOB_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def case(synthetic_case):
    """A synthetic CT and its masks as NIfTI files, and a random-init model as a checkpoint folder."""
    return synthetic_case


def open_case(make_napari_viewer, case, **kwargs):
    """A viewer with the CT and masks opened the drag-and-drop way and the panel docked."""
    folder, _model = case
    viewer = make_napari_viewer(**kwargs)
    ct_layer = viewer.open(str(folder / "ct.nii.gz"), plugin="napari-fvlm")[0]
    masks_layer = viewer.open(str(folder / "anatomy.nii.gz"), plugin="napari-fvlm")[0]
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", "fVLM analysis")
    return viewer, panel, ct_layer, masks_layer


def wait_idle(qtbot, panel, timeout=JOB_TIMEOUT_MS):
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=timeout)


@pytest.fixture
def analysed(make_napari_viewer, case, qtbot):
    """The case analysed through the panel, with the Labels layer as the anatomy source."""
    viewer, panel, ct_layer, masks_layer = open_case(make_napari_viewer, case)
    panel.view.inputs.select(ct=ct_layer.name, labels=masks_layer.name, checkpoint=case[1])
    assert panel.analyze()
    wait_idle(qtbot, panel)  # the analysis, then the map of the most probable finding
    assert panel.state.result is not None, panel.view.status.text()
    return viewer, panel, ct_layer, masks_layer


def test_drag_and_drop_layers_are_offered_and_analysis_fills_the_table(make_napari_viewer, case, qtbot):
    viewer, panel, ct_layer, masks_layer = open_case(make_napari_viewer, case)
    inputs = panel.view.inputs
    assert [inputs.ct.itemText(i) for i in range(inputs.ct.count())] == [ct_layer.name]
    assert [inputs.labels.itemText(i) for i in range(inputs.labels.count())] == [masks_layer.name]
    inputs.select(ct=ct_layer.name, labels=masks_layer.name, checkpoint=case[1])
    assert panel.analyze()
    assert not panel.view.analyze.isEnabled() and panel.view.cancel.isEnabled()
    wait_idle(qtbot, panel)
    result = panel.state.result
    assert result is not None, panel.view.status.text()
    assert panel.view.analyze.isEnabled() and not panel.view.cancel.isEnabled()
    rows = panel.view.table.rows()
    # a random model has no calibration file: the table says so, ranks by raw score, colours nothing
    expected = sorted((p for f in result.analysis.scores.values() for p in f.values()), reverse=True)
    assert [r.raw for r in rows] == expected and [r.rank for r in rows] == list(range(1, len(rows) + 1))
    assert {r.shown_probability for r in rows} == {"uncalibrated"} and "uncalibrated" in panel.view.findings_box.title()
    assert {"heart", "aorta", "liver"} <= {r.anatomy for r in rows}
    # the masks came from a layer: no duplicate anatomy layer, and it lists the masks' structures
    assert panel.state.anatomy_layer == masks_layer.name
    assert len([lyr for lyr in viewer.layers if lyr.__class__.__name__ == "Labels"]) == 1
    names = {panel.view.anatomy.view.item(r).text() for r in range(panel.view.anatomy.view.count())}
    assert {"heart", "aorta", "lung upper lobe left"} <= names


def test_the_top_finding_is_shown_after_the_analysis(analysed):
    viewer, panel, _, _ = analysed
    top = panel.view.table.rows()[0]
    anatomy, finding = top.anatomy, top.finding
    heatmaps = [layer.name for layer in viewer.layers if HEATMAP_KEY in layer.metadata]
    assert heatmaps == [f"{finding} ({anatomy})"]
    assert panel.state.shown_findings == [(anatomy, finding)]
    words = score_words(panel.state.result.analysis, anatomy, finding)  # a random model: uncalibrated words
    assert f"{finding} in {anatomy.replace('_', ' ')}: {words}; strongest at z = " in panel.view.status.text()


def test_choosing_a_finding_shows_its_heatmap_inside_the_ct_and_jumps_to_its_peak(analysed, qtbot):
    viewer, panel, ct_layer, _ = analysed
    ranges = viewer.dims.range
    row = panel.view.table.rows()[3]
    anatomy, finding = row.anatomy, row.finding
    assert panel.view.table.choose(anatomy, finding)
    assert panel.runner.kind == "heatmap"  # made in a worker, not on the GUI thread
    wait_idle(qtbot, panel)
    assert "uncalibrated" in panel.view.status.text()
    layer = viewer.layers[f"{finding} ({anatomy})"]
    encoded = panel.state.result.encoded
    heatmap = panel.state.result.analyzer.finding_heatmap(encoded, anatomy, finding)
    assert encoded.fine is not None  # the demo model maps per voxel of its input grid
    np.testing.assert_allclose(heatmap.affine, encoded.fine.affine)
    map_scale, _ = display_scale_translate(heatmap.affine)
    # about the map's own spacing, at most 3 mm (not upsampled to the CT's)
    np.testing.assert_allclose(layer.scale, np.minimum(map_scale, 3.0), rtol=0.2)
    assert np.all(np.asarray(layer.scale) >= np.asarray(ct_layer.scale) - 1e-6)  # never finer than the CT
    # the map's world extent is the CT's: the sliders do not move when it is added
    corners = lambda lyr: (np.asarray(lyr.translate) - np.asarray(lyr.scale) / 2,  # noqa: E731
                           np.asarray(lyr.translate) + (np.asarray(lyr.data.shape) - 0.5) * lyr.scale)
    for mine, ct in zip(corners(layer), corners(ct_layer)):
        np.testing.assert_allclose(mine, ct, atol=1e-6)
    assert viewer.dims.range == ranges
    # the values shown are the map's own probabilities (nearest voxel, no blending, no rescaling)
    assert set(np.unique(layer.data)) <= set(np.unique(heatmap.values)) | {0.0}
    assert heatmap.values.min() >= 0.0 and heatmap.values.max() <= 1.0 and not heatmap.values[~heatmap.inside].any()
    assert tuple(layer.contrast_limits)[1] == 1.0  # the fixed probability scale
    assert layer.blending == "additive" and layer.colormap.name == "inferno"
    assert layer.contrast_limits[0] == pytest.approx(panel.view.threshold.value() / 100)
    peak_world = layer.data_to_world(np.unravel_index(np.argmax(layer.data), layer.data.shape))
    assert viewer.dims.point[0] == pytest.approx(peak_world[0], abs=layer.scale[0])
    # the colour bar is painted over the main canvas (napari's own draws its glyphs on the GUI thread)
    stops, low, high = panel.layout_of_views.overlay.color_bar()
    assert not layer.colorbar.visible and (low, high) == tuple(layer.contrast_limits)
    np.testing.assert_allclose(stops, layer.colormap.map(np.linspace(0, 1, len(stops))))
    panel.view.threshold.setValue(70)
    assert layer.contrast_limits[0] == pytest.approx(0.70)
    assert panel.layout_of_views.overlay.color_bar()[1] == pytest.approx(0.70)
    count = len(viewer.layers)
    panel.show_finding(anatomy, finding)  # the same map again: the same layer, updated in place
    wait_idle(qtbot, panel)
    assert viewer.layers[f"{finding} ({anatomy})"] is layer and len(viewer.layers) == count


def test_a_query_shows_its_heatmap_top_anatomies_and_history(analysed, qtbot):
    viewer, panel, _, _ = analysed
    query = panel.view.query
    query.edit.setText("nodule in the left lower lobe")
    query.edit.returnPressed.emit()
    wait_idle(qtbot, panel)
    grounding = panel.state.history["nodule in the left lower lobe"]
    layer = viewer.layers["nodule in the left lower lobe"]
    assert layer.metadata[HEATMAP_KEY] == "query"
    assert not [lyr for lyr in viewer.layers if lyr.metadata.get(HEATMAP_KEY) == "finding"]  # replaced
    # the grounding's RAS peak falls, in napari's world, on a brightest voxel of the layer (maps of
    # a random model tie at their top value; a peak on the anatomy's rim may be confined away: 0)
    peak_world = ras_to_display(grounding.peak_world_mm)
    index = tuple(np.rint(layer.world_to_data(peak_world)).astype(int))
    assert layer.data[index] in (pytest.approx(layer.data.max()), 0.0)
    assert layer.data.max() <= grounding.peak_probability + 1e-6
    assert viewer.dims.point[0] == pytest.approx(peak_world[0], abs=layer.scale[0])
    assert grounding.peak_anatomy == "lung_lower_lobe_left"  # the query names the lobe: search is restricted
    # only the named lobe was searched: it alone is ranked, by the map's peak inside it
    assert grounding.searched == ["lung_lower_lobe_left"]
    assert grounding.anatomy_scores == [("lung_lower_lobe_left", pytest.approx(grounding.peak_probability, abs=1e-4))]
    assert query.top.count() == 1 and query.top.item(0).text().startswith("lung lower lobe left")
    assert query.history_texts() == ["nodule in the left lower lobe"]

    query.keep_previous.setChecked(True)
    assert panel.ask("fluid around the heart")
    wait_idle(qtbot, panel)
    assert {"nodule in the left lower lobe", "fluid around the heart"} <= {lyr.name for lyr in viewer.layers}
    assert query.history_texts() == ["fluid around the heart", "nodule in the left lower lobe"]

    query.keep_previous.setChecked(False)
    query.history.itemClicked.emit(query.history.item(1))  # re-show from history: no worker
    assert not panel.runner.busy
    heatmaps = [lyr.name for lyr in viewer.layers if HEATMAP_KEY in lyr.metadata]
    assert heatmaps == ["nodule in the left lower lobe"]
    assert not panel.ask("   ")  # refused with a message, nothing started
    assert "Type a finding" in panel.view.status.text()


def test_anatomy_visibility_window_presets_and_hu_under_the_cursor(analysed):
    viewer, panel, ct_layer, masks_layer = analysed
    heart, lung = TOTAL_CLASS_IDS["heart"], TOTAL_CLASS_IDS["lung_upper_lobe_left"]
    panel.view.anatomy.set_visible(heart, False)
    alpha = masks_layer.colormap.map(np.array([heart, lung], masks_layer.data.dtype))[:, 3]
    assert alpha[0] == 0 and alpha[1] > 0
    panel.view.anatomy.set_all(True)
    assert masks_layer.colormap.map(np.array([heart], masks_layer.data.dtype))[0, 3] > 0

    panel.view.presets["lung"].click()
    assert tuple(ct_layer.contrast_limits) == pytest.approx(contrast_limits("lung"))

    voxel = np.argwhere(masks_layer.data == heart)[0]
    viewer.cursor.position = tuple(ct_layer.data_to_world(voxel))
    hu = int(ct_layer.data[tuple(voxel)])
    assert panel.view.cursor.text() == f"HU {hu} | heart"


def test_exports_reopen_on_the_ct_grid_and_never_replace_the_source(analysed, case, tmp_path, qtbot):
    viewer, panel, ct_layer, _ = analysed
    folder, _ = case
    result = panel.state.result
    out = tmp_path / "export"
    assert panel.export_findings(out)
    wait_idle(qtbot, panel)
    document = json.loads((out / "findings.json").read_text())
    assert [q["text"] for q in document["queries"]] == list(panel.state.history)
    with open(out / "findings.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == sum(len(f) for f in result.analysis.scores.values())
    first = table[0]
    assert first["rank"] == "1" and first["calibrated_probability"] == first["above_threshold"] == ""
    assert float(first["raw_probability"]) == pytest.approx(result.analysis.scores[first["anatomy"]][first["finding"]])
    assert document["calibration"] == {"status": "uncalibrated"}
    original = nib.load(folder / "ct.nii.gz")
    for query in document["queries"]:
        image = nib.load(out / query["heatmap"])
        assert image.shape == original.shape
        np.testing.assert_array_equal(image.affine, original.affine)
        reopened = viewer.open(str(out / query["heatmap"]), plugin="napari-fvlm")[0]
        assert reopened.data.shape == ct_layer.data.shape
        np.testing.assert_allclose(reopened.scale, ct_layer.scale)

    masks_path = tmp_path / "masks.nii.gz"
    assert panel.export_masks(masks_path)
    assert panel.runner.kind == "export"
    wait_idle(qtbot, panel)
    written = nib.load(masks_path)
    np.testing.assert_array_equal(written.affine, original.affine)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj),
                                  np.asanyarray(nib.load(folder / "anatomy.nii.gz").dataobj))

    before = (folder / "ct.nii.gz").read_bytes()
    assert not panel.export_masks(folder / "ct.nii.gz")
    assert "read from" in panel.view.status.text()
    assert (folder / "ct.nii.gz").read_bytes() == before
    assert not panel.export_findings(folder)  # the folder that holds the CT
    assert not panel.export_screenshot(tmp_path / "shot.jpg")

    assert panel.export_screenshot(tmp_path / "shot.png")
    wait_idle(qtbot, panel)
    import imageio.v3 as iio
    shot = iio.imread(tmp_path / "shot.png")
    assert shot.ndim == 3 and shot.shape[0] > 100 and shot.std() > 0


def test_a_mask_file_source_adds_a_named_anatomy_layer(make_napari_viewer, case, qtbot):
    folder, model = case
    viewer = make_napari_viewer()
    ct_layer = viewer.open(str(folder / "ct.nii.gz"), plugin="napari-fvlm")[0]
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", "fVLM analysis")
    panel.view.inputs.select_mask_file(str(folder / "anatomy.nii.gz"))
    panel.view.inputs.select(checkpoint=model)
    assert panel.analyze()
    wait_idle(qtbot, panel)
    assert panel.state.result is not None, panel.view.status.text()
    anatomy = viewer.layers[f"{ct_layer.name} anatomy"]
    assert anatomy.data.shape == ct_layer.data.shape
    np.testing.assert_allclose(anatomy.scale, ct_layer.scale)
    voxel = np.argwhere(anatomy.data == TOTAL_CLASS_IDS["aorta"])[0]
    world = tuple(ct_layer.data_to_world(voxel))
    viewer.dims.point = world  # napari reads a 2D view's status from the slice on screen
    assert "name: aorta" in anatomy.get_status(world, world=True)["value"]
