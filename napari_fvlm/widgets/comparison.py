"""Prior vs current in the panel: both CTs analysed in the panel's runner, the changes table, and
the prior shown beside the current in the same viewer, linked to napari's slice point.

The linked point is the viewer's slice point (the slider, a click in pan/zoom mode, a table row).
On the current, the prior is moved so that its corresponding point (same anatomy, same relative
position: core/report/linked.py) lies on the same slice and row, to the right; a point on the
prior moves the slice point to the corresponding point of the current. A cross marks both.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from qtpy.QtCore import QTimer

from .._layers import LINKED_PRIOR_KEY
from ..core.errors import FvlmInputError
from ..core.geometry import display_scale_translate, ras_to_display
from .comparison_view import number_text
from .jobs import run_comparison

CROSS_NAME = "linked point"
CROSS_SIZE_MM = 12.0
CROSS_COLOR = "#ffd400"


def linked_name(prior_name: str) -> str:
    return f"{prior_name} (prior, linked)"


class PriorCurrent:
    """The Compare tab's behaviour; the panel owns the runner, the session and the state."""

    def __init__(self, panel) -> None:
        self.panel = panel
        self.view = panel.view.comparison
        self.layer = None  # the prior as shown beside the current
        self.cross = None  # the linked point in both
        self.link = None  # the last `Link`
        self._own_translate = np.zeros(3)  # the prior's napari translate before any shift
        self._redirecting = False
        self._windowed = None  # the current CT layer whose window the prior shares
        self.view.compare.clicked.connect(self.compare)
        self.view.table.finding_chosen.connect(self.go_to)
        for combo, masks in ((self.view.prior, self.view.prior_masks), (self.view.current, self.view.current_masks)):
            combo.currentTextChanged.connect(lambda name, masks=masks: self._pair_masks(name, masks))
        panel.viewer.dims.events.point.connect(self._on_point)

    # --- the job ---------------------------------------------------------------------------------
    def compare(self) -> bool:
        """Analyse the chosen prior and current in the background; False (with a message) when it cannot start."""
        panel = self.panel
        if panel.refuse_if_busy():
            return False
        (prior, prior_masks), (current, current_masks) = self.view.choices()
        try:
            if not prior or not current or prior == current:
                raise FvlmInputError("Choose two different CT layers in the Compare tab: the prior and the current.")
            requests = [self._request(prior, prior_masks), self._request(current, current_masks)]
        except FvlmInputError as err:
            panel.refuse(str(err))
            return False
        return panel.start_long("comparison", run_comparison, *requests, panel.session,
                                then=panel.long_continuations(self._done),
                                message=f"Comparing {prior} (prior) with {current} (current)…")

    def _request(self, ct: str, masks: str | None):
        choices = replace(self.panel.view.inputs.choices(), ct_layer=ct, labels_layer=masks,
                          anatomy_kind="labels" if masks else "totalseg")
        return self.panel.wiring.analysis_request(choices)

    def _done(self, comparison) -> None:
        panel = self.panel
        if panel.state.closed:
            return
        panel.end_long(completed=True)
        panel.state.comparison = comparison
        self.view.table.set_changes(comparison.changes)
        self._show_prior(comparison)
        self.follow(panel.viewer.dims.point)
        panel.viewer.reset_view()  # both CTs in view
        counts = {s: sum(c.status == s for c in comparison.changes) for s in ("new", "resolved")}
        panel.view.say(f"{counts['new']} new and {counts['resolved']} resolved findings (Compare tab). The prior is "
                       "shown right of the current, linked: move the slider, click a point in either, or choose a row.")

    def _pair_masks(self, ct_name: str, masks_combo) -> None:
        beside = self.panel.wiring.labels_beside(ct_name)
        if beside is not None:
            masks_combo.setCurrentText(beside)

    # --- the linked views ------------------------------------------------------------------------
    def _show_prior(self, comparison) -> None:
        """The prior's CT beside the current, in the current's window (the prior's own layer and
        masks layer, which lie over the current's place, are hidden), and the cross."""
        viewer, wiring = self.panel.viewer, self.panel.wiring
        request = comparison.prior.request
        scale, self._own_translate = display_scale_translate(request.ct.affine)
        current = wiring.find(comparison.current.request.ct_name)
        if self.layer is not None and self.layer in viewer.layers:
            viewer.layers.remove(self.layer)
        self.layer = viewer.add_image(request.ct.array, name=linked_name(request.ct_name), scale=scale,
                                      translate=self._own_translate, colormap="gray",
                                      contrast_limits=current.contrast_limits if current is not None else None,
                                      metadata={LINKED_PRIOR_KEY: request.ct_name})
        for hidden in (wiring.find(request.ct_name), wiring.find(request.anatomy.layer)):
            if hidden is not None:
                hidden.visible = False
        if self.cross is None or self.cross not in viewer.layers:
            self.cross = viewer.add_points(np.zeros((2, 3)), name=CROSS_NAME, symbol="cross", size=CROSS_SIZE_MM,
                                           face_color=CROSS_COLOR, border_width=0,
                                           features={"view": ["current", "prior"]},
                                           text={"string": "{view}", "color": CROSS_COLOR, "size": 9,
                                                 "anchor": "upper_left"})
        if current is not None:
            current.visible = True
            viewer.layers.selection.active = current  # the window drag and the cursor readout stay the CT's
            self._share_window(current)

    def _share_window(self, current) -> None:
        """Window presets and drags of the current apply to the prior beside it."""
        if self._windowed is not None:
            self._windowed.events.contrast_limits.disconnect(self._same_window)
        current.events.contrast_limits.connect(self._same_window)
        self._windowed = current

    def _same_window(self, event) -> None:
        if self.layer is not None and self.layer in self.panel.viewer.layers:
            self.layer.contrast_limits = event.source.contrast_limits

    def _views(self):
        """The comparison's `LinkedViews` while its layers are shown, else None."""
        comparison, layers = self.panel.state.comparison, self.panel.viewer.layers
        if comparison is None or self.panel.state.closed or self.layer not in layers or self.cross not in layers:
            return None
        return comparison.views

    def follow(self, point) -> bool:
        """Show the prior's point corresponding to the current's ``point`` (napari world) beside it."""
        views = self._views()
        if views is None or len(point) != 3:
            return False
        try:
            link = views.link(point)
        except FvlmInputError as err:
            self.panel.view.say(str(err), "warning")
            return False
        self.cross.data = np.array([np.asarray(point, float), link.prior_point])
        self.link = link
        translate = self._own_translate + link.shift
        if not np.allclose(self.layer.translate, translate):
            # last: a new world range can snap the point to napari's slider steps, whose event
            # follows the snapped point from here on
            self.layer.translate = translate
        return True

    def _on_point(self, _event=None) -> None:
        views, point = self._views(), np.asarray(self.panel.viewer.dims.point, float)
        if views is None or len(point) != 3:
            return
        if views.on_prior(point) and self.link is not None and not self._redirecting:
            try:
                current, _anatomy = views.current_point(point, self.link.shift)
            except FvlmInputError as err:
                self.panel.view.say(str(err), "warning")
                return
            self._move_later(current)
            return
        self.follow(point)

    def _move_later(self, current) -> None:
        """Move the slice point to a point of the current once napari's handling of the present move
        is over (a point set inside it is not kept)."""
        QTimer.singleShot(0, lambda: self._move_to(current))

    def _move_to(self, current) -> None:
        """Move the slice point (napari puts it on its sliders' steps: 1 mm or the finest voxel)."""
        if self._views() is None:
            return
        self._redirecting = True  # a point that maps back onto the prior is not redirected again
        try:
            self.panel.viewer.dims.set_point(range(3), current)
        finally:
            self._redirecting = False

    def go_to(self, anatomy: str, finding: str) -> None:
        """A table row: both views to the centre of the row's anatomy."""
        views = self._views()
        if views is None:
            return
        try:
            centre = ras_to_display(views.current.point(anatomy, 0.5))
        except FvlmInputError as err:
            self.panel.view.say(str(err), "warning")
            return
        self._move_to(centre)
        change = self.view.table.changes[self.view.table.row_of(anatomy, finding)]
        status = f"{change.status}: " if change.status else ""
        self.panel.view.say(f"{status}{finding} in {anatomy.replace('_', ' ')}, prior {number_text(change.prior)}, "
                            f"current {number_text(change.current)}; both views at the anatomy's centre.")
