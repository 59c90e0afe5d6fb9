"""`fvlm demo`: the phantom's CT and masks are loaded, the panel is docked with them selected,
and the analysis it starts finishes with scores for the phantom's anatomies."""

from __future__ import annotations

import pytest

from napari_fvlm.demo import open_demo


@pytest.fixture(scope="module")
def model(random_demo_model):
    return random_demo_model


def test_demo_opens_the_phantom_with_the_panel_ready_and_analyses_it(make_napari_viewer, model, qtbot):
    viewer, panel = open_demo(seed=0, analyze=True, viewer=make_napari_viewer(), model=model)
    assert [layer.name for layer in viewer.layers] == ["phantom 0 CT", "phantom 0 anatomy", "phantom 0 lesions"]
    assert not viewer.layers["phantom 0 lesions"].visible
    choices = panel.view.inputs.choices()
    assert (choices.ct_layer, choices.anatomy_kind, choices.labels_layer) == \
        ("phantom 0 CT", "labels", "phantom 0 anatomy")
    assert choices.model_source == model
    assert panel.runner.busy  # analyze=True started it
    qtbot.waitUntil(lambda: not panel.runner.busy, timeout=60_000)
    result = panel.state.result
    assert result is not None, panel.view.status.text()
    assert {"heart", "aorta", "lung_left", "lung_right"} <= set(result.analysis.scores)
    assert panel.view.table.rowCount() == sum(len(f) for f in result.analysis.scores.values())
    assert panel.state.anatomy_layer == "phantom 0 anatomy"


def test_demo_without_analysis_waits_for_the_user(make_napari_viewer, qtbot):
    viewer, panel = open_demo(seed=0, analyze=False, viewer=make_napari_viewer())
    assert not panel.runner.busy and panel.view.analyze.isEnabled()
    assert panel.view.inputs.choices().model_source == "demo"
