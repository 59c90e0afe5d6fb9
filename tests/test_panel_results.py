"""Results that travel, from the panel in a real viewer with the bundled (calibrated) demo weights:
DICOM SEG + SR of a CT read from a DICOM series (refused for a NIfTI CT), the editable report
draft, and prior vs current on two phantoms of one seed, the current with a finding added.

One analysis session serves every test (`demo_session`): the model loads once and each CT is
encoded once."""

from __future__ import annotations

import re

import numpy as np
import pydicom
import pytest

from napari_fvlm.core.anatomy.catalog import group_masks, group_set
from napari_fvlm.core.dicom_export.write import ANATOMY_SEG, FINDINGS_SR
from napari_fvlm.core.geometry import display_to_ras, ras_to_display
from napari_fvlm.core.inference.export import RESEARCH_NOTICE
from napari_fvlm.core.io.dicom import read_dicom_series
from napari_fvlm.core.io.nifti import write_nifti
from napari_fvlm.core.phantom import generate_phantom, write_phantom
from napari_fvlm.core.report.compare import corresponding_point
from napari_fvlm.core.report.draft import report_draft
from napari_fvlm.core.report.table import FindingsTable
from napari_fvlm.widgets.comparison import CROSS_NAME

from dicom_fixtures import SeriesGeometry, write_phantom_series

hd = pytest.importorskip("highdicom")

SEED, BASE, ADDED = 7, "lung nodule:right", ("cardiomegaly", "heart")
SHAPE, SPACING = (48, 112, 112), (5.0, 3.0, 3.0)
JOB_TIMEOUT_MS = 180_000  # generous: the machine may be busy


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(folder, current phantom, its DICOM CT files in slice order): prior/ and current/ as
    `fvlm phantom` writes them (one seed, the current with cardiomegaly added), and the current as
    DICOM series in dicom/ct and dicom/labels with its masks as dicom/anatomy.nii.gz."""
    folder = tmp_path_factory.mktemp("pair")
    for name, findings in (("prior", [BASE]), ("current", [BASE, ADDED[0]])):
        phantom = generate_phantom(SEED, shape=SHAPE, spacing_zyx=SPACING, findings=findings)
        write_phantom(phantom, folder / name)
    geometry = SeriesGeometry(pixel_spacing=SPACING[1:], slice_offsets=[SPACING[0] * k for k in range(SHAPE[0])])
    ct_paths, _ = write_phantom_series(folder / "dicom", phantom, geometry)
    write_nifti(read_dicom_series(folder / "dicom" / "labels"), folder / "dicom" / "anatomy.nii.gz")
    return folder, phantom, ct_paths


def open_panel(make_napari_viewer, demo_session, *paths):
    """A viewer with ``paths`` opened the drag-and-drop way, the panel docked on the shared session."""
    viewer = make_napari_viewer()
    layers = [viewer.open(str(path), plugin="napari-fvlm")[0] for path in paths]
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", "fVLM analysis")
    panel.session = demo_session
    return viewer, panel, layers


def wait_idle(qtbot, panel):
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)


def analyse(qtbot, panel, ct, labels=None):
    panel.view.inputs.select(ct=ct.name, labels=labels.name if labels is not None else None, device="cpu")
    assert panel.analyze()
    wait_idle(qtbot, panel)  # the analysis, then the top finding's map
    assert panel.state.result is not None, panel.view.status.text()
    return panel.state.result


def test_dicom_seg_and_sr_from_the_panel_read_back_with_highdicom(make_napari_viewer, pair, demo_session, qtbot, tmp_path):
    folder, phantom, ct_paths = pair
    _viewer, panel, (ct,) = open_panel(make_napari_viewer, demo_session, folder / "dicom" / "ct")
    panel.view.inputs.select_mask_file(str(folder / "dicom" / "anatomy.nii.gz"))
    analyse(qtbot, panel, ct)
    out = tmp_path / "dicom results"
    assert panel.export_dicom(out)
    assert panel.runner.kind == "export"  # written in a worker
    wait_idle(qtbot, panel)
    assert "anatomy_seg.dcm" in panel.view.status.text(), panel.view.status.text()

    sources = [pydicom.dcmread(path, stop_before_pixels=True) for path in ct_paths]
    seg = hd.seg.segread(out / ANATOMY_SEG)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    numbers = {str(d.TrackingID).removeprefix("anatomy "): int(d.SegmentNumber) for d in seg.SegmentSequence}
    heart = seg.get_pixels_by_source_instance(source_sop_instance_uids=[str(s.SOPInstanceUID) for s in sources],
                                              segment_numbers=[numbers["heart"]], combine_segments=False)
    expected = group_masks(phantom.anatomy.array, [g for g in group_set("fine") if g.name == "heart"])["heart"]
    np.testing.assert_array_equal(heart[..., 0].astype(bool), expected)  # frame k on source slice k
    report = hd.sr.srread(out / FINDINGS_SR)
    groups = hd.sr.MeasurementReport.from_sequence(report.content).get_volumetric_roi_measurement_groups()
    scores = panel.state.result.analysis.scores
    assert len(groups) == sum(len(row) for row in scores.values())


def test_dicom_export_of_a_nifti_ct_is_refused_in_one_line(make_napari_viewer, pair, demo_session, qtbot, tmp_path):
    folder = pair[0]
    _viewer, panel, (ct, masks) = open_panel(make_napari_viewer, demo_session, folder / "current" / "ct.nii.gz",
                                             folder / "current" / "anatomy.nii.gz")
    analyse(qtbot, panel, ct, masks)
    panel._ask_export_dicom()  # refused before any folder is asked for
    assert "need a CT read from a DICOM series" in panel.view.status.text()
    assert not panel.export_dicom(tmp_path / "out")
    assert not panel.runner.busy and not (tmp_path / "out").exists()


def settle(qtbot, viewer, near, cross):
    """The slice point once it has reached ``near`` (within a step: napari puts it on its sliders'
    steps) and the linked cross marks it."""
    steps = np.array([r.step for r in viewer.dims.range])
    qtbot.waitUntil(lambda: np.all(np.abs(np.asarray(viewer.dims.point) - near) <= steps + 1e-6)
                    and np.allclose(cross.data[0], viewer.dims.point), timeout=5000)
    return np.asarray(viewer.dims.point)


def named_findings(draft: str, table: FindingsTable) -> set[str]:
    body = draft.split("FINDINGS", 1)[1].split("\n\n")[0]
    return {f for row in table.scores.values() for f in row if re.search(rf"\b{re.escape(f)}\b", body, re.I)}


def test_report_box_shows_the_draft_and_saves_the_readers_text(make_napari_viewer, pair, demo_session, qtbot, tmp_path):
    folder = pair[0]
    _viewer, panel, (ct, masks) = open_panel(make_napari_viewer, demo_session, folder / "current" / "ct.nii.gz",
                                             folder / "current" / "anatomy.nii.gz")
    result = analyse(qtbot, panel, ct, masks)
    box = panel.view.report
    table = FindingsTable.from_analysis(result.analysis, result.analyzer.config)
    assert box.text() == report_draft(table, study=ct.name)
    assert named_findings(box.text(), table) == {f for _a, f, _s in table.above_threshold()} >= {ADDED[0]}

    box.edit.selectAll()
    qtbot.keyClicks(box.edit, "Heart: enlarged, as drafted.")  # the reader's own text, notice removed
    assert panel.save_report(tmp_path / "report.txt")
    wait_idle(qtbot, panel)
    assert (tmp_path / "report.txt").read_text() == f"{RESEARCH_NOTICE}\nHeart: enlarged, as drafted.\n"
    assert not panel.save_report(tmp_path / "report.pdf")  # a text file only, said in one line
    assert ".txt" in panel.view.status.text()

    assert panel.analyze()  # again (the same encoding): an edited draft is kept, the new one offered
    wait_idle(qtbot, panel)
    assert box.text() == "Heart: enlarged, as drafted." and box.use_new.isVisibleTo(box)
    box.use_new.click()
    assert box.text() == report_draft(table, study=ct.name) and not box.edited


def test_prior_and_current_show_the_added_finding_as_new_with_linked_views(make_napari_viewer, pair, demo_session, qtbot):
    folder = pair[0]
    viewer, panel, (prior, prior_masks, current, current_masks) = open_panel(
        make_napari_viewer, demo_session, *(folder / name / file for name in ("prior", "current")
                                       for file in ("ct.nii.gz", "anatomy.nii.gz")))
    tab = panel.view.comparison
    tab.select(prior.name, prior.name)
    assert not panel.prior_current.compare() and "two different CT layers" in panel.view.status.text()
    tab.current.setCurrentText(current.name)  # its masks follow: the Labels layer read from its folder
    assert tab.current_masks.currentText() == current_masks.name
    tab.select(prior.name, current.name, prior_masks.name, current_masks.name)
    assert panel.prior_current.compare()
    wait_idle(qtbot, panel)
    comparison = panel.state.comparison
    assert comparison is not None, panel.view.status.text()
    rows = {(c.anatomy, c.finding): c for c in tab.table.changes}
    assert rows[ADDED[1], ADDED[0]].status == "new"
    row = tab.table.row_of(ADDED[1], ADDED[0])
    assert tab.table.item(row, 0).text() == "new"
    assert not any(c.status == "resolved" for c in rows.values() if c.finding == ADDED[0])

    linked = next(layer for layer in viewer.layers if "linked" in layer.name)
    cross = viewer.layers[CROSS_NAME]
    names = comparison.current.analyzer.config.anatomy_group_set
    labels = (comparison.prior.labels, comparison.current.labels)

    def prior_shown_at(point):  # the prior's voxel shown beside the current's point, and its anatomy
        np.testing.assert_allclose(cross.data[0], point)
        assert cross.data[1][0] == pytest.approx(point[0]) and cross.data[1][2] > point[2]  # same slice, right
        expected, anatomy = corresponding_point(display_to_ras(point), labels[1], labels[0], names)
        np.testing.assert_allclose(linked.world_to_data(cross.data[1]), labels[0].to_voxel(expected), atol=1e-6)
        return anatomy

    assert tab.table.choose(ADDED[1], ADDED[0])  # a row: both views to the heart
    point = settle(qtbot, viewer, ras_to_display(comparison.views.current.point("heart", 0.5)), cross)
    assert "heart" in panel.view.status.text() and prior_shown_at(point) == "heart"

    viewer.dims.set_point(range(3), point + np.array([10.0, 6.0, -6.0]))  # moving in the current
    prior_shown_at(settle(qtbot, viewer, point + np.array([10.0, 6.0, -6.0]), cross))

    on_prior = cross.data[1] + np.array([0.0, 9.0, 9.0])  # a point on the prior: the current follows
    prior_voxel = linked.world_to_data(on_prior)
    viewer.dims.set_point(range(3), on_prior)
    back, _ = corresponding_point(labels[0].to_world(prior_voxel), labels[0], labels[1], names)
    prior_shown_at(settle(qtbot, viewer, ras_to_display(back), cross))
    assert linked.name not in [panel.view.inputs.ct.itemText(i) for i in range(panel.view.inputs.ct.count())]
    current.contrast_limits = (-1350.0, 150.0)  # a window preset or drag on the current: the prior shares it
    assert tuple(linked.contrast_limits) == (-1350.0, 150.0)
    assert not prior.visible and not prior_masks.visible and current.visible  # both lie where the current is

    panel.view.inputs.select(ct=current.name, labels=current_masks.name, device="cpu")
    assert panel.analyze()  # the current, analysed again from the Inputs box: its encoding is reused
    wait_idle(qtbot, panel)
    assert panel.state.result.encoded is comparison.current.encoded
