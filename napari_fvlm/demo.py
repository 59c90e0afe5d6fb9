"""`fvlm demo`: napari with the phantom CT, its masks and the fVLM panels, ready to use."""

from __future__ import annotations


def run_demo(seed: int = 0, analyze: bool = True) -> None:
    import napari

    from ._sample_data import chest_ct_phantom

    viewer = napari.Viewer(title="napari-fvlm demo")
    for data, kwargs, kind in chest_ct_phantom(seed):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.window.add_plugin_dock_widget("napari-fvlm", "CT window presets")
    napari.run()
