"""CT window presets (lung, mediastinum, bone, abdomen, brain) for the selected image layer."""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..core.windows import WINDOW_PRESETS, contrast_limits


def apply_window(layer, preset: str) -> None:
    """Set an image layer's contrast to a preset (the range is widened to fit the window)."""
    set_limits(layer, *contrast_limits(preset))


def set_limits(layer, low: float, high: float) -> None:
    """Set an image layer's contrast limits, widening its range where the window reaches past it."""
    lo_range, hi_range = layer.contrast_limits_range
    layer.contrast_limits_range = (min(lo_range, low), max(hi_range, high))
    layer.contrast_limits = (low, high)


class WindowPresetsWidget(QWidget):
    """One button per preset; applies to the active Image layer (or the first one)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("CT window (level / width, HU)"))
        row = QHBoxLayout()
        for name, (level, width) in WINDOW_PRESETS.items():
            button = QPushButton(name)
            button.setToolTip(f"level {level:g}, width {width:g}")
            button.clicked.connect(lambda _=False, n=name: self.apply(n))
            row.addWidget(button)
        layout.addLayout(row)
        layout.addStretch()

    def target_layer(self):
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        return next((layer for layer in self.viewer.layers if isinstance(layer, Image)), None)

    def apply(self, preset: str) -> None:
        layer = self.target_layer()
        if layer is None:
            from napari.utils.notifications import show_info
            show_info("Open a CT first: window presets apply to an image layer.")
            return
        apply_window(layer, preset)
