"""Window/level with the mouse, as in every PACS: drag with the right button on any view.

Dragging right widens the window, left narrows it; dragging down raises the level (the image
darkens), up lowers it. While the right button is held the camera's own right-drag zoom is off.
"""

from __future__ import annotations

import numpy as np

from .layers import HEATMAP_KEY
from .orientation import camera_of
from .window_presets import set_limits

HU_PER_PIXEL = 4.0  # 250 px of drag change the window by 1000 HU
MIN_WIDTH = 1.0
RIGHT_BUTTON = 2


def window_target(viewer):
    """The CT a drag adjusts: the selected image layer, else the first image that is not a heatmap."""
    from napari.layers import Image

    def is_ct(layer) -> bool:
        return isinstance(layer, Image) and HEATMAP_KEY not in layer.metadata and not layer.rgb

    active = viewer.layers.selection.active
    if active is not None and is_ct(active):
        return active
    return next((layer for layer in viewer.layers if is_ct(layer)), None)


def level_width(layer) -> tuple[float, float]:
    low, high = (float(v) for v in layer.contrast_limits)
    return (low + high) / 2, high - low


def dragged_window(level: float, width: float, dx: float, dy: float) -> tuple[float, float]:
    """(level, width) after a drag of (dx, dy) screen pixels from a window (level, width)."""
    return level + HU_PER_PIXEL * dy, max(MIN_WIDTH, width + HU_PER_PIXEL * dx)


def make_window_drag(target_viewer):
    """A napari mouse-drag callback that windows ``target_viewer``'s CT (any view may carry it)."""

    def window_drag(viewer, event):
        if event.button != RIGHT_BUTTON:
            return
        layer = window_target(target_viewer)
        if layer is None:
            return
        camera = camera_of(viewer)
        pan_before = camera.mouse_pan
        camera.mouse_pan = False  # vispy zooms on right-drag otherwise
        start = np.asarray(event.pos, float)
        level, width = level_width(layer)
        try:
            yield
            while event.type == "mouse_move":
                dx, dy = np.asarray(event.pos, float) - start
                new_level, new_width = dragged_window(level, width, dx, dy)
                set_limits(layer, new_level - new_width / 2, new_level + new_width / 2)
                target_viewer.status = f"window {new_width:.0f} HU, level {new_level:.0f} HU"
                yield
        finally:
            camera.mouse_pan = pan_before

    return window_drag
