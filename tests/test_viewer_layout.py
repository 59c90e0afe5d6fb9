"""Reading like a radiologist, in real viewers on real files: three linked planes, the patient's
orientation letters whatever the file's storage order, the slice position in mm, window/level
with the right mouse button, the first screen of the demo, and no model work or mask scan on
the GUI thread."""

from __future__ import annotations

import re
import threading

import nibabel as nib
import numpy as np
import pytest
from qtpy.QtCore import QEvent, QPointF, Qt
from qtpy.QtGui import QFontMetrics, QMouseEvent
from qtpy.QtWidgets import QApplication

from napari_fvlm.widgets.layers import HEATMAP_KEY
from napari_fvlm.widgets.mouse_window import HU_PER_PIXEL
from napari_fvlm.widgets.viewer_layout import ViewerLayout, main_qt_viewer

JOB_TIMEOUT_MS = 60_000
MARKER_RAS = np.array([30.0, 20.0, 25.0])  # the patient's right, anterior, superior
MARKER_LETTERS = {"R", "A", "S"}
# voxel -> RAS direction matrices (2 mm voxels): stored RAS, stored LPS, and axes permuted (i->S, j->R, k->P)
STORAGE_ORDERS = {
    "RAS": np.diag([2.0, 2.0, 2.0]),
    "LPS": np.diag([-2.0, -2.0, 2.0]),
    "permuted": np.array([[0.0, 2.0, 0.0], [0.0, 0.0, -2.0], [2.0, 0.0, 0.0]]),
}


@pytest.fixture(scope="module")
def case(synthetic_case):
    return synthetic_case


@pytest.fixture(scope="module")
def model(random_demo_model):
    return random_demo_model


def marker_file(folder, order: str):
    """A 40 x 48 x 56 voxel CT centred on the origin, air with one bright cube at `MARKER_RAS`."""
    linear = STORAGE_ORDERS[order]
    shape = (40, 48, 56)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ (np.asarray(shape) - 1) / 2  # the volume's centre at RAS (0, 0, 0)
    data = np.full(shape, -1000, np.int16)
    ijk = np.rint(np.linalg.inv(linear) @ (MARKER_RAS - affine[:3, 3])).astype(int)
    data[tuple(slice(c - 2, c + 3) for c in ijk)] = 1000
    path = folder / f"marker_{order}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def bright_centre(image: np.ndarray) -> np.ndarray:
    """(x, y) of the bright pixels' centre as a fraction of the image's width and height."""
    rows, cols = np.nonzero(image[..., :3].mean(axis=-1) > 200)
    assert rows.size, "the marker is not on screen"
    return np.array([cols.mean() / image.shape[1], rows.mean() / image.shape[0]])


def screenshot(layout, plane: str) -> np.ndarray:
    if plane == "axial":
        return layout.viewer.screenshot(canvas_only=True, flash=False)
    return layout.planes.views[plane].qt_viewer.screenshot(flash=False)


def send_mouse(widget, kind, pos, button, buttons) -> None:
    event = QMouseEvent(kind, QPointF(*pos), QPointF(widget.mapToGlobal(QPointF(*pos))), button, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def wait_idle(qtbot, panel):
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)


@pytest.mark.parametrize("order", list(STORAGE_ORDERS))
def test_letters_name_the_side_where_the_patient_is_whatever_the_storage_order(make_napari_viewer, tmp_path,
                                                                              order, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    layer = viewer.open(str(marker_file(tmp_path, order)), plugin="napari-fvlm")[0]
    layout = ViewerLayout.of(viewer)
    layout.show_three(True)
    x, y, z = MARKER_RAS
    viewer.dims.point = (z, -y, -x)  # napari's world is LPS (z, y, x)
    qtbot.waitUntil(layout.planes.settled, timeout=5000)
    qtbot.wait(300)
    overlays = layout.overlays()
    assert set(overlays) == {"axial", "coronal", "sagittal"}
    expected = {"axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
                "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
                "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"}}
    for plane, overlay in overlays.items():
        letters = overlay.letters()
        assert letters == expected[plane], (order, plane)
        rects = overlay.letter_rects()
        assert rects["left"].center().x() < overlay.width() / 2 < rects["right"].center().x()
        assert rects["top"].center().y() < overlay.height() / 2 < rects["bottom"].center().y()
        # the marker (patient's right, anterior, superior) is drawn on the side its letter names
        fx, fy = bright_centre(screenshot(layout, plane))
        horizontal = letters["left"] if fx < 0.5 else letters["right"]
        vertical = letters["top"] if fy < 0.5 else letters["bottom"]
        assert {horizontal, vertical} <= MARKER_LETTERS, (order, plane, fx, fy, letters)
    # the slice position is in millimetres: the RAS coordinate of the slice through the marker
    for plane, name, value in (("axial", "z", z), ("coronal", "y", y), ("sagittal", "x", x)):
        match = re.fullmatch(rf"{plane}  {name} = ([+-]\d+\.\d) mm", overlays[plane].slice_label())
        assert match and abs(float(match.group(1)) - value) <= 1.0, overlays[plane].slice_label()  # 2 mm slices
    assert layer.data.shape  # the layer came from the reader: letters are shown for it


def test_three_linked_planes_show_masks_and_heatmaps_and_one_click_returns_to_one_view(
        make_napari_viewer, case, qtbot):
    folder, model = case
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    ct_layer = viewer.open(str(folder / "ct.nii.gz"), plugin="napari-fvlm")[0]
    masks = viewer.open(str(folder / "anatomy.nii.gz"), plugin="napari-fvlm")[0]
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", "fVLM analysis")
    panel.view.three_planes.click()  # one click: three planes
    layout = panel.layout_of_views
    assert layout.three_shown and panel.view.three_planes.isChecked()
    panel.view.inputs.select(ct=ct_layer.name, labels=masks.name, checkpoint=model)
    ranges = viewer.dims.range
    assert panel.analyze()
    wait_idle(qtbot, panel)
    assert viewer.dims.range == ranges  # the heatmap did not move the sliders
    qtbot.waitUntil(layout.planes.settled, timeout=5000)  # the planes follow a turn of the event loop later
    names = [layer.name for layer in viewer.layers]
    heatmap = next(layer for layer in viewer.layers if HEATMAP_KEY in layer.metadata)
    for plane, model_view in layout.planes.models.items():
        assert [layer.name for layer in model_view.layers] == names, plane
        copies = layout.planes.copies_of(heatmap)
        assert copies[plane].data is heatmap.data and copies[plane].visible  # shared, not copied
        assert layout.planes.copies_of(masks)[plane].data is masks.data
    # the slice point and the crosshair are shared: moving one view moves the others
    coronal = layout.planes.models["coronal"]
    coronal.dims.set_point(1, coronal.dims.point[1] + 9.0)
    assert viewer.dims.point == coronal.dims.point  # the main view at once, the other plane next
    qtbot.waitUntil(layout.planes.settled, timeout=5000)
    assert viewer.dims.point == layout.planes.models["sagittal"].dims.point
    cross = layout.overlay.crosshair_position()
    assert cross is not None and np.all(np.isfinite(cross))
    # layer properties follow: a window preset on the CT changes every plane's CT
    panel.view.presets["lung"].click()
    qtbot.waitUntil(layout.planes.settled, timeout=5000)
    for copy in layout.planes.copies_of(ct_layer).values():
        assert tuple(copy.contrast_limits) == tuple(ct_layer.contrast_limits)
    # one click back to one big view
    wide_before = main_qt_viewer(viewer).width()
    panel.view.three_planes.click()
    qtbot.wait(100)
    assert not layout.three_shown and layout.planes.isHidden()
    assert main_qt_viewer(viewer).width() > wide_before
    assert layout.overlay.crosshair_position() is None


def test_right_drag_windows_the_ct_without_zooming(make_napari_viewer, case, qtbot):
    folder, _model = case
    viewer = make_napari_viewer(show=True)
    ct_layer = viewer.open(str(folder / "ct.nii.gz"), plugin="napari-fvlm")[0]
    ViewerLayout.of(viewer)
    qtbot.wait(100)
    low, high = ct_layer.contrast_limits
    zoom = viewer.camera.zoom
    canvas = main_qt_viewer(viewer).canvas.native
    start = (canvas.width() / 2, canvas.height() / 2)
    right, none = Qt.MouseButton.RightButton, Qt.MouseButton.NoButton
    send_mouse(canvas, QEvent.Type.MouseButtonPress, start, right, right)
    for step in range(1, 11):
        send_mouse(canvas, QEvent.Type.MouseMove, (start[0] + 10 * step, start[1] + 5 * step), none, right)
        qtbot.wait(40)  # napari throttles mouse moves
    send_mouse(canvas, QEvent.Type.MouseButtonRelease, (start[0] + 100, start[1] + 50), right, none)
    new_low, new_high = ct_layer.contrast_limits
    assert (new_high - new_low) - (high - low) == pytest.approx(100 * HU_PER_PIXEL)  # 100 px right: wider
    assert (new_low + new_high) / 2 - (low + high) / 2 == pytest.approx(50 * HU_PER_PIXEL)  # 50 px down: higher
    assert viewer.camera.zoom == pytest.approx(zoom)  # the camera's own right-drag zoom stayed off
    assert viewer.camera.mouse_pan  # and panning is back
    assert "window" in viewer.status and "level" in viewer.status


def test_the_demo_opens_large_with_masks_three_planes_and_the_first_heatmap(make_napari_viewer, model, qtbot):
    from napari_fvlm.demo import MIN_SIZE, THREE_PLANES_MIN_WIDTH, open_demo

    viewer, panel = open_demo(seed=0, analyze=True, viewer=make_napari_viewer(show=True), model=model)
    wait_idle(qtbot, panel)
    assert panel.state.result is not None, panel.view.status.text()
    window = viewer.window._qt_window
    assert window.width() >= MIN_SIZE[0] and window.height() >= MIN_SIZE[1]
    widths = [main_qt_viewer(viewer).canvas.native.width()]
    if panel.layout_of_views.three_shown:
        widths += [view.qt_viewer.canvas.native.width() for view in panel.layout_of_views.planes.views.values()]
    assert min(widths) >= 380, widths  # readable views, not a strip
    assert viewer.layers["phantom 0 anatomy"].visible
    assert not viewer.layers["phantom 0 lesions"].visible
    heatmaps = [layer for layer in viewer.layers if HEATMAP_KEY in layer.metadata]
    top = panel.view.table.rows()[0]
    top_anatomy, top_finding = top.anatomy, top.finding
    assert [layer.name for layer in heatmaps] == [f"{top_finding} ({top_anatomy})"] and heatmaps[0].visible
    assert panel.layout_of_views.three_shown == (window.width() >= THREE_PLANES_MIN_WIDTH)
    # every anatomy name is either shown whole or carries its full text as a tooltip
    table = panel.view.table
    metrics = QFontMetrics(table.font())
    width = table.horizontalHeader().sectionSize(0)
    for row in range(table.rowCount()):
        item = table.item(row, 0)
        if metrics.horizontalAdvance(item.text()) + 12 > width:
            assert item.text() in item.toolTip()


def test_no_model_work_or_mask_scan_on_the_gui_thread(make_napari_viewer, case, tmp_path, monkeypatch, qtbot):
    import napari_fvlm._layers as layers_module
    from napari_fvlm.widgets import export_actions, jobs
    from napari_fvlm.widgets import panel as panel_module

    folder, model = case
    threads: dict[str, str] = {}

    def on_thread(name, function):
        def wrapped(*args, **kwargs):
            threads[name] = threading.current_thread().name
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(panel_module, "run_finding", on_thread("row", jobs.run_finding))
    monkeypatch.setattr(panel_module, "run_query", on_thread("query", jobs.run_query))
    monkeypatch.setattr(export_actions, "write_findings", on_thread("findings", export_actions.write_findings))
    monkeypatch.setattr(export_actions, "write_masks", on_thread("masks", export_actions.write_masks))
    from napari_fvlm.widgets import background_open
    monkeypatch.setattr(background_open, "read_layer_data", on_thread("open", background_open.read_layer_data))
    from napari_fvlm.core.inference import session
    real_get = session.ModelCache.get

    def slow_get(self, *args):  # a first load: seconds without a word from the model
        import time
        if not len(self):
            time.sleep(2.0)
        return real_get(self, *args)

    monkeypatch.setattr(session.ModelCache, "get", slow_get)

    viewer = make_napari_viewer(show=True)
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", "fVLM analysis")
    panel.open_ct(str(folder / "ct.nii.gz"))
    assert "ct" not in viewer.layers  # not read yet: the call returned at once
    qtbot.waitUntil(lambda: "ct" in viewer.layers, timeout=JOB_TIMEOUT_MS)
    masks = viewer.open(str(folder / "anatomy.nii.gz"), plugin="napari-fvlm")[0]
    panel.view.inputs.select(ct="ct", labels=masks.name, checkpoint=model)

    assert panel.analyze()
    pattern = re.compile(r"loading the model: (importing torch|reading the weights) \(\d+ s\)")
    qtbot.waitUntil(lambda: pattern.search(panel.view.progress.text()) is not None, timeout=JOB_TIMEOUT_MS)
    wait_idle(qtbot, panel)
    assert panel.state.result is not None, panel.view.status.text()

    third = panel.view.table.rows()[2]
    panel.view.table.choose(third.anatomy, third.finding)
    wait_idle(qtbot, panel)
    assert panel.ask("fluid around the heart")
    wait_idle(qtbot, panel)
    assert panel.export_findings(tmp_path / "out")
    wait_idle(qtbot, panel)
    assert panel.export_masks(tmp_path / "masks.nii.gz")
    wait_idle(qtbot, panel)
    assert (tmp_path / "out" / "findings.json").is_file() and (tmp_path / "masks.nii.gz").is_file()
    main = threading.main_thread().name
    assert set(threads) == {"open", "row", "query", "findings", "masks"}
    assert all(name != main for name in threads.values()), threads

    def no_scan(*_args, **_kwargs):
        raise AssertionError("the anatomy list rescanned the mask on the GUI thread")

    monkeypatch.setattr(layers_module, "_label_names", no_scan)
    label = panel.view.anatomy.all_ids()[0]
    panel.view.anatomy.set_visible(label, False)
    assert masks.colormap.map(np.array([label], masks.data.dtype))[0, 3] == 0
