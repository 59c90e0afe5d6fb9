"""`fvlm demo`: napari with the phantom CT, its anatomy masks and the fVLM panel, ready to analyze."""

from __future__ import annotations

PANEL = "fVLM analysis"
SCREEN_SHARE = 0.92  # of the available screen the demo window takes
MIN_SIZE = (1280, 800)
THREE_PLANES_MIN_WIDTH = 1700  # px of window: narrower, three planes would each be a strip


def fit_window(viewer) -> tuple[int, int]:
    """Size the window to most of the screen (never below `MIN_SIZE`); returns (width, height)."""
    from .widgets.viewer_layout import main_window

    window = main_window(viewer)
    screen = window.screen() or window.windowHandle() and window.windowHandle().screen()
    if screen is not None:
        available = screen.availableGeometry()
        width, height = int(available.width() * SCREEN_SHARE), int(available.height() * SCREEN_SHARE)
    else:
        width, height = MIN_SIZE
    width, height = max(width, MIN_SIZE[0]), max(height, MIN_SIZE[1])
    window.resize(width, height)
    return width, height


def open_demo(seed: int = 0, analyze: bool = True, viewer=None, model: str | None = None,
              three_planes: bool | None = None):
    """Load phantom ``seed`` into ``viewer`` (a new one by default) and dock the panel with the
    phantom's CT and masks selected; start the analysis when ``analyze``. Returns (viewer, panel).

    ``model`` is a checkpoint folder to select instead of the bundled demo weights. The window
    takes most of the screen and shows the masks; ``three_planes`` (default: when the window is
    at least `THREE_PLANES_MIN_WIDTH` wide) adds the coronal and sagittal views.
    """
    import napari

    from ._sample_data import chest_ct_phantom

    if viewer is None:
        viewer = napari.Viewer(title="napari-fvlm demo")
    width, _height = fit_window(viewer)
    if three_planes is None:
        three_planes = width >= THREE_PLANES_MIN_WIDTH
    layers = {}
    for data, kwargs, kind in chest_ct_phantom(seed):
        layers[kind if kind == "image" else kwargs["name"]] = getattr(viewer, f"add_{kind}")(data, **kwargs)
    ct = layers["image"]
    anatomy = layers[f"phantom {seed} anatomy"]
    anatomy.visible = True  # the masks the analysis uses, shown from the start
    lesions = layers.get(f"phantom {seed} lesions")
    if lesions is not None:
        lesions.visible = False  # the answer key: the user turns it on to compare with the heatmaps
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", PANEL)
    panel.view.inputs.select(ct=ct.name, labels=anatomy.name, checkpoint=model)
    panel.show_three_planes(three_planes)
    viewer.layers.selection.active = ct
    if analyze:
        panel.analyze()
    return viewer, panel


def run_demo(seed: int = 0, analyze: bool = True) -> None:
    import napari

    open_demo(seed, analyze)
    napari.run()
