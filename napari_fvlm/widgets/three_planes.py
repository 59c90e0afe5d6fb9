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

from qtpy.QtCore import Qt, QTimer
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
    """The coronal and sagittal views, stacked, mirroring the main viewer's layers and point.

    A plane follows the main viewer one event-loop turn at a time, never in the turn of the
    change itself: each copy re-slices and redraws when it changes, so following at once tripled
    the freeze of every change (a new map, a new slice). While the planes are hidden they follow
    nothing and catch up when shown.
    """

    def __init__(self, main_viewer) -> None:
        super().__init__()
        self.viewer = main_viewer
        self.views = {plane: PlaneView(plane, main_viewer) for plane in SIDE_PLANES}
        self._copies: dict[int, dict[str, object]] = {}  # id(main layer) -> {plane: copy}
        self._links: dict[int, list] = {}  # id(main layer) -> [(emitter, callback)]
        self._pending: dict[str, dict] = {plane: {} for plane in SIDE_PLANES}  # plane -> {id: (layer, {names})}
        self._point_pending = set(SIDE_PLANES)
        self._flush_scheduled = False
        self._syncing = False
        splitter = QSplitter(Qt.Orientation.Vertical)
        for view in self.views.values():
            splitter.addWidget(view)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        for layer in main_viewer.layers:
            self._link(layer)
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
        self._schedule()

    @property
    def models(self) -> dict:
        return {plane: view.model for plane, view in self.views.items()}

    def copies_of(self, layer) -> dict:
        """{plane: the copy of ``layer`` shown in that plane} (planes that have caught up)."""
        return dict(self._copies.get(id(layer), {}))

    def settled(self) -> bool:
        """Whether every plane has caught up with the main viewer."""
        return not (self._point_pending or any(self._pending.values()))

    def setVisible(self, visible: bool) -> None:  # noqa: N802 (Qt's name)
        super().setVisible(visible)
        if visible:
            self._schedule()

    # --- following, a plane per event-loop turn ---------------------------------------------------
    def _mark(self, layer, name: str) -> None:
        """Note that ``layer``'s ``name`` ("copy", "refresh" or a property) must reach each plane."""
        for pending in self._pending.values():
            pending.setdefault(id(layer), (layer, {}))[1][name] = None
        self._schedule()

    def _schedule(self) -> None:
        if not self._flush_scheduled and not self.isHidden() and not self.settled():
            self._flush_scheduled = True
            QTimer.singleShot(0, self._flush_one)

    def _flush_one(self) -> None:
        """Bring the first plane that lags up to date, then let the event loop run before the next."""
        self._flush_scheduled = False
        if self.isHidden():
            return
        for plane in SIDE_PLANES:
            if self._pending[plane] or plane in self._point_pending:
                self._catch_up(plane)
                break
        self._schedule()

    def _catch_up(self, plane: str) -> None:
        """Inserting a copy moves the plane's own point: nothing it does here is a user's move."""
        self._syncing = True
        try:
            self._apply_pending(plane)
        finally:
            self._syncing = False

    def _apply_pending(self, plane: str) -> None:
        pending, self._pending[plane] = self._pending[plane], {}
        for layer, names in pending.values():
            if layer not in self.viewer.layers:
                continue
            copy = self._copies.get(id(layer), {}).get(plane)
            if copy is None or "copy" in names:
                self._insert_copy(plane, layer)
                continue
            for name in names:
                if name == "refresh":
                    copy.refresh()
                else:  # a property that is not meaningful on the copy is left (napari checks it)
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        setattr(copy, name, getattr(layer, name))
        if plane in self._point_pending:
            self._point_pending.discard(plane)
            dims, point = self.views[plane].model.dims, self.viewer.dims.point
            if dims.ndim == len(point) and tuple(dims.point) != tuple(point):
                dims.point = tuple(point)

    def _insert_copy(self, plane: str, layer) -> None:
        model_layers = self.views[plane].model.layers
        old = self._copies.get(id(layer), {}).pop(plane, None)
        if old is not None and old in model_layers:
            model_layers.remove(old)
        before = self.viewer.layers[:self.viewer.layers.index(layer)]
        index = sum(1 for other in before if plane in self._copies.get(id(other), {}))
        copy = mirror_copy(layer)
        was_empty = len(model_layers) == 0
        model_layers.insert(index, copy)
        if was_empty:
            self.views[plane].model.reset_view()
        self._copies.setdefault(id(layer), {})[plane] = copy
        self._point_pending.add(plane)

    # --- layers ---------------------------------------------------------------------------------
    def _on_inserted(self, event) -> None:
        self._link(event.value)

    def _link(self, layer) -> None:
        links = []
        for name in settable_properties(layer):
            emitter = getattr(layer.events, name)
            callback = _Mark(self, layer, name)
            emitter.connect(callback)
            links.append((emitter, callback))
        for name in ("labels_update", "paint"):
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                callback = _Mark(self, layer, "refresh")
                emitter.connect(callback)
                links.append((emitter, callback))
        self._links[id(layer)] = links
        self._mark(layer, "copy")

    def _on_removed(self, event) -> None:
        layer = event.value
        for emitter, callback in self._links.pop(id(layer), []):
            emitter.disconnect(callback)
        for pending in self._pending.values():
            pending.pop(id(layer), None)
        for plane, copy in self._copies.pop(id(layer), {}).items():
            model_layers = self.views[plane].model.layers
            if copy in model_layers:
                model_layers.remove(copy)

    def _on_moved(self, event) -> None:
        for plane, view in self.views.items():  # the copies take the main viewer's order
            order = [self._copies.get(id(layer), {}).get(plane) for layer in self.viewer.layers]
            order = [copy for copy in order if copy is not None and copy in view.model.layers]
            for index, copy in enumerate(order):
                current = view.model.layers.index(copy)
                if current != index:
                    view.model.layers.move(current, index)

    # --- point, cursor, status ------------------------------------------------------------------
    def _point_from_main(self, *_event) -> None:
        if not self._syncing:
            self._point_pending.update(SIDE_PLANES)
            self._schedule()

    def _point_from_side(self, event) -> None:
        if self._syncing:
            return
        source = event.source
        self._set_point(self.viewer.dims, source.point)  # the main view follows at once
        self._point_pending.update(p for p, view in self.views.items() if view.model.dims is not source)
        self._schedule()

    def _set_point(self, dims, point) -> None:
        self._syncing = True
        try:
            if dims.ndim == len(point) and tuple(dims.point) != tuple(point):
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
        self._pending = {plane: {} for plane in SIDE_PLANES}
        self._point_pending.clear()
        for view in self.views.values():
            view.model.layers.clear()


class _Mark:
    """Notes a change of one main layer's property (or its pixels) for the planes to follow."""

    def __init__(self, planes: ThreePlanes, layer, name: str) -> None:
        self.planes, self.layer, self.name = planes, layer, name

    def __call__(self, _event=None) -> None:
        self.planes._mark(self.layer, self.name)
