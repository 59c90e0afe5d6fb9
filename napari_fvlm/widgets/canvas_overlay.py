"""Drawn over a napari canvas: the patient's orientation letters, the slice position in mm, a
crosshair at the linked point and (on the main canvas) the colour bar of the shown heatmap.

A transparent child widget of the canvas (mouse events pass through). It draws only when the
view shows a CT read by this plugin (a layer carrying its affine), whose napari world is LPS mm:
for other data the letters would be a guess.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QEvent, QObject, QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QLinearGradient, QPainter, QPen
from qtpy.QtWidgets import QWidget

from .._layers import AFFINE_KEY, HEATMAP_KEY
from .orientation import _name, camera_of, edge_letters, slice_text

LETTER_COLOR = QColor(255, 214, 10)
TEXT_COLOR = QColor(230, 230, 230)
CROSS_COLOR = QColor(80, 220, 120, 170)
MARGIN = 6
BAR_SIZE = (12, 140)  # colour bar width, height in pixels
BAR_STOPS = 16


class _FollowParent(QObject):
    """Keeps the overlay the size of its canvas."""

    def __init__(self, overlay: QWidget) -> None:
        super().__init__(overlay)
        self.overlay = overlay

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Resize:
            self.overlay.setGeometry(obj.rect())
        return False


class PlaneOverlay(QWidget):
    """Letters at the four edges, ``"axial  z = +42.0 mm"`` at the top left, optional crosshair."""

    def __init__(self, viewer_model, canvas_widget: QWidget, color_bar: bool = False) -> None:
        super().__init__(canvas_widget)
        self.viewer = viewer_model
        self.crosshair = False
        self.with_color_bar = color_bar
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground)
        self.setGeometry(canvas_widget.rect())
        canvas_widget.installEventFilter(_FollowParent(self))
        camera, dims = camera_of(viewer_model).events, viewer_model.dims.events
        for emitter in (camera.center, camera.zoom, camera.orientation, dims.point, dims.order, dims.ndisplay,
                        viewer_model.layers.events.inserted, viewer_model.layers.events.removed):
            emitter.connect(self._changed)
        if color_bar:
            viewer_model.layers.events.inserted.connect(self._follow_layer)
            for layer in viewer_model.layers:
                self._follow_layer(layer=layer)
        self.show()
        self.raise_()

    def _changed(self, *_event) -> None:
        self.update()

    def _follow_layer(self, event=None, layer=None) -> None:
        layer = event.value if layer is None else layer
        for name in ("contrast_limits", "visible", "colormap", "name"):
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                emitter.connect(self._changed)

    def set_crosshair(self, shown: bool) -> None:
        self.crosshair = bool(shown)
        self.update()

    # --- what is drawn (also what tests read) ---------------------------------------------------
    def active(self) -> bool:
        """Only a 2D view of a 3D CT read by this plugin (its world is LPS mm) gets letters."""
        viewer = self.viewer
        return (viewer.dims.ndim == 3 and viewer.dims.ndisplay == 2
                and any(AFFINE_KEY in layer.metadata and layer.ndim == 3 for layer in viewer.layers))

    def letters(self) -> dict[str, str]:
        """{"top"|"bottom"|"left"|"right": letter}, empty when inactive."""
        if not self.active():
            return {}
        displayed = tuple(self.viewer.dims.displayed)
        return edge_letters(displayed, tuple(_name(o) for o in camera_of(self.viewer).orientation2d))

    def letter_rects(self) -> dict[str, QRectF]:
        """Where each edge's letter is drawn, in the canvas's pixels."""
        w, h, size = self.width(), self.height(), 24.0
        return {"top": QRectF((w - size) / 2, MARGIN, size, size),
                "bottom": QRectF((w - size) / 2, h - MARGIN - size, size, size),
                "left": QRectF(MARGIN, (h - size) / 2, size, size),
                "right": QRectF(w - MARGIN - size, (h - size) / 2, size, size)}

    def slice_label(self) -> str:
        if not self.active():
            return ""
        axis = self.viewer.dims.not_displayed[0]
        return slice_text(axis, self.viewer.dims.point[axis])

    def color_bar(self) -> tuple[list, float, float] | None:
        """(RGBA stops from low to high, low, high) of the topmost visible heatmap, else None.

        Painted here rather than napari's own colour bar: its first draw renders every glyph into
        a texture on the GUI thread (~0.6 s of CPU in software OpenGL), a freeze at each first map.
        """
        if not (self.with_color_bar and self.active()):
            return None
        shown = [layer for layer in self.viewer.layers if HEATMAP_KEY in layer.metadata and layer.visible]
        if not shown:
            return None
        layer = shown[-1]
        stops = layer.colormap.map(np.linspace(0.0, 1.0, BAR_STOPS)).tolist()
        low, high = (float(v) for v in layer.contrast_limits)
        return stops, low, high

    def color_bar_rect(self) -> QRectF:
        width, height = BAR_SIZE
        return QRectF(self.width() - MARGIN - 44 - width, self.height() - MARGIN - 30 - height, width, height)

    def world_to_screen(self, world) -> tuple[float, float]:
        """Canvas pixel (x, y) of a world point (only its displayed axes count)."""
        viewer = self.viewer
        rows, columns = viewer.dims.displayed
        camera = camera_of(viewer)
        centre = np.asarray(camera.center, float)[-2:]
        zoom = float(camera.zoom)
        row_sign = 1.0 if _name(camera.orientation2d[0]) == "down" else -1.0
        col_sign = 1.0 if _name(camera.orientation2d[1]) == "right" else -1.0
        x = self.width() / 2 + col_sign * (float(world[columns]) - centre[1]) * zoom
        y = self.height() / 2 + row_sign * (float(world[rows]) - centre[0]) * zoom
        return x, y

    def crosshair_position(self) -> tuple[float, float] | None:
        if not (self.crosshair and self.active()):
            return None
        return self.world_to_screen(self.viewer.dims.point)

    # --- painting -------------------------------------------------------------------------------
    def paintEvent(self, _event) -> None:
        if not self.active():
            return
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        cross = self.crosshair_position()
        if cross is not None:
            painter.setPen(QPen(CROSS_COLOR, 1))
            painter.drawLine(QPointF(0, cross[1]), QPointF(self.width(), cross[1]))
            painter.drawLine(QPointF(cross[0], 0), QPointF(cross[0], self.height()))
        font = QFont()
        font.setPointSize(14)
        font.setBold(True)
        painter.setFont(font)
        rects = self.letter_rects()
        for edge, letter in self.letters().items():
            _shadowed_text(painter, rects[edge], letter, LETTER_COLOR, Qt.AlignmentFlag.AlignCenter)
        font.setPointSize(10)
        font.setBold(False)
        painter.setFont(font)
        line = QRectF(MARGIN, MARGIN, self.width() / 2 - 20, 24)
        _shadowed_text(painter, line, self.slice_label(), TEXT_COLOR,
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        bar = self.color_bar()
        if bar is not None:
            self._paint_color_bar(painter, *bar)
        painter.end()

    def _paint_color_bar(self, painter: QPainter, stops, low: float, high: float) -> None:
        """A vertical bar, high at the top, with its two ends' probabilities beside it."""
        rect = self.color_bar_rect()
        gradient = QLinearGradient(rect.bottomLeft(), rect.topLeft())
        for index, (r, g, b, a) in enumerate(stops):
            gradient.setColorAt(index / (len(stops) - 1), QColor.fromRgbF(r, g, b, a))
        painter.setPen(QPen(TEXT_COLOR, 1))
        painter.setBrush(gradient)
        painter.drawRect(rect)
        align = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        for value, y in ((high, rect.top()), (low, rect.bottom())):
            _shadowed_text(painter, QRectF(rect.right() + 4, y - 10, 44, 20), f"{value:.2f}", TEXT_COLOR, align)
        # right-aligned under the values' column: a box starting at the bar cut the word at the canvas edge
        _shadowed_text(painter, QRectF(rect.right() + 44 - 120, rect.bottom() + 4, 120, 20), "probability",
                       TEXT_COLOR, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


def _shadowed_text(painter: QPainter, rect: QRectF, text: str, color: QColor, align) -> None:
    """Text with a dark shadow, readable over bright bone and dark air alike."""
    painter.setPen(QColor(0, 0, 0, 220))
    painter.drawText(rect.translated(1, 1), int(align), text)
    painter.setPen(color)
    painter.drawText(rect, int(align), text)
