"""The panel's inputs in a real viewer: the reader preference asked for once, the anatomy source
when TotalSegmentator cannot run, and a binary mask refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from napari_fvlm._reader import PLUGIN, READER_PATTERNS
from napari_fvlm.core.anatomy.totalseg_classes import TOTAL_CLASS_IDS
from napari_fvlm.widgets import reader_offer

from test_totalseg import downloader_tasks

JOB_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def case(synthetic_case):
    return synthetic_case


@pytest.fixture
def answers(tmp_path, monkeypatch):
    """This plugin's remembered answers, in a file of this test's own."""
    path = tmp_path / "config" / "answers.json"
    monkeypatch.setattr(reader_offer, "answers_path", lambda: path)
    return path


def dock_panel(viewer):
    return viewer.window.add_plugin_dock_widget(PLUGIN, "fVLM analysis")[1]


def reader_preferences() -> dict:
    from napari.settings import get_settings

    return dict(get_settings().plugins.extension2reader)


def test_reader_preference_is_asked_once_and_set_only_on_yes(make_napari_viewer, answers):
    viewer = make_napari_viewer()
    before = reader_preferences()
    assert not set(READER_PATTERNS) & set(before)
    offer = dock_panel(viewer).view.inputs.reader_offer
    assert offer.isVisibleTo(viewer.window._qt_window)
    assert offer.question.text() == ("Open dropped .nii, .nii.gz, .dcm files with napari-fvlm, without napari "
                                     "asking which reader?")
    assert reader_preferences() == before  # opening the panel changed nothing
    offer.no.click()
    assert not offer.isVisibleTo(viewer.window._qt_window) and reader_preferences() == before
    again = dock_panel(make_napari_viewer()).view.inputs.reader_offer
    assert not again.isVisibleTo(again.window())  # asked once: "No" is remembered

    answers.unlink()
    offer = dock_panel(make_napari_viewer()).view.inputs.reader_offer
    assert offer.isVisibleTo(offer.window())
    offer.yes.click()
    assert {p: reader_preferences()[p] for p in READER_PATTERNS} == dict.fromkeys(READER_PATTERNS, PLUGIN)
    assert not offer.isVisibleTo(offer.window())


def test_a_reader_the_user_chose_is_kept(make_napari_viewer, answers):
    from napari.settings import get_settings

    get_settings().plugins.extension2reader = {"*.dcm": "napari"}
    offer = dock_panel(make_napari_viewer()).view.inputs.reader_offer
    offer.yes.click()
    assert reader_preferences() == {"*.dcm": "napari", "*.nii": PLUGIN, "*.nii.gz": PLUGIN}


def test_without_totalsegmentator_weights_the_masks_that_are_there_are_the_default(
        make_napari_viewer, case, empty_totalseg_home, answers):
    folder, _model = case
    viewer = make_napari_viewer()
    inputs = dock_panel(viewer).view.inputs
    assert inputs.anatomy_kind.currentData() == "file"  # nothing open yet: a mask file
    note = inputs.totalseg_note.text()
    assert note == "no weights: run totalseg_download_weights -t total_fast"
    assert downloader_tasks(note.partition("run ")[2])  # TotalSegmentator's own parser accepts it
    assert "`totalseg_download_weights -t total_fast`" in inputs.totalseg_note.toolTip()  # the whole line
    viewer.open(str(folder / "ct.nii.gz"), plugin=PLUGIN)
    masks = viewer.open(str(folder / "anatomy.nii.gz"), plugin=PLUGIN)[0]
    choices = inputs.choices()
    assert (choices.anatomy_kind, choices.labels_layer) == ("labels", masks.name)

    inputs.anatomy_kind.setCurrentIndex(2)  # the user picks "Mask file"...
    inputs.anatomy_kind.activated.emit(2)
    viewer.add_labels(np.zeros((2, 2, 2), np.uint8), name="scratch")
    assert inputs.anatomy_kind.currentData() == "file"  # ...and a new layer does not undo that


def test_with_totalsegmentator_weights_it_stays_the_default(make_napari_viewer, case, standin_totalseg_home,
                                                            answers):
    folder, _model = case
    viewer = make_napari_viewer()
    inputs = dock_panel(viewer).view.inputs
    viewer.open(str(folder / "anatomy.nii.gz"), plugin=PLUGIN)
    assert inputs.anatomy_kind.currentData() == "totalseg"
    assert inputs.totalseg_note.text() == "segments the CT (fast model)"


def test_a_binary_labels_layer_is_refused_for_analysis_in_one_line(make_napari_viewer, case, qtbot,
                                                                   empty_totalseg_home, answers):
    folder, model = case
    viewer = make_napari_viewer()
    panel = dock_panel(viewer)
    ct = viewer.open(str(folder / "ct.nii.gz"), plugin=PLUGIN)[0]
    masks = viewer.open(str(folder / "anatomy.nii.gz"), plugin=PLUGIN)[0]
    drawn = viewer.add_labels((masks.data == TOTAL_CLASS_IDS["heart"]).astype(np.uint8), name="drawn",
                              scale=masks.scale, translate=masks.translate, metadata=dict(masks.metadata))
    panel.view.inputs.select(ct=ct.name, labels=drawn.name, checkpoint=model)
    assert panel.analyze()
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=JOB_TIMEOUT_MS)
    assert panel.state.result is None
    status = panel.view.status.text()
    assert status.startswith("the mask volume: a single unnamed region (value 1), so it does not say which "
                             "anatomy it is (it is not taken as `total` class 1, spleen)"), status
