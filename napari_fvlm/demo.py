"""`fvlm demo`: napari with the phantom CT, its anatomy masks and the fVLM panel, ready to analyze."""

from __future__ import annotations

PANEL = "fVLM analysis"


def open_demo(seed: int = 0, analyze: bool = True, viewer=None, model: str | None = None):
    """Load phantom ``seed`` into ``viewer`` (a new one by default) and dock the panel with the
    phantom's CT and masks selected; start the analysis when ``analyze``. Returns (viewer, panel).

    ``model`` is a checkpoint folder to select instead of the bundled demo weights.
    """
    import napari

    from ._sample_data import chest_ct_phantom

    if viewer is None:
        viewer = napari.Viewer(title="napari-fvlm demo")
    layers = {}
    for data, kwargs, kind in chest_ct_phantom(seed):
        layers[kind if kind == "image" else kwargs["name"]] = getattr(viewer, f"add_{kind}")(data, **kwargs)
    ct = layers["image"]
    anatomy = layers[f"phantom {seed} anatomy"]
    lesions = layers.get(f"phantom {seed} lesions")
    if lesions is not None:
        lesions.visible = False  # the answer key: the user turns it on to compare with the heatmaps
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", PANEL)
    panel.view.inputs.select(ct=ct.name, labels=anatomy.name, checkpoint=model)
    viewer.layers.selection.active = ct
    if analyze:
        panel.analyze()
    return viewer, panel


def run_demo(seed: int = 0, analyze: bool = True) -> None:
    import napari

    open_demo(seed, analyze)
    napari.run()
