"""CT window presets (lung, mediastinum, bone, abdomen, brain) for an image layer.

The plugin's "CT window presets" widget is a magicgui form: napari fills the layer choice and
keeps it in step with the viewer; Apply sets the chosen window. (No postponed annotations here:
magicgui reads the parameter types at run time.)
"""

from enum import Enum

from magicgui import magic_factory
from napari.layers import Image

from ..core.windows import DEFAULT_WINDOW, WINDOW_PRESETS, contrast_limits

WindowPreset = Enum("WindowPreset", {name: name for name in WINDOW_PRESETS})
PRESET_HELP = "; ".join(f"{name}: level {level:g}, width {width:g} HU"
                        for name, (level, width) in WINDOW_PRESETS.items())


def apply_window(layer, preset: str) -> None:
    """Set an image layer's contrast to a preset (the range is widened to fit the window)."""
    set_limits(layer, *contrast_limits(preset))


def set_limits(layer, low: float, high: float) -> None:
    """Set an image layer's contrast limits, widening its range where the window reaches past it."""
    lo_range, hi_range = layer.contrast_limits_range
    layer.contrast_limits_range = (min(lo_range, low), max(hi_range, high))
    layer.contrast_limits = (low, high)


@magic_factory(call_button="Apply", layer={"label": "CT"},
               preset={"widget_type": "RadioButtons", "orientation": "horizontal", "tooltip": PRESET_HELP})
def window_presets(layer: Image, preset: WindowPreset = WindowPreset[DEFAULT_WINDOW]) -> None:
    """Show ``layer`` in a radiological window."""
    if layer is not None:
        apply_window(layer, preset.value)
