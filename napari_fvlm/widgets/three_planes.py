"""Coronal and sagittal views beside napari's own (axial) canvas, linked to it.

The shape follows napari's "multiple viewer widget" example (and the napari-orthogonal-views
plugin built on it): extra `ViewerModel`s with their own `QtViewer` canvases hold copies of the
main viewer's layers that share its arrays (no data is copied), and every settable layer
property, the slice point and the cursor follow the main viewer. Unlike those, the main canvas is
never re-parented (that recreates its GL context) and each plane gets the radiological camera
orientation (superior up) so its letters are the patient's (`orientation.PLANES`).
"""

from __future__ import annotations

import contextlib

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from .canvas_overlay import PlaneOverlay
from .orientation import PLANES, camera_of

SIDE_PLANES = ("coronal", "sagittal")
NOT_MIRRORED = {"thumbnail", "name", "status", "help", "cursor", "cursor_size", "interactive", "loaded",
                "extent", "highlight", "_overlays", "mouse_pan", "mouse_zoom"}


def settable_properties(layer) -> list[str]:
    """The layer's events that announce a change of a settable property (mirrored to the copies)."""
    from napari.utils.events.event import WarningEmitter

    cls, names = type(layer), []
    for name, emitter in layer.events.emitters.items():
        attr = getattr(cls, name, None)
        if (name not in NOT_MIRRORED and not isinstance(emitter, WarningEmitter)
                and isinstance(attr, property) and attr.fset is not None):
            names.append(name)
    return names


def mirror_copy(layer):
    """A layer of the same kind, state and (shared, not copied) array."""
    from napari.layers import Layer

    return Layer.create(*layer.as_layer_data_tuple())


class PlaneView(QWidget):
    """One extra plane: a napari canvas (with its own slider) for a `ViewerModel` and its overlay."""

    def __init__(self, plane: str, main_viewer) -> None:
        super().__init__()
        from napari.components.viewer_model import ViewerModel
        from napari.qt import QtViewer

        from .viewer_layout import main_qt_viewer

        self.plane = plane
        self.model = ViewerModel(title=plane)
        self.qt_viewer = QtViewer(self.model, show_welcome_screen=False)
        self.qt_viewer._qt_open = main_qt_viewer(main_viewer)._qt_open  # files dropped here open there
        self.overlay = PlaneOverlay(self.model, self.qt_viewer.canvas.native)
        self.overlay.set_crosshair(True)
        self.orient()
        self.model.dims.events.ndim.connect(self.orient)  # napari resets the order when ndim changes
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        title = QLabel(plane)
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(title)
        layout.addWidget(self.qt_viewer, stretch=1)

    def orient(self, *_event) -> None:
        order, orientation = PLANES[self.plane]
        if self.model.dims.ndim == 3 and tuple(self.model.dims.order) != order:
            self.model.dims.order = order
        camera = camera_of(self.model)
        if tuple(str(getattr(o, "value", o)) for o in camera.orientation2d) != orientation:
            camera.orientation2d = orientation


class ThreePlanes(QWidget):
    """The coronal and sagittal views, stacked, mirroring the main viewer's layers and point."""

    def __init__(self, main_viewer) -> None:
        super().__init__()
        self.viewer = main_viewer
        self.views = {plane: PlaneView(plane, main_viewer) for plane in SIDE_PLANES}
        self._copies: dict[int, dict[str, object]] = {}  # id(main layer) -> {plane: copy}
        self._links: dict[int, list] = {}  # id(main layer) -> [(emitter, callback)]
        self._syncing = False
        splitter = QSplitter(Qt.Orientation.Vertical)
        for view in self.views.values():
            splitter.addWidget(view)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        for layer in main_viewer.layers:
            self._add(layer, main_viewer.layers.index(layer))
        events = main_viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self._on_removed)
        events.moved.connect(self._on_moved)
        main_viewer.dims.events.point.connect(self._point_from_main)
        main_viewer.events.reset_view.connect(self._reset_views)
        for view in self.views.values():
            view.model.dims.events.point.connect(self._point_from_side)
            view.model.cursor.events.position.connect(self._cursor_from_side)
            view.model.events.status.connect(self._status_from_side)
        self._point_from_main()

    @property
    def models(self) -> dict:
        return {plane: view.model for plane, view in self.views.items()}

    def copies_of(self, layer) -> dict:
        """{plane: the copy of ``layer`` shown in that plane}."""
        return dict(self._copies.get(id(layer), {}))

    # --- layers ---------------------------------------------------------------------------------
    def _on_inserted(self, event) -> None:
        self._add(event.value, event.index)

    def _add(self, layer, index: int) -> None:
        copies = {}
        for plane, view in self.views.items():
            copy = mirror_copy(layer)
            was_empty = len(view.model.layers) == 0
            view.model.layers.insert(index, copy)
            if was_empty:
                view.model.reset_view()
            copies[plane] = copy
        self._copies[id(layer)] = copies
        links = []
        for name in settable_properties(layer):
            emitter = getattr(layer.events, name)
            callback = _PropertyMirror(layer, name, copies)
            emitter.connect(callback)
            links.append((emitter, callback))
        for name in ("labels_update", "paint"):
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                callback = _Refresh(copies)
                emitter.connect(callback)
                links.append((emitter, callback))
        self._links[id(layer)] = links
        self._point_from_main()

    def _on_removed(self, event) -> None:
        layer = event.value
        for emitter, callback in self._links.pop(id(layer), []):
            emitter.disconnect(callback)
        for plane, copy in self._copies.pop(id(layer), {}).items():
            model_layers = self.views[plane].model.layers
            if copy in model_layers:
                model_layers.remove(copy)

    def _on_moved(self, event) -> None:
        destination = event.new_index if event.new_index < event.index else event.new_index + 1
        for view in self.views.values():
            view.model.layers.move(event.index, destination)

    # --- point, cursor, status ------------------------------------------------------------------
    def _point_from_main(self, *_event) -> None:
        self._sync_point(self.viewer.dims.point, exclude=None)

    def _point_from_side(self, event) -> None:
        source = event.source
        self._sync_point(source.point, exclude=source)

    def _sync_point(self, point, exclude) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            targets = [self.viewer.dims] + [view.model.dims for view in self.views.values()]
            for dims in targets:
                if dims is not exclude and dims.ndim == len(point) and tuple(dims.point) != tuple(point):
                    dims.point = tuple(point)
        finally:
            self._syncing = False

    def _cursor_from_side(self, event) -> None:
        self.viewer.cursor.position = event.source.position  # the HU readout follows any view

    def _status_from_side(self, event) -> None:
        self.viewer.status = event.value

    def _reset_views(self, *_event) -> None:
        for view in self.views.values():
            view.model.reset_view()

    def close_views(self) -> None:
        """Disconnect from the main viewer (its layers keep no reference to the copies)."""
        for layer_id in list(self._links):
            for emitter, callback in self._links.pop(layer_id):
                emitter.disconnect(callback)
        events = self.viewer.layers.events
        for emitter, callback in ((events.inserted, self._on_inserted), (events.removed, self._on_removed),
                                  (events.moved, self._on_moved),
                                  (self.viewer.dims.events.point, self._point_from_main),
                                  (self.viewer.events.reset_view, self._reset_views)):
            emitter.disconnect(callback)
        for view in self.views.values():
            view.model.layers.clear()


class _PropertyMirror:
    """Sets one property of the copies whenever the main layer's changes."""

    def __init__(self, layer, name: str, copies: dict) -> None:
        self.layer, self.name, self.copies = layer, name, copies

    def __call__(self, _event=None) -> None:
        value = getattr(self.layer, self.name)
        for copy in self.copies.values():
            # a property that is not meaningful on the copy is left (napari checks it itself)
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                setattr(copy, self.name, value)


class _Refresh:
    """Redraws the copies after an in-place edit (painting labels) of the shared array."""

    def __init__(self, copies: dict) -> None:
        self.copies = copies

    def __call__(self, _event=None) -> None:
        for copy in self.copies.values():
            copy.refresh()
