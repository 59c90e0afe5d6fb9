"""The reading layout of a napari window: one big axial view, or axial + coronal + sagittal.

Every view gets the patient's orientation letters and its slice position in mm
(`canvas_overlay.PlaneOverlay`), window/level by right-dragging (`mouse_window`) and a click that
moves the linked point (the crosshair) there. The coronal and sagittal views
(`three_planes.ThreePlanes`) sit to the right of napari's own canvas, which keeps its place.
"""

from __future__ import annotations

import warnings

import numpy as np
from qtpy.QtCore import QEvent, QObject, QTimer

from .canvas_overlay import PlaneOverlay
from .mouse_window import make_window_drag

LEFT_BUTTON = 1
CLICK_PIXELS = 3.0  # a press and release closer than this is a click, not a drag
SIDE_STRETCH = (3, 2)  # axial : (coronal over sagittal) widths



def make_point_click(target_viewer):
    """A napari mouse-drag callback: a click (no drag) in pan/zoom mode moves the linked point there."""

    def point_click(viewer, event):
        if event.button != LEFT_BUTTON:
            return
        active = viewer.layers.selection.active
        if active is not None and getattr(active, "mode", "pan_zoom") != "pan_zoom":
            return  # painting or drawing: the click is the layer's
        start = np.asarray(event.pos, float)
        moved = False
        yield
        while event.type == "mouse_move":
            moved = moved or np.hypot(*(np.asarray(event.pos, float) - start)) > CLICK_PIXELS
            yield
        if not moved:
            displayed = list(viewer.dims.displayed)
            position = np.asarray(event.position, float)
            target_viewer.dims.set_point(displayed, [position[axis] for axis in displayed])

    return point_click


def main_qt_viewer(viewer):
    """napari's own canvas widget (the `QtViewer` in the window's centre)."""
    from napari.qt import QtViewer

    return main_window(viewer).centralWidget().findChild(QtViewer)


def main_window(viewer):
    """The viewer's Qt main window (napari offers no public handle for a layout to build on)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        window = viewer.window._qt_window
    return getattr(window, "__wrapped__", window)  # inside a plugin napari hands out a proxy


def _install_mouse(model, target_viewer) -> None:
    for callback in (make_window_drag(target_viewer), make_point_click(target_viewer)):
        model.mouse_drag_callbacks.append(callback)


class ViewerLayout(QObject):
    """One per napari window (a child of it, so it lives and dies with it): the axial overlay, the
    mouse tools, and the optional side planes."""

    def __init__(self, viewer) -> None:
        super().__init__(main_window(viewer))
        self.viewer = viewer
        self.planes = None  # ThreePlanes, made the first time it is shown
        self.overlay = PlaneOverlay(viewer, main_qt_viewer(viewer).canvas.native, color_bar=True)
        _install_mouse(viewer, viewer)
        self._close_filter = _OnClose(self.close)
        main_window(viewer).installEventFilter(self._close_filter)

    @classmethod
    def of(cls, viewer) -> ViewerLayout:
        """The layout of ``viewer``'s window (made once, shared by every panel of that window)."""
        layout = main_window(viewer).findChild(cls)
        return layout if layout is not None else cls(viewer)

    def close(self) -> None:
        """The window closes: close the extra canvases too (napari closes only its own)."""
        if self.planes is not None:
            self.planes.close_views()
            for view in self.planes.views.values():
                view.qt_viewer.close()
            self.planes.deleteLater()
            self.planes = None

    @property
    def three_shown(self) -> bool:
        return self.planes is not None and not self.planes.isHidden()

    def show_three(self, shown: bool = True) -> None:
        """Axial + coronal + sagittal side by side (True), or the one big axial view (False)."""
        if shown and self.planes is None:
            from .three_planes import ThreePlanes

            self.planes = ThreePlanes(self.viewer)
            for view in self.planes.views.values():
                _install_mouse(view.model, self.viewer)
            central = main_window(self.viewer).centralWidget().layout()
            central.addWidget(self.planes)
            central.setStretch(central.indexOf(main_qt_viewer(self.viewer)), SIDE_STRETCH[0])
            central.setStretch(central.indexOf(self.planes), SIDE_STRETCH[1])
        if self.planes is not None:
            self.planes.setVisible(shown)
        self.overlay.set_crosshair(shown)
        QTimer.singleShot(50, self.viewer.reset_view)  # fit the data to the canvases' new sizes

    def overlays(self) -> dict[str, PlaneOverlay]:
        """{"axial": ..., "coronal": ..., "sagittal": ...} for the views on screen."""
        shown = {"axial": self.overlay}
        if self.three_shown:
            shown.update({plane: view.overlay for plane, view in self.planes.views.items()})
        return shown


class _OnClose(QObject):
    """Calls ``on_close`` when the watched window receives its Close event."""

    def __init__(self, on_close) -> None:
        super().__init__()
        self.on_close = on_close

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Close:
            self.on_close()
        return False
