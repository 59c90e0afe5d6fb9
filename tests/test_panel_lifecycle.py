"""The panel's worker lifecycle and refusals: cancel, a responsive window, Analyze twice, closing the
viewer mid-run, and bad input (no CT, a 2D layer, masks on another grid, missing weights)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from napari_fvlm._layers import volume_layer_data
from napari_fvlm.core.anatomy.totalseg_classes import TOTAL_CLASS_IDS
from napari_fvlm.core.volume import Volume
from napari_fvlm.widgets.inputs import ANATOMY_CHOICES
from napari_fvlm.widgets.layers import HEATMAP_KEY

from engine_fixtures import synthetic_ct_and_masks

JOB_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def model(random_demo_model):
    return random_demo_model


def open_panel(make_napari_viewer, ct: Volume | None = None, masks: Volume | None = None, **kwargs):
    """Viewer with a CT (default: the synthetic one) and masks as a Labels layer, and the panel docked."""
    viewer = make_napari_viewer(**kwargs)
    own_ct, own_masks = synthetic_ct_and_masks()
    data, layer_kwargs, _ = volume_layer_data(own_ct if ct is None else ct, "ct")
    viewer.add_image(data, **layer_kwargs)
    data, layer_kwargs, _ = volume_layer_data(own_masks if masks is None else masks, "masks")
    viewer.add_labels(data, **layer_kwargs)
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", "fVLM analysis")
    return viewer, panel


@pytest.fixture
def slow_encoding(monkeypatch):
    """Encoding that takes up to 30 s but honours the cancel flag: gives Cancel something to stop."""
    from napari_fvlm.core.inference import analyzer, encoding

    entered, real = threading.Event(), analyzer.encode_ct

    def slow(model, prepared, progress=None, cancel=None):
        entered.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            encoding.check_cancel(cancel)
            time.sleep(0.02)
        return real(model, prepared, progress, cancel)

    monkeypatch.setattr(analyzer, "encode_ct", slow)
    return entered


def start(panel, model) -> None:
    panel.view.inputs.select(ct="ct", labels="masks", checkpoint=model)
    assert panel.analyze(), panel.view.status.text()


def test_cancel_stops_the_analysis_within_two_seconds(make_napari_viewer, model, slow_encoding, qtbot):
    viewer, panel = open_panel(make_napari_viewer)
    start(panel, model)
    qtbot.waitUntil(slow_encoding.is_set, timeout=JOB_TIMEOUT_MS)
    clicked = time.perf_counter()
    qtbot.mouseClick(panel.view.cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=2000)
    assert time.perf_counter() - clicked < 2.0
    assert panel.runner.is_finished()
    assert "cancelled" in panel.view.status.text()
    assert panel.state.result is None and panel.view.table.rowCount() == 0
    assert not [layer for layer in viewer.layers if HEATMAP_KEY in layer.metadata]
    assert panel.view.analyze.isEnabled() and not panel.view.cancel.isEnabled()


def test_the_window_never_stalls_while_the_analysis_runs(make_napari_viewer, model, qtbot):
    from napari_fvlm.core.phantom import generate_phantom

    phantom = generate_phantom(1)  # a full-size chest: several encoding windows, seconds of work
    viewer, panel = open_panel(make_napari_viewer, ct=phantom.ct, masks=phantom.anatomy)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    analysis_done = panel._analysis_done

    def done_then_stop(result):  # the analysis' continuation is measured to its end, then the timer stops
        analysis_done(result)
        ticks.append(time.perf_counter())
        timer.stop()

    panel._analysis_done = done_then_stop
    timer.start(20)
    start(panel, model)  # a fresh panel: the model is loaded in the worker too
    qtbot.waitUntil(lambda: not timer.isActive(), timeout=JOB_TIMEOUT_MS)  # worker and continuation
    assert panel.state.result is not None, panel.view.status.text()
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)  # the top finding's map, shown next
    gaps = np.diff(ticks)
    assert len(gaps) > 10  # the worker ran long enough to measure
    assert gaps.max() < 0.2, f"the GUI stalled for {gaps.max() * 1000:.0f} ms"
    print(f"longest GUI gap during the analysis: {gaps.max() * 1000:.0f} ms over {len(gaps)} ticks")


def test_a_labels_layer_with_its_own_numbering_keeps_its_values_in_the_anatomy_list(
        make_napari_viewer, model, qtbot):
    ct, masks = synthetic_ct_and_masks()
    renumber = {total_id: n + 1 for n, total_id in enumerate(sorted(masks.labels))}  # 1, 2, ... by name
    lut = np.zeros(256, np.uint8)
    lut[list(renumber)] = list(renumber.values())
    own = Volume(lut[masks.array], masks.affine, labels={renumber[i]: name for i, name in masks.labels.items()})
    viewer, panel = open_panel(make_napari_viewer, ct=ct, masks=own)
    start(panel, model)
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)
    assert panel.state.result is not None, panel.view.status.text()
    listed = {panel.view.anatomy.view.item(r).text() for r in range(panel.view.anatomy.view.count())}
    assert {"heart", "aorta", "liver"} <= listed
    heart = renumber[TOTAL_CLASS_IDS["heart"]]
    assert heart != TOTAL_CLASS_IDS["heart"]
    panel.view.anatomy.set_visible(heart, False)  # hides the layer's own value for the heart
    layer = viewer.layers["masks"]
    alpha = layer.colormap.map(np.array([heart, renumber[TOTAL_CLASS_IDS["aorta"]]], layer.data.dtype))[:, 3]
    assert alpha[0] == 0 and alpha[1] > 0


def test_analyze_twice_is_refused_politely(make_napari_viewer, model, slow_encoding, qtbot):
    viewer, panel = open_panel(make_napari_viewer)
    start(panel, model)
    assert not panel.view.analyze.isEnabled()
    assert not panel.analyze()
    assert "Busy with the analysis" in panel.view.status.text()
    assert not panel.ask("nodule")  # no analysis yet to ask about
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)


def test_closing_the_viewer_mid_run_stops_the_worker(make_napari_viewer, model, slow_encoding, qtbot):
    viewer, panel = open_panel(make_napari_viewer, show=True)
    start(panel, model)
    qtbot.waitUntil(slow_encoding.is_set, timeout=JOB_TIMEOUT_MS)
    closed = time.perf_counter()
    viewer.close()
    assert panel.runner.is_finished()  # the close waited for the worker
    assert time.perf_counter() - closed < 10  # stopped, not run out (the slow encoding lasts 30 s)
    qtbot.wait(200)  # the late outcome arrives and is dropped without touching the closed viewer
    assert panel.state.closed and panel.state.result is None


def test_bad_input_is_refused_with_one_clear_message(make_napari_viewer, model, tmp_path, monkeypatch, qtbot):
    from napari_fvlm.core.inference import models

    viewer = make_napari_viewer()
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", "fVLM analysis")
    notice = panel.view.notice.text()
    assert "Research use only — not for diagnosis." in notice and "model-card.md" in notice
    assert not panel.analyze() and "Open a CT first" in panel.view.status.text()
    assert not panel.ask("nodule") and "Analyze a CT first" in panel.view.status.text()
    assert not panel.export_masks(tmp_path / "m.nii.gz")

    viewer.add_image(np.zeros((64, 64), np.int16), name="slice")
    panel.view.inputs.select(ct="slice")
    assert not panel.analyze() and "2D" in panel.view.status.text()

    viewer.layers.clear()
    ct, _ = synthetic_ct_and_masks()
    data, kwargs, _ = volume_layer_data(ct, "ct")
    viewer.add_image(data, **kwargs)
    panel.view.inputs.select(ct="ct", labels="")
    assert not panel.analyze() and "Labels layer" in panel.view.status.text()

    data, kwargs, _ = volume_layer_data(synthetic_ct_and_masks()[1], "masks")
    viewer.add_labels(data, **kwargs)
    panel.view.inputs.select(labels="masks", checkpoint="")
    assert not panel.analyze() and "checkpoint folder" in panel.view.status.text()

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    panel.view.inputs.select(labels="masks", checkpoint=model, device="gpu")
    assert panel.analyze()
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)
    assert "No GPU is available" in panel.view.status.text()

    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "no-totalsegmentator"))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    panel.view.inputs.select(device="cpu")
    panel.view.inputs.anatomy_kind.setCurrentIndex(list(ANATOMY_CHOICES).index("totalseg"))  # no weights here
    assert panel.analyze()
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)
    assert "TotalSegmentator's weights are not in" in panel.view.status.text()
    assert panel.state.result is None

    monkeypatch.setattr(models, "DEMO_WEIGHTS", tmp_path / "no-weights")
    fresh = type(panel)(viewer)
    assert "demo weights are not installed" in fresh.view.status.text()
    fresh.view.inputs.select(ct="ct", labels="masks")  # model: the bundled demo (missing here)
    assert fresh.analyze()
    qtbot.waitUntil(lambda: not fresh.runner.busy, timeout=JOB_TIMEOUT_MS)
    assert fresh.state.result is None and "demo weights are missing" in fresh.view.status.text()
    fresh.deleteLater()


def test_masks_on_another_grid_are_resampled_or_refused(make_napari_viewer, model, qtbot):
    ct, masks = synthetic_ct_and_masks()
    coarse_affine = masks.affine @ np.diag([2.0, 2.0, 2.0, 1.0])  # every other voxel, same world space
    coarse = Volume(np.ascontiguousarray(masks.array[::2, ::2, ::2]), coarse_affine, labels=masks.labels)
    viewer, panel = open_panel(make_napari_viewer, masks=coarse)
    start(panel, model)
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)
    result = panel.state.result
    assert result is not None, panel.view.status.text()
    assert result.labels.same_grid(ct)  # resampled onto the CT grid
    heart_id = TOTAL_CLASS_IDS["heart"]
    heart = masks.array == heart_id
    assert (result.labels.array[heart] == heart_id).mean() > 0.8

    elsewhere = Volume(masks.array, masks.affine + np.array([[0, 0, 0, 2000.0]] * 3 + [[0, 0, 0, 0]]),
                       labels=masks.labels)
    data, kwargs, _ = volume_layer_data(elsewhere, "masks elsewhere")
    viewer.add_labels(data, **kwargs)
    panel.view.inputs.select(labels="masks elsewhere")
    assert panel.analyze()
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)
    assert "do not line up" in panel.view.status.text()
    assert panel.state.result is result  # the earlier analysis stays
    assert len(panel.session.models) == 1  # the model was loaded once for both runs


def test_a_failed_step_is_shown_as_a_failure_with_its_traceback(make_napari_viewer, model, qtbot, monkeypatch):
    """A crashed TotalSegmentator is not the user's input: red "failed", and napari gets the error
    with the worker's own output chained (not an amber refusal line)."""
    from napari_fvlm.core.anatomy.providers import VolumeProvider
    from napari_fvlm.core.errors import FvlmRuntimeError, ProcessOutput

    def crash(self, ct, progress=None, cancel=None):
        raise FvlmRuntimeError("TotalSegmentator failed: the worker exited with status 1.") from ProcessOutput(
            "Traceback (most recent call last):\nRuntimeError: CUDA out of memory")

    monkeypatch.setattr(VolumeProvider, "segment", crash)
    _viewer, panel = open_panel(make_napari_viewer)
    with qtbot.capture_exceptions() as raised:
        start(panel, model)
        qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)
    assert panel.view.status.text().startswith("The analysis failed: TotalSegmentator failed")
    assert "#ff6b6b" in panel.view.status.styleSheet()  # the error colour, not a refusal's amber
    errors = [error for _kind, error, _traceback in raised]
    assert errors and all(isinstance(e, FvlmRuntimeError) for e in errors)
    assert "CUDA out of memory" in str(errors[0].__cause__)
